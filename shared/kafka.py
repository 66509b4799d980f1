"""Kafka for every service: the broker factory, the event publisher (`shared.publishing`) and the one way to
consume events.

Library defaults are not safe here (see DESIGN §5): the producer waits for all in-sync replicas and is
idempotent; consumers commit only after the handler stored its effect, retry transient failures with backoff
and send anything they cannot handle to `<topic>.dlq` with the reason, then carry on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict

from aiokafka.errors import (
    CommitFailedError,
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
)
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaRouter
from faststream.kafka.annotations import KafkaMessage
from faststream.security import SASLScram512
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.events import CloudEvent, EventData, InvalidEvent, from_kafka, typed_data
from shared.kafka_spans import kafka_telemetry
from shared.metrics import ServiceMetrics
from shared.publishing import EventPublisher, PublishTimeout, publish_deadline
from shared.settings import Settings
from shared.telemetry import expected_retry, failed, sampled_traceparent
from shared.topics import DEAD_LETTER_SUFFIX, Topic

log = logging.getLogger(__name__)
# The publisher lives in shared.publishing; importing it from here keeps working.
__all__ = ["PRODUCER_SETTINGS", "TRANSIENT_ERRORS", "EventPublisher", "PublishTimeout", "Received", "make_broker",
           "publish_deadline", "subscribe", "subscribe_batches"]  # fmt: skip

# Failures that say "not now" rather than "never": worth retrying before giving up on a message.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
    ConnectionError,
    TimeoutError,
)


class ProducerSettings(TypedDict):
    acks: Literal["all"]
    enable_idempotence: bool
    linger_ms: int
    max_batch_size: int


# The platform's producer (the benchmarks' raw baselines use the same): it waits for all in-sync replicas and is
# idempotent; a few ms of linger lets concurrent sends share one produce request. Batches of aiokafka's default
# size: 512 KB ones made a 5,000-event POST faster, but raw producing twice as fast (bench/ingest.py).
PRODUCER_SETTINGS = ProducerSettings(acks="all", enable_idempotence=True, linger_ms=5, max_batch_size=16 * 1024)


def make_broker(settings: Settings, *, service: str, metrics: ServiceMetrics | None = None) -> KafkaBroker:
    # FastStream's publish and process durations go to the service's metrics; counts are ours (per type).
    telemetry = kafka_telemetry(metrics.provider if metrics is not None else None)
    # FastStream's own way of saying what `settings.kafka_security()` says to the other clients.
    security = settings.kafka_security()
    return KafkaBroker(
        settings.kafka_bootstrap,
        client_id=f"klantreis-{service}",
        security=SASLScram512(security["sasl_plain_username"], security["sasl_plain_password"]) if security else None,
        **PRODUCER_SETTINGS,
        allow_auto_create_topics=False,
        graceful_timeout=15.0,
        middlewares=(telemetry,),
        # FastStream logs every message at the broker's log level; keep that at DEBUG (no per-message logs).
        logger=logging.getLogger(f"klantreis.{service}.kafka"),
        log_level=logging.DEBUG,
    )


Handler = Callable[[CloudEvent, EventData], Awaitable[None]]
DeadLetter = Callable[[Any, str, str], Awaitable[None]]


def dead_letters(publisher: EventPublisher, group_id: str) -> DeadLetter:
    async def dead_letter(record: Any, reason: str, error: str) -> None:
        """The original record, unchanged, on `<its topic>.dlq`, with why and where in `dlq_*` headers."""
        headers = _original_headers(record.headers)
        headers.update(
            {
                "dlq_reason": reason,
                "dlq_error": error[:500],
                "dlq_topic": record.topic,
                "dlq_partition": str(record.partition),
                "dlq_offset": str(record.offset),
                "dlq_group": group_id,
                "dlq_at": datetime.now(UTC).isoformat(),
            }
        )
        await publisher.publish_dead_letter(
            topic=record.topic + DEAD_LETTER_SUFFIX, key=record.key, value=record.value, headers=headers
        )
        failed(f"dead-lettered: {reason}")
        # One line per failure, with where the message is: never its content.
        log.warning(
            "dead-lettered %s[%s]@%s for %s: %s", record.topic, record.partition, record.offset, group_id, reason
        )

    return dead_letter


def _original_headers(raw: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    # Keep the original headers readable; bytes that are not UTF-8 (a broken producer) are escaped, not lost.
    return {name: value.decode("utf-8", "backslashreplace") for name, value in raw or ()}


def subscribe(
    router: KafkaRouter,
    settings: Settings,
    publisher: EventPublisher,
    *,
    topic: Topic,
    group: str,
    handler: Handler,
    types: Collection[str] | None = None,
    description: str | None = None,
) -> None:
    """Consume `topic` in consumer group `group`, calling `handler(event, data)` for events of `types`.

    The offset is committed after the handler returns, so the handler must store its effect idempotently by
    event id. Undecodable events, and events whose handling fails for good, go to the dead-letter topic.
    """
    physical = settings.topic(topic.name)
    group_id = settings.group(group)
    wanted = frozenset(types) if types is not None else None

    dead_letter = dead_letters(publisher, group_id)

    async def handle(record: Any) -> None:
        try:
            event = from_kafka(record.value, record.headers)
            if wanted is not None and event.type not in wanted:
                return
            data = typed_data(event)
        except InvalidEvent as exc:
            await dead_letter(record, "invalid_event", str(exc))
            return
        started = time.perf_counter()
        for attempt in range(settings.handler_retries + 1):
            try:
                await handler(event, data)
                publisher.metrics.handled(group_id, physical, time.perf_counter() - started)
                publisher.metrics.consumed(physical, {event.type: 1})
                return
            except TRANSIENT_ERRORS as exc:
                if attempt == settings.handler_retries:
                    await dead_letter(record, "retries_exhausted", f"{type(exc).__name__}: {exc}")
                    return
                expected_retry("transient failure (a dependency briefly away)", exc, attempt + 1)
                await asyncio.sleep(settings.handler_retry_backoff_seconds * 2**attempt)
            except InvalidEvent as exc:
                await dead_letter(record, "invalid_event", str(exc))
                return
            except Exception as exc:
                await dead_letter(record, "handler_error", f"{type(exc).__name__}: {exc}")
                return

    subscriber = router.subscriber(
        physical,
        group_id=group_id,
        ack_policy=AckPolicy.MANUAL,
        auto_offset_reset="earliest",
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
        title=f"{group}:{topic.name}",
        description=description,
    )
    publisher.metrics.watch(group_id, subscriber)

    @subscriber
    async def consume(message: KafkaMessage) -> None:
        try:
            await handle(message.raw_message)
        except Exception:
            # Not even the dead letter could be written (Kafka away?): rewind to this message rather than
            # let the next commit skip it, and slow the retry loop down.
            log.exception("cannot handle or dead-letter a message of %s; retrying it", physical)
            await asyncio.sleep(settings.handler_retry_backoff_seconds * 10)
            await message.nack()
            return
        # Commit only now: the effect (or the dead letter) is stored.
        await _commit(message)


async def _commit(message: KafkaMessage) -> None:
    """Commit the offsets; a rebalance that moved the partition meanwhile is expected, not a failure: its new
    owner handles the uncommitted records again (effects are idempotent by event id)."""
    try:
        await message.ack()
    except CommitFailedError as exc:
        expected_retry("rebalance: the partition moved before the commit; its new owner handles it again", exc, 1)


@dataclass(frozen=True)
class Received:
    """One decoded record of a batch, with where it came from."""

    topic: str
    partition: int
    offset: int
    event: CloudEvent
    data: EventData
    # The W3C trace context the record carries, when its trace is sampled: for work that continues it later.
    traceparent: str | None = None


# The handler gets the decoded records and the last offset of every partition in the batch, dead letters included,
# so that it can record how far it got even when the last records of a partition were dead-lettered.
BatchHandler = Callable[[list[Received], dict[tuple[str, int], int]], Awaitable[None]]


def subscribe_batches(
    router: KafkaRouter,
    settings: Settings,
    publisher: EventPublisher,
    *,
    topics: Sequence[Topic],
    group: str,
    handler: BatchHandler,
    max_records: int = 500,
    description: str | None = None,
    types: Collection[str] | None = None,
) -> Any:
    """Consume `topics` in batches (one Redis round trip and one commit per batch, not per event).

    Undecodable records go to the dead-letter topic and the rest of the batch is handled. A transient failure
    retries the batch with backoff; a batch that fails for good is handled again one record at a time, so only
    the record that fails goes to the dead-letter topic. Offsets are committed after the handler returned.
    Records whose `ce_type` header is not one of `types` (when given) are skipped undecoded (yet counted in the
    partitions' last offsets). Returns the subscriber (its `.consumer` is the aiokafka consumer once started).
    """
    group_id = settings.group(group)
    wanted = frozenset(t.encode() for t in types) if types is not None else None
    dead_letter = dead_letters(publisher, group_id)
    metrics = publisher.metrics
    joined = "+".join(settings.topic(t.name) for t in topics)

    def count(handled: Sequence[Received]) -> None:
        for topic, types in _types_by_topic(handled).items():
            metrics.consumed(topic, types)

    async def attempt(batch: list[Received], ends: dict[tuple[str, int], int]) -> BaseException | None:
        for retry in range(settings.handler_retries + 1):
            try:
                await handler(batch, ends)
                return None
            except TRANSIENT_ERRORS as exc:
                if retry == settings.handler_retries:
                    return exc
                expected_retry("transient failure (a dependency briefly away)", exc, retry + 1)
                await asyncio.sleep(settings.handler_retry_backoff_seconds * 2**retry)
            except Exception as exc:
                return exc
        return None

    async def handle(records: Sequence[Any]) -> None:
        batch: list[Received] = []
        ends: dict[tuple[str, int], int] = {}
        for record in records:
            ends[(record.topic, record.partition)] = max(record.offset, ends.get((record.topic, record.partition), -1))
            if wanted is not None and dict(record.headers or ()).get("ce_type") not in wanted:
                continue
            try:
                event = from_kafka(record.value, record.headers)
                batch.append(
                    Received(
                        record.topic,
                        record.partition,
                        record.offset,
                        event,
                        typed_data(event),
                        sampled_traceparent(record.headers),
                    )
                )
            except InvalidEvent as exc:
                await dead_letter(record, "invalid_event", str(exc))
        started = time.perf_counter()
        if await attempt(batch, ends) is None:
            metrics.handled(group_id, joined, time.perf_counter() - started)
            count(batch)
            return
        by_position = {(r.topic, r.partition, r.offset): r for r in records}
        for received in batch:
            failure = await attempt([received], {(received.topic, received.partition): received.offset})
            if failure is None:
                count([received])
            else:
                reason = "retries_exhausted" if isinstance(failure, TRANSIENT_ERRORS) else "handler_error"
                record = by_position[(received.topic, received.partition, received.offset)]
                await dead_letter(record, reason, f"{type(failure).__name__}: {failure}")
        await attempt([], ends)

    subscriber = router.subscriber(
        *(settings.topic(t.name) for t in topics),
        batch=True,
        max_records=max_records,
        batch_timeout_ms=200,
        group_id=group_id,
        ack_policy=AckPolicy.MANUAL,
        auto_offset_reset="earliest",
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
        title=f"{group}:{'+'.join(t.name for t in topics)}",
        description=description,
    )
    _no_sleep_on_empty_polls(subscriber, max_records)
    metrics.watch(group_id, subscriber)

    @subscriber
    async def consume(message: KafkaMessage) -> None:
        records = message.raw_message if isinstance(message.raw_message, tuple) else (message.raw_message,)
        try:
            await handle(records)
        except Exception:
            log.exception("cannot handle or dead-letter a batch of %s; retrying it", group_id)
            await asyncio.sleep(settings.handler_retry_backoff_seconds * 10)
            await message.nack()
            return
        await _commit(message)

    return subscriber


def _no_sleep_on_empty_polls(subscriber: Any, max_records: int) -> None:
    """FastStream's batch subscriber sleeps `batch_timeout_ms` after a poll that found nothing, so a record that
    arrives then waits up to 200 ms (a latency floor for every friction and message). Here a poll waits for records
    up to that long and returns as soon as one arrives; an empty poll is simply polled again."""

    async def get_msg(consumer: Any) -> tuple[Any, ...]:
        fetched = await consumer.getmany(timeout_ms=200, max_records=max_records)
        return tuple(record for records in fetched.values() for record in records)

    subscriber.get_msg = get_msg


def _types_by_topic(handled: Sequence[Received]) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = {}
    for received in handled:
        counts.setdefault(received.topic, Counter())[received.event.type] += 1
    return counts
