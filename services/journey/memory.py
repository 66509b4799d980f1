"""The engine over a history in memory: back-testing a rule, and the reference the live service must agree with.

Events are applied in the order given; timers fire, in due order, as soon as the clock (the latest event time
seen) has passed their due time plus the allowed lateness, and all the rest fire when the history ends.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.journey import engine
from services.journey.rules import RuleCatalogue
from shared.events import CloudEvent


@dataclass
class Replayed:
    detected: list[engine.Friction] = field(default_factory=list)
    resolved: list[engine.Resolution] = field(default_factory=list)
    closed: list[engine.ClosedStart] = field(default_factory=list)

    def friction_keys(self) -> set[tuple[str, str, str]]:
        """(rule, member, friction id) of every friction detected: what two runs are compared on."""
        return {(f.rule, f.member_id, f.friction_id) for f in self.detected}


class InMemoryJourneys:
    def __init__(self, catalogue: RuleCatalogue, lateness: timedelta = timedelta(0)) -> None:
        self._rules = list(catalogue.rules)
        self._by_id = {r.id: r for r in catalogue.rules}
        self._lateness = int(lateness.total_seconds() * 1000)
        self.journeys: dict[str, engine.Journey] = {}
        self._timers: list[tuple[int, str, str]] = []  # (due, member, timer)
        self._cancelled: set[tuple[str, str]] = set()
        self._clock = 0
        self.result = Replayed()

    def feed(self, events: Iterable[CloudEvent]) -> Replayed:
        for event in events:
            if event.subject is None:
                continue
            self._fire_until(self._clock - self._lateness)
            journey = self.journeys.setdefault(event.subject, engine.new_journey(event.subject))
            self._take(event.subject, engine.apply(journey, event, self._rules))
            self._clock = max(self._clock, engine.ms(event))
        return self.result

    def finish(self, until: datetime | None = None) -> Replayed:
        """The history has ended: timers due by `until` fire (all of them without it). A window still open at
        `until` stays open: its member is not counted as stuck."""
        self._fire_until(None if until is None else int(until.timestamp() * 1000) - self._lateness)
        return self.result

    def _take(self, member: str, outcome: engine.Outcome) -> None:
        for timer in outcome.timers_remove:
            self._cancelled.add((member, timer))
        for timer, due in outcome.timers_add:
            self._cancelled.discard((member, timer))
            heapq.heappush(self._timers, (due, member, timer))
        self.result.detected += outcome.detected
        self.result.resolved += outcome.resolved
        self.result.closed += outcome.closed

    def _fire_until(self, clock: int | None) -> None:
        while self._timers and (clock is None or self._timers[0][0] <= clock):
            _, member, timer = heapq.heappop(self._timers)
            if (member, timer) in self._cancelled:
                self._cancelled.discard((member, timer))
                continue
            self._take(member, engine.fire(self.journeys[member], timer, self._by_id))
