"""How deliveries end: sent, suppressed, failed (and dead-lettered), or tried again later.

A batch's endings are stored in one transaction (each delivery's status with its events, the counters, the cap
slot given back, the campaign's effect, the in-app message itself), then published, then forgotten.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context import Context

from services.notifications.campaign_store import CampaignStore
from services.notifications.campaigns import trigger_key
from services.notifications.decision_events import MessageEvent, decision_event, message_sent
from services.notifications.decision_log import DecisionLog
from services.notifications.delivery_queue import DeliveryQueue
from services.notifications.inbox_store import InboxStore
from services.notifications.settings import NotificationsSettings
from services.notifications.state import DeadLetter, Delivery, DeliveryStatus, InboxMessage, Outbox, ms
from shared.events import CloudEvent
from shared.events.notifications import MessageFailed, MessageSuppressed, Recipient, SuppressionReason
from shared.events.types import Medium
from shared.kafka import EventPublisher
from shared.publishing import dead_letter_headers
from shared.topics import DELIVERIES

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
DELIVERY_GROUP = "notifications.deliveries"


@dataclass(frozen=True)
class Ending:
    delivery: Delivery  # with its final status
    outbox: Outbox
    counter: str
    release_cap: bool  # a message that did not go out does not count toward the member's cap
    messaged_friction: bool = False
    inbox: tuple[str, InboxMessage] | None = None  # (owner, message)
    # The trace context the ending happened in (the delivery's span): its events are published in it.
    context: Context | None = None


class Endings:
    def __init__(
        self,
        queue: DeliveryQueue,
        campaigns: CampaignStore,
        inbox: InboxStore,
        log_: DecisionLog,
        publisher: EventPublisher,
        settings: NotificationsSettings,
        clock: Clock,
    ) -> None:
        self._queue = queue
        self._campaigns = campaigns
        self._inbox = inbox
        self._log = log_
        self._publisher = publisher
        self._settings = settings
        self._clock = clock

    def _event(self, delivery: Delivery, data: MessageEvent, kind: str) -> CloudEvent:
        return decision_event(data, delivery.message_id, kind, delivery.member_id, delivery.library, self._clock())

    def _ending(self, delivery: Delivery, status: DeliveryStatus, outbox: Outbox, counter: str,
                **more: Any) -> Ending:  # fmt: skip
        return Ending(replace(delivery, status=status), outbox, counter, **more, context=otel_context.get_current())

    def sent(
        self, delivery: Delivery, medium: Medium, recipient: Recipient, inbox: tuple[str, InboxMessage] | None = None
    ) -> Ending:
        event = message_sent(
            message_id=delivery.message_id, campaign_id=delivery.campaign_id, version=delivery.version,
            member_id=delivery.member_id, medium=medium, trigger_event_id=delivery.trigger_event_id,
            locale=delivery.locale, recipient=recipient, library=delivery.library, at=self._clock(),
        )  # fmt: skip
        return self._ending(delivery, "sent", [event], "sent", release_cap=False,
                            messaged_friction=delivery.friction_id is not None, inbox=inbox)  # fmt: skip

    def suppressed(self, delivery: Delivery, reason: SuppressionReason) -> Ending:
        data = MessageSuppressed(
            campaign_id=delivery.campaign_id,
            trigger_event_id=delivery.trigger_event_id,
            reason=reason,
            message_id=delivery.message_id,
            campaign_version=delivery.version,
        )
        return self._ending(
            delivery,
            "suppressed",
            [self._event(delivery, data, "suppressed")],
            f"suppressed:{reason}",
            release_cap=True,
        )

    async def retry_or_fail(self, delivery: Delivery, medium: Medium, error: str) -> Ending | None:
        attempts = delivery.attempts + 1
        if attempts > self._settings.notifications_delivery_retries:
            return self.failed(delivery, medium, error, "retries_exhausted", attempts=attempts)
        delay = self._settings.notifications_delivery_backoff_seconds * 2 ** (attempts - 1)
        log.warning(
            "delivery %s by %s failed (%s); attempt %d in %.1f s",
            delivery.message_id, medium, error, attempts + 1, delay,
        )  # fmt: skip
        await self._queue.retry_later(replace(delivery, attempts=attempts), self._clock() + timedelta(seconds=delay))
        return None

    def failed(self, delivery: Delivery, medium: Medium, error: str, reason: str, attempts: int = 1) -> Ending:
        data = MessageFailed(
            campaign_id=delivery.campaign_id,
            medium=medium,
            trigger_event_id=delivery.trigger_event_id,
            error=error[:500],
            message_id=delivery.message_id,
            attempts=max(1, attempts),
            campaign_version=delivery.version,
        )
        dead_letter = DeadLetter(
            value={
                "message_id": delivery.message_id,
                "campaign_id": delivery.campaign_id,
                "campaign_version": delivery.version,
                "member_id": delivery.member_id,
                "medium": medium,
                "trigger_event_id": delivery.trigger_event_id,
                "attempts": max(1, attempts),
            },
            headers={
                "content-type": "application/json",
                **dead_letter_headers(
                    reason,
                    error,
                    topic=self._settings.topic(DELIVERIES.name),
                    group=self._settings.group(DELIVERY_GROUP),
                    at=self._clock(),
                ),
            },
        )
        log.warning("delivery %s by %s failed for good: %s (%s)", delivery.message_id, medium, reason, error)
        outbox: Outbox = [self._event(delivery, data, "failed"), dead_letter]
        return self._ending(delivery, "failed", outbox, "failed", release_cap=True)

    async def write(self, endings: Sequence[Ending | None]) -> None:
        """Store the endings (one transaction), publish their events, forget the deliveries."""
        done = [e for e in endings if e is not None]
        if not done:
            return
        async with self._queue.transaction() as pipe:
            await self._queue.ended(
                pipe,
                [(e.delivery, e.outbox) for e in done],
                self._inbox.writes([e.inbox for e in done if e.inbox is not None]),
                [(e.delivery.campaign_id, e.counter) for e in done],
            )
            for ending in done:
                d = ending.delivery
                if ending.release_cap:
                    await self._log.release_cap(
                        pipe, d.member_id, d.campaign_id, trigger_key(d.trigger_type, d.trigger_rule)
                    )
                if ending.messaged_friction and d.friction_id:
                    await self._log.effect_in(
                        pipe, d.member_id, d.campaign_id, d.friction_id, "messaged", ms(d.trigger_time)
                    )
            await pipe.execute()
        self._publisher.metrics.messages([e.counter for e in done])
        contexts = {i.id: e.context for e in done if e.context for i in e.outbox if isinstance(i, CloudEvent)}
        await self.publish([(e.delivery, e.outbox) for e in done], contexts)

    async def publish(
        self, ended: Sequence[tuple[Delivery, Outbox]], contexts: dict[str, Context] | None = None
    ) -> None:
        events = []
        for delivery, outbox in ended:
            for item in outbox:
                if isinstance(item, CloudEvent):
                    events.append(item)
                    continue
                await self._publisher.publish_dead_letter(
                    topic=self._settings.topic(DELIVERIES.dead_letters),
                    key=delivery.member_id.encode(),
                    value=json.dumps(item.value).encode(),
                    headers=item.headers,
                )
        if events:
            await self._publisher.publish_many(events, contexts=contexts)
        await self._queue.forget([(d.member_id, d.message_id) for d, _ in ended])
