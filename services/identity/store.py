"""Members' personal data in Redis: one hash per member, under the member's hash tag."""

from __future__ import annotations

from typing import Any, cast

from redis.asyncio import Redis

from shared.settings import Settings


class MemberStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings

    def _key(self, member_id: str) -> str:
        return self._settings.key("identity", "member", "{" + member_id + "}")

    async def create(self, member_id: str, personal: dict[str, str]) -> None:
        await self._redis.hset(self._key(member_id), mapping=cast(Any, personal))

    async def get(self, member_id: str) -> dict[str, str] | None:
        # decode_responses=True: keys and values are str
        found = cast(dict[str, str], await self._redis.hgetall(self._key(member_id)))
        return found or None

    async def exists(self, member_id: str) -> bool:
        return bool(await self._redis.exists(self._key(member_id)))

    async def delete(self, member_id: str) -> None:
        await self._redis.delete(self._key(member_id))
