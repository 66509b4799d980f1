"""The platform's topics (DESIGN §3) and their idempotent creation."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from shared.settings import Settings

log = logging.getLogger(__name__)

DEAD_LETTER_SUFFIX = ".dlq"


# How long a topic of pseudonymous member events keeps them (docs/identity.md): long enough for a consumer
# that was down, or dead letters fixed and replayed, to catch up; short enough that an erased member's events
# are gone from every topic within weeks. One period for every such topic, so a member's events always expire
# before the `member.erased` that follows them: a consumer reading from the start never meets a member's events
# without their erasure. Kafka deletes whole segments, so segments roll daily: at most a day longer.
PSEUDONYMOUS_RETENTION = timedelta(days=35)
SEGMENT = timedelta(days=1)


@dataclass(frozen=True)
class Topic:
    name: str
    compacted: bool = False
    # Which field keys a record: member_id keeps one member's events in order on one partition.
    key: str = "member_id"
    # None: the broker's default (compacted topics keep each key's latest record and hold no member's events).
    retention: timedelta | None = PSEUDONYMOUS_RETENTION
    # A topic without dead letters (the failed-events topic, itself a place for what failed) has no `.dlq`.
    has_dead_letters: bool = True

    @property
    def dead_letters(self) -> str:
        return self.name + DEAD_LETTER_SUFFIX

    def config(self) -> dict[str, str]:
        """The topic's configuration (also its dead-letter topic's, which is never compacted)."""
        if self.retention is None:
            return {}
        return {"retention.ms": _ms(self.retention), "segment.ms": _ms(min(SEGMENT, self.retention))}


def _ms(period: timedelta) -> str:
    return str(int(period.total_seconds() * 1000))


MEMBERS = Topic("identity.members.v1")
CATALOG = Topic("propositions.catalog.v1", compacted=True, key="proposition or offering id", retention=None)
USAGE = Topic("propositions.usage.v1")
FRICTIONS = Topic("journey.frictions.v1")
# Facts for the read side (closed absence windows: the denominator of friction rates); no one acts on them.
WINDOWS = Topic("journey.windows.v1")
# journey's own: events of a merged-away member re-keyed to the survivor, so that they reach its partition.
FORWARDS = Topic("journey.forwards.v1")
DELIVERIES = Topic("notifications.deliveries.v1")
CAMPAIGNS = Topic("notifications.campaigns.v1", compacted=True, key="campaign id", retention=None)
# Who did which admin write to what (shared.audit): key ids, no personal data, so not the member topics' retention
# (the broker's default: an operator sets what the audit policy asks); never compacted (the trail is every record).
AUDIT = Topic("admin.audit.v1", key="target", retention=None)
# Items the ingest endpoints refused, with why (`shared.failed_items`): listed and replayed like dead letters,
# kept a week (a bad item may hold personal data).
FAILED_INGEST = Topic("ingest.failed.v1", key="event id", retention=timedelta(days=7), has_dead_letters=False)

ALL_TOPICS: tuple[Topic, ...] = (
    MEMBERS,
    CATALOG,
    USAGE,
    FRICTIONS,
    WINDOWS,
    FORWARDS,
    DELIVERIES,
    CAMPAIGNS,
    AUDIT,
    FAILED_INGEST,
)


class TopicCreationFailed(Exception):
    pass


def _new_topics(settings: Settings, topics: Iterable[Topic]) -> list[NewTopic]:
    new: list[NewTopic] = []
    for topic in topics:
        config = {"cleanup.policy": "compact"} if topic.compacted else topic.config()
        new.append(NewTopic(settings.topic(topic.name), settings.partitions, 1, topic_configs=config))
        # Dead letters keep the original key, so they get the same partitioning; they are never compacted.
        if topic.has_dead_letters:
            new.append(
                NewTopic(settings.topic(topic.dead_letters), settings.partitions, 1, topic_configs=topic.config())
            )
    return new


async def _configure_existing(admin: AIOKafkaAdminClient, wanted: list[NewTopic]) -> None:
    """Give topics made before their retention was set (or with another) the retention they are defined with."""
    with_retention = {t.name: t.topic_configs for t in wanted if "retention.ms" in t.topic_configs}
    if not with_retention:
        return
    asked = [ConfigResource(ConfigResourceType.TOPIC, n, configs={"retention.ms": None}) for n in with_retention]
    stale = [
        name
        for response in await admin.describe_configs(asked)
        for code, _message, _type, name, entries, *_ in response.resources
        # A client not allowed to see a topic's configuration (code != 0) leaves it to one that is.
        if code == 0
        and {entry[0]: entry[1] for entry in entries}.get("retention.ms") != with_retention[name]["retention.ms"]
    ]
    if stale:
        # Not incremental: the definition is the topic's whole configuration (a pseudonymous topic has no other).
        changes = [ConfigResource(ConfigResourceType.TOPIC, n, with_retention[n]) for n in stale]
        answers = [r for response in await admin.alter_configs(changes) for r in response.resources]
        refused = [f"{name} (error {code})" for code, _message, _type, name, *_ in answers if code != 0]
        log.info("set the retention of %d topics", len(answers) - len(refused))
        if refused:
            log.warning("could not set the retention of %s", ", ".join(refused))


async def ensure_topics(settings: Settings, topics: Iterable[Topic] = ALL_TOPICS) -> list[str]:
    """Create the topics (and their dead-letter topics) that do not exist yet; returns the names created."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, client_id="klantreis-topics", **settings.kafka_security()
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        defined = _new_topics(settings, topics)
        await _configure_existing(admin, [t for t in defined if t.name in existing])
        wanted = [t for t in defined if t.name not in existing]
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
