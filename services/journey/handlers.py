"""journey's Kafka side: member and usage events in, frictions out.

One instance owns the members of its partitions. A batch is applied under a lock that the timer loop takes too,
so a member's journey is only ever changed by one of them at a time. Each batch or round of timers is written in
one Redis transaction together with the derived events (an outbox), then published, then the offsets committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition
from faststream.kafka import KafkaRouter
from opentelemetry import trace
from opentelemetry.context import Context

from services.journey import engine
from services.journey.rules import RuleCatalogue
from services.journey.settings import JourneySettings
from services.journey.store import Changes, JourneyStore
from shared import consumers, telemetry
from shared.events import CloudEvent, deterministic_id
from shared.events.journey import FrictionDetected, FrictionResolved
from shared.events.members import MemberErased, MemberMerged
from shared.kafka import EventPublisher, Received, subscribe_batches
from shared.topics import MEMBERS, USAGE

log = logging.getLogger(__name__)

SOURCE = "/journey"
INPUTS = (MEMBERS, USAGE)
FIRE_LIMIT = 1000
# In a journey: the traceparent of the event that started each pending timer (sampled traces only), so that the
# timer, firing days later, links back to it. A few kept at most.
TRACES = "tr"
TRACES_KEPT = 16


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def friction_detected(friction: engine.Friction) -> CloudEvent:
    return CloudEvent.create(
        FrictionDetected(
            friction_id=friction.friction_id,
            rule=friction.rule,
            start_event_id=friction.start_event_id,
            started_at=_time(friction.started_ms),
            due_at=_time(friction.due_ms),
            library=friction.library,
            channel_pair=friction.channel_pair,
            platform=friction.platform,
            age_band=friction.age_band,
        ),
        id=friction.friction_id,
        subject=friction.member_id,
        source=f"{SOURCE}/rules/{friction.rule}",
        library=friction.library,
        time=_time(friction.due_ms),  # event time, not processing time: a replay gives the same event
    )


def friction_resolved(resolution: engine.Resolution) -> CloudEvent:
    friction = resolution.friction
    return CloudEvent.create(
        FrictionResolved(
            friction_id=friction.friction_id,
            rule=friction.rule,
            resolved_by_event_id=resolution.event_id,
            resolved_at=_time(resolution.at_ms),
            seconds_to_resolve=max(0.0, (resolution.at_ms - friction.due_ms) / 1000),
        ),
        id=deterministic_id("resolved", friction.friction_id),
        subject=friction.member_id,
        source=f"{SOURCE}/rules/{friction.rule}",
        library=friction.library,
        time=_time(resolution.at_ms),
    )


def _take(changes: Changes, partition: int, member: str, outcome: engine.Outcome) -> None:
    for timer in outcome.timers_remove:
        changes.remove_timer(partition, member, timer)
    for timer, due in outcome.timers_add:
        changes.add_timer(partition, member, timer, due)
    for friction in outcome.detected:
        changes.detected(friction)
        changes.outbox.append(friction_detected(friction))
    for resolution in outcome.resolved:
        changes.resolved(resolution)
        changes.outbox.append(friction_resolved(resolution))
    for start in outcome.closed:
        changes.closed(start)


def _remember_trace(journey: engine.Journey, outcome: engine.Outcome, traceparent: str | None) -> None:
    traces: dict[str, str] = journey.get(TRACES, {})
    for timer in outcome.timers_remove:
        traces.pop(timer, None)
    if traceparent is not None:
        for timer, _ in outcome.timers_add:
            traces[timer] = traceparent
        while len(traces) > TRACES_KEPT:
            traces.pop(next(iter(traces)))
    if traces:
        journey[TRACES] = traces
    else:
        journey.pop(TRACES, None)


def _forget_trace(journey: engine.Journey, timer: str) -> str | None:
    traces: dict[str, str] = journey.get(TRACES, {})
    started = traces.pop(timer, None)
    if not traces:
        journey.pop(TRACES, None)
    return started


def _continue_trace(events: list[CloudEvent], context: Context | None, contexts: dict[str, Context]) -> None:
    if context is not None:
        contexts.update((event.id, context) for event in events)


class FrictionDetector:
    def __init__(
        self, catalogue: RuleCatalogue, store: JourneyStore, publisher: EventPublisher, settings: JourneySettings
    ) -> None:
        self._rules = list(catalogue.rules)
        self._by_id = {r.id: r for r in catalogue.rules}
        self._store = store
        self._publisher = publisher
        self._settings = settings
        self._lateness = int(settings.journey_allowed_lateness.total_seconds() * 1000)
        self._lock = asyncio.Lock()
        self.subscriber: Any = None
        # Per input partition: its end offset as last seen, and since when (monotonic) it has not moved.
        self._ends: dict[TopicPartition, tuple[int, float]] = {}
        self.applied = 0  # events applied by this process (for benchmarks and operators)

    # ------------------------------------------------------------------------------------- events in

    async def on_batch(self, batch: list[Received], ends: dict[tuple[str, int], int]) -> None:
        async with self._lock:
            await self._apply(batch, ends)

    async def _apply(self, batch: list[Received], ends: dict[tuple[str, int], int]) -> None:
        positions = {f"{topic}:{partition}" for topic, partition in ends} | {f"{r.topic}:{r.partition}" for r in batch}
        subjects = {r.event.subject for r in batch if r.event.subject}
        subjects |= {str(r.event.data.get("survivor_id")) for r in batch if isinstance(r.data, MemberMerged)}
        aliases, journeys, offsets = await self._store.read(subjects, positions)
        changes = Changes()
        contexts: dict[str, Context] = {}
        for received in batch:
            position = f"{received.topic}:{received.partition}"
            if received.offset <= offsets.get(position, -1):
                continue  # applied before a crash or rebalance
            changes.offsets[position] = received.offset
            event = received.event
            t = engine.ms(event)
            changes.clocks[position] = max(t, changes.clocks.get(position, 0))
            if event.subject is None:
                continue
            member = aliases.get(event.subject, event.subject)
            partition = received.partition
            if isinstance(received.data, MemberErased):
                self._erase(changes, journeys, partition, member)
                continue
            journey = journeys.setdefault(member, engine.new_journey(member))
            outcome = engine.apply(journey, event, self._rules)
            derived = len(changes.outbox)
            _take(changes, partition, member, outcome)
            _remember_trace(journey, outcome, received.traceparent)
            # Frictions raised by the event itself carry on in the event's trace.
            _continue_trace(changes.outbox[derived:], telemetry.context_from(received.traceparent), contexts)
            changes.journeys[member] = journey
            if isinstance(received.data, MemberMerged):
                self._merge(changes, journeys, aliases, partition, member, received.data.survivor_id, event)
            self.applied += 1
        for (topic, partition), offset in ends.items():
            # Dead-lettered records count as done: how far this partition got.
            position = f"{topic}:{partition}"
            changes.offsets[position] = max(offset, changes.offsets.get(position, -1), offsets.get(position, -1))
        if changes.clocks:
            # A position's clock only moves forward.
            current = await self._store.clocks()
            changes.clocks = {k: max(v, current.get(k, 0)) for k, v in changes.clocks.items()}
        await self._commit(changes, contexts)

    def _erase(self, changes: Changes, journeys: dict[str, engine.Journey], partition: int, member: str) -> None:
        journey = journeys.pop(member, None)
        if journey is not None:
            for timer in engine.timers_of(journey):
                changes.remove_timer(partition, member, timer)
        changes.erased.add(member)
        changes.journeys.pop(member, None)

    def _merge(
        self,
        changes: Changes,
        journeys: dict[str, engine.Journey],
        aliases: dict[str, str],
        partition: int,
        merged_id: str,
        survivor_id: str,
        event: CloudEvent,
    ) -> None:
        """Later events for the old id go to the survivor; the old record's journey joins the survivor's."""
        merged = journeys.pop(merged_id)
        survivor = journeys.setdefault(survivor_id, engine.new_journey(survivor_id))
        # The survivor sees the merge too: it resolves a duplicate friction raised on the survivor's side.
        _take(changes, partition, survivor_id, engine.apply(survivor, event, self._rules))
        for timer in engine.timers_of(merged):
            changes.remove_timer(partition, merged_id, timer)
        changes.journeys[survivor_id] = engine.merge_into(survivor, merged)
        changes.erased.add(merged_id)
        changes.aliases[merged_id] = survivor_id
        aliases[merged_id] = survivor_id

    async def _commit(self, changes: Changes, contexts: dict[str, Context] | None = None) -> None:
        await self._store.write(changes)
        if changes.outbox:
            await self._publisher.publish_many(changes.outbox, contexts=contexts)
            await self._store.published([e.id for e in changes.outbox])
            detected = Counter(str(e.data.get("rule")) for e in changes.outbox if e.type == FrictionDetected.event_type)
            resolved = Counter(str(e.data.get("rule")) for e in changes.outbox if e.type == FrictionResolved.event_type)
            self._publisher.metrics.frictions(detected, resolved)

    # ----------------------------------------------------------------------------------------- timers

    async def _caught_up(self) -> dict[TopicPartition, bool] | None:
        """Per input partition this instance owns: have all its records been applied, and has nothing new
        arrived for `journey_idle_seconds`? Exact: applied offsets (stored with the state) against the broker's
        end offsets, so a consumer busy firing timers is not mistaken for an idle one."""
        consumer = getattr(self.subscriber, "consumer", None)
        if consumer is None or not consumer.assignment():
            return None
        assignment = sorted(consumer.assignment())
        ends = await consumers.end_offsets(consumer, assignment)
        applied = await self._store.applied_offsets()
        now = time.monotonic()
        status = {}
        for tp in assignment:
            end = ends[tp]
            seen = self._ends.get(tp)
            if seen is None or seen[0] != end:
                self._ends[tp] = seen = (end, now)
            done = applied.get(f"{tp.topic}:{tp.partition}", -1) + 1 >= end
            status[tp] = done and now - seen[1] >= self._settings.journey_idle_seconds
        return status

    async def _partition_clocks(self) -> dict[int, int]:
        """The clock of each partition this instance owns (ms): the latest event time applied on it, over all
        input topics (the slowest decides); a topic's partition that is caught up and quiet follows the wall
        clock (live operation)."""
        status = await self._caught_up()
        if status is None:
            return {}
        stored = await self._store.clocks()
        wall = int(time.time() * 1000)
        clocks: dict[int, int] = {}
        for tp, quiet in status.items():
            clock = stored.get(f"{tp.topic}:{tp.partition}", 0)
            if quiet and self._settings.journey_clock == "auto":
                clock = max(clock, wall)
            clocks[tp.partition] = min(clock, clocks.get(tp.partition, clock))
        return clocks

    async def settled(self) -> bool:
        """Every record of the owned partitions applied, and no timer due: nothing left to decide until new
        events arrive or the clock moves on."""
        async with self._lock:
            status = await self._caught_up()
            if not status or not all(status.values()):
                return False
            for partition, clock in (await self._partition_clocks()).items():
                if await self._store.due(partition, clock - self._lateness, 1):
                    return False
            return True

    async def fire_due_timers(self) -> int:
        """One round: decide the timers whose due time plus lateness the clocks have passed; returns how many."""
        async with self._lock:
            fired = 0
            for partition, clock in sorted((await self._partition_clocks()).items()):
                due = await self._store.due(partition, clock - self._lateness, FIRE_LIMIT)
                if not due:
                    continue
                journeys = await self._store.journeys(sorted({m for m, _, _ in due}))
                changes = Changes()
                contexts: dict[str, Context] = {}
                spans: list[trace.Span] = []
                for member, timer, _ in due:
                    changes.remove_timer(partition, member, timer)
                    journey = journeys.get(member)
                    if journey is None:
                        continue  # erased or merged meanwhile
                    derived = len(changes.outbox)
                    _take(changes, partition, member, engine.fire(journey, timer, self._by_id))
                    started = _forget_trace(journey, timer)
                    if len(changes.outbox) > derived:
                        span = self._fired_span(member, timer, started, changes.outbox[derived:])
                        spans.append(span)
                        _continue_trace(changes.outbox[derived:], trace.set_span_in_context(span), contexts)
                    changes.journeys[member] = journey
                try:
                    await self._commit(changes, contexts)
                finally:
                    for span in spans:
                        span.end()
                fired += len(due)
            return fired

    @staticmethod
    def _fired_span(member: str, timer: str, started: str | None, events: list[CloudEvent]) -> trace.Span:
        """A timer's decision starts a trace of its own, days after the event that started the timer: linked to
        that event's trace; what the decision publishes (and what other services do with it) continues this one."""
        rule = timer.split("|", 2)[1]
        friction = next((str(e.data["friction_id"]) for e in events if "friction_id" in e.data), None)
        return telemetry.tracer().start_span(
            f"fire {rule}",
            context=Context(),
            links=telemetry.link_to(started, **{"klantreis.link": "timer started by"}),
            attributes=telemetry.span_attributes(rule=rule, member_id=member, friction_id=friction),
        )

    async def run_timers(self) -> None:
        # Derived events stored but not yet published when the process stopped go out first.
        leftovers = await self._store.outbox()
        if leftovers:
            await self._publisher.publish_many(leftovers)
            await self._store.published([e.id for e in leftovers])
        while True:
            if await self.fire_due_timers() < FIRE_LIMIT:
                await asyncio.sleep(self._settings.journey_timer_tick_seconds)


def journey_router(detector: FrictionDetector, settings: JourneySettings, publisher: EventPublisher) -> KafkaRouter:
    router = KafkaRouter()
    detector.subscriber = subscribe_batches(
        router,
        settings,
        publisher,
        topics=INPUTS,
        group="journey",
        handler=detector.on_batch,
        max_records=settings.journey_batch_size,
        description="Member and usage events: the member's journey, the friction rules in event time.",
    )
    return router
