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
from typing import Any, Generic, Literal, Protocol, TypedDict, TypeVar

from aiokafka.errors import (
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
from shared.fetching import FetchAhead, commit, positions, rebalance_tolerated
from shared.kafka_spans import kafka_telemetry
from shared.metrics import ServiceMetrics
from shared.publishing import EventPublisher, PublishTimeout, dead_letter_headers, publish_deadline
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

    @property
    def event_type(self) -> str:
        return self.event.type


class Consumed(Protocol):
    """What the consume loop needs of a decoded record: where it came from and its type (for the metrics)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def event_type(self) -> str: ...


C = TypeVar("C", bound=Consumed)
Handler = Callable[[CloudEvent, EventData], Awaitable[None]]
# The handler gets the decoded records and the last offset of every partition in the batch, dead letters included,
# so that it can record how far it got even when the last records of a partition were dead-lettered.
BatchHandler = Callable[[list[C], dict[tuple[str, int], int]], Awaitable[None]]
# A batch subscriber's own decoding of the records of wanted types (the raw aiokafka records, in order): for each,
# what its handler takes, an InvalidEvent (dead-lettered with its reason) or None (skipped). Without one, records
# are decoded into `Received` (a CloudEvent and its validated payload).
BatchDecoder = Callable[[Sequence[Any]], Sequence[C | InvalidEvent | None]]
DeadLetter = Callable[[Any, str, str], Awaitable[None]]
_DECODING_STEP = 2000  # records decoded ahead between two turns of the event loop (about 10 ms)
# A batch's records of wanted types and their decoding (what the handler takes, InvalidEvent or None for each).
_Prepared = tuple[list[Any], Sequence[C | InvalidEvent | None]]


def dead_letters(publisher: EventPublisher, group_id: str) -> DeadLetter:
    async def dead_letter(record: Any, reason: str, error: str) -> None:
        """The original record, unchanged, on `<its topic>.dlq`, with why and where in `dlq_*` headers."""
        headers = _original_headers(record.headers)
        headers.update(
            dead_letter_headers(
                reason, error, topic=record.topic, group=group_id, partition=record.partition, offset=record.offset
            )
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
) -> Any:
    """Consume `topic` in consumer group `group`, calling `handler(event, data)` for each event (of `types`, when
    given), one record at a time; the consume loop is `subscribe_batches`'s (see `_ConsumeLoop`)."""

    async def each(batch: list[Received], ends: dict[tuple[str, int], int]) -> None:
        for received in batch:
            await handler(received.event, received.data)

    loop = _ConsumeLoop(settings, publisher, settings.group(group), [topic], each, types, None)
    subscriber = router.subscriber(
        settings.topic(topic.name), **_consumer_settings(loop.group_id), title=f"{group}:{topic.name}",
        description=description,
    )  # fmt: skip
    publisher.metrics.watch(loop.group_id, subscriber, settings.kafka_bootstrap, settings.kafka_security())
    subscriber(loop.consume)
    return subscriber


def subscribe_batches(
    router: KafkaRouter,
    settings: Settings,
    publisher: EventPublisher,
    *,
    topics: Sequence[Topic],
    group: str,
    handler: BatchHandler[C],
    max_records: int = 500,
    description: str | None = None,
    types: Collection[str] | None = None,
    decode: BatchDecoder[C] | None = None,
    max_partition_fetch_bytes: int = 1024 * 1024,
) -> Any:
    """Consume `topics` in batches (one Redis round trip and one commit per batch, not per event), with the one
    consume loop (`_ConsumeLoop`). Returns the subscriber (its `.consumer` is the aiokafka consumer once started).
    `decode`: the subscriber's own decoding (`BatchDecoder`), else `Received`; `max_partition_fetch_bytes`:
    aiokafka's, larger for large batches (a fetch brings at most this much of each partition).
    """
    loop = _ConsumeLoop(settings, publisher, settings.group(group), topics, handler, types, decode)
    ahead = loop.fetch_ahead(max_records)
    subscriber = router.subscriber(
        *(settings.topic(t.name) for t in topics),
        batch=True,
        max_records=max_records,
        batch_timeout_ms=200,
        **_consumer_settings(loop.group_id),
        max_partition_fetch_bytes=max_partition_fetch_bytes,
        parser=ahead.parse,
        decoder=_bodies_undecoded,
        listener=ahead,
        title=f"{group}:{'+'.join(t.name for t in topics)}",
        description=description,
    )
    subscriber.get_msg = ahead.get_msg
    publisher.metrics.watch(loop.group_id, subscriber, settings.kafka_bootstrap, settings.kafka_security())
    subscriber(loop.consume)
    return subscriber


async def _bodies_undecoded(message: Any) -> Any:
    """FastStream's decoding of a batch for the handler's argument: none. The consume loop reads the raw records
    (`message.raw_message`); FastStream's own would parse every record again into a message with its own uuid4 and
    JSON-decode its body (as much CPU as analytics' whole decoding)."""
    return message.body


def _consumer_settings(group_id: str) -> dict[str, Any]:
    # Commits are ours (after the effect is stored); a new group starts at the beginning of the topics.
    return {
        "group_id": group_id,
        "ack_policy": AckPolicy.MANUAL,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 1_000,
    }


class _ConsumeLoop(Generic[C]):
    """The one way a record is consumed, by single and batch subscribers alike.

    Records whose `ce_type` header is not one of `types` (when given) are skipped undecoded (before a subscriber's
    own decoder sees them); a filtered consumer
    skips a record without that header that does not decode either (the topic's reader of every type
    dead-letters it). Undecodable records go to the dead-letter topic and the rest of the batch is handled. A
    transient failure retries the batch with backoff; a batch that fails for good is handled again one record at
    a time, so only the record that fails goes to the dead-letter topic. Every record handed out, skipped and
    dead-lettered ones included, is committed after the handler returned: the group's committed offset (the
    lag an operator sees) never stops short of a record nobody will handle.
    """

    def __init__(
        self,
        settings: Settings,
        publisher: EventPublisher,
        group_id: str,
        topics: Sequence[Topic],
        handler: BatchHandler[C],
        types: Collection[str] | None,
        decode: BatchDecoder[C] | None,
    ) -> None:
        self.group_id = group_id
        self._topics = "+".join(settings.topic(t.name) for t in topics)  # the handler time's label
        self._settings = settings
        self._handler = handler
        self._wanted = frozenset(t.encode() for t in types) if types is not None else None
        self._decode: Any = decode or self._received
        self._metrics = publisher.metrics
        self._dead_letter = dead_letters(publisher, group_id)
        self._ahead: FetchAhead[_Prepared[C]] | None = None

    def fetch_ahead(self, max_records: int) -> FetchAhead[_Prepared[C]]:
        """Batches fetched and decoded while the handler of the one before runs (`shared.fetching`)."""
        self._ahead = FetchAhead(max_records, self._prepare_in_steps)
        return self._ahead

    async def consume(self, message: KafkaMessage) -> None:
        if self._ahead is None:
            await self._consume_one(message)
            return
        records = message.raw_message
        consumer = self._ahead.consumer
        assert consumer is not None  # the poll handed out these records
        async with self._ahead.handling(consumer) as current:
            if not current:
                return  # fetched before a rebalance: read again from the committed offsets
            try:
                ends = await self._handle(records, self._ahead.prepared(records))
            except Exception:
                self._cannot_handle()
                await asyncio.sleep(self._settings.handler_retry_backoff_seconds * 10)
                await self._ahead.rewind(consumer, records)
                return
            # Commit only now (this batch's records, not the consumer's position, which is past the next batch).
            await commit(consumer, ends)

    async def _consume_one(self, message: KafkaMessage) -> None:
        try:
            await self._handle((message.raw_message,))
        except Exception:
            self._cannot_handle()
            await asyncio.sleep(self._settings.handler_retry_backoff_seconds * 10)
            await message.nack()
            return
        # Commit only now: the effects (and the dead letters) are stored.
        await _commit(message)

    def _cannot_handle(self) -> None:
        # Not even the dead letter could be written (Kafka away?): rewind to these records rather than let the
        # next commit skip them, and slow the retry loop down.
        log.exception("cannot handle or dead-letter records of %s; retrying them", self.group_id)

    def _prepare(self, records: Sequence[Any]) -> _Prepared[C]:
        """The CPU part of handling `records`: the records of wanted types, and their decoding."""
        declared = self._of_wanted_types(records)
        return declared, self._decode(declared)

    async def _prepare_in_steps(self, records: Sequence[Any]) -> _Prepared[C]:
        """`_prepare`, a few thousand records at a time, letting the handler in flight go on between them: its next
        statement waits for the event loop, and a whole batch's decoding holds it for a tenth of a second or more."""
        declared = self._of_wanted_types(records)
        decoded: list[C | InvalidEvent | None] = []
        for start in range(0, len(declared), _DECODING_STEP):
            await asyncio.sleep(0)
            decoded.extend(self._decode(declared[start : start + _DECODING_STEP]))
        return declared, decoded

    async def _handle(self, records: Sequence[Any], prepared: _Prepared[C] | None = None) -> dict[tuple[str, int], int]:
        """Handle `records`; returns the last offset of each of their partitions (all handled or dead-lettered)."""
        batch: list[C] = []
        ends = positions(records)
        declared, decoded_all = prepared if prepared is not None else self._prepare(records)
        for record, decoded in zip(declared, decoded_all, strict=True):
            if isinstance(decoded, InvalidEvent):
                await self._dead_letter(record, "invalid_event", str(decoded))
            elif decoded is not None:
                batch.append(decoded)
        started = time.perf_counter()
        failure = await self._attempt(batch, ends)
        if failure is None:
            self._metrics.handled(self.group_id, self._topics, time.perf_counter() - started)
            self._count(batch)
            return ends
        by_position = {(r.topic, r.partition, r.offset): r for r in records}
        for received in batch:
            if len(batch) > 1:
                failure = await self._attempt([received], {(received.topic, received.partition): received.offset})
            if failure is None:
                self._count([received])
            else:
                await self._dead_letter(
                    by_position[(received.topic, received.partition, received.offset)],
                    _reason(failure),
                    f"{type(failure).__name__}: {failure}",
                )
        await self._attempt([], ends)
        return ends

    def _of_wanted_types(self, records: Sequence[Any]) -> list[Any]:
        return [r for r in records if self._declared_wanted(r)]

    def _declared_wanted(self, record: Any) -> bool:
        """False for a record whose `ce_type` header names a type this consumer does not want."""
        if self._wanted is None:
            return True
        declared = dict(record.headers or ()).get("ce_type")
        return declared is None or declared in self._wanted

    def _received(self, records: Sequence[Any]) -> list[Received | InvalidEvent | None]:
        """The default decoding: each record into a CloudEvent and its validated payload."""
        return [self._one_received(record) for record in records]

    def _one_received(self, record: Any) -> Received | InvalidEvent | None:
        try:
            event = from_kafka(record.value, record.headers)
            if self._wanted is not None and event.type.encode() not in self._wanted:
                return None
            return Received(
                record.topic, record.partition, record.offset, event, typed_data(event),
                sampled_traceparent(record.headers),
            )  # fmt: skip
        except InvalidEvent as exc:
            if self._wanted is not None and dict(record.headers or ()).get("ce_type") is None:
                return None
            return exc

    async def _attempt(self, batch: list[C], ends: dict[tuple[str, int], int]) -> BaseException | None:
        retries = self._settings.handler_retries
        for retry in range(retries + 1):
            try:
                await self._handler(batch, ends)
                return None
            except TRANSIENT_ERRORS as exc:
                if retry == retries:
                    return exc
                expected_retry("transient failure (a dependency briefly away)", exc, retry + 1)
                await asyncio.sleep(self._settings.handler_retry_backoff_seconds * 2**retry)
            except Exception as exc:
                return exc
        return None

    def _count(self, handled: Sequence[C]) -> None:
        for topic, types in _types_by_topic(handled).items():
            self._metrics.consumed(topic, types)


def _reason(failure: BaseException) -> str:
    if isinstance(failure, InvalidEvent):
        return "invalid_event"
    return "retries_exhausted" if isinstance(failure, TRANSIENT_ERRORS) else "handler_error"


async def _commit(message: KafkaMessage) -> None:
    """Commit the offsets (`rebalance_tolerated`)."""
    with rebalance_tolerated():
        await message.ack()


def _types_by_topic(handled: Sequence[Consumed]) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = {}
    for (topic, kind), count in Counter([(r.topic, r.event_type) for r in handled]).items():
        counts.setdefault(topic, Counter())[kind] = count
    return counts
