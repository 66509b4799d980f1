"""CloudEvents in structured mode on Kafka (`content-type: application/cloudevents+json`, the whole envelope in the
value), as the Kafka binding lets a producer write them: consumers handle them like binary-mode records, through
the one-record and the batch subscriber alike, and dead-letter none of them."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaRouter

from shared.events import STRUCTURED, CloudEvent, EventData, to_structured
from shared.events.journey import FrictionDetected
from shared.kafka import Received, subscribe, subscribe_batches
from shared.service import ServiceParts, build_app
from shared.settings import Settings
from shared.topics import FRICTIONS
from tests.support import eventually, header, read_to_end, running

pytestmark = pytest.mark.integration


def friction(member: str) -> CloudEvent:
    now = datetime.now(UTC)
    data: EventData = FrictionDetected(
        friction_id=str(uuid.uuid4()), rule="online-signup-not-activated", start_event_id=str(uuid.uuid4()),
        started_at=now - timedelta(days=14), due_at=now, library="oba", age_band="18-64",
    )  # fmt: skip
    return CloudEvent.create(data, subject=member, source="/a-platform", library="oba", time=now)


@dataclass
class Seen:
    one_by_one: list[CloudEvent] = field(default_factory=list)
    in_batches: list[CloudEvent] = field(default_factory=list)

    async def one(self, event: CloudEvent, data: EventData) -> None:
        self.one_by_one.append(event)

    async def batch(self, received: list[Received], ends: dict[tuple[str, int], int]) -> None:
        self.in_batches.extend(r.event for r in received)


@pytest.fixture
async def seen(settings: Settings) -> AsyncIterator[Seen]:
    parts = ServiceParts.connect("structured", settings)
    seen = Seen()
    router = KafkaRouter()
    subscribe(router, settings, parts.publisher, topic=FRICTIONS, group="one", handler=seen.one)
    subscribe_batches(router, settings, parts.publisher, topics=[FRICTIONS], group="batches", handler=seen.batch,
                      types=[FrictionDetected.event_type])  # fmt: skip
    async with running(build_app(parts, title="structured", description="consumers under test", kafka=router)):
        yield seen


async def produce(settings: Settings, value: bytes, key: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        headers = [("content-type", f"{STRUCTURED}; charset=utf-8".encode())]
        await producer.send_and_wait(settings.topic(FRICTIONS.name), value, key=key, headers=headers)
    finally:
        await producer.stop()


async def dead_letter_count(settings: Settings) -> int:
    return len(await read_to_end(settings.kafka_bootstrap, settings.topic(FRICTIONS.dead_letters)))


async def test_a_structured_mode_cloudevent_is_handled_by_every_kind_of_consumer_and_not_dead_lettered(
    settings: Settings, seen: Seen
) -> None:
    event = friction("member-structured")

    await produce(settings, json.dumps(to_structured(event)).encode(), b"member-structured")

    await eventually(lambda: _async(len(seen.one_by_one) == 1 and len(seen.in_batches) == 1))
    assert seen.one_by_one == [event] and seen.in_batches == [event]
    assert await dead_letter_count(settings) == 0


async def test_a_structured_record_that_is_not_a_cloudevent_is_dead_lettered_naming_the_field(
    settings: Settings, seen: Seen
) -> None:
    envelope = to_structured(friction("member-broken"))
    del envelope["source"]

    await produce(settings, json.dumps(envelope).encode(), b"member-broken")

    # The consumer of every type dead-letters it with the reason; one of some types only skips it (its type is
    # unknown, so it may not be one of them: shared.kafka).
    await eventually(lambda: _dead_letters_at_least(settings, 1))
    [letter] = await read_to_end(settings.kafka_bootstrap, settings.topic(FRICTIONS.dead_letters))
    assert (header(letter, "dlq_reason"), header(letter, "dlq_group")) == ("invalid_event", settings.group("one"))
    assert "source" in (header(letter, "dlq_error") or "")
    assert seen.one_by_one == [] and seen.in_batches == []


async def _dead_letters_at_least(settings: Settings, count: int) -> bool:
    return await dead_letter_count(settings) >= count


async def _async(value: bool) -> bool:
    return value
