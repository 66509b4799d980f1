"""The arithmetic of the journey reports, without I/O: grouping, rates, medians, censoring, suppression, CSV.

Reports read two kinds of input the journey service keeps (services/journey/store.py): friction facts and
closed-window counts (no member ids), and members' journeys (`engine.new_journey`). Journeys are fed to a counter
one batch at a time, so a report over millions of members never holds them all. docs/reports.md is the contract.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo

from services.journey.engine import Journey

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
ALL = "*"  # a total row: the whole network, or all the requested age bands

Dimension = Literal["rule", "library", "channel_pair", "platform", "age_band"]
DIMENSIONS: tuple[Dimension, ...] = get_args(Dimension)
Period = Literal["day", "week", "month"]
Split = Literal["channel", "platform"]
Row = dict[str, Any]


class BadParameter(ValueError):
    """A query parameter that cannot be understood; `parameter` names it as the client sent it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


@dataclass(frozen=True)
class Report:
    """A report's rows, with its columns in order (the CSV header, also when there are no rows)."""

    columns: tuple[str, ...]
    rows: list[Row]


# ------------------------------------------------------------------------------------------------ time


def local_date(ms: int) -> date:
    """The Europe/Amsterdam date of an instant (ms since the epoch)."""
    return datetime.fromtimestamp(ms / 1000, AMSTERDAM).date()


def local_time(ms: int | None) -> str | None:
    """An instant as shown to people: RFC 3339 in Europe/Amsterdam."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, AMSTERDAM).isoformat(timespec="seconds")


def period_of(day: date, period: Period) -> str:
    """`2025-03-14` (day), `2025-W11` (ISO week), `2025-03` (month)."""
    if period == "day":
        return day.isoformat()
    if period == "week":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{day.year}-{day.month:02d}"


def months_before(ms: int, months: int) -> int:
    """The same wall-clock moment `months` calendar months earlier in Amsterdam (the day clamped to the month's
    end: 31 May minus 3 months is 28 or 29 February)."""
    moment = datetime.fromtimestamp(ms / 1000, AMSTERDAM)
    index = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    following = date(year + month // 12, month % 12 + 1, 1)
    day = min(moment.day, (following - timedelta(days=1)).day)
    earlier = moment.replace(year=year, month=month, day=day, tzinfo=None).replace(tzinfo=AMSTERDAM)
    return int(earlier.astimezone(UTC).timestamp() * 1000)


def iso_duration(value: timedelta) -> str:
    """`P30D`, `PT1H`, `P1DT12H` (the form the funnel's `within` is echoed in)."""
    seconds = int(value.total_seconds())
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    clock = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n)
    return "P" + (f"{days}D" if days else "") + (f"T{clock}" if clock else "") if days or clock else "PT0S"


# ------------------------------------------------------------------------------------------- parameters


def parse_list(parameter: str, raw: str | None, allowed: Iterable[str] | None = None) -> tuple[str, ...]:
    """A comma-separated list; duplicates dropped, order kept; each value checked against `allowed` if given."""
    values = tuple(dict.fromkeys(v.strip() for v in (raw or "").split(",") if v.strip()))
    if allowed is not None:
        known = list(allowed)
        unknown = [v for v in values if v not in known]
        if unknown:
            raise BadParameter(parameter, f"unknown value(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return values


def parse_dimensions(raw: str | None) -> tuple[Dimension, ...]:
    values = parse_list("by", raw, DIMENSIONS)
    return tuple(d for d in DIMENSIONS if d in values)


def parse_steps(raw: str, known: Iterable[str]) -> tuple[str, ...]:
    steps = tuple(v.strip() for v in raw.split(",") if v.strip())
    known_types = set(known)
    unknown = [s for s in steps if s not in known_types]
    if unknown:
        raise BadParameter(
            "steps", f"unknown event type(s) {', '.join(unknown)} (short names, e.g. member.signed_up.v1)"
        )
    if not 2 <= len(steps) <= 10:
        raise BadParameter("steps", "give 2 to 10 event types, comma-separated")
    return steps


def check_range(start: date | None, end: date | None) -> None:
    if start is not None and end is not None and end < start:
        raise BadParameter("to", "lies before from")


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


FRICTION_FIGURES = (
    "detected",
    "resolved",
    "starts",
    "rate_per_1000_starts",
    "resolution_rate",
    "median_seconds_to_resolve",
)
MEMBER_FIGURES = ("members", "frictions_per_1000_members")


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
            "rate_per_1000_starts": _ratio(cell.windowed, cell.starts, 1000, 2),
            "resolution_rate": _ratio(resolved, cell.detected, 1, 4),
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
            row["frictions_per_1000_members"] = None if suppressed else _ratio(cell.detected, members, 1000, 2)
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


FUNNEL_FIGURES = ("entered", "reached", "dropped", "in_progress", "conversion")


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
                    "conversion": None if number == 1 else _ratio(reached, reached + dropped, 1, 4),
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
        """A row per library and band, per library for all the bands (`*`), and the network (`*`) per band and
        for all; small cells suppressed, and more cells where a total would give a suppressed one away."""
        table: dict[tuple[str | None, str], list[int]] = {}
        libraries = sorted({library for library, _ in self.counts}, key=lambda v: _sort_key((v,)))
        for library in [*libraries, ALL]:
            for band in [*self.age_bands, ALL]:
                members = active = 0
                for (lib, b), (m, a) in self.counts.items():
                    if (library == ALL or lib == library) and (band == ALL or b == band):
                        members, active = members + m, active + a
                if members or library == ALL:
                    table[(library, band)] = [members, active]
        suppressed = suppress_with_totals(
            {cell: counts[0] for cell, counts in table.items()},
            lines=_reach_lines(list(table), libraries, self.age_bands),
            min_cell=min_cell,
        )
        rows = []
        for (library, band), (members, active) in table.items():
            hidden = (library, band) in suppressed
            rows.append(
                {
                    "library": library,
                    "age_band": band,
                    "members": None if hidden else members,
                    "active": None if hidden else active,
                    "share": None if hidden else _ratio(active, members, 1, 4),
                    "suppressed": hidden,
                }
            )
        return Report(("library", "age_band", "members", "active", "share", "suppressed"), rows)


Cell = tuple[str | None, str]


def _reach_lines(cells: list[Cell], libraries: list[str | None], bands: Sequence[str]) -> list[tuple[Cell, list[Cell]]]:
    """Each total with the cells it adds up: per band over the libraries, per library over the bands."""
    present = set(cells)
    lines: list[tuple[Cell, list[Cell]]] = []
    for band in [*bands, ALL]:
        lines.append(((ALL, band), [(lib, band) for lib in libraries if (lib, band) in present]))
    for library in [*libraries, ALL]:
        if (library, ALL) in present:
            lines.append(((library, ALL), [(library, b) for b in bands if (library, b) in present]))
    return lines


def suppress_with_totals(
    sizes: Mapping[Cell, int], lines: Sequence[tuple[Cell, Sequence[Cell]]], *, min_cell: int
) -> set[Cell]:
    """Cells below `min_cell` are suppressed (an empty one is not: it singles nobody out). A shown total minus
    its shown cells gives away what its suppressed cells hold together, so in every line (a total and the cells it
    adds up) either nothing is suppressed, or at least two cells holding `min_cell` members together: the smallest
    shown cells are suppressed until that holds, and the total itself when no cell is left. Repeated until nothing
    changes, since a cell is in two lines."""
    suppressed = {cell for cell, size in sizes.items() if 0 < size < min_cell}

    def exposed(hidden: list[Cell]) -> bool:
        counted = [c for c in hidden if sizes[c]]  # an empty cell gives nobody away
        return bool(counted) and (len(counted) == 1 or sum(sizes[c] for c in counted) < min_cell)

    changed = True
    while changed:
        changed = False
        for total, parts in lines:
            if total in suppressed:
                continue
            hidden = [p for p in parts if p in suppressed]
            shown = sorted((p for p in parts if p not in suppressed), key=lambda p: (sizes[p], _sort_key(p)))
            while exposed(hidden) and shown:
                hidden.append(shown.pop(0))
                suppressed.add(hidden[-1])
                changed = True
            if exposed(hidden):
                suppressed.add(total)
                changed = True
    return suppressed


# ---------------------------------------------------------------------------------------------- timeline


def timeline_view(journey: Journey, requested_id: str) -> dict[str, Any]:
    """One member's journey as front-office staff read it (times in Amsterdam, newest events first)."""
    profile = journey.get("p") or {}
    touches: dict[str, dict[str, str | None]] = {"channels": {}, "platforms": {}}
    for touch, at in sorted(journey.get("t", {}).items()):
        kind, _, name = touch.partition(":")
        touches["channels" if kind == "channel" else "platforms"][name] = local_time(at)
    return {
        "member_id": journey["id"],
        "requested_id": requested_id,
        "profile": {
            k: profile.get(k) for k in ("age_band", "home_library", "postcode_area", "channel", "platform", "source")
        },
        "milestones": [
            {"type": kind, "at": local_time(at), "channel": channel, "platform": platform}
            for kind, (at, channel, platform) in sorted(journey.get("f", {}).items(), key=lambda kv: (kv[1][0], kv[0]))
        ],
        "last_touch": touches,
        "last_activity": local_time(journey.get("a")),
        "timeline": [
            {"at": local_time(at), "type": kind, "channel": channel, "platform": platform, "library": library}
            for at, kind, channel, platform, library in reversed(journey.get("tl", []))
        ],
        "open_frictions": [
            {
                "friction_id": f["friction_id"],
                "rule": f["rule"],
                "started": local_time(f["started_ms"]),
                "detected": local_time(f["due_ms"]),
                "library": f.get("library"),
                "channel_pair": f.get("channel_pair"),
                "platform": f.get("platform"),
            }
            for f in sorted(journey.get("o", {}).values(), key=lambda f: (f["due_ms"], f["friction_id"]))
        ],
    }


# --------------------------------------------------------------------------------------------------- CSV


def to_csv(report: Report) -> str:
    """The report as CSV: a header, a line per row; null is an empty field, booleans `true`/`false`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(report.columns)
    for row in report.rows:
        writer.writerow([_csv_value(row.get(c)) for c in report.columns])
    return out.getvalue()


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ---------------------------------------------------------------------------------------------- helpers


def _ratio(part: int, whole: int | None, scale: int, digits: int) -> float | None:
    return None if not whole else round(part * scale / whole, digits)


def _sort_key(key: Iterable[Any]) -> tuple[tuple[bool, str], ...]:
    """Rows in a stable order; an unknown value (None) after the known ones, a total (`*`) last."""
    return tuple((v is None or v == ALL, "" if v is None else ("\uffff" if v == ALL else str(v))) for v in key)
