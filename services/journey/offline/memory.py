"""The engine over a history in memory: back-testing a rule, and the reference the live service must agree with.

Events are applied in the order given, as one partition of one topic: timers fire, in due order, as soon as the
clock (the latest event time seen) has passed their due time plus the allowed lateness, and all the rest fire
when the history ends. Merges forward within the same memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.journey import engine, outcomes
from services.journey.partition import Partition
from services.journey.rules import JourneyEvent, RuleCatalogue
from services.journey.state import MemberState
from shared.events import CloudEvent

HISTORY = "history"


@dataclass
class Replayed:
    detected: list[outcomes.Friction] = field(default_factory=list)
    resolved: list[outcomes.Resolution] = field(default_factory=list)
    closed: list[outcomes.ClosedWindow] = field(default_factory=list)

    def friction_keys(self) -> set[tuple[str, str, str]]:
        """(rule, member, friction id) of every friction detected: what two runs are compared on."""
        return {(f.rule, f.member_id, f.friction_id) for f in self.detected}


class InMemoryJourneys:
    def __init__(self, catalogue: RuleCatalogue, lateness: timedelta = timedelta(0)) -> None:
        self._partition = Partition(engine.Engine(catalogue.rules, int(lateness.total_seconds() * 1000)))
        self.result = Replayed()

    @property
    def journeys(self) -> dict[str, MemberState]:
        return self._partition.members

    def feed(self, events: Iterable[CloudEvent]) -> Replayed:
        for event in events:
            if event.subject is None:
                continue
            self._partition.feed(HISTORY, JourneyEvent.of(event))
            self._collect()
        return self.result

    def finish(self, until: datetime | None = None) -> Replayed:
        """The history has ended: timers due by `until` fire (all of them without it). A window still open at
        `until` stays open: its member is not counted as stuck."""
        end = 2**62 if until is None else int(until.timestamp() * 1000)
        self._partition.advance(end + self._partition.engine.lateness)
        self._collect()
        return self.result

    def _collect(self) -> None:
        applied = self._partition.take()
        self.result.detected += applied.outcome.detected
        self.result.resolved += applied.outcome.resolved
        self.result.closed += applied.outcome.closed
        for forward in applied.forwards:
            self._partition.apply(forward.event._replace(subject=forward.survivor))
            self._collect()
