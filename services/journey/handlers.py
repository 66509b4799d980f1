"""journey's Kafka side: member and usage events in, frictions and closed windows out.

The instance that owns partition p owns it on every input topic (shared/partitioned.py) and keeps the partition's
journeys, timers and clocks in memory (services/journey/partition.py). A batch is applied in memory, then its
changed states, offsets, clocks and derived events are written to Redis in one fenced step, then the derived
events are published, then forgotten. A Redis or Kafka outage is waited out; only a record that can never be
processed goes to the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition
from opentelemetry import trace
from opentelemetry.context import Context
from tenacity import wait_exponential

from services.journey import engine, outcomes
from services.journey.decoding import decode_batch
from services.journey.derived import forwarded, friction_detected, friction_resolved, window_closed
from services.journey.partition import Applied, Partition
from services.journey.rules import ImmediateRule, JourneyEvent, RuleCatalogue
from services.journey.settings import JourneySettings
from services.journey.store import Fenced, JourneyStore, PartitionWrite, PreparedWrite, stored_at
from shared import telemetry
from shared.consumers import event_ids_since
from shared.events import InvalidEvent
from shared.events.registry import TYPE_PREFIX
from shared.kafka import TRANSIENT_ERRORS, EventPublisher, dead_letters
from shared.partitioned import PartitionedConsumer
from shared.publishing import Encoded
from shared.retrying import waiting_out
from shared.topics import FORWARDS, MEMBERS, USAGE

log = logging.getLogger(__name__)

INPUTS = (MEMBERS, USAGE, FORWARDS)
BACKOFF_MAX = 5.0
# A new owner waits this long after an earlier owner stored a batch before looking what of it reached Kafka.
HANDOVER_GRACE_SECONDS = 3.0
# Record timestamps come from the sending host's clock: look a little earlier than the batch was stored.
CLOCK_MARGIN_MS = 2_000
# A batch's derived events go out in batches this large (the producer's are 16 KB: one per partition per round trip).
PUBLISH_BATCH_BYTES = 256 * 1024


class Traces:
    """Sampled traces only, in memory: derived events continue the trace of the event that caused them, and a
    timer's decision starts a trace of its own linked to the event that started the timer (days earlier). Not
    stored: after a restart or a hand-over a timer's decision is a trace without the link."""

    KEPT = 100_000

    def __init__(self) -> None:
        self._by_event: dict[str, str] = {}  # event id → its sampled traceparent
        self._contexts: dict[str, Context] = {}  # derived event id → the context to publish it in
        self._spans: dict[str, trace.Span] = {}  # derived event id → the fired timer's span, ended once published

    def remember(self, event_id: str, traceparent: str) -> None:
        self._by_event[event_id] = traceparent
        if len(self._by_event) > self.KEPT:
            del self._by_event[next(iter(self._by_event))]

    def continued(self, event_id: str, cause_id: str) -> None:
        if not self._by_event:
            return
        context = telemetry.context_from(self._by_event.get(cause_id))
        if context is not None:
            self._contexts[event_id] = context

    def derived(self, event_id: str, friction: outcomes.Friction, *, timed: bool) -> None:
        if not self._by_event:
            return
        if not timed:
            self.continued(event_id, friction.start_event_id)
            return
        started = self._by_event.pop(friction.start_event_id, None)
        if started is None:
            return
        span = telemetry.tracer().start_span(
            f"fire {friction.rule}",
            context=Context(),
            links=telemetry.link_to(started, **{"klantreis.link": "timer started by"}),
            attributes=telemetry.span_attributes(
                rule=friction.rule, member_id=friction.member_id, friction_id=friction.friction_id
            ),
        )
        self._spans[event_id] = span
        self._contexts[event_id] = trace.set_span_in_context(span)

    def take(self, event_ids: Sequence[str]) -> tuple[dict[str, Context], list[trace.Span]]:
        if not (self._contexts or self._spans):
            return {}, []
        contexts = {i: c for i in event_ids if (c := self._contexts.pop(i, None)) is not None}
        spans = [s for i in event_ids if (s := self._spans.pop(i, None)) is not None]
        return contexts, spans


@dataclass
class Owned:
    partition: Partition
    epoch: int
    offsets: dict[str, int]  # physical topic → last offset applied
    last_record: dict[str, float]  # physical topic → monotonic time its last record was consumed
    backfill_since: float | None = None  # monotonic time a history began to load
    clocks_written: dict[str, int] | None = None  # the clocks last handed to the store


class FrictionDetector:
    """The partitions this instance owns, and what happens to them per batch."""

    def __init__(
        self, catalogue: RuleCatalogue, store: JourneyStore, publisher: EventPublisher, settings: JourneySettings
    ) -> None:
        self._engine = engine.Engine(
            catalogue.rules,
            int(settings.journey_allowed_lateness.total_seconds() * 1000),
            closed_windows=settings.journey_publish_windows,
        )
        self._store = store
        self._publisher = publisher
        self._settings = settings
        self._topics = [settings.topic(t.name) for t in INPUTS]
        self.group_id = settings.group("journey")
        self._dead_letter = dead_letters(publisher, self.group_id)
        self.owned: dict[int, Owned] = {}
        self.applied = 0  # events applied by this process (for benchmarks and operators)
        self.first_batch_at: float | None = None  # time.monotonic() when the first batch came in (for benchmarks)
        self.done = 0  # of them, those whose batch's effects are stored and published
        self.consumer = PartitionedConsumer(
            settings, topics=self._topics, group_id=self.group_id, owner=self,
            max_records=settings.journey_batch_size, client_id="klantreis-journey",
        )  # fmt: skip
        self.wall: Callable[[], float] = time.time
        self._traces = Traces()

    # ------------------------------------------------------------------------------------- ownership

    async def assigned(self, partitions: list[int]) -> dict[TopicPartition, int]:
        resume: dict[TopicPartition, int] = {}
        for number in partitions:
            epoch = await self._retrying(lambda n=number: self._store.claim(n))  # type: ignore[misc]
            restored = await self._retrying(lambda n=number, e=epoch: self._store.restore(n, e))  # type: ignore[misc]
            partition = Partition(self._engine, number, self._topics)
            partition.restore(restored.members)
            partition.set_clocks(restored.clocks)
            # Quiet only once a fetch has shown the topic caught up and nothing came for a while after that.
            since = time.monotonic()
            self.owned[number] = Owned(partition, epoch, dict(restored.offsets), dict.fromkeys(self._topics, since))
            for stored, records in restored.outbox:
                # Derived events an earlier owner stored and may or may not have sent before it stopped.
                await self._publish(number, stored, records, Counter(), Counter(), handed_over=True)
            for topic, offset in restored.offsets.items():
                resume[TopicPartition(topic, number)] = offset + 1
            log.info("journey: partition %d restored (%d members, %d timers, epoch %d)", number,
                     len(restored.members), partition.pending_timers(), epoch)  # fmt: skip
        return resume

    async def revoked(self, partitions: list[int]) -> None:
        for number in partitions:
            self.owned.pop(number, None)

    # ------------------------------------------------------------------------------------------ batches

    async def process(self, batch: dict[TopicPartition, list[Any]]) -> Awaitable[None] | None:
        started = time.perf_counter()
        if self.first_batch_at is None:
            self.first_batch_at = time.monotonic()
        by_partition: dict[int, list[tuple[TopicPartition, list[Any]]]] = {}
        for tp, records in batch.items():
            by_partition.setdefault(tp.partition, []).append((tp, records))
        writes: dict[int, PartitionWrite] = {}
        for number, inputs in by_partition.items():
            owned = self.owned.get(number)
            if owned is not None:
                writes[number] = await self._apply(owned, inputs)
                await asyncio.sleep(0)  # the previous batch's write, in flight, goes on meanwhile
        self._publisher.metrics.handled(self.group_id, "+".join(self._topics), time.perf_counter() - started)
        return self._store_and_publish(writes)

    async def _apply(self, owned: Owned, inputs: list[tuple[TopicPartition, list[Any]]]) -> PartitionWrite:
        partition, offsets = owned.partition, owned.offsets
        change = PartitionWrite()
        streams: list[list[tuple[int, str, JourneyEvent]]] = []  # per topic: (time, topic, event)
        types: Counter[tuple[str, str]] = Counter()
        for tp, records in inputs:
            done = offsets.get(tp.topic, -1)
            decoded: list[tuple[int, str, JourneyEvent]] = []
            fresh = [r for r in records if r.offset > done]  # others were applied before a crash or a rebalance
            self.applied += len(fresh)
            change.records += len(fresh)
            batch = decode_batch(fresh, self._engine.kinds)
            for record, found in zip(fresh, batch.events, strict=True):
                if isinstance(found, InvalidEvent):
                    await self._dead_letter(record, "invalid_event", str(found))
                elif found is not None:
                    decoded.append((found.t, tp.topic, found))
                    types[(tp.topic, found.kind)] += 1
            for at, traceparent in batch.traceparents.items():
                if isinstance(event := batch.events[at], JourneyEvent):
                    self._traces.remember(event.id, traceparent)
            streams.append(decoded)
            offsets[tp.topic] = change.offsets[tp.topic] = records[-1].offset
            owned.last_record[tp.topic] = time.monotonic()
        self._mark_quiet(owned)
        partition.feed_merged(streams)
        partition.advance()
        self._collect(partition, change)
        for topic in {topic for topic, _ in types}:
            self._publisher.metrics.consumed(topic, {TYPE_PREFIX + k: n for (t, k), n in types.items() if t == topic})
        return change

    def _mark_quiet(self, owned: Owned) -> None:
        """Which input topics of the partition are caught up and have had nothing new for a while (and since a
        history began to load); in live operation their clocks follow the wall clock."""
        consumer = self.consumer.consumer
        partition = owned.partition
        now = time.monotonic()
        if partition.backfilling() and owned.backfill_since is None:
            owned.backfill_since = now
        elif not partition.backfilling():
            owned.backfill_since = None
        idle = self._settings.journey_idle_seconds
        quiet, backfill_quiet = set(), set()
        for topic in self._topics:
            high = consumer.highwater(TopicPartition(topic, partition.number)) if consumer else None
            if high is None or owned.offsets.get(topic, -1) + 1 < high:
                continue
            last = owned.last_record.get(topic, 0.0)
            if now - last >= idle:
                quiet.add(topic)
            if owned.backfill_since is not None and now - max(last, owned.backfill_since) >= idle:
                backfill_quiet.add(topic)
        wall = int(self.wall() * 1000) if self._settings.journey_clock == "auto" else None
        partition.observe(quiet, backfill_quiet, wall)

    def _collect(self, partition: Partition, change: PartitionWrite) -> None:
        applied: Applied = partition.take()
        change.states.update({m: partition.members[m] for m in applied.changed if m in partition.members})
        change.erased |= applied.erased
        change.clocks.update({f"{t}|{s}": c for (t, s), c in partition.clocks.items()})
        outcome = applied.outcome
        for friction in outcome.detected:
            record = friction_detected(friction)
            change.outbox.append(record)
            change.detected[friction.rule] += 1
            self._traces.derived(
                record.event_id, friction, timed=not isinstance(self._engine.by_id[friction.rule], ImmediateRule)
            )
        for resolution in outcome.resolved:
            record = friction_resolved(resolution)
            change.outbox.append(record)
            change.resolved[resolution.rule] += 1
            self._traces.continued(record.event_id, resolution.event_id)
        change.outbox += [window_closed(w) for w in outcome.closed]  # none unless published (the engine's setting)
        change.outbox += [forwarded(f.survivor, f.event) for f in applied.forwards]

    async def idle(self) -> Awaitable[None] | None:
        """Nothing arrived: quiet topics follow the wall clock (live operation), and timers may be due by it."""
        writes = {}
        for number, owned in self.owned.items():
            self._mark_quiet(owned)
            if owned.partition.due() or owned.partition.quiet >= owned.partition.topics:
                owned.partition.advance()
                if owned.partition.quiet_at is not None:
                    owned.partition.end_backfill()
                change = PartitionWrite()
                self._collect(owned.partition, change)
                if change.states or change.erased or change.outbox or change.clocks != owned.clocks_written:
                    writes[number] = change  # else nothing to store (a replay's quiet topics keep their clocks)
        return self._store_and_publish(writes) if writes else None

    def settled(self) -> bool:
        """Every record of the owned partitions applied, quiet, and no timer due: nothing left to decide until
        new events arrive or the clock moves on."""
        if not self.owned or self.consumer.consumer is None or self.consumer.writing():
            return False
        for owned in self.owned.values():
            self._mark_quiet(owned)
            if len(owned.partition.quiet) < len(self._topics) or owned.partition.due():
                return False
        return True

    # ------------------------------------------------------------------------------------- store, publish

    def _store_and_publish(self, writes: dict[int, PartitionWrite]) -> Awaitable[None] | None:
        """What stores and then publishes the batch's effects, partition by partition side by side. The states are
        encoded now: the next batch changes them while this is under way."""
        prepared = []
        for number, change in writes.items():
            owned = self.owned.get(number)
            if owned is not None:
                prepared.append((number, self._store.prepared(number, owned.epoch, change), change))
                owned.clocks_written = change.clocks
        return self._store_and_publish_all(prepared) if prepared else None

    async def _store_and_publish_all(self, prepared: list[tuple[int, PreparedWrite, PartitionWrite]]) -> None:
        await asyncio.gather(*(self._store_and_publish_one(*p) for p in prepared))

    async def _store_and_publish_one(self, number: int, write: PreparedWrite, change: PartitionWrite) -> None:
        if number not in self.owned:
            return  # let go meanwhile (fenced by a newer owner)
        try:
            await self._retrying(lambda: self._store.send(write))
        except Fenced:
            log.warning("journey: partition %d has a newer owner; letting it go", number)
            self.owned.pop(number, None)
            return
        if change.outbox:
            await self._publish(number, change.outbox_field(), change.outbox, change.detected, change.resolved)
        self.done += change.records

    async def _publish(
        self,
        number: int,
        stored: str,
        records: list[Encoded],
        detected: Counter[str],
        resolved: Counter[str],
        *,
        handed_over: bool = False,
    ) -> None:
        """Send a stored batch's derived events, then forget them. Nothing is sent twice: after an attempt whose
        outcome is unknown (a time-out; an earlier owner that stopped between sending and forgetting), only the
        events Kafka does not have yet are sent, found by their ids among the records since the batch was stored."""
        contexts, spans = self._traces.take([r.event_id for r in records])
        since = stored_at(stored)
        unsure = handed_over
        if handed_over and since is not None:
            # An owner fenced off a moment ago may still be sending this very batch: give it time to land.
            await asyncio.sleep(max(0.0, since / 1000 + HANDOVER_GRACE_SECONDS - time.time()))

        async def send() -> None:
            nonlocal unsure
            pending = records
            if unsure and since is not None:
                sent = await event_ids_since(
                    self._settings.kafka_bootstrap, sorted({self._settings.topic(r.topic) for r in records}),
                    since - CLOCK_MARGIN_MS, self._settings.kafka_security(),
                )  # fmt: skip
                pending = [r for r in records if r.event_id not in sent]
            unsure = True  # should this attempt fail, part of it may have reached Kafka all the same
            await self._publisher.publish_encoded(pending, contexts=contexts, batch_bytes=PUBLISH_BATCH_BYTES)

        try:
            await self._retrying(send)
        finally:
            for span in spans:
                span.end()
        await self._retrying(lambda: self._store.forget_outbox(number, stored))
        self._publisher.metrics.frictions(detected, resolved)

    async def _retrying(self, action: Callable[[], Any]) -> Any:
        """Wait out an outage of Redis or Kafka: retry with backoff, log once when it starts and once when over."""
        wait = wait_exponential(multiplier=0.1, max=BACKOFF_MAX)
        async for attempt in waiting_out(TRANSIENT_ERRORS, wait=wait, log=log, what="journey: waiting for Redis/Kafka"):
            with attempt:
                result = await action()
        if attempt.retry_state.attempt_number > 1:
            log.warning("journey: Redis/Kafka reachable again; going on")
        return result

    async def run(self) -> None:
        await self.consumer.run()
