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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError
from faststream.kafka import KafkaBroker
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.availability import Availability
from shared.events import CloudEvent, model_for, to_kafka
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
    record = to_kafka(event)
    headers = [(name, value.encode()) for name, value in record.headers.items()]
    return Encoded(topic or model_for(event.type).topic, event.id, event.type, record.key, record.value, headers)


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
        await self.publish_encoded([encoded(event) for event in events], contexts=contexts, deadline=deadline)

    async def publish_encoded(
        self,
        records: Sequence[Encoded],
        *,
        contexts: Mapping[str, Context] | None = None,
        deadline: float | None = None,
    ) -> None:
        """`publish_many` for events already in their Kafka form."""
        if not records:
            return
        limit = deadline if deadline is not None else _deadline.get()
        acks: list[asyncio.Future[Any]] = []
        produced = []
        bounded = asyncio.timeout(limit)
        try:
            async with bounded:
                # Handing over can wait too (metadata, a full buffer): the deadline covers it.
                for record, context, route in self._routes(records, contexts or {}):
                    topic = self._settings.topic(record.topic)
                    acks.append(await self._hand_over(record, topic, context, route))
                    produced.append((topic, record.event_type))
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

    async def _hand_over(
        self, record: Encoded, topic: str, context: Context | None, route: list[tuple[str, bytes]] | None
    ) -> Any:
        if route is None:
            headers = {name: value.decode() for name, value in record.headers}
            with within(context):
                return await self._broker.publish(record.value, topic, key=record.key, headers=headers, no_confirm=True)
        return await _producer(self._broker).send(topic, record.value, key=record.key, headers=record.headers + route)

    async def publish_dead_letter(
        self, *, topic: str, key: bytes | None, value: bytes | None, headers: dict[str, str]
    ) -> None:
        await self._broker.publish(value or b"", topic, key=key, headers=headers)
        self.metrics.dead_lettered(topic, headers.get("dlq_reason", "unknown"))


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
