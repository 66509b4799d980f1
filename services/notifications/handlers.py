"""notifications' Kafka side: frictions in, messages out."""

from __future__ import annotations

from faststream.kafka import KafkaRouter

from services.notifications.campaigns import Campaign, Delivery, decide
from services.notifications.store import InboxStore
from shared.events import CloudEvent, EventData
from shared.events.journey import FrictionDetected
from shared.events.notifications import MessageSent
from shared.kafka import EventPublisher, subscribe
from shared.settings import Settings
from shared.topics import FRICTIONS

SOURCE = "/notifications"


def message_sent(delivery: Delivery, trigger: CloudEvent) -> CloudEvent:
    return CloudEvent.create(
        MessageSent(
            message_id=delivery.message_id,
            campaign_id=delivery.campaign.id,
            medium=delivery.campaign.medium,
            trigger_event_id=delivery.trigger_event_id,
            locale=delivery.locale,
        ),
        id=delivery.message_id,
        subject=delivery.member_id,
        source=f"{SOURCE}/campaigns/{delivery.campaign.id}",
        library=trigger.library,
    )


class Notifier:
    def __init__(self, campaigns: tuple[Campaign, ...], inbox: InboxStore, publisher: EventPublisher) -> None:
        self._campaigns = campaigns
        self._inbox = inbox
        self._publisher = publisher

    async def on_friction(self, event: CloudEvent, data: EventData) -> None:
        assert isinstance(data, FrictionDetected)
        deliveries = decide(self._campaigns, event, data)
        for delivery in deliveries:
            message = delivery.campaign.messages[delivery.locale]
            await self._inbox.deliver(
                delivery.member_id,
                delivery.message_id,
                {
                    "message_id": delivery.message_id,
                    "campaign_id": delivery.campaign.id,
                    "title": message.title,
                    "body": message.body,
                    "locale": delivery.locale,
                    "library": event.library or "",
                    "created_at": event.utc_time.isoformat(),
                },
                event.utc_time,
            )
        # Published after the inbox holds the message, and again on a redelivery: the id is deterministic.
        if deliveries:
            await self._publisher.publish_many([message_sent(d, event) for d in deliveries])


def notifications_router(notifier: Notifier, settings: Settings, publisher: EventPublisher) -> KafkaRouter:
    router = KafkaRouter()
    subscribe(
        router,
        settings,
        publisher,
        topic=FRICTIONS,
        group="notifications",
        handler=notifier.on_friction,
        types={FrictionDetected.event_type},
        description="Detected frictions: decides which campaign messages a member gets.",
    )
    return router
