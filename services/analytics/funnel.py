"""The funnel's SQL, without I/O: members through any sequence of event types, read from each member's steps.

A funnel reads `members` (one row per member) rather than the events: each member's steps are kept there at insert
as one set of numbers (`schema.STEP_OF_EVENT`: time, channel, type code), so counting needs no grouping of millions
of events by member — at 4 million members the grouping was most of a funnel's time (docs/reports.md, "Speed").
"""

from __future__ import annotations

from services.analytics.queries import Parameters, Statement
from services.analytics.reports import FunnelQuery
from services.analytics.schema import CHANNEL_BITS, STEP_CHANNELS, TYPE_BITS, ZONE, step_code

_TIME = TYPE_BITS + CHANNEL_BITS  # a step number's time is above its channel and type
_TYPE = f"x % {1 << TYPE_BITS}"  # a step number's type code (in a lambda over the steps, `x`)


def _first(code: str, after: str | None = None) -> str:
    """The least step number of the type `code` (0: none), at or after the time `after` when given. The type's
    steps are picked first, without the time: a lambda that captures a column costs per element."""
    of_type = f"arrayFilter(x -> {_TYPE} = {code}, steps)"
    if after is None:
        return f"arrayMin({of_type})"
    return f"arrayMin(arrayFilter(x -> x >= bitShiftLeft(toUInt64({after}), {_TIME}), {of_type}))"


def _time(step: str) -> str:
    return f"toInt64(bitShiftRight({step}, {_TIME}))"


def funnel_counts(query: FunnelQuery, clock_ms: int) -> Statement:
    """Members through the steps per split value. A member enters with the first occurrence of the first step;
    each next step counts at its first occurrence at or after the previous one, within `within`; one not reached
    is in progress while the previous step is younger than `within` by the clock, else dropped."""
    p = Parameters()
    steps = query.steps
    within = p.add("Int64", int(query.within.total_seconds() * 1000))
    clock = p.add("Int64", clock_ms)
    code = [step_code(p.add("String", s)) for s in steps]
    channels = ", ".join(f"'{c}'" for c in STEP_CHANNELS)
    split = {
        None: "NULL",
        # The first step's channel is in its number; its platform in the first occurrence of each type kept apart.
        "channel": f"[NULL, {channels}][1 + bitShiftRight(first, {TYPE_BITS}) % {1 << CHANNEL_BITS}]",
        "platform": f"((first_platforms.2)[indexOf(first_platforms.1, {code[0]})]).2",
    }[query.by]
    # Step k is reached at `at_k` (0: not reached); each builds on the one before. The first occurrence at or after
    # the previous step is the least such number: no sorting of each member's steps.
    chain = ["toUInt8(1) AS ok_1"]
    for k in range(2, len(steps) + 1):
        found = _time(_first(code[k - 1], f"at_{k - 1}"))
        chain.append(f"if(ok_{k - 1} AND {found} > 0 AND {found} - at_{k - 1} <= {within}, {found}, 0) AS at_{k}")
        chain.append(f"toUInt8(at_{k} > 0) AS ok_{k}")
    figures = []
    for k in range(1, len(steps) + 1):
        before = "1" if k == 1 else f"ok_{k - 1}"
        young = "0" if k == 1 else f"{clock} - at_{k - 1} < {within}"
        figures += [
            f"countIf({before}) AS entered_{k}",
            f"countIf(ok_{k}) AS reached_{k}",
            f"countIf({before} AND NOT ok_{k} AND NOT ({young})) AS dropped_{k}",
            f"countIf({before} AND NOT ok_{k} AND ({young})) AS in_progress_{k}",
        ]
    filters = ["first > 0"]
    day = f"toDate(fromUnixTimestamp64Milli(at_1), {ZONE})"
    if query.start is not None:
        filters.append(f"{day} >= {p.add('Date', query.start.isoformat())}")
    if query.end is not None:
        filters.append(f"{day} <= {p.add('Date', query.end.isoformat())}")
    # The profile as every report takes it (`queries.profiles`): the member's own sign-up, else a merged member's.
    columns = ["steps", *(["first_platforms"] if query.by == "platform" else [])]
    for wanted, name, alias in ((query.libraries, "home_library", "home"), (query.age_bands, "age_band", "band")):
        if wanted:
            filters.append(f"{alias} IN {p.strings(list(wanted))}")
            columns.append(f"coalesce({name}, merged_{name}) AS {alias}")
    sql = f"""
        SELECT split, {", ".join(figures)}
        FROM (
            SELECT {split} AS split, at_1, {", ".join(chain)}
            FROM (SELECT {", ".join(columns)}, {_first(code[0])} AS first, {_time("first")} AS at_1
                  FROM {{db}}.members FINAL)
            WHERE {" AND ".join(filters)}
        )
        GROUP BY split
    """
    return sql, p.values
