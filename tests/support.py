"""Helpers for tests that run services in-process against the real broker and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared import telemetry
from shared.consumers import read_to_end

if TYPE_CHECKING:
    import pytest

    from deploy.runtime import RedisNode

__all__ = ["eventually", "header", "problem", "publish_as_harness", "read_to_end", "read_topic", "running"]

T = TypeVar("T")


def spans_kept_in(exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    """Every span this process finishes from now on, also in `exporter` (filtered as the services export theirs).

    A process has one tracer provider, set once (OpenTelemetry ignores a second): the one of the SDK already
    installed by an earlier test module gets the exporter added, else one is installed as the services configure
    theirs. A module that set a provider of its own would see no span when another module came first."""
    processor = SimpleSpanProcessor(exporter)
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.add_span_processor(telemetry.SpanFilter(processor))
    else:
        trace.set_tracer_provider(telemetry.tracer_provider("klantreis-tests", [processor]))
    return exporter


@contextlib.asynccontextmanager
async def running(app: FastAPI, key: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan (Kafka subscribers, background loops) and talk to it over ASGI, with `key`."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as client:
            yield client


async def eventually(probe: Callable[[], Awaitable[T | None]], *, within: float = 30.0, every: float = 0.2) -> T:
    """Poll until the probe returns something truthy; fail with the waiting time if it never does."""
    deadline = time.monotonic() + within
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing after {within} s")
        await asyncio.sleep(every)


async def read_topic(
    bootstrap: str, topic: str, *, until: Callable[[list[ConsumerRecord[Any, Any]]], bool], within: float = 30.0
) -> list[ConsumerRecord[Any, Any]]:
    """Read a topic from the start until `until(records)` holds; fails after `timeout` seconds."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    records: list[ConsumerRecord[Any, Any]] = []
    deadline = time.monotonic() + within
    try:
        while not until(records):
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: condition not met after {within} s; read {len(records)} records")
            batch = await consumer.getmany(timeout_ms=200)
            for partition_records in batch.values():
                records.extend(partition_records)
        return records
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def harness_publisher(settings: Any) -> AsyncIterator[Any]:
    """A publisher of the tests' own client, with ``settings`` naming the harness: for input a service consumes,
    which a service's own publisher may not write (each service writes only its own topics; tests/principals.py)."""
    from shared.service import ServiceParts

    parts = ServiceParts.connect("test-input", settings)
    await parts.broker.start()
    try:
        yield parts.publisher
    finally:
        await parts.broker.stop()
        await parts.redis.aclose()


async def publish_as_harness(settings: Any, events: Sequence[Any]) -> None:
    """Publish ``events`` (CloudEvents) once as the tests' own client (see `harness_publisher`)."""
    async with harness_publisher(settings) as publisher:
        await publisher.publish_many(events)


async def klantreis(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The `klantreis` command, as an operator runs it (in a thread: it runs its own event loop); its output,
    once it exited 0."""
    from deploy.cli import main

    capsys.readouterr()
    code = await asyncio.to_thread(main, list(argv))
    out = capsys.readouterr().out
    assert code == 0, out
    return out


@contextlib.contextmanager
def own_redis(data_dir: Path) -> Iterator[RedisNode]:
    """A redis-server of the test's own (`deploy.runtime.RedisNode`, as deployed) with its data in `data_dir`,
    ready, and stopped at the end."""
    from deploy import runtime

    runtime.ensure_redis_server()
    node = runtime.RedisNode(data_dir=data_dir, port=runtime.free_port())
    node.start(detach=False)
    try:
        node.wait_ready()
        yield node
    finally:
        node.stop()


def posted_event(
    type_: str, subject: str | None, data: dict[str, Any] | None = None, **attributes: Any
) -> dict[str, Any]:
    """A structured CloudEvent as a platform posts it (JSON): a new id, now, from oba's kiosk unless `attributes`
    say otherwise."""
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "/libraries/oba/kiosk",
        "type": type_,
        "time": datetime.now(UTC).isoformat(),
        "subject": subject,
        "library": "oba",
        "channel": "offline",
        "platform": "kiosk",
        "data": data or {},
        **attributes,
    }


def problem(response: httpx.Response) -> tuple[int, str | None]:
    """An error answer's status and the problem's detail: a 404 of a route's own says what does not exist, which a
    route that does not exist (also a 404) cannot say."""
    assert response.headers["content-type"] == "application/problem+json", response.text
    detail: str | None = response.json().get("detail")
    return response.status_code, detail


def header(record: ConsumerRecord[Any, Any], name: str) -> str | None:
    for key, value in record.headers:
        if key == name:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


async def publish_seed_libraries(settings: Any, producer: Any = None) -> list[str]:
    """The seed's libraries on the settings' catalogue topic, as propositions publishes them (`library_changed`):
    what every service checks a library code against. Returns their codes. `producer`: a started
    AIOKafkaProducer to send with (a new one otherwise)."""
    from aiokafka import AIOKafkaProducer

    from shared.events import CloudEvent
    from shared.events.envelope import to_kafka
    from shared.topics import CATALOG, ensure_topics

    await ensure_topics(settings, [CATALOG])
    own = producer is None
    if own:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        await producer.start()
    codes = []
    try:
        for data in _seed_libraries():
            library = data.library
            event = CloudEvent.create(data, subject=f"library:{library}", source="/tests", library=library)
            record = to_kafka(event)
            await producer.send(
                settings.topic(CATALOG.name),
                record.value,
                key=record.key,
                headers=[(k, v.encode()) for k, v in record.headers.items()],
            )
            codes.append(library)
        await producer.flush()
    finally:
        if own:
            await producer.stop()
    return codes


@functools.cache
def _seed_libraries() -> tuple[Any, ...]:
    """The seed's libraries as `library_changed` data, read once (the seed's YAML takes a third of a second)."""
    from services.propositions.seed import read_seed
    from shared.events.propositions import LibraryChanged

    return tuple(
        LibraryChanged(library=library.code, **library.model_dump(mode="json", exclude={"code", "offerings"}))
        for library in read_seed().libraries
    )


async def committed_and_ends(bootstrap: str, group: str, topic: str) -> tuple[dict[int, int], dict[int, int]]:
    """A group's committed offset (0 where it never committed) and the end offset of every partition of `topic`:
    what `kafka-consumer-groups --describe` shows."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    await reader.start()
    try:
        [described] = await admin.describe_topics([topic])
        partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
        ends = await reader.end_offsets(partitions)
    finally:
        await reader.stop()
        await admin.close()
    return {tp.partition: max(0, committed[tp].offset) for tp in partitions}, {
        tp.partition: ends[tp] for tp in partitions
    }
