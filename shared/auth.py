"""API keys with roles and a library scope, the same in every service (DESIGN §5).

A key reads `kr_<key id>_<secret>`. Only a SHA-256 of the whole key is stored (the secret is 256 random bits,
so a slow hash adds nothing), under the key id, in the Redis every service shares. A key carries roles and
either one library (`oba`) or the whole network (`*`).

Keys (Redis):
  auth:key:<key id>     hash: sha256, name, roles (comma-separated), library, created_at, revoked_at
  auth:keys             set of key ids
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, cast, get_args

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.asyncio import Redis

from shared.problems import Problem
from shared.settings import Settings

Role = Literal["ingest", "analyst", "marketing", "member-data", "operator", "admin", "service"]
ROLES: tuple[Role, ...] = get_args(Role)
NETWORK = "*"
KEY_PREFIX = "kr_"
# A library website's key (services/identity/publishable.py): client events of visitors, for its library only. Not a
# role keys are made with; the dead-letters replay of such a key's items posts under it (shared/failed_items.py).
PUBLISHABLE = "publishable"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's id, name, roles and library scope."""

    key_id: str
    name: str
    roles: frozenset[str]
    library: str

    def has(self, role: Role) -> bool:
        # admin may do anything a role allows; every other role is only itself.
        return role in self.roles or "admin" in self.roles

    def covers(self, library: str | None) -> bool:
        """May this key act for (post for, read the members of) `library`?"""
        return self.library == NETWORK or (library is not None and library == self.library)


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    name: str
    roles: tuple[str, ...]
    library: str
    created_at: str
    revoked_at: str | None


class UnknownRole(ValueError):
    pass


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _split(key: str) -> tuple[str, str] | None:
    if not key.startswith(KEY_PREFIX):
        return None
    key_id, _, secret = key[len(KEY_PREFIX) :].partition("_")
    return (key_id, secret) if key_id and secret else None


class Keyring:
    # Verified keys are remembered this long, so a request costs no Redis round trip; revocation takes effect
    # within this time in every process.
    CACHE_SECONDS = 10.0

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    def _key(self, key_id: str) -> str:
        return self._settings.key("auth", "key", key_id)

    async def create(self, name: str, roles: list[str], library: str = NETWORK) -> str:
        """A new key; the only time its secret is seen. Store it where it is needed."""
        unknown = sorted(set(roles) - set(ROLES))
        if unknown or not roles:
            raise UnknownRole(f"unknown role(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(ROLES)}")
        key_id = secrets.token_hex(6)
        key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        await self.store(key, name, roles, library)
        return key

    async def store(self, key: str, name: str, roles: list[str], library: str = NETWORK) -> str:
        """Register a key made elsewhere (the local run's development key); returns its id."""
        parts = _split(key)
        if parts is None:
            raise ValueError(f"an API key reads {KEY_PREFIX}<id>_<secret>")
        key_id = parts[0]
        fields = {
            "sha256": _digest(key),
            "name": name,
            "roles": ",".join(sorted(set(roles))),
            "library": library,
            "created_at": datetime.now(UTC).isoformat(),
            "revoked_at": "",
        }
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(key_id), mapping=cast(Any, fields))
            pipe.sadd(self._settings.key("auth", "keys"), key_id)
            await pipe.execute()
        return key_id

    async def revoke(self, key_id: str) -> bool:
        if not await self._redis.exists(self._key(key_id)):
            return False
        await self._redis.hset(self._key(key_id), "revoked_at", datetime.now(UTC).isoformat())
        self._cache.clear()
        return True

    async def list(self) -> list[KeyInfo]:
        ids = sorted(cast(set[str], await self._redis.smembers(self._settings.key("auth", "keys"))))
        infos = []
        for key_id in ids:
            raw = cast(dict[str, str], await self._redis.hgetall(self._key(key_id)))
            if raw:
                infos.append(
                    KeyInfo(
                        key_id,
                        raw["name"],
                        tuple(raw["roles"].split(",")),
                        raw["library"],
                        raw["created_at"],
                        raw.get("revoked_at") or None,
                    )
                )
        return infos

    async def verify(self, key: str) -> Principal | None:
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        principal = await self._lookup(key)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now + self.CACHE_SECONDS, principal)
        return principal

    async def _lookup(self, key: str) -> Principal | None:
        parts = _split(key)
        if parts is None:
            return None
        raw = cast(dict[str, str], await self._redis.hgetall(self._key(parts[0])))
        if not raw or raw.get("revoked_at") or not hmac.compare_digest(raw.get("sha256", ""), _digest(key)):
            return None
        return Principal(parts[0], raw["name"], frozenset(raw["roles"].split(",")), raw["library"])


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "no API key, or an unknown or revoked one"},
    403: {"description": "the key lacks the role, or is scoped to another library"},
}

Dependency = Callable[..., Coroutine[Any, Any, Principal]]

# Declares the scheme in the OpenAPI document (so /docs has an Authorize button) and each route's `security`; the
# header is read and checked, with its problem answers, by `require` itself (auto_error off), so that a dependency
# may also call `require(...)(request)` directly.
BEARER = HTTPBearer(
    scheme_name="apiKey",
    bearerFormat="kr_<key id>_<secret>",
    description="An API key (`klantreis keys create`): `Authorization: Bearer kr_<key id>_<secret>`.",
    auto_error=False,
)


def require(*roles: Role) -> Dependency:
    """A FastAPI dependency: a valid key holding one of `roles` (401 without a valid key, 403 without the role).

    The keyring is the app's (`app.state.keyring`, set by `shared.service.build_app`)."""

    async def principal(
        request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)] = None
    ) -> Principal:
        keyring: Keyring = request.app.state.keyring
        scheme, _space, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key:
            raise Problem(
                401,
                "Unauthorized",
                "send an API key: Authorization: Bearer <key>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        found = await keyring.verify(key.strip())
        if found is None:
            raise Problem(
                401, "Unauthorized", "the API key is unknown or revoked", headers={"WWW-Authenticate": "Bearer"}
            )
        if roles and not any(found.has(role) for role in roles):
            raise Problem(403, "Forbidden", f"this key lacks the role {' or '.join(roles)}")
        return found

    return principal


IngestKey = Annotated[Principal, Depends(require("ingest"))]
AnalystKey = Annotated[Principal, Depends(require("analyst"))]
MarketingKey = Annotated[Principal, Depends(require("marketing"))]
MemberDataKey = Annotated[Principal, Depends(require("member-data", "service"))]
OperatorKey = Annotated[Principal, Depends(require("operator"))]
AdminKey = Annotated[Principal, Depends(require("admin"))]


def forbid_other_library(principal: Principal, library: str | None) -> None:
    """403 unless the key may act for `library`. The message names the key's scope, never the member."""
    if not principal.covers(library):
        raise Problem(403, "Forbidden", f"this key is scoped to library {principal.library!r}")
