"""Publishing a batch at once (`EventPublisher.publish_many`): what consumers of the topic see."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from aiokafka.partitioner import DefaultPartitioner

from shared.consumers import read_to_end
from shared.events import CloudEvent, from_kafka
from shared.events.members import ConsentChanged, LoginFailed
from shared.settings import Settings
from shared.topics import MEMBERS, ensure_topics
from tests.support import publish_as_harness


async def test_a_batch_lands_whole_each_member_s_events_in_order_on_the_partition_kafka_picks_for_the_member(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"partitions": 3})
    await ensure_topics(settings, [MEMBERS])
    members = [str(uuid.uuid4()) for _ in range(40)]
    kinds = (LoginFailed(login_platform="kiosk", reason="bad_credentials"),
             ConsentChanged(medium="email", purpose="marketing", granted=True))  # fmt: skip
    # Enough for several producer batches per partition (16 KB each).
    events = [
        CloudEvent.create(kinds[i % 2], subject=members[i % len(members)], source="/libraries/oba/kiosk",
                          library="oba", channel="offline", platform="kiosk", time=datetime.now(UTC))
        for i in range(800)
    ]  # fmt: skip
    await publish_as_harness(settings, events)  # a service's publisher, as the tests' own client

    records = await read_to_end(settings.kafka_bootstrap, settings.topic(MEMBERS.name))
    assert sorted((from_kafka(r.value, r.headers) for r in records), key=lambda e: e.id) == sorted(
        events, key=lambda e: e.id
    )
    for member in members:
        posted = [e.id for e in events if e.subject == member]
        landed = sorted((r for r in records if r.key == member.encode()), key=lambda r: r.offset)
        assert [from_kafka(r.value, r.headers).id for r in landed] == posted
        assert {r.partition for r in landed} == {DefaultPartitioner()(member.encode(), [0, 1, 2], [0, 1, 2])}
