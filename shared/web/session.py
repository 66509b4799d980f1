"""Page sessions: the signed-in API key kept server-side, in the Redis every service shares.

The browser holds only a random session id, in an HttpOnly, SameSite=Strict cookie; the key itself never
reaches a URL, a page or a log. Because every service reads the same Redis and a cookie belongs to the host
(not the port), one sign-in serves the pages of all four services. Signing in starts a new session id, so an id
planted before sign-in is worth nothing after it. Each session has a CSRF token that every form post repeats.

Keys (Redis):
  web:session:<session id>   hash: csrf, language, key (absent before sign-in); expires when unused
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, replace
from typing import Any, cast

from redis.asyncio import Redis

from shared.settings import Settings
from shared.web.i18n import DEFAULT_LANGUAGE, Language, language_of

COOKIE = "klantreis_session"
# A signed-in session ends after this long unused; one that never signed in (the sign-in form) sooner.
SIGNED_IN_SECONDS = 8 * 3600
ANONYMOUS_SECONDS = 3600


@dataclass(frozen=True)
class Session:
    id: str
    csrf: str
    language: Language = DEFAULT_LANGUAGE
    api_key: str | None = None

    def csrf_matches(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(self.csrf.encode(), token.encode())


class Sessions:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings

    def _key(self, session_id: str) -> str:
        return self._settings.key("web", "session", session_id)

    async def load(self, session_id: str | None) -> Session | None:
        """The session, kept alive for another while; None when unknown or expired."""
        if not session_id or len(session_id) > 100:
            return None
        key = self._key(session_id)
        raw = cast(dict[str, str], await self._redis.hgetall(key))
        if not raw:
            return None
        await self._redis.expire(key, SIGNED_IN_SECONDS if raw.get("key") else ANONYMOUS_SECONDS)
        return Session(session_id, raw["csrf"], language_of(raw.get("language")), raw.get("key") or None)

    async def start(self, language: Language = DEFAULT_LANGUAGE) -> Session:
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), language)
        await self._save(session, ANONYMOUS_SECONDS)
        return session

    async def sign_in(self, previous: Session, api_key: str) -> Session:
        """A new session id and CSRF token holding the key; the previous session is gone."""
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), previous.language, api_key)
        await self._save(session, SIGNED_IN_SECONDS)
        await self._redis.delete(self._key(previous.id))
        return session

    async def set_language(self, session: Session, language: Language) -> Session:
        await self._redis.hset(self._key(session.id), "language", language)
        return replace(session, language=language)

    async def end(self, session: Session) -> None:
        await self._redis.delete(self._key(session.id))

    async def _save(self, session: Session, ttl: int) -> None:
        fields: dict[str, Any] = {"csrf": session.csrf, "language": session.language}
        if session.api_key is not None:
            fields["key"] = session.api_key
        key = self._key(session.id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=cast(Any, fields))
            pipe.expire(key, ttl)
            await pipe.execute()
