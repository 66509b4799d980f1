"""One partition of two topics that run apart, as a consumer sees them: the same frictions as the history in order.

The live service reads a member's events from two topics whose fetches race each other (one topic may be days of
event time ahead of the other within a batch, and batches come in any size). The slowest topic holds the clock,
so no window is decided before the other topic's events of that time have been seen.
"""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from services.journey.engine import Engine
from services.journey.offline.memory import InMemoryJourneys
from services.journey.offline.simulator import simulate
from services.journey.partition import Partition, in_event_time
from services.journey.rules import JourneyEvent, load_rules
from shared.events import typed_data
from shared.topics import MEMBERS

LATENESS = timedelta(minutes=1)
NETWORK = simulate(1500, seed=11)


def replayed_in_order() -> set[tuple[str, str, str]]:
    journeys = InMemoryJourneys(load_rules(), LATENESS)
    journeys.feed(NETWORK.events)
    result = journeys.finish(max(e.time for e in NETWORK.events))
    return {(f.rule, f.member_id, f.start_event_id) for f in result.detected}


def consumed_in_racing_batches(seed: int) -> set[tuple[str, str, str]]:
    rng = random.Random(seed)
    partition = Partition(Engine(load_rules().rules, int(LATENESS.total_seconds() * 1000)), 0, {"m", "u"})
    events = [JourneyEvent.of(e) for e in NETWORK.events]
    members = [e for e, raw in zip(events, NETWORK.events, strict=True) if typed_data(raw).topic == MEMBERS.name]
    usage = [e for e, raw in zip(events, NETWORK.events, strict=True) if typed_data(raw).topic != MEMBERS.name]
    found: set[tuple[str, str, str]] = set()

    def collect() -> None:
        applied = partition.take()
        found.update((f.rule, f.member_id, f.start_event_id) for f in applied.outcome.detected)
        for forward in applied.forwards:
            partition.apply(forward.event._replace(subject=forward.survivor))
            collect()

    i = j = 0
    while i < len(members) or j < len(usage):
        # A topic whose records have all been delivered is quiet (in a replay it holds nothing back).
        partition.observe(({"m"} if i >= len(members) else set()) | ({"u"} if j >= len(usage) else set()), set(), None)
        from_members, from_usage = members[i : i + rng.randint(0, 300)], usage[j : j + rng.randint(0, 300)]
        i, j = i + len(from_members), j + len(from_usage)
        batch = [[(e.t, "m", e) for e in from_members], [(e.t, "u", e) for e in from_usage]]
        for _, topic, event in in_event_time(batch):
            partition.feed(topic, event)
            collect()
        partition.advance()
        collect()
    partition.observe({"m", "u"}, set(), None)
    partition.advance(max(e.t for e in events))
    collect()
    return found


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_two_topics_racing_each_other_give_the_frictions_of_the_history_in_order(seed: int) -> None:
    expected = replayed_in_order()
    truth = {(p.rule, p.member_id, p.start_event_id) for p in NETWORK.truth}
    assert expected == truth and len(truth) > 500
    assert consumed_in_racing_batches(seed) == expected
