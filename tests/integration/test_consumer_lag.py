"""Consumers never stall silently, on the real broker: every consumer commits past the records it skips and the
ones it dead-letters, and the lag `GET /metrics` reports is the broker's (the group's committed offsets against
the end offsets, as `kafka-consumer-groups --describe` shows them), held records included."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaRouter
from prometheus_client.parser import text_string_to_metric_families

from shared.events import CloudEvent, EventData, to_kafka
from shared.events.journey import FrictionDetected, FrictionResolved
from shared.kafka import Received, subscribe, subscribe_batches
from shared.service import ServiceParts, build_app
from shared.settings import Settings
from shared.topics import FRICTIONS
from tests.support import committed_and_ends, eventually, header, read_to_end, running

pytestmark = pytest.mark.integration

RULE = "online-signup-not-activated"


def detected() -> CloudEvent:
    now = datetime.now(UTC)
    data: EventData = FrictionDetected(
        friction_id=str(uuid.uuid4()), rule=RULE, start_event_id=str(uuid.uuid4()), started_at=now - timedelta(days=14),
        due_at=now, library="oba", age_band="18-64",
    )  # fmt: skip
    return CloudEvent.create(data, subject=str(uuid.uuid4()), source="/journey", library="oba", time=now)


def resolved() -> CloudEvent:
    now = datetime.now(UTC)
    data: EventData = FrictionResolved(
        friction_id=str(uuid.uuid4()),
        rule=RULE,
        resolved_by_event_id=str(uuid.uuid4()),
        resolved_at=now,
        seconds_to_resolve=60.0,
    )
    return CloudEvent.create(data, subject=str(uuid.uuid4()), source="/journey", library="oba", time=now)


@dataclass
class Consumers:
    """Two consumers of the frictions topic, as the services have them: one reads only detected frictions in
    batches (notifications' way), one reads every record one at a time and can be held mid-handler."""

    client: httpx.AsyncClient | None = None
    handled: list[str] = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    hold: str | None = None


@pytest.fixture
async def consumers(settings: Settings) -> AsyncIterator[Consumers]:
    parts = ServiceParts.connect("lagged", settings)
    router = KafkaRouter()
    found = Consumers()

    async def detected_only(batch: list[Received], ends: dict[tuple[str, int], int]) -> None:
        found.handled.extend(r.event.id for r in batch)

    async def every_one(event: CloudEvent, data: EventData) -> None:
        if event.id == found.hold:
            await found.released.wait()

    subscribe_batches(
        router, settings, parts.publisher, topics=[FRICTIONS], group="lagged.batches", handler=detected_only,
        types=[FrictionDetected.event_type],
    )  # fmt: skip
    subscribe(router, settings, parts.publisher, topic=FRICTIONS, group="lagged.single", handler=every_one)
    app = build_app(parts, title="lagged", description="two consumers under test", kafka=router)
    async with running(app) as client:
        found.client = client
        yield found
        found.released.set()


async def send(settings: Settings, *records: tuple[bytes, list[tuple[str, bytes]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for value, headers in records:
            # One key: every record on one partition, in this order.
            await producer.send_and_wait(settings.topic(FRICTIONS.name), value, key=b"same", headers=headers)
    finally:
        await producer.stop()


def binary(event: CloudEvent) -> tuple[bytes, list[tuple[str, bytes]]]:
    record = to_kafka(event)
    return record.value, [(k, v.encode()) for k, v in record.headers.items()]


async def broker_lag(settings: Settings, group: str) -> int:
    """The group's lag on the frictions topic as `kafka-consumer-groups --describe` computes it: end offset minus
    committed offset (the whole partition where the group never committed), summed over the partitions."""
    committed, ends = await committed_and_ends(settings.kafka_bootstrap, settings.group(group),
                                               settings.topic(FRICTIONS.name))  # fmt: skip
    return sum(end - committed[partition] for partition, end in ends.items())


async def metrics_lag(client: httpx.AsyncClient | None, settings: Settings, group: str) -> int:
    assert client is not None
    text = (await client.get("/metrics")).text
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "klantreis_consumer_lag" and sample.labels["group"] == settings.group(group)
        )
    )


async def test_consumers_commit_past_records_they_skip_or_dead_letter_and_metrics_show_the_broker_s_lag(
    settings: Settings, consumers: Consumers
) -> None:
    wanted, unwanted, held = detected(), resolved(), resolved()
    consumers.hold = held.id
    junk = (b"not a cloud event", [("content-type", b"text/plain")])
    # The last records are ones the batch consumer skips (a type it does not read, a record that is no event) and
    # the single consumer dead-letters (the junk): nothing but their own commit takes either group past them.
    await send(settings, binary(wanted), binary(held), binary(unwanted), junk)

    dlq = settings.topic(FRICTIONS.dead_letters)

    async def dead_lettered() -> list[object]:
        return [r for r in await read_to_end(settings.kafka_bootstrap, dlq) if r.value == junk[0]]

    # The single consumer holds the second record in its handler: the broker sees the group 3 records short (the
    # held one and the two after it), and so does /metrics, though the consumer has fetched past it.
    async def held_lag() -> bool:
        return (
            await broker_lag(settings, "lagged.single")
            == 3
            == await metrics_lag(consumers.client, settings, "lagged.single")
        )

    await eventually(held_lag)

    async def wanted_handled() -> bool:
        return consumers.handled == [wanted.id]

    await eventually(wanted_handled)
    consumers.released.set()

    async def caught_up(group: str) -> bool:
        return await broker_lag(settings, group) == 0 == await metrics_lag(consumers.client, settings, group)

    await eventually(lambda: caught_up("lagged.batches"))
    await eventually(lambda: caught_up("lagged.single"))
    [dead] = await eventually(dead_lettered)
    assert header(dead, "dlq_reason") == "invalid_event"
    assert header(dead, "dlq_group") == settings.group("lagged.single")
    # The batch consumer skipped the junk and the unwanted type undecoded: it dead-lettered nothing.
    assert all(header(r, "dlq_group") != settings.group("lagged.batches") for r in await read_to_end(
        settings.kafka_bootstrap, dlq
    ))  # fmt: skip
    assert consumers.handled == [wanted.id]
