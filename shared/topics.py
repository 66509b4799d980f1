"""The platform's topics (DESIGN §3) and their idempotent creation."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.settings import Settings

log = logging.getLogger(__name__)

DEAD_LETTER_SUFFIX = ".dlq"


@dataclass(frozen=True)
class Topic:
    name: str
    compacted: bool = False
    # Which field keys a record: member_id keeps one member's events in order on one partition.
    key: str = "member_id"

    @property
    def dead_letters(self) -> str:
        return self.name + DEAD_LETTER_SUFFIX


MEMBERS = Topic("identity.members.v1")
CATALOG = Topic("propositions.catalog.v1", compacted=True, key="proposition or offering id")
USAGE = Topic("propositions.usage.v1")
FRICTIONS = Topic("journey.frictions.v1")
# Facts for the read side (closed absence windows: the denominator of friction rates); no one acts on them.
WINDOWS = Topic("journey.windows.v1")
# journey's own: events of a merged-away member re-keyed to the survivor, so that they reach its partition.
FORWARDS = Topic("journey.forwards.v1")
DELIVERIES = Topic("notifications.deliveries.v1")
CAMPAIGNS = Topic("notifications.campaigns.v1", compacted=True, key="campaign id")

ALL_TOPICS: tuple[Topic, ...] = (MEMBERS, CATALOG, USAGE, FRICTIONS, WINDOWS, FORWARDS, DELIVERIES, CAMPAIGNS)


class TopicCreationFailed(Exception):
    pass


def _new_topics(settings: Settings, topics: Iterable[Topic]) -> list[NewTopic]:
    new: list[NewTopic] = []
    for topic in topics:
        config = {"cleanup.policy": "compact"} if topic.compacted else {}
        new.append(NewTopic(settings.topic(topic.name), settings.partitions, 1, topic_configs=config))
        # Dead letters keep the original key, so they get the same partitioning; they are never compacted.
        new.append(NewTopic(settings.topic(topic.dead_letters), settings.partitions, 1))
    return new


async def ensure_topics(settings: Settings, topics: Iterable[Topic] = ALL_TOPICS) -> list[str]:
    """Create the topics (and their dead-letter topics) that do not exist yet; returns the names created."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, client_id="klantreis-topics", **settings.kafka_security()
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in _new_topics(settings, topics) if t.name not in existing]
        if not wanted:
            return []
        response = await admin.create_topics(wanted)
        created: list[str] = []
        for name, code, *rest in response.topic_errors:
            if code == 0:
                created.append(name)
            elif code != TopicAlreadyExistsError.errno:
                # Another process creating the same topic meanwhile is fine; anything else is not.
                raise TopicCreationFailed(f"cannot create topic {name}: error {code} {rest[0] if rest else ''}")
        log.info("created %d topics", len(created))
        return created
    finally:
        await admin.close()
