"""notifications' Kafka side: what it projects and what triggers campaigns, one consumer group per topic.

Members, usage and frictions are consumed in batches (`shared.kafka.subscribe_batches`): one pipeline of
projection writes and one batch of decisions per consumer batch. Every handler is idempotent by event id:
projections overwrite (consent by event time), triggers leave a decided marker, the catalogue is upserted.

On the members and usage topics notifications reads the event types the platform knows and skips others
undecoded (journey, which reads every member and usage event, dead-letters what it cannot read).
"""

from __future__ import annotations

from faststream.kafka import KafkaRouter

from services.notifications.projecting import Projector
from services.notifications.settings import NotificationsSettings
from shared.events import event_types
from shared.kafka import EventPublisher, subscribe, subscribe_batches
from shared.topics import CATALOG, FRICTIONS, MEMBERS, USAGE, Topic

# Only the records notifications reads from the catalogue; other kinds (activities…) are skipped undecoded.
CATALOG_TYPES = frozenset(
    f"nl.bibliotheek.catalog.{kind}.v1"
    for kind in ("proposition_published", "proposition_retired", "offering_changed", "library_changed")
)


def types_on(topic: Topic) -> frozenset[str]:
    return frozenset(name for name, model in event_types().items() if model.topic == topic.name)


def notifications_router(
    projector: Projector, settings: NotificationsSettings, publisher: EventPublisher
) -> KafkaRouter:
    router = KafkaRouter()
    batch = settings.notifications_consumer_batch
    subscribe_batches(
        router, settings, publisher, topics=[MEMBERS], group="notifications.members", handler=projector.on_members,
        max_records=batch, types=types_on(MEMBERS),
        description="Members: consent, age band, home library, origin and guardians for deciding; merge and "
        "erasure; and any member event as a trigger.",
    )  # fmt: skip
    subscribe_batches(
        router, settings, publisher, topics=[FRICTIONS], group="notifications", handler=projector.on_frictions,
        max_records=batch, types=types_on(FRICTIONS),
        description="Frictions: detected ones trigger campaigns (once the members projection caught up); resolved "
        "ones measure the campaigns' effect.",
    )  # fmt: skip
    subscribe_batches(
        router, settings, publisher, topics=[USAGE], group="notifications.usage", handler=projector.on_usage,
        max_records=batch, types=types_on(USAGE),
        description="Loans and activities: participation in propositions for audiences, and triggers.",
    )  # fmt: skip
    subscribe(
        router, settings, publisher, topic=CATALOG, group="notifications.catalog", handler=projector.on_catalog,
        types=CATALOG_TYPES,
        description="The catalogue: proposition names, which library offers what, library names and branches.",
    )  # fmt: skip
    return router
