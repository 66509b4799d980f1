"""The in-app inbox in Redis, written once per delivery.

Keys (member keys carry the `{member_id}` hash tag):
  notifications:inbox:{member}           sorted set: message id → created (ms)
  notifications:message:{member}:<id>    hash: the message as shown in the app
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from redis.asyncio import Redis

from shared.settings import Settings

# Only a message not yet in the inbox is added: a redelivered trigger finds it there and changes nothing.
_DELIVER = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[2], unpack(ARGV, 3))
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
"""


class InboxStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self._deliver = redis.register_script(_DELIVER)

    def _inbox(self, member_id: str) -> str:
        return self._settings.key("notifications", "inbox", "{" + member_id + "}")

    def _message(self, member_id: str, message_id: str) -> str:
        return self._settings.key("notifications", "message", "{" + member_id + "}", message_id)

    async def deliver(self, member_id: str, message_id: str, fields: dict[str, str], at: datetime) -> bool:
        """Store the message unless it is there already; True when it was new."""
        flat: list[str] = [item for pair in fields.items() for item in pair]
        added = await self._deliver(
            keys=[self._inbox(member_id), self._message(member_id, message_id)],
            args=[message_id, int(at.timestamp() * 1000), *flat],
        )
        return bool(added)

    async def inbox(self, member_id: str, limit: int = 50) -> list[dict[str, Any]]:
        ids = cast(list[str], await self._redis.zrevrange(self._inbox(member_id), 0, limit - 1))
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for message_id in ids:
                pipe.hgetall(self._message(member_id, message_id))
            found: list[dict[str, str]] = await pipe.execute()
        return [{**m, "read": m.get("read") == "1"} for m in found if m]
