"""The reports' rules without I/O: parameters, Amsterdam time, the rows made from the store's counts (rates,
medians, totals), small-cell suppression and CSV. The counting itself is SQL (`services.analytics.queries`).

docs/reports.md is the contract; the shapes are those journey's reports had, so dashboards and scripts built on
them keep working.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from operator import itemgetter
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
ALL = "*"  # a total row: the whole network, or all the requested age bands

Dimension = Literal["rule", "library", "channel_pair", "platform", "age_band"]
DIMENSIONS: tuple[Dimension, ...] = get_args(Dimension)
Period = Literal["day", "week", "month"]
Split = Literal["channel", "platform"]
Row = dict[str, Any]
Cell = tuple[str | None, str]


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


Preset = Literal[
    "today", "last_7_days", "last_30_days", "this_month", "last_month", "last_12_months", "this_year", "last_year"
]


def preset_range(preset: Preset, today: date) -> tuple[date, date]:
    """The days a preset covers, inclusive, for `today` (Europe/Amsterdam): `last_7_days` ends today,
    `last_month` is the whole previous calendar month, `last_12_months` the twelve months up to today."""
    if preset == "today":
        return today, today
    if preset in ("last_7_days", "last_30_days"):
        return today - timedelta(days=6 if preset == "last_7_days" else 29), today
    if preset == "this_month":
        return today.replace(day=1), today
    if preset == "last_month":
        end = today.replace(day=1) - timedelta(days=1)
        return end.replace(day=1), end
    if preset == "last_12_months":
        return _year_before(today) + timedelta(days=1), today
    if preset == "this_year":
        return today.replace(month=1, day=1), today
    return date(today.year - 1, 1, 1), date(today.year - 1, 12, 31)


def _year_before(day: date) -> date:
    try:
        return day.replace(year=day.year - 1)
    except ValueError:  # 29 February
        return day.replace(year=day.year - 1, day=28)


def previous_range(start: date, end: date) -> tuple[date, date]:
    """The period of the same length just before: 1 to 31 March gives 29 January to 28 February (31 days)."""
    length = end - start + timedelta(days=1)
    return start - length, start - timedelta(days=1)


COMPARED = ("detected", "resolution_rate", "rate_per_1000_starts")


def with_previous(current: Report, previous: Report, keys: Sequence[str]) -> Report:
    """The current rows with the same group's figures in the previous period (`previous_*`, null when that row
    is suppressed or absent) and the relative change of `detected`."""
    before = {tuple(row[k] for k in keys): row for row in previous.rows}
    rows = []
    for row in current.rows:
        old = before.get(tuple(row[k] for k in keys), {})
        extra: Row = {f"previous_{name}": old.get(name) for name in COMPARED}
        was, now = old.get("detected"), row.get("detected")
        extra["detected_change"] = None if not was or now is None else round((now - was) / was, 4)
        rows.append({**row, **extra})
    columns = current.columns[:-1] + tuple(f"previous_{name}" for name in COMPARED) + ("detected_change", "suppressed")
    return Report(columns, [{c: r.get(c) for c in columns} for r in rows])


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


FRICTION_FIGURES = (
    "detected",
    "resolved",
    "starts",
    "rate_per_1000_starts",
    "resolution_rate",
    "median_seconds_to_resolve",
)
MEMBER_FIGURES = ("members", "frictions_per_1000_members")


def friction_report(
    counted: Iterable[Mapping[str, Any]],
    query: FrictionQuery,
    *,
    min_cell: int,
    members_by_library: Mapping[str | None, int] | None = None,
) -> Report:
    """The friction rows from the store's counts per group (and period): `detected`, `windowed` (frictions of
    absence rules), `resolved`, `median_seconds` and `starts` (closed windows; 0 when the group has none)."""
    keys = (*query.by, *(("period",) if query.period else ()))
    columns = (*keys, *FRICTION_FIGURES)
    with_members = "library" in query.by and members_by_library is not None
    if with_members:
        columns += MEMBER_FIGURES
    columns += ("suppressed",)
    rows = []
    hidden = dict.fromkeys(FRICTION_FIGURES)
    # A report by rule, library and week has tens of thousands of rows: this loop is kept to plain operations.
    for cell in _sorted_by(counted, keys):
        detected, windows, resolved = int(cell["detected"]), int(cell["starts"]), int(cell["resolved"])
        starts = windows or None
        suppressed = detected < min_cell or (starts is not None and starts < min_cell)
        row: Row = {k: cell[k] for k in keys}
        if suppressed:
            row.update(hidden)
        else:
            median = cell.get("median_seconds")
            row["detected"] = detected
            row["resolved"] = resolved
            row["starts"] = starts
            row["rate_per_1000_starts"] = round(int(cell["windowed"]) * 1000 / windows, 2) if windows else None
            row["resolution_rate"] = round(resolved / detected, 4) if detected else None
            row["median_seconds_to_resolve"] = None if median is None or not resolved else round(median, 1)
        if with_members:
            assert members_by_library is not None
            members: int | None = members_by_library.get(row["library"], 0)
            if members is not None and members < min_cell:
                members = None
            row["members"] = members
            row["frictions_per_1000_members"] = None if suppressed else ratio(detected, members, 1000, 2)
        row["suppressed"] = suppressed
        rows.append(row)
    return Report(columns, rows)


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


def funnel_report(counted: Iterable[Mapping[str, Any]], query: FunnelQuery, min_cell: int) -> Report:
    """Rows per split value and step from the store's counts: `split`, then `entered_k`, `reached_k`,
    `dropped_k`, `in_progress_k` for each step k (1-based)."""
    split = () if query.by is None else (query.by,)
    columns = (*split, "step_number", "step", *FUNNEL_FIGURES, "suppressed")
    rows = []
    for cell in sorted(counted, key=lambda c: _sort_key((c["split"],))):
        for number, step in enumerate(query.steps, start=1):
            entered, reached = int(cell[f"entered_{number}"]), int(cell[f"reached_{number}"])
            dropped, in_progress = int(cell[f"dropped_{number}"]), int(cell[f"in_progress_{number}"])
            row: Row = {} if query.by is None else {query.by: cell["split"]}
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


def reach_report(counts: Mapping[Cell, tuple[int, int]], bands: Sequence[str], min_cell: int) -> Report:
    """From (members, active) per (library, band): a row per library and band, per library for all the bands
    (`*`), and the network (`*`) per band and for all; small cells suppressed, and more cells where a total
    would give a suppressed one away."""
    table: dict[Cell, list[int]] = {}
    libraries = sorted({library for library, _ in counts}, key=lambda v: _sort_key((v,)))
    for library in [*libraries, ALL]:
        for band in [*bands, ALL]:
            members = active = 0
            for (lib, b), (m, a) in counts.items():
                if (library == ALL or lib == library) and (band == ALL or b == band):
                    members, active = members + m, active + a
            if members or library == ALL:
                table[(library, band)] = [members, active]
    suppressed = suppress_with_totals(
        {cell: figures[0] for cell, figures in table.items()},
        lines=_reach_lines(list(table), libraries, bands),
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
                "share": None if hidden else ratio(active, members, 1, 4),
                "suppressed": hidden,
            }
        )
    return Report(("library", "age_band", "members", "active", "share", "suppressed"), rows)


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


def ratio(part: int, whole: int | None, scale: int, digits: int) -> float | None:
    return None if not whole else round(part * scale / whole, digits)


def _sorted_by(cells: Iterable[Mapping[str, Any]], keys: Sequence[str]) -> list[Mapping[str, Any]]:
    """Cells in `_sort_key` order of their `keys`: each column's few distinct values ranked once, then the cells
    sorted by their ranks (tens of thousands of cells, a handful of values per column). The ranks are made a
    column at a time, the loops in C: a key function per cell took a quarter of a second."""
    cells = list(cells)
    if not keys:
        return cells
    ranked = []
    for k in keys:
        values = list(map(itemgetter(k), cells))
        distinct = sorted(set(values), key=lambda v: _sort_key((v,)))
        ranked.append(map({v: n for n, v in enumerate(distinct)}.__getitem__, values))
    order = sorted(range(len(cells)), key=list(zip(*ranked, strict=True)).__getitem__)
    return [cells[n] for n in order]


def _sort_key(key: Iterable[Any]) -> tuple[tuple[bool, str], ...]:
    """Rows in a stable order; an unknown value (None) after the known ones, a total (`*`) last."""
    return tuple((v is None or v == ALL, "" if v is None else ("\uffff" if v == ALL else str(v))) for v in key)
