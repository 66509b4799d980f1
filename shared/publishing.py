"""Publishing CloudEvents: a batch handed to the producer at once, and an HTTP request's wait for acks bounded.

The platform's producer (`shared.kafka.make_broker`) waits for all in-sync replicas and is idempotent, so an
acknowledged event is durable and a retried send is not doubled. What a request publishes waits at most
`KLANTREIS_PUBLISH_TIMEOUT` (`publish_deadline`, set for every HTTP request by `shared.service`), then
`PublishTimeout`: a 503, and the client retries with the same ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError
from aiokafka.producer.message_accumulator import BatchBuilder
from faststream.kafka import KafkaBroker
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.availability import Availability
from shared.events import CloudEvent, kafka_headers, kafka_value, model_for
from shared.metrics import ServiceMetrics
from shared.settings import Settings
from shared.telemetry import within

log = logging.getLogger(__name__)
_PROPAGATOR = TraceContextTextMapPropagator()


class Encoded(NamedTuple):
    """An event already in its Kafka form (binary mode), for producers that build records themselves rather than a
    CloudEvent model first (journey's derived events: tens of thousands a second)."""

    topic: str  # the platform topic's name, without the deployment's prefix
    event_id: str
    event_type: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]  # the CloudEvent attributes as `ce_` headers, content-type included


def encoded(event: CloudEvent, topic: str | None = None) -> Encoded:
    """The event in its Kafka form, on `topic` (default: the topic its type belongs to)."""
    key = event.subject.encode() if event.subject is not None else None
    return Encoded(
        topic or model_for(event.type).topic, event.id, event.type, key, kafka_value(event), kafka_headers(event)
    )


class PublishTimeout(KafkaTimeoutError):  # type: ignore[misc]  # aiokafka has no type hints
    """Kafka did not acknowledge every event of a publish within its deadline: take none of them as accepted.

    Some may still reach Kafka later (the idempotent producer keeps retrying them): publishing the same events again
    is the way out, and consumers, which drop event ids they handled already, make the second copy harmless."""


# The longest a publish in this context waits for Kafka's acks; None: as long as it takes.
_deadline: ContextVar[float | None] = ContextVar("klantreis_publish_deadline", default=None)


@contextlib.contextmanager
def publish_deadline(seconds: float | None) -> Iterator[None]:
    """Publishing in this block raises PublishTimeout after `seconds` rather than wait for Kafka for good.

    HTTP requests run under it (a client gets 503 and retries); consumers and timers do not: a dependency that is
    down is waited for there, never a reason to give up on a record."""
    token = _deadline.set(seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


class EventPublisher:
    """Publishes CloudEvents on the topic their type belongs to, keyed by subject, in binary mode."""

    def __init__(self, broker: KafkaBroker, settings: Settings, metrics: ServiceMetrics | None = None) -> None:
        self._broker = broker
        self._settings = settings
        self.metrics = metrics or ServiceMetrics("klantreis", export=False)
        self.kafka = Availability("kafka", self._ping)

    async def _ping(self) -> bool:
        return bool(await self._broker.ping(timeout=1.0))

    async def learn_topics(self, topics: Iterable[str]) -> None:
        """Fetch the partitions of `topics` now, at start: a topic created a moment ago may not be in the producer's
        metadata yet, and the first request would spend its publish deadline waiting for it."""
        producer = _producer(self._broker)
        try:
            await asyncio.wait_for(asyncio.gather(*(producer.partitions_for(topic) for topic in topics)), 10.0)
        except (KafkaError, TimeoutError) as exc:
            log.warning("topics unknown to Kafka at start (%s): the first publishes wait", type(exc).__name__)

    async def publish(self, event: CloudEvent, *, deadline: float | None = None) -> None:
        """Returns once Kafka acknowledged the event (acks=all)."""
        await self.publish_many([event], deadline=deadline)

    async def publish_many(
        self,
        events: Sequence[CloudEvent],
        *,
        contexts: Mapping[str, Context] | None = None,
        deadline: float | None = None,
    ) -> None:
        """Hands every event to the producer before waiting, so a batch costs one round of acks, not one each.

        Waits at most `deadline` seconds (default: the `publish_deadline` of the context; none outside one), then
        raises PublishTimeout. An event is published in the trace context `contexts` holds under its id (default:
        the current one): work that continues a trace other than the current one, such as a timer that fires later.
        """
        topics: dict[str, str] = {}  # by event type
        records = [encoded(e, topics.get(e.type) or topics.setdefault(e.type, model_for(e.type).topic)) for e in events]
        await self.publish_encoded(records, contexts=contexts, deadline=deadline)

    async def publish_encoded(
        self,
        records: Sequence[Encoded],
        *,
        contexts: Mapping[str, Context] | None = None,
        deadline: float | None = None,
        batch_bytes: int | None = None,
    ) -> None:
        """`publish_many` for events already in their Kafka form. `batch_bytes`: batches of this size instead of the
        producer's, for a caller that sends thousands at once (each partition gets one batch per produce request,
        one request at a time: larger batches, fewer round trips and less work for the broker)."""
        if not records:
            return
        limit = deadline if deadline is not None else _deadline.get()
        acks: list[asyncio.Future[Any]] = []
        produced = []
        direct: list[tuple[str, Encoded, list[tuple[str, bytes]]]] = []
        bounded = asyncio.timeout(limit)
        try:
            async with bounded:
                # Handing over can wait too (metadata, a full buffer): the deadline covers it.
                topics: dict[str, str] = {}  # the platform's name → this deployment's
                for record, context, route in self._routes(records, contexts or {}):
                    topic = topics.get(record.topic) or topics.setdefault(
                        record.topic, self._settings.topic(record.topic)
                    )
                    if route is not None:
                        direct.append((topic, record, route))
                    else:
                        # The direct ones before it first: each partition gets the events in the order given.
                        await _send_batched(_producer(self._broker), direct, acks, batch_bytes)
                        direct = []
                        acks.append(await self._through_faststream(record, topic, context))
                    produced.append((topic, record.event_type))
                await _send_batched(_producer(self._broker), direct, acks, batch_bytes)
                # One by one: most are acknowledged by the time the first is (a cancelled wait for one leaves its
                # record in the producer, which sends it all the same).
                for ack in acks:
                    await ack
        except TimeoutError:
            if not bounded.expired():
                raise
            _abandon(acks)
            self.kafka.failed(f"no acknowledgement within {limit:g} s")
            raise PublishTimeout(f"Kafka did not acknowledge {len(records)} event(s) within {limit:g} s") from None
        except KafkaError as exc:
            _abandon(acks)
            self.kafka.failed(type(exc).__name__)
            raise
        self.kafka.succeeded()
        self.metrics.produced(produced)

    def _routes(
        self, records: Sequence[Encoded], contexts: Mapping[str, Context]
    ) -> Iterator[tuple[Encoded, Context | None, list[tuple[str, bytes]] | None]]:
        """Each event with how it goes: None through FastStream, whose middleware makes the producer spans of a
        sampled trace; else straight to the producer with the (unsampled) trace context in a header, which skips
        the middleware's per-record work for spans nobody records."""
        shared = _trace_headers(None)
        for record in records:
            context = contexts.get(record.event_id)
            yield record, context, shared if context is None else _trace_headers(context)

    async def _through_faststream(self, record: Encoded, topic: str, context: Context | None) -> Any:
        headers = {name: value.decode() for name, value in record.headers}
        with within(context):
            return await self._broker.publish(record.value, topic, key=record.key, headers=headers, no_confirm=True)

    async def publish_dead_letter(
        self, *, topic: str, key: bytes | None, value: bytes | None, headers: dict[str, str]
    ) -> None:
        await self._broker.publish(value or b"", topic, key=key, headers=headers)
        self.metrics.dead_lettered(topic, headers.get("dlq_reason", "unknown"))


def dead_letter_headers(
    reason: str,
    error: str,
    *,
    topic: str,
    group: str,
    partition: int | None = None,
    offset: int | None = None,
    at: datetime | None = None,
) -> dict[str, str]:
    """The `dlq_*` headers of a dead letter: why (`dlq_reason`, `dlq_error`) and where it came from (`dlq_topic`,
    and `dlq_partition`/`dlq_offset` when it was a record there), for `klantreis dead-letters`."""
    headers = {"dlq_reason": reason, "dlq_error": error[:500], "dlq_topic": topic}
    if partition is not None and offset is not None:
        headers |= {"dlq_partition": str(partition), "dlq_offset": str(offset)}
    return headers | {"dlq_group": group, "dlq_at": (at or datetime.now(UTC)).isoformat()}


async def _send_batched(
    producer: AIOKafkaProducer,
    records: Sequence[tuple[str, Encoded, list[tuple[str, bytes]]]],
    acks: list[asyncio.Future[Any]],
    batch_bytes: int | None = None,
) -> None:
    """Hand `records` (topic, record, extra headers) to the producer as whole batches, one or more per partition;
    the futures of their acks go to `acks` as they are handed over.

    The same records on the same partitions in the same order per partition as one `producer.send` each, but
    without send's work per record (metadata wait, partitioner, a future each): 5,000 records in a third of the
    time. The batches are those the producer would make (its batch size; sequence numbers of the
    idempotent producer are given when a batch is sent, as for any other). A full batch is on its way while the
    next ones are built: the producer takes one batch per partition per request, so the requests' round trips
    overlap the building, as they do under `send`."""
    if not records:
        return
    partitions: dict[str, list[int]] = {}
    chosen: dict[tuple[str, bytes | None], int] = {}  # a member's events in one call: partitioned once
    filling: dict[tuple[str, int], BatchBuilder] = {}
    handing: dict[tuple[str, int], asyncio.Queue[BatchBuilder | None]] = {}  # each partition's full batches
    try:
        async with asyncio.TaskGroup() as hands:

            def hand_over(place: tuple[str, int], builder: BatchBuilder) -> None:
                if place not in handing:
                    handing[place] = asyncio.Queue()
                    hands.create_task(_hand_over_in_order(producer, place, handing[place], acks))
                handing[place].put_nowait(builder)

            for topic, encoded_event, extra in records:
                key = encoded_event.key
                where = chosen.get((topic, key))
                if where is None:
                    if topic not in partitions:
                        partitions[topic] = sorted(await producer.partitions_for(topic))
                    where = chosen[(topic, key)] = partition_for(key, partitions[topic])
                headers = encoded_event.headers + extra if extra else encoded_event.headers
                record = (key, encoded_event.value, headers)
                place = (topic, where)
                builder = filling.get(place)
                if builder is None or not _appended(builder, *record):
                    if builder is not None:
                        hand_over(place, builder)
                        await asyncio.sleep(0)  # lets it go
                    builder = filling[place] = _new_batch(producer, batch_bytes)
                    if not _appended(builder, *record):
                        raise MessageSizeTooLargeError(f"event {encoded_event.event_id} does not fit in a batch")
            for place, builder in filling.items():
                hand_over(place, builder)
            for queue in handing.values():
                queue.put_nowait(None)
    except BaseExceptionGroup as failed:  # the first failure, as if handed over one by one
        raise failed.exceptions[0] from None


async def _hand_over_in_order(
    producer: AIOKafkaProducer,
    place: tuple[str, int],
    builders: asyncio.Queue[BatchBuilder | None],
    acks: list[asyncio.Future[Any]],
) -> None:
    """Hands one partition's batches to the producer in their order; each waits for the one before to be sent."""
    topic, partition = place
    while (builder := await builders.get()) is not None:
        builder.close()  # complete: sent without lingering
        acks.append(await producer.send_batch(builder, topic, partition=partition))


def _new_batch(producer: AIOKafkaProducer, batch_bytes: int | None) -> BatchBuilder:
    """An empty batch of the producer's size, or of `batch_bytes` (aiokafka's `create_batch` has no size)."""
    if batch_bytes is None:
        return producer.create_batch()
    return BatchBuilder(
        batch_bytes, producer._message_accumulator._compression_type, is_transactional=False,
        key_serializer=producer._key_serializer, value_serializer=producer._value_serializer,
    )  # fmt: skip


def _appended(builder: BatchBuilder, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> bool:
    return builder.append(timestamp=None, key=key, value=value, headers=headers) is not None


_MURMUR_M = 0x5BD1E995
_MASK32 = 0xFFFFFFFF


def partition_for(key: bytes | None, partitions: Sequence[int]) -> int:
    """The partition Kafka's default partitioner picks for `key` among `partitions` (sorted): murmur2 of the key,
    as the Java client and aiokafka compute it; a random one for no key."""
    if key is None:
        return random.choice(partitions)
    return partitions[(_murmur2(key) & 0x7FFFFFFF) % len(partitions)]


def _murmur2(data: bytes) -> int:
    # aiokafka's `partitioner.murmur2`, word by word: half its time (a tenth of handing over a record).
    length = len(data)
    h = 0x9747B28C ^ length
    words = length >> 2
    for k in struct.unpack_from(f"<{words}I", data):
        k = (k * _MURMUR_M) & _MASK32
        k ^= k >> 24
        k = (k * _MURMUR_M) & _MASK32
        h = ((h * _MURMUR_M) & _MASK32) ^ k
    tail = length & 3
    if tail:
        base = words << 2
        if tail >= 3:
            h ^= data[base + 2] << 16
        if tail >= 2:
            h ^= data[base + 1] << 8
        h ^= data[base]
        h = (h * _MURMUR_M) & _MASK32
    h ^= h >> 13
    h = (h * _MURMUR_M) & _MASK32
    return h ^ (h >> 15)


def _trace_headers(context: Context | None) -> list[tuple[str, bytes]] | None:
    """None when `context` (default: the current one) is sampled and this process records spans; else the headers
    carrying the context on (maybe none)."""
    span_context = trace.get_current_span(context).get_span_context()
    if not span_context.is_valid:
        return []
    if span_context.trace_flags.sampled and isinstance(trace.get_tracer_provider(), TracerProvider):
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context)
    return [(name, value.encode()) for name, value in carrier.items()]


def _producer(broker: KafkaBroker) -> AIOKafkaProducer:
    # FastStream 0.7 (pinned <0.8) keeps its aiokafka producer here; the one producer keeps one order per partition.
    producer: AIOKafkaProducer = broker.config.producer._producer.producer  # type: ignore[attr-defined]
    return producer


def _abandon(acks: Sequence[asyncio.Future[Any]]) -> None:
    """Stop caring about acks still to come: their failures are known already (no "never retrieved" noise)."""
    for ack in acks:
        if ack.done():
            _retrieve(ack)
        else:
            ack.add_done_callback(_retrieve)


def _retrieve(ack: asyncio.Future[Any]) -> None:
    if not ack.cancelled():
        ack.exception()
