"""A partition's derived events when its owner stops between sending them and forgetting them (a stop cut short,
a crash, an owner fenced off mid-batch), or when a send times out after Kafka took part of it: the next attempt,
by the same owner or the next one, sends only what Kafka does not have yet. On the real broker and Redis."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import pytest
from aiokafka import AIOKafkaProducer

from services.journey.store import JourneyStore, PartitionWrite
from shared.consumers import read_to_end
from shared.publishing import Encoded
from shared.redis import make_redis
from shared.settings import Settings
from shared.topics import ALL_TOPICS, ensure_topics
from tests.integration.test_journey import journey_settings
from tests.integration.test_journey_scaling import instance
from tests.support import eventually, header

pytestmark = pytest.mark.integration

TOPIC = "journey.frictions.v1"


def derived(member: str) -> Encoded:
    event_id = str(uuid.uuid4())
    headers = [("ce_id", event_id.encode()), ("ce_type", b"nl.bibliotheek.friction.detected.v1"),
               ("ce_subject", member.encode()), ("content-type", b"application/json")]  # fmt: skip
    return Encoded(TOPIC, event_id, "nl.bibliotheek.friction.detected.v1", member.encode(), b"{}", headers)


async def test_a_new_owner_sends_only_what_a_stopped_owner_had_not_sent(settings: Settings) -> None:
    scaled = journey_settings(settings.model_copy(update={"partitions": 2}))
    await ensure_topics(scaled, ALL_TOPICS)
    member = str(uuid.uuid4())
    sent, unsent = derived(member), derived(member)
    redis = make_redis(scaled, binary=True)
    try:
        store = JourneyStore(redis, scaled)
        # The earlier owner stored a batch with two derived events, sent the first, and stopped.
        stored_ms = int(time.time() * 1000) - 10_000
        epoch = await store.claim(0)
        await store.write(0, epoch, PartitionWrite(outbox=[sent, unsent], stored_ms=stored_ms))
        producer = AIOKafkaProducer(bootstrap_servers=scaled.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(scaled.topic(TOPIC), sent.value, key=sent.key, headers=sent.headers)
        finally:
            await producer.stop()

        async with instance(scaled) as app:

            async def owned() -> bool:
                return 0 in app.state.detector.owned

            async def outbox_empty() -> bool:
                return not await redis.hlen(scaled.key("journey", "outbox", "0"))

            await eventually(owned)
            await eventually(outbox_empty)
    finally:
        await redis.aclose()

    records = await read_to_end(scaled.kafka_bootstrap, scaled.topic(TOPIC))
    counts = Counter(header(r, "ce_id") for r in records)
    assert counts == {sent.event_id: 1, unsent.event_id: 1}
