"""The in-app inbox in Redis: one field per message in the member's hash, the text stored once (keys.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from redis.asyncio import Redis

from services.notifications import codec
from services.notifications.keys import Keys
from services.notifications.state import InboxMessage
from shared.settings import Settings


class InboxStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._k = Keys(settings)

    def writes(self, messages: Sequence[tuple[str, InboxMessage]]) -> dict[str, list[list[str]]]:
        """What putting messages in their owners' inboxes writes, for a transaction of the delivery queue:
        `t` texts [key, text] (set if new), `i` items [member hash, field, item] (set if new: a second delivery of
        a message changes nothing)."""
        texts: dict[tuple[str, str, str, str, str | None], tuple[str, str]] = {}  # a page's messages share one
        items = []
        for owner, m in messages:
            alike = (m.campaign_id, m.title, m.body, m.locale, m.library)
            if alike not in texts:
                texts[alike] = (codec.text_tag(m), codec.text_value(m))
            text_tag, _ = texts[alike]
            items.append([self._k.member(owner), codec.inbox_field(m.message_id), codec.inbox_value(m, text_tag)])
        return {"t": [[self._k.text(t), value] for t, value in texts.values()], "i": items}

    async def inbox(self, member_id: str, limit: int = 50, unread_only: bool = False) -> list[InboxMessage]:
        """Newest first."""
        raw = cast(dict[str, str], await self._redis.hgetall(self._k.member(member_id)))
        items = {codec.message_id_of(name): value for name, value in raw.items() if name.startswith(codec.INBOX)}
        messages = await self._with_texts(items)
        messages.sort(key=lambda m: (m.created_at, m.message_id), reverse=True)
        if unread_only:
            messages = [m for m in messages if not m.read]
        return messages[:limit]

    async def message(self, member_id: str, message_id: str) -> InboxMessage | None:
        value = await self._redis.hget(self._k.member(member_id), codec.inbox_field(message_id))
        found = await self._with_texts({message_id: cast(str, value)} if value else {})
        return found[0] if found else None

    async def _with_texts(self, items: dict[str, str]) -> list[InboxMessage]:
        if not items:
            return []
        tags = sorted({codec.inbox_item(value)[0] for value in items.values()})
        texts = dict(
            zip(tags, cast(list[str | None], await self._redis.mget([self._k.text(t) for t in tags])), strict=True)
        )
        return [
            codec.inbox_message(message_id, value, text)
            for message_id, value in items.items()
            if (text := texts.get(codec.inbox_item(value)[0]))
        ]

    async def mark_read(self, member_id: str, message_id: str, read: bool) -> None:
        key, field = self._k.member(member_id), codec.inbox_field(message_id)
        value = await self._redis.hget(key, field)
        if value:
            await self._redis.hset(key, field, codec.with_read(cast(str, value), read))
