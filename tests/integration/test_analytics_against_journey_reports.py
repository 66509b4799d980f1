"""The evidence for retiring journey's Redis-scan reports: the same simulated history goes through journey's
engine into the old report arithmetic and, as events, into the analytics store (real chDB), and every report
gives the same numbers at the same clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.analytics.facts import fact_row
from services.analytics.reading import Reports
from services.analytics.reports import FrictionQuery, FunnelQuery
from services.analytics.settings import AnalyticsSettings
from services.analytics.store import AnalyticsStore
from services.journey import reports as old
from services.journey.handlers import friction_detected, friction_resolved
from services.journey.memory import InMemoryJourneys
from services.journey.rules import load_rules
from services.journey.simulator import simulate
from services.journey.store import Changes

END = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
CLOCK = END - timedelta(days=12)  # inside the history: windows still open, members in progress
FUNNELS = [
    ("member.signed_up.v1", "member.card_activated.v1", "usage.loan_borrowed.v1"),
    ("member.registration_started.v1", "member.signed_up.v1", "member.login_succeeded.v1"),
    ("usage.loan_reserved.v1", "usage.loan_borrowed.v1"),
]


class History:
    def __init__(self, members: int) -> None:
        network = simulate(members, seed=11, end=END)
        events = sorted((e for e in network.events if e.time <= CLOCK), key=lambda e: e.time)
        replay = InMemoryJourneys(load_rules())
        replay.feed(events)
        self.result = replay.finish(CLOCK)
        self.journeys = list(replay.journeys.values())
        self.changes = Changes()
        for friction in self.result.detected:
            self.changes.detected(friction)
        for resolution in self.result.resolved:
            self.changes.resolved(resolution)
        for closed in self.result.closed:
            self.changes.closed(closed)
        derived = [friction_detected(f) for f in self.result.detected]
        derived += [friction_resolved(r) for r in self.result.resolved]
        self.events = events + derived
        self.clock_ms = int(CLOCK.timestamp() * 1000)


@pytest.fixture(scope="module")
def history() -> History:
    return History(1500)


@pytest.fixture(scope="module")
async def new(history: History, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Reports]:
    path: Path = tmp_path_factory.mktemp("analytics")
    settings = AnalyticsSettings(analytics_path=path, analytics_allowed_lateness=timedelta(0))
    store = AnalyticsStore(settings)
    rows = [row for row in (fact_row(e) for e in history.events) if row is not None]
    for start in range(0, len(rows), 5000):
        await store.add(rows[start : start + 5000])
    yield Reports(store, settings)
    await store.close()


def comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: (round(v, 1) if isinstance(v, float) else v) for k, v in row.items()} for row in rows]


@pytest.mark.parametrize(
    "query",
    [
        FrictionQuery(by=("rule",)),
        FrictionQuery(by=("rule", "library"), period="month"),
        FrictionQuery(by=("channel_pair", "platform")),
        FrictionQuery(by=("age_band",), period="week", start=date(2025, 3, 1), end=date(2025, 9, 30)),
        FrictionQuery(by=("library",), age_bands=frozenset({"18-64", "65+"})),
        FrictionQuery(by=(), period="day", libraries=frozenset({"oba", "utrecht"})),
    ],
    ids=str,
)
async def test_frictions_are_the_same(history: History, new: Reports, query: FrictionQuery) -> None:
    members = None
    if "library" in query.by:
        counter = old.MemberCounter(age_bands=query.age_bands, libraries=query.libraries)
        counter.add(history.journeys)
        members = counter.counts
    before = old.friction_report(
        list(history.changes.frictions.values()), history.changes.starts, _old_friction(query), min_cell=5,
        members_by_library=members,
    )  # fmt: skip
    after = await new.frictions(query, history.clock_ms)
    assert after.columns == before.columns
    assert len(after.rows) > 1 or query.by == ()
    assert comparable(after.rows) == comparable(before.rows)


@pytest.mark.parametrize("steps", FUNNELS, ids=lambda s: "→".join(s))
@pytest.mark.parametrize("by", [None, "channel", "platform"])
async def test_funnels_are_the_same(history: History, new: Reports, steps: tuple[str, ...], by: Any) -> None:
    query = FunnelQuery(steps=steps, by=by, within=timedelta(days=30))
    counter = old.FunnelCounter(old.FunnelQuery(steps=steps, by=by, within=timedelta(days=30)), history.clock_ms)
    counter.add(history.journeys)
    after = await new.funnel(query, history.clock_ms)
    assert after.rows == counter.report(5).rows
    assert any(row["reached"] for row in after.rows if row["step_number"] > 1)


async def test_a_filtered_funnel_is_the_same(history: History, new: Reports) -> None:
    steps = FUNNELS[0]
    kwargs: dict[str, Any] = {
        "steps": steps, "within": timedelta(days=14), "start": date(2025, 1, 1),
        "libraries": frozenset({"oba", "haarlem"}), "age_bands": frozenset({"18-64"}),
    }  # fmt: skip
    counter = old.FunnelCounter(old.FunnelQuery(**kwargs), history.clock_ms)
    counter.add(history.journeys)
    assert (await new.funnel(FunnelQuery(**kwargs), history.clock_ms)).rows == counter.report(5).rows


async def test_a_funnel_with_members_still_in_progress_is_the_same(history: History, new: Reports) -> None:
    query = FunnelQuery(steps=FUNNELS[0], by="channel", within=timedelta(days=400))
    counter = old.FunnelCounter(old.FunnelQuery(**query.__dict__), history.clock_ms)
    counter.add(history.journeys)
    after = await new.funnel(query, history.clock_ms)
    assert after.rows == counter.report(5).rows
    assert sum(row["in_progress"] or 0 for row in after.rows) > 10  # right-censoring is exercised


@pytest.mark.parametrize("months", [1, 12])
async def test_reach_is_the_same(history: History, new: Reports, months: int) -> None:
    bands = ("0-3", "4-11", "12-17", "18-64")
    counter = old.ReachCounter(bands, old.months_before(history.clock_ms, months))
    counter.add(history.journeys)
    after = await new.reach(bands, months, frozenset(), history.clock_ms)
    assert after.rows == counter.report(5).rows


def _old_friction(query: FrictionQuery) -> old.FrictionQuery:
    return old.FrictionQuery(
        by=query.by, period=query.period, start=query.start, end=query.end, libraries=query.libraries,
        rules=query.rules, age_bands=query.age_bands,
    )  # fmt: skip
