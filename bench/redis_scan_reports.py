"""journey's retired Redis-scan reports, kept for bench/journey_reports.py and bench/analytics.py only: the
baseline the analytics store's reports are measured against (docs/reports.md).

This is the arithmetic journey's reports ran over every member's journey (the JSON journey kept in Redis, as
`services.journey.engine.new_journey` makes it) until they moved to the analytics service; the numbers were checked
to be the same as the analytics service's before they were retired. Not used by any service.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from services.analytics.reports import (
    DIMENSIONS,
    FRICTION_FIGURES,
    FUNNEL_FIGURES,
    MEMBER_FIGURES,
    Cell,
    Dimension,
    Period,
    Report,
    Row,
    Split,
    _sort_key,
    local_date,
    ratio,
    reach_report,
)
from services.journey.engine import Journey


def period_of(day: date, period: Period) -> str:
    """`2025-03-14` (day), `2025-W11` (ISO week), `2025-03` (month)."""
    if period == "day":
        return day.isoformat()
    if period == "week":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{day.year}-{day.month:02d}"


# ------------------------------------------------------------------------------------------- frictions


@dataclass(frozen=True)
class FrictionQuery:
    by: tuple[Dimension, ...] = ("rule",)
    period: Period | None = None
    start: date | None = None
    end: date | None = None
    libraries: frozenset[str] = frozenset()  # empty: all
    rules: frozenset[str] = frozenset()
    age_bands: frozenset[str] = frozenset()

    def admits(self, values: Mapping[str, Any], day: date) -> bool:
        return (
            (self.start is None or day >= self.start)
            and (self.end is None or day <= self.end)
            and (not self.libraries or values.get("library") in self.libraries)
            and (not self.rules or values.get("rule") in self.rules)
            and (not self.age_bands or values.get("age_band") in self.age_bands)
        )


@dataclass
class _FrictionCell:
    detected: int = 0
    windowed: int = 0  # detected by rules with windows: the numerator of the rate per 1,000 starts
    seconds_to_resolve: list[float] = field(default_factory=list)
    starts: int | None = None


def parse_start_key(key: str) -> tuple[dict[str, str | None], date]:
    """`rule|library|pair|platform|age band|day` (store.Changes.closed) → dimension values and the day."""
    *values, day = key.split("|")
    dims: dict[str, str | None] = {d: (v or None) for d, v in zip(DIMENSIONS, values, strict=True)}
    return dims, date.fromisoformat(day)


def friction_report(
    facts: Iterable[Mapping[str, Any]],
    starts: Mapping[str, int],
    query: FrictionQuery,
    *,
    min_cell: int,
    members_by_library: Mapping[str | None, int] | None = None,
) -> Report:
    """Detected, resolved and closed windows per group (and period), with rates, resolution and its median.

    A friction belongs to the day it was detected (its due time), in Amsterdam; a closed window to the day it
    closed. `resolved` counts the group's frictions that have been resolved since. Rules with windows (absence
    rules) are those with closed windows: only their frictions enter the rate per 1,000 starts."""
    windowed_rules = {key.split("|", 1)[0] for key in starts}
    cells: dict[tuple[Any, ...], _FrictionCell] = defaultdict(_FrictionCell)

    def cell_of(values: Mapping[str, Any], day: date) -> _FrictionCell:
        key = tuple(values.get(d) for d in query.by)
        if query.period is not None:
            key += (period_of(day, query.period),)
        return cells[key]

    for fact in facts:
        day = local_date(int(fact["due"]))
        if not query.admits(fact, day):
            continue
        cell = cell_of(fact, day)
        cell.detected += 1
        if fact["rule"] in windowed_rules:
            cell.windowed += 1
        if fact.get("resolved") is not None:
            cell.seconds_to_resolve.append(max(0.0, (int(fact["resolved"]) - int(fact["due"])) / 1000))
    for key, count in starts.items():
        values, day = parse_start_key(key)
        if not query.admits(values, day):
            continue
        cell = cell_of(values, day)
        cell.starts = (cell.starts or 0) + count

    columns = (*query.by, *(("period",) if query.period else ()), *FRICTION_FIGURES)
    with_members = "library" in query.by and members_by_library is not None
    if with_members:
        columns += MEMBER_FIGURES
    columns += ("suppressed",)
    rows = []
    for group in sorted(cells, key=_sort_key):
        cell = cells[group]
        suppressed = cell.detected < min_cell or (cell.starts is not None and cell.starts < min_cell)
        row: Row = dict(zip((*query.by, *(("period",) if query.period else ())), group, strict=True))
        resolved = len(cell.seconds_to_resolve)
        row |= {
            "detected": cell.detected,
            "resolved": resolved,
            "starts": cell.starts,
            "rate_per_1000_starts": ratio(cell.windowed, cell.starts, 1000, 2),
            "resolution_rate": ratio(resolved, cell.detected, 1, 4),
            "median_seconds_to_resolve": (
                round(statistics.median(cell.seconds_to_resolve), 1) if cell.seconds_to_resolve else None
            ),
        }
        if suppressed:
            row |= dict.fromkeys(FRICTION_FIGURES)
        if with_members:
            assert members_by_library is not None
            members: int | None = members_by_library.get(row["library"], 0)
            if members is not None and members < min_cell:
                members = None
            row["members"] = members
            row["frictions_per_1000_members"] = None if suppressed else ratio(cell.detected, members, 1000, 2)
        row["suppressed"] = suppressed
        rows.append(row)
    return Report(columns, rows)


# ---------------------------------------------------------------------------------------------- members


def profile_admits(journey: Journey, libraries: frozenset[str], age_bands: frozenset[str]) -> bool:
    profile = journey.get("p") or {}
    return (not libraries or profile.get("home_library") in libraries) and (
        not age_bands or profile.get("age_band") in age_bands
    )


@dataclass
class MemberCounter:
    """Members per home library (in the given age bands): the denominator of frictions per 1,000 members."""

    age_bands: frozenset[str] = frozenset()
    libraries: frozenset[str] = frozenset()
    counts: dict[str | None, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, journeys: Iterable[Journey]) -> None:
        for journey in journeys:
            if journey.get("p") and profile_admits(journey, self.libraries, self.age_bands):
                self.counts[journey["p"].get("home_library")] += 1


# ------------------------------------------------------------------------------------------------ funnel


@dataclass(frozen=True)
class FunnelQuery:
    steps: tuple[str, ...]
    within: timedelta = timedelta(days=30)
    by: Split | None = None
    start: date | None = None
    end: date | None = None
    libraries: frozenset[str] = frozenset()
    age_bands: frozenset[str] = frozenset()


def step_time(journey: Journey, kind: str, after_ms: int) -> int | None:
    """When the member first did `kind` at or after `after_ms`: the type's first occurrence if that is not
    earlier, else the earliest such event among the recent ones (the journey keeps no more)."""
    first = journey["f"].get(kind)
    if first is None:
        return None
    if first[0] >= after_ms:
        return int(first[0])
    later = [int(e[0]) for e in journey.get("tl", []) if e[1] == kind and e[0] >= after_ms]
    return min(later, default=None)


@dataclass
class FunnelCounter:
    """Counts members through the steps, split by the channel or platform of the first step. Right-censored: a
    member whose previous step is younger than `within` by the journey clock, and who has not reached the next
    one, is in progress, never dropped."""

    query: FunnelQuery
    clock_ms: int
    # per split value: per step: [entered, reached, dropped, in progress]
    counts: dict[str | None, list[list[int]]] = field(default_factory=dict)

    def add(self, journeys: Iterable[Journey]) -> None:
        steps, within = self.query.steps, int(self.query.within.total_seconds() * 1000)
        libraries, bands = self.query.libraries, self.query.age_bands
        for journey in journeys:
            first = journey["f"].get(steps[0])
            if first is None or not profile_admits(journey, libraries, bands):
                continue
            day = local_date(first[0])
            if (self.query.start and day < self.query.start) or (self.query.end and day > self.query.end):
                continue
            split = None if self.query.by is None else first[1 if self.query.by == "channel" else 2]
            counts = self.counts.setdefault(split, [[0, 0, 0, 0] for _ in steps])
            counts[0][0] += 1
            counts[0][1] += 1
            previous = int(first[0])
            for number in range(1, len(steps)):
                counts[number][0] += 1
                at = step_time(journey, steps[number], previous)
                if at is not None and at - previous <= within:
                    counts[number][1] += 1
                    previous = at
                    continue
                counts[number][3 if self.clock_ms - previous < within else 2] += 1
                break

    def report(self, min_cell: int) -> Report:
        split = () if self.query.by is None else (self.query.by,)
        columns = (*split, "step_number", "step", *FUNNEL_FIGURES, "suppressed")
        rows = []
        for value in sorted(self.counts, key=lambda v: _sort_key((v,))):
            for number, (step, (entered, reached, dropped, in_progress)) in enumerate(
                zip(self.query.steps, self.counts[value], strict=True), start=1
            ):
                row: Row = {} if self.query.by is None else {self.query.by: value}
                suppressed = entered < min_cell
                row |= {
                    "step_number": number,
                    "step": step,
                    "entered": entered,
                    "reached": reached,
                    "dropped": dropped,
                    "in_progress": in_progress,
                    "conversion": None if number == 1 else ratio(reached, reached + dropped, 1, 4),
                }
                if suppressed:
                    row |= dict.fromkeys(FUNNEL_FIGURES)
                row["suppressed"] = suppressed
                rows.append(row)
        return Report(columns, rows)


# ------------------------------------------------------------------------------------------------- reach


@dataclass
class ReachCounter:
    """Members and members active since `since_ms`, per home library and age band (at sign-up)."""

    age_bands: tuple[str, ...]
    since_ms: int
    libraries: frozenset[str] = frozenset()
    # (library, age band) → [members, active]
    counts: dict[tuple[str | None, str], list[int]] = field(default_factory=dict)

    def add(self, journeys: Iterable[Journey]) -> None:
        bands = set(self.age_bands)
        for journey in journeys:
            profile = journey.get("p") or {}
            band = profile.get("age_band")
            if band not in bands or (self.libraries and profile.get("home_library") not in self.libraries):
                continue
            cell = self.counts.setdefault((profile.get("home_library"), band), [0, 0])
            cell[0] += 1
            if (journey.get("a") or 0) >= self.since_ms:
                cell[1] += 1

    def report(self, min_cell: int) -> Report:
        counts: dict[Cell, tuple[int, int]] = {cell: (m, a) for cell, (m, a) in self.counts.items()}
        return reach_report(counts, self.age_bands, min_cell)
