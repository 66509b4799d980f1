"""Retention and paths, without I/O: the SQL that counts them and the rows made from the counts.

Retention: members grouped by the month they signed up (their cohort), and the share of each cohort active in
each later month (month 0 is the sign-up month itself). Paths: what members did next after an event of a chosen
type (say a failed e-book login): the most common sequences of the next one to three steps, each within a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from services.analytics.queries import Parameters, Statement
from services.analytics.reports import Report, Row, local_date, ratio
from services.analytics.schema import ZONE

NOTHING = "(none)"  # no next step within the time allowed


def _members(p: Parameters, libraries: frozenset[str], age_bands: frozenset[str]) -> str:
    filters = ["signed_up = 1"]
    if libraries:
        filters.append(f"coalesce(home_library, merged_home_library) IN {p.strings(list(libraries))}")
    if age_bands:
        filters.append(f"coalesce(age_band, merged_age_band) IN {p.strings(list(age_bands))}")
    return f"SELECT member_key, joined, active_months FROM {{db}}.members FINAL WHERE {' AND '.join(filters)}"


# ---------------------------------------------------------------------------------------------- retention


@dataclass(frozen=True)
class RetentionQuery:
    start: date | None = None  # first cohort: the month of this day
    end: date | None = None  # last cohort
    months: int = 12  # later months shown per cohort
    libraries: frozenset[str] = frozenset()
    age_bands: frozenset[str] = frozenset()


def retention_counts(query: RetentionQuery) -> Statement:
    """Per cohort month: its size (`after` -1) and the members active in each month after (0, 1, …). One pass
    over `members`, which keeps each member's active months: no event is read."""
    p = Parameters()
    cohort = f"toStartOfMonth(toDateTime(intDiv(joined, 1000), {ZONE}))"
    filters = ["1"]
    if query.start is not None:
        filters.append(f"cohort >= toStartOfMonth({p.add('Date', query.start.isoformat())})")
    if query.end is not None:
        filters.append(f"cohort <= toStartOfMonth({p.add('Date', query.end.isoformat())})")
    months = p.add("UInt16", query.months)
    sql = f"""
        SELECT toString(cohort) AS cohort, after, count() AS members
        FROM (
            SELECT {cohort} AS cohort, toInt32(toRelativeMonthNum(cohort)) AS first,
                   arrayConcat([-1], arrayFilter(a -> a >= 0 AND a <= {months},
                                                 arrayMap(m -> toInt32(m) - first, active_months))) AS afters
            FROM ({_members(p, query.libraries, query.age_bands)})
            WHERE {" AND ".join(filters)}
        )
        ARRAY JOIN afters AS after
        GROUP BY cohort, after
    """
    return sql, p.values


def retention_report(
    counted: Iterable[Mapping[str, Any]], query: RetentionQuery, clock_ms: int, min_cell: int
) -> Report:
    """A row per cohort and later month up to the clock's month: `members` (the cohort), `active`, `share`. A
    cohort smaller than `min_cell` is suppressed whole; a month with fewer than `min_cell` active members (but
    some) has its `active` and `share` suppressed."""
    sizes: dict[str, int] = {}
    active: dict[tuple[str, int], int] = {}
    for row in counted:
        after = int(row["after"])
        if after < 0:
            sizes[str(row["cohort"])] = int(row["members"])
        else:
            active[(str(row["cohort"])[:7], after)] = int(row["members"])
    now = local_date(clock_ms)
    rows: list[Row] = []
    for cohort in sorted(sizes):
        month = date.fromisoformat(cohort)
        size = sizes[cohort]
        for after in range(query.months + 1):
            index = month.year * 12 + month.month - 1 + after
            if (index // 12, index % 12 + 1) > (now.year, now.month):
                break  # a month still to come: not counted as inactive
            count = active.get((cohort[:7], after), 0)
            small_cohort, small_cell = size < min_cell, 0 < count < min_cell
            rows.append(
                {
                    "cohort": cohort[:7],
                    "months_after": after,
                    "members": None if small_cohort else size,
                    "active": None if small_cohort or small_cell else count,
                    "share": None if small_cohort or small_cell else ratio(count, size, 1, 4),
                    "suppressed": small_cohort or small_cell,
                }
            )
    return Report(("cohort", "months_after", "members", "active", "share", "suppressed"), rows)


# -------------------------------------------------------------------------------------------------- paths


@dataclass(frozen=True)
class PathQuery:
    event: str
    depth: int = 2  # next steps per path, 1-3
    within: timedelta = timedelta(days=7)  # each step at most this long after the one before
    start: date | None = None  # occurrences of `event` on these Amsterdam days
    end: date | None = None
    limit: int = 10
    libraries: frozenset[str] = frozenset()
    age_bands: frozenset[str] = frozenset()


STEPS = "NOT startsWith(type, 'friction.') AND NOT startsWith(type, 'message.')"  # member and usage events
DEPTH = 3  # next steps kept per event (`next_steps`): the deepest path asked


def derive_next_steps(changed_after: int | None, part: int = 0, parts: int = 1) -> Statement:
    """`next_steps` for every member or usage event of the members stored after `changed_after` (epoch ms; None:
    all members), in `parts` slices of the members by key (this one `part`): a member's events in order (time, then
    event id), each with the next `DEPTH` steps and the milliseconds between each and the one before. The rows
    carry a version: ones derived again replace the earlier (the table is read with FINAL)."""
    p = Parameters()
    among = ["1"]
    if changed_after is not None:
        among.append(
            f"member_key IN (SELECT member_key FROM {{db}}.members WHERE stored > {p.add('Int64', changed_after)})"
        )
    if parts > 1:
        among.append(f"member_key % {p.add('UInt64', parts)} = {p.add('UInt64', part)}")
    following, columns = [], []
    for k in range(1, DEPTH + 1):
        columns += [f"type_{k}", f"gap_{k}"]
        inside = f"i + {k} <= length(e)"
        following += [f"if({inside}, e[i + {k}].2, '')", f"if({inside}, e[i + {k}].1 - e[i + {k - 1}].1, 0)"]
    sql = f"""
        INSERT INTO {{db}}.next_steps (type, ms, member_key, event_key, {", ".join(columns)}, version)
        SELECT e[i].2, e[i].1, member_key, cityHash64(e[i].3), {", ".join(following)},
               toUnixTimestamp64Nano(now64(9))
        FROM (
            SELECT member_key,
                   arraySort(x -> (x.1, x.3), groupArray((toUnixTimestamp64Milli(time), type, event_id))) AS e
            FROM {{db}}.events WHERE {STEPS} AND {" AND ".join(among)}
            GROUP BY member_key
        )
        ARRAY JOIN arrayEnumerate(e) AS i
    """
    return sql, p.values


def path_counts(query: PathQuery, clock_ms: int) -> Statement:
    """How often each sequence of next steps followed an occurrence of the event (from `next_steps`: only the
    event's rows are read). Right-censored: occurrences younger than `depth` times `within` by the clock are left
    out (their next steps may still come)."""
    p = Parameters()
    within = p.add("Int64", int(query.within.total_seconds() * 1000))
    horizon = p.add("Int64", clock_ms - query.depth * int(query.within.total_seconds() * 1000))
    filters = [f"type = {p.add('String', query.event)}", f"ms <= {horizon}"]
    if query.start is not None:
        filters.append(f"toDate(fromUnixTimestamp64Milli(ms), {ZONE}) >= {p.add('Date', query.start.isoformat())}")
    if query.end is not None:
        filters.append(f"toDate(fromUnixTimestamp64Milli(ms), {ZONE}) <= {p.add('Date', query.end.isoformat())}")
    if query.libraries or query.age_bands:
        filters.append(f"member_key IN (SELECT member_key FROM ({_members(p, query.libraries, query.age_bands)}))")
    # Step k follows step k-1 (the occurrence for k = 1) within `within`; after a missing step, nothing.
    steps = []
    for k in range(1, query.depth + 1):
        inside = " AND ".join(f"type_{j} != '' AND gap_{j} <= {within}" for j in range(1, k + 1))
        steps.append(f"if({inside}, type_{k}, '{NOTHING}') AS step_{k}")
    names = ", ".join(f"step_{k}" for k in range(1, query.depth + 1))
    sql = f"""
        SELECT {names}, count() AS occurrences
        FROM (SELECT {", ".join(steps)} FROM {{db}}.next_steps FINAL WHERE {" AND ".join(filters)})
        GROUP BY {names}
    """
    return sql, p.values


def paths_report(counted: Iterable[Mapping[str, Any]], query: PathQuery, min_cell: int) -> Report:
    """The `limit` most common paths, most common first, each with its share of all the occurrences counted; a
    path followed fewer than `min_cell` times has its counts suppressed."""
    steps = tuple(f"step_{k}" for k in range(1, query.depth + 1))
    cells = sorted(counted, key=lambda c: (-int(c["occurrences"]), tuple(str(c[s]) for s in steps)))
    total = sum(int(c["occurrences"]) for c in cells)
    rows: list[Row] = []
    for rank, cell in enumerate(cells[: query.limit], start=1):
        n = int(cell["occurrences"])
        suppressed = n < min_cell
        rows.append(
            {
                "rank": rank,
                "path": " → ".join(str(cell[s]) for s in steps),
                **{s: cell[s] for s in steps},
                "occurrences": None if suppressed else n,
                "share": None if suppressed else ratio(n, total, 1, 4),
                "suppressed": suppressed,
            }
        )
    return Report(("rank", "path", *steps, "occurrences", "share", "suppressed"), rows)
