"""One partition's journeys in memory, without I/O: member states, timers and event-time clocks.

The live service keeps one `Partition` per input partition it owns (restored from Redis on assignment, written
back once per batch); back-testing keeps one for a whole history. Each input topic of the partition has an
event-time clock per stream (live traffic, or one backfill); a stream's clock is the slowest of its topics that
still have records to deliver, so one topic running ahead in a batch cannot fire a timer that the other topic's
events would have met. Before each event is applied, the timers its stream's clock has passed (plus the allowed
lateness) fire: the frictions do not depend on how the records were batched.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

from services.journey.engine import ERASED, MERGED, Engine
from services.journey.outcomes import Outcome
from services.journey.rules import JourneyEvent
from services.journey.state import MemberState, Timer

NEVER = -(2**62)
LIVE = ""
# Events older than their topic's live clock (less the lateness) are a history being loaded into a running
# platform: they get a clock of their own, so their windows are decided by their own event times, as a fresh
# replay would decide them, and not at once by the live clock.
BACKFILL = "backfill"


@dataclass
class Forward:
    """An event of a merged-away member, to be applied to the survivor's journey (on the survivor's partition)."""

    survivor: str
    event: JourneyEvent


@dataclass
class Applied:
    """What feeding events and time did: the engine's outcome, the members whose state changed, forwards."""

    outcome: Outcome = field(default_factory=Outcome)
    changed: set[str] = field(default_factory=set)
    erased: set[str] = field(default_factory=set)
    forwards: list[Forward] = field(default_factory=list)


class Partition:
    def __init__(self, engine: Engine, number: int = 0, topics: Iterable[str] = ()) -> None:
        self.engine = engine
        self.number = number
        # The input topics: one that is not quiet and has delivered nothing yet holds every clock back.
        self.topics = set(topics)
        self.members: dict[str, MemberState] = {}
        self._timers: dict[str, list[Timer]] = {}  # stream → heap
        # (topic, stream) → latest event time seen (ms); a clock only moves forward.
        self.clocks: dict[tuple[str, str], int] = {}
        # Topics caught up and quiet for a while: in live operation (`quiet_at` the wall clock) such a topic's
        # clock follows the wall clock; replaying (`quiet_at` None) it holds no other topic back.
        self.quiet: set[str] = set()
        self.quiet_at: int | None = None
        # Topics with nothing new since a history began to load (they hold the history's clock back no more).
        self.backfill_quiet: set[str] = set()
        self._clock_cache: dict[str, int] = {}
        self._backfilling = False
        self.result = Applied()
        self._out = self._collecting()

    # ---------------------------------------------------------------------------------------------- state

    def restore(self, members: Iterable[tuple[str, MemberState]]) -> None:
        for member, state in members:
            self.members[member] = state
            for timer in self.engine.timers(member, state):
                self._timers.setdefault(timer.stream, []).append(timer)
        for heap in self._timers.values():
            heapq.heapify(heap)

    def take(self) -> Applied:
        """What happened since the last take (to store and publish). Before a changed state is stored, what no
        window can need any more is forgotten (it costs bytes per member)."""
        result, self.result = self.result, Applied()
        self._out = self._collecting()
        clock = self._pruning_clock()
        members = self.members
        for member in result.changed:
            state = members.get(member)
            if state is not None:
                self.engine.prune(state, clock)
        return result

    def _collecting(self) -> Outcome:
        """What the engine adds to: the result's frictions and windows, and new timers (into the heaps at once)."""
        total = self.result.outcome
        return Outcome([], total.detected, total.resolved, total.closed)

    def timers_due(self, stream: str, until: int) -> bool:
        heap = self._timers.get(stream)
        return heap is not None and bool(heap) and heap[0][0] < until  # [0]: its due time

    def timers_of(self, member: str) -> list[Timer]:
        """The member's timers that would still decide something."""
        state = self.members.get(member)
        return self.engine.timers(member, state) if state is not None else []

    def pending_timers(self) -> int:
        return sum(len(h) for h in self._timers.values())

    # ---------------------------------------------------------------------------------------------- clocks

    def observe(self, quiet: set[str], backfill_quiet: set[str], quiet_at: int | None) -> None:
        """What the consumer sees of its topics: which are quiet (and since a history began), the wall clock."""
        self.quiet, self.backfill_quiet, self.quiet_at = quiet, backfill_quiet, quiet_at
        self._clock_cache.clear()
        self.follow_wall()

    def set_clocks(self, clocks: dict[tuple[str, str], int]) -> None:
        self.clocks = dict(clocks)
        self._backfilling = any(s == BACKFILL for _, s in self.clocks)
        self._clock_cache.clear()

    def clock(self, stream: str) -> int:
        """The stream's event time, held back by the slowest topic that may still deliver events of it."""
        cached = self._clock_cache.get(stream)
        if cached is None:
            cached = self._live_clock() if stream == LIVE else self._backfill_clock()
            self._clock_cache[stream] = cached
        return cached

    def _live_clock(self) -> int:
        """The slowest busy topic's; a quiet topic follows the wall clock (live) or holds nothing back (replay).
        A busy topic that has delivered nothing yet holds everything back."""
        started = {topic for topic, _ in self.clocks}
        if any(topic not in started for topic in self.topics - self.quiet):
            return NEVER
        holding, seen = [], []
        for (topic, s), t in self.clocks.items():
            if s != LIVE:
                continue
            seen.append(t)
            if topic not in self.quiet:
                holding.append(t)
            elif self.quiet_at is not None:
                holding.append(max(t, self.quiet_at))
        if not seen:
            return NEVER
        return min(holding) if holding else max(seen)

    def _backfill_clock(self) -> int:
        """A history's own event time: every topic holds it back until it has delivered some of the history or
        has been quiet since the history began; once every topic is quiet the history is complete."""
        seen = {topic: t for (topic, s), t in self.clocks.items() if s == BACKFILL}
        if self.quiet_at is not None and self.quiet >= self.topics:
            return max(self.quiet_at, *seen.values()) if seen else self.quiet_at
        holding = []
        for topic in self.topics or set(seen):
            if topic in self.backfill_quiet:
                continue
            if topic not in seen:
                return NEVER
            holding.append(seen[topic])
        return min(holding) if holding else max(seen.values(), default=NEVER)

    def _pruning_clock(self) -> int:
        return self._forget_before() + self.engine.lateness

    def _forget_before(self) -> int:
        """Expected events older than this can be forgotten: every stream's clock (a history's lags) has passed them
        by the lateness."""
        clock = self.clock(LIVE)
        if self.backfilling():
            clock = min(clock, self.clock(BACKFILL))
        return clock - self.engine.lateness

    def follow_wall(self) -> None:
        """Live operation: a quiet topic's clock is the wall clock, so a history loaded later is told apart."""
        if self.quiet_at is not None:
            for topic in self.quiet:
                self.clocks[(topic, LIVE)] = max(self.clocks.get((topic, LIVE), NEVER), self.quiet_at)
            self._clock_cache.clear()

    def backfilling(self) -> bool:
        return self._backfilling

    def streams(self) -> set[str]:
        return {s for _, s in self.clocks} | set(self._timers)

    def advance(self, until: int | None = None) -> None:
        """Fire the timers every stream's clock (at least `until`, e.g. the end of a history) has passed."""
        for stream in sorted(self.streams()):
            clock = self.clock(stream) if until is None else max(self.clock(stream), until)
            self._fire(stream, clock - self.engine.lateness)

    def end_backfill(self) -> None:
        """Every topic is quiet: a history that was being loaded is complete. Its windows closed by now are
        decided (by the wall clock, as quiet topics follow it live), and its clock goes, for the next one."""
        if self.backfilling() and self.quiet >= self.topics:
            self.advance()
            self.set_clocks({k: t for k, t in self.clocks.items() if k[1] != BACKFILL})
            self.backfill_quiet = set()

    def due(self) -> bool:
        """Whether any timer is due by its stream's clock."""
        return any(self.timers_due(s, self.clock(s) - self.engine.lateness) for s in self.streams())

    # ---------------------------------------------------------------------------------------------- events

    def feed(self, topic: str, event: JourneyEvent) -> None:
        live = self.clocks.get((topic, LIVE))
        stream = BACKFILL if live is not None and event.t < live - self.engine.lateness else LIVE
        key = (topic, stream)
        previous = self.clocks.get(key)
        if previous is None or event.t > previous:
            self.clocks[key] = event.t
            if previous is None:
                self._clock_cache.clear()  # a topic that starts delivering changes every stream's clock
                self._backfilling = self._backfilling or stream == BACKFILL
            elif not (stream == LIVE and topic not in self.quiet and self._clock_cache.get(LIVE, previous) < previous):
                # Unless a busy topic ahead of the slowest moved on (the live clock is the slowest's, unchanged).
                self._clock_cache.pop(stream, None)
            self._fire(stream, self.clock(stream) - self.engine.lateness)
        self.apply(event, stream)

    def feed_merged(self, topics: list[list[tuple[int, str, JourneyEvent]]]) -> None:
        """Feed one batch's events of several topics, merged in event time (`in_event_time`): one member's events
        from several topics meet in event time, and the slowest topic holds the clock."""
        for _, topic, event in in_event_time(topics):
            self.feed(topic, event)

    def apply(self, event: JourneyEvent, stream: str = "") -> None:
        member = event.subject
        state = self.members.get(member)
        if event.kind == ERASED:
            self._erase(member)
            return
        if state is not None and state.merged_into is not None:
            # Events for a merged-away record continue the survivor's journey.
            self.result.forwards.append(Forward(state.merged_into, event))
            return
        if state is None:
            state = self.members[member] = MemberState()
        self.engine.apply(state, event, stream, self._pruning_clock, self._out)
        if self._out.timers:
            self._new_timers()
        self.result.changed.add(member)
        self.result.erased.discard(member)
        if event.kind == MERGED:
            survivor = str(event.data.get("survivor_id") or "")
            if survivor and survivor != member:
                # The merged record's windows end with it; the survivor sees the merge (it resolves a duplicate).
                self.members[member] = MemberState(merged_into=survivor)
                self.result.forwards.append(Forward(survivor, event._replace(subject=survivor)))

    def _erase(self, member: str) -> None:
        self.members.pop(member, None)
        self.result.changed.discard(member)
        self.result.erased.add(member)

    # ---------------------------------------------------------------------------------------------- timers

    def _fire(self, stream: str, until: int) -> None:
        heap = self._timers.get(stream)
        if not heap or heap[0][0] >= until:  # [0]: its due time
            return
        members, changed, out, clock = self.members, self.result.changed, self._out, until + self.engine.lateness
        while heap and heap[0][0] < until:
            timer = heapq.heappop(heap)
            state = members.get(timer.member)
            if state is None:
                continue  # erased meanwhile
            self.engine.fire(state, timer, clock, out)
            if out.timers:
                self._new_timers()
            changed.add(timer.member)

    def _new_timers(self) -> None:
        timers = self._out.timers
        for timer in timers:
            heapq.heappush(self._timers.setdefault(timer.stream, []), timer)
        timers.clear()


def in_event_time(topics: list[list[tuple[int, str, JourneyEvent]]]) -> list[tuple[int, str, JourneyEvent]]:
    """Several topics' (time, topic, event), each in its own order, merged as `heapq.merge` with the time as key
    merges them: the earliest of the topics' next events first, the earlier topic's at equal times."""
    pending = [events for events in topics if events]
    if len(pending) == 1:
        return pending[0]
    at = [0] * len(pending)
    merged: list[tuple[int, str, JourneyEvent]] = []
    while pending:
        first, t = 0, pending[0][at[0]][0]
        for i in range(1, len(pending)):
            if pending[i][at[i]][0] < t:
                first, t = i, pending[i][at[i]][0]
        merged.append(pending[first][at[first]])
        at[first] += 1
        if at[first] == len(pending[first]):
            del pending[first], at[first]
    return merged
