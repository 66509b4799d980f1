"""notifications' Kafka side: what it projects and what triggers campaigns, one consumer group per topic.

Every handler is idempotent by event id: projections overwrite (consent by event time), triggers leave a
`decided` marker with their events, the catalogue is upserted.

On the members and usage topics notifications reads the event types the platform knows and leaves others
alone: `shared.kafka.subscribe` decodes a record before looking at its type, so without the filter below a
record of an unknown type would be dead-lettered once more by notifications' group, next to journey's copy
(journey reads every member and usage event and dead-letters what it cannot read).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any

from faststream import BaseMiddleware
from faststream.kafka import KafkaRouter

from services.notifications.deciding import Decider
from shared.events import event_types
from shared.kafka import EventPublisher, subscribe
from shared.settings import Settings
from shared.topics import CATALOG, FRICTIONS, MEMBERS, USAGE, Topic

# Only the records notifications reads from the catalogue; other kinds (activities…) are skipped undecoded.
CATALOG_TYPES = frozenset(
    f"nl.bibliotheek.catalog.{kind}.v1"
    for kind in ("proposition_published", "proposition_retired", "offering_changed", "library_changed")
)


def types_on(topic: Topic) -> frozenset[str]:
    return frozenset(name for name, model in event_types().items() if model.topic == topic.name)


def known_types_only(known: Collection[str]) -> type[BaseMiddleware]:
    """A router middleware passing on only records whose `ce_type` header is one of `known`."""
    wanted = frozenset(known)

    class KnownTypesOnly(BaseMiddleware):
        async def consume_scope(self, call_next: Callable[[Any], Awaitable[Any]], msg: Any) -> Any:
            if msg.headers.get("ce_type") not in wanted:
                return None  # not ours to read: committed with the next record this group handles
            return await call_next(msg)

    return KnownTypesOnly


def notifications_router(decider: Decider, settings: Settings, publisher: EventPublisher) -> KafkaRouter:
    router = KafkaRouter()
    subscribe(
        router, settings, publisher, topic=FRICTIONS, group="notifications", handler=decider.on_friction,
        description="Frictions: detected ones trigger campaigns; resolved ones measure the campaigns' effect.",
    )  # fmt: skip
    subscribe(
        router, settings, publisher, topic=CATALOG, group="notifications.catalog", handler=decider.on_catalog,
        types=CATALOG_TYPES,
        description="The catalogue: proposition names, which library offers what, library names and branches.",
    )  # fmt: skip
    known = types_on(MEMBERS) | types_on(USAGE)
    shared_topics = KafkaRouter(middlewares=(known_types_only(known),))
    subscribe(
        shared_topics, settings, publisher, topic=MEMBERS, group="notifications.members",
        handler=decider.on_member_event, types=types_on(MEMBERS),
        description="Members: consent, age band, home library, origin and guardians for deciding; merge and "
        "erasure; and any member event as a trigger.",
    )  # fmt: skip
    subscribe(
        shared_topics, settings, publisher, topic=USAGE, group="notifications.usage",
        handler=decider.on_usage_event, types=types_on(USAGE),
        description="Loans and activities: participation in propositions for audiences, and triggers.",
    )  # fmt: skip
    router.include_router(shared_topics)
    return router
