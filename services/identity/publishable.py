"""Publishable keys: what a library's website puts in its pages so that the web tracker (clients/web) can post the
visitor's client events straight from the browser, and the CORS that lets it.

A publishable key is no secret (anyone can read it in the page), so it can do little: it reads
`pk_<library>_<random>`, posts only the client event types (shared/events/client.py) for its own library, and only
from the library's website origins (`website_origins` of the library in the catalogue): the browser's `Origin` must
be one of them. It travels in the query (`POST /v1/events?key=pk_…`), since `navigator.sendBeacon` sends no headers.

Redis: `auth:publishable:<key>` hash: library, name, created_at, revoked_at.
"""

from __future__ import annotations

import re
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field
from redis.asyncio import Redis
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.auth import AUTH_RESPONSES, BEARER, NETWORK, PUBLISHABLE, AdminKey, Principal, require
from shared.events.types import LibraryCode
from shared.libraries import LibraryDirectory
from shared.problems import Problem, not_found
from shared.schemas import example_answer, example_body
from shared.settings import Settings

PREFIX = "pk_"
ROLE = PUBLISHABLE  # a publishable key's principal holds this role alone
INGEST_PATH = "/v1/events"
_KEY = re.compile(r"^pk_([a-z][a-z0-9-]{1,39})_[A-Za-z0-9_-]{16,64}$")
_MAX_AGE = "600"  # seconds a browser may keep a preflight's answer
# The tracker as `npm run build` (clients/web) leaves it; identity serves it, so the snippet needs one origin.
TRACKER_JS = Path(__file__).resolve().parents[2] / "clients" / "web" / "dist" / "tracker.js"


def is_publishable(caller: Principal) -> bool:
    return caller.roles == frozenset({ROLE})


class PublishableKeys:
    CACHE_SECONDS = 10.0  # as the keyring: revocation takes effect within this time

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    def _key(self, key: str) -> str:
        return self._settings.key("auth", "publishable", key)

    async def create(self, library: str, name: str) -> str:
        key = f"{PREFIX}{library}_{secrets.token_urlsafe(18)}"
        fields = {"library": library, "name": name, "created_at": datetime.now(UTC).isoformat(), "revoked_at": ""}
        await self._redis.hset(self._key(key), mapping=cast(Any, fields))
        return key

    async def revoke(self, key: str) -> bool:
        if _KEY.match(key) is None or not await self._redis.exists(self._key(key)):
            return False
        await self._redis.hset(self._key(key), "revoked_at", datetime.now(UTC).isoformat())
        self._cache.clear()
        return True

    async def verify(self, key: str) -> Principal | None:
        """The key's principal (role `publishable`, its library), None for an unknown or revoked key."""
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        principal = None
        if _KEY.match(key) is not None:
            raw = cast(dict[str, str], await self._redis.hgetall(self._key(key)))
            if raw and not raw.get("revoked_at"):
                principal = Principal(key[: len(PREFIX) + 8], raw["name"], frozenset({ROLE}), raw["library"])
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now + self.CACHE_SECONDS, principal)
        return principal


class BrowserGate:
    """Who may post from a browser: the publishable key in the query, and the page's origin one of its library's."""

    def __init__(self, keys: PublishableKeys, libraries: LibraryDirectory) -> None:
        self.keys = keys
        self._libraries = libraries

    async def admits(self, key: str | None, origin: str | None) -> Principal | None:
        if not key or not origin:
            return None
        principal = await self.keys.verify(key)
        if principal is None or not await self._libraries.allows_origin(principal.library, origin):
            return None
        return principal


def ingest_caller(gate: BrowserGate) -> Any:
    """The dependency of `POST /v1/events`: a publishable key (`?key=pk_…`) from one of its library's origins, or
    else an API key with the ingest role, or one with a publishable key's role alone: what the dead-letters replay
    posts a publishable key's refused items with (shared/failed_items.py), with the same limits and no origin."""
    any_key = require()

    # BEARER: the OpenAPI declares the API key; a publishable key (`?key=`) is the browser's other way in.
    async def caller(
        request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)] = None
    ) -> Principal:
        key = request.query_params.get("key")
        if key is None:
            api_key = await any_key(request)
            if not (api_key.has("ingest") or is_publishable(api_key)):
                raise Problem(403, "Forbidden", "this key lacks the role ingest")
            return api_key
        principal = await gate.keys.verify(key)
        if principal is None:
            raise Problem(401, "Unauthorized", "the publishable key is unknown or revoked")
        if await gate.admits(key, request.headers.get("origin")) is None:
            raise Problem(403, "Forbidden", "this page's origin is not a website of the key's library")
        return principal

    return Depends(caller)


class TrackerCors:
    """CORS on `POST /v1/events` for the website origins of the publishable key's library, and for no other origin:
    a preflight from elsewhere is refused (403, no Access-Control-Allow-Origin), so the browser sends nothing."""

    def __init__(self, app: ASGIApp, gate: BrowserGate) -> None:
        self._app = app
        self._gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != INGEST_PATH:
            await self._app(scope, receive, send)
            return
        request = Request(scope)
        origin = request.headers.get("origin")
        if origin is None:
            await self._app(scope, receive, send)
            return
        admitted = await self._gate.admits(request.query_params.get("key"), origin)
        if scope["method"] == "OPTIONS" and request.headers.get("access-control-request-method"):
            allowed = admitted is not None and request.headers["access-control-request-method"] == "POST"
            headers = _cors(origin) if allowed else [(b"vary", b"Origin")]
            if allowed:
                headers += [(b"access-control-allow-methods", b"POST"),
                            (b"access-control-allow-headers", b"content-type"),
                            (b"access-control-max-age", _MAX_AGE.encode())]  # fmt: skip
            await send({"type": "http.response.start", "status": 204 if allowed else 403, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start" and admitted is not None:
                message = {**message, "headers": [*message.get("headers", []), *_cors(origin)]}
            await send(message)

        await self._app(scope, receive, with_cors)


def _cors(origin: str) -> list[tuple[bytes, bytes]]:
    return [(b"access-control-allow-origin", origin.encode()), (b"vary", b"Origin")]


class NewPublishableKey(BaseModel):
    model_config = example_body(library="oba", name="www.oba.nl")

    library: LibraryCode
    name: str = Field(default="web tracker", min_length=1, max_length=80)


class PublishableKey(BaseModel):
    model_config = example_answer(key="pk_oba_3vQ9…", library="oba")

    key: str
    library: str


def publishable_keys_router(keys: PublishableKeys, libraries: LibraryDirectory) -> APIRouter:
    router = APIRouter(prefix="/v1/publishable-keys", tags=["web tracker"], responses=AUTH_RESPONSES)

    @router.post(
        "",
        status_code=201,
        summary="A publishable key for a library's website (admin)",
        description="For the web tracker's snippet: posts only client events, from the library's `website_origins`.",
    )
    async def create(body: NewPublishableKey, caller: AdminKey) -> PublishableKey:
        if caller.library != NETWORK and caller.library != body.library:
            raise Problem(403, "Forbidden", f"this key is scoped to library {caller.library!r}")
        await libraries.require({"library": body.library})
        return PublishableKey(key=await keys.create(body.library, body.name), library=body.library)

    @router.delete("/{key}", status_code=204, summary="Revoke a publishable key (admin)")
    async def revoke(key: str, caller: AdminKey) -> None:
        match = _KEY.match(key)
        if match is None or not caller.covers(match.group(1)) or not await keys.revoke(key):
            raise not_found("publishable key")

    return router


def tracker_router(script: Path = TRACKER_JS) -> APIRouter:
    router = APIRouter(tags=["web tracker"])

    @router.get(
        "/tracker.js",
        summary="The web tracker (clients/web), for a library site's snippet",
        response_class=FileResponse,
        responses={404: {"description": "not built: `npm run build` in clients/web"}},
    )
    def tracker() -> FileResponse:  # sync: FastAPI runs it in a thread (it looks at the disk)
        if not script.is_file():
            raise not_found("tracker build")
        return FileResponse(script, media_type="text/javascript", headers={"Cache-Control": "public, max-age=300"})

    return router
