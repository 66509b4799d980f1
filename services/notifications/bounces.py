"""Undeliverable addresses: a hard bounce (the SMTP server refused the recipient with a 5xx reply at send time, or
the provider's webhook reported one later) marks the recipient's address for that medium undeliverable, and later
messages to that address are suppressed with the reason `undeliverable`.

notifications never stores an address: the mark is a keyed hash of it (HMAC with the service's secret) in the
recipient's member hash (field `u<medium>`), so it lapses by itself when the member gives a new address, and goes
with the member's other state on erasure. For the provider's later report, each sent e-mail's message id is
remembered with its recipient and that hash for `notifications_bounce_window` (a key that expires).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis

from services.notifications import codec
from services.notifications.keys import Keys
from services.notifications.settings import NotificationsSettings
from shared.events.types import Medium

UNDELIVERABLE = "u"


@dataclass(frozen=True)
class SentTo:
    holder: str  # whose address it is: the member, or their guardian
    medium: Medium
    digest: str


class Bounces:
    def __init__(self, redis: Redis, settings: NotificationsSettings) -> None:
        self._redis = redis
        self._settings = settings
        self._k = Keys(settings)
        self._secret = settings.notifications_link_secret.get_secret_value().encode()

    def digest(self, address: str) -> str:
        return hmac.new(self._secret, address.strip().lower().encode(), hashlib.sha256).hexdigest()[:32]

    def _sent_key(self, message_id: str) -> str:
        return self._settings.key("notifications", "sent-to", message_id)

    async def undeliverable(self, holder: str, medium: Medium, address: str) -> bool:
        marked = await self._redis.hget(self._k.member(holder), UNDELIVERABLE + codec.MEDIA[medium])
        return marked is not None and hmac.compare_digest(cast(str, marked), self.digest(address))

    async def mark(self, to: SentTo) -> None:
        await self._redis.hset(self._k.member(to.holder), UNDELIVERABLE + codec.MEDIA[to.medium], to.digest)

    async def sent(self, message_id: str, holder: str, medium: Medium, address: str) -> None:
        """Remember where a message went, for a bounce the provider reports later."""
        seconds = int(self._settings.notifications_bounce_window.total_seconds())
        value = f"{holder}|{medium}|{self.digest(address)}"
        await self._redis.set(self._sent_key(message_id), value, ex=seconds)

    async def sent_to(self, message_id: str) -> SentTo | None:
        found = await self._redis.get(self._sent_key(message_id))
        if found is None:
            return None
        holder, medium, digest = cast(str, found).split("|")
        return SentTo(holder, cast(Medium, medium), digest)
