"""The reports' SQL, without I/O: each function returns a statement and its parameters for `AnalyticsStore.rows`.

ClickHouse SQL that runs unchanged on chDB and on a server. `{db}` is the store's database; values travel as
typed query parameters (`{name:Type}`), never pasted into the text, except the rule catalogue's own ids and
field names, which are checked here. Days and periods are Europe/Amsterdam.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from services.analytics.facts import DETECTED, RESOLVED, SIGNED_UP
from services.analytics.reports import FrictionQuery, Period, Row
from services.analytics.schema import ZONE
from services.analytics.store import array_literal
from services.journey.rules import AbsenceRule, RuleCatalogue

Statement = tuple[str, dict[str, str | int | float]]

# Fields a rule's `where` may name, and the column that keeps each (envelope attributes and data fields).
WHERE_COLUMNS = {
    "channel": "channel",
    "platform": "platform",
    "library": "library",
    "source": "source",
    "age_band": "age_band",
    "home_library": "home_library",
    "proposition": "proposition",
    "to_channel": "to_channel",
}
PROFILE_COLUMNS = ("age_band", "home_library", "postcode_area", "source")
_SAFE = re.compile(r"^[A-Za-z0-9_.\-→ +]+$")  # `+`: the age band 65+


def _text(value: object) -> str:
    """A catalogue value as a SQL string literal (the catalogue is ours; checked all the same)."""
    text = str(value)
    if not _SAFE.match(text):
        raise ValueError(f"unexpected character in rule catalogue value {text!r}")
    return f"'{text}'"


@dataclass
class Parameters:
    """Collects typed query parameters; `add` returns the placeholder to write in the SQL."""

    values: dict[str, str | int | float] = field(default_factory=dict)

    def add(self, kind: str, value: str | int | float) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"{{{name}:{kind}}}"

    def strings(self, values: Sequence[str]) -> str:
        return self.add("Array(String)", array_literal(sorted(values)))


# ---------------------------------------------------------------------------------------------- profiles


def profiles(among: str = "") -> str:
    """Each signed-up member's profile (`members`, kept by the store from every event): from their own sign-up,
    else from one of a member merged into them; `among`: a condition on `member_key` that narrows the members."""
    narrowed = f" AND {among}" if among else ""
    return f"""
        SELECT member_key, coalesce(home_library, merged_home_library) AS home_library,
               coalesce(age_band, merged_age_band) AS age_band, postcode_area, source, last_active, joined
        FROM {{db}}.members FINAL WHERE signed_up = 1{narrowed}
    """


# --------------------------------------------------------------------------------------- absence windows


@dataclass(frozen=True)
class Window:
    """An absence rule as the store counts its windows: the start condition, the window, the channel pair."""

    rule: str
    types: tuple[str, ...]
    condition: str
    within_ms: int
    channel_pair: str | None
    member: tuple[tuple[str, tuple[str, ...]], ...] = ()


def windows_of(catalogue: RuleCatalogue) -> list[Window]:
    """The absence rules; a start filter on a field the store does not keep is an error (said at start-up)."""
    windows = []
    for rule in catalogue.rules:
        if not isinstance(rule, AbsenceRule):
            continue
        conditions = []
        for name, wanted in rule.start.where.items():
            if name not in WHERE_COLUMNS:
                raise ValueError(f"rule {rule.id}: the analytics store keeps no field {name!r} to count windows by")
            allowed = wanted if isinstance(wanted, list) else [wanted]
            conditions.append(f"{WHERE_COLUMNS[name]} IN ({', '.join(_text(a) for a in allowed)})")
        types = tuple(rule.start.type)
        conditions.insert(0, f"type IN ({', '.join(_text(t) for t in types)})")
        for name in rule.member:
            if name not in PROFILE_COLUMNS:
                raise ValueError(f"rule {rule.id}: the analytics store keeps no profile field {name!r}")
        windows.append(
            Window(
                rule.id,
                types,
                " AND ".join(conditions),
                int(rule.within.total_seconds() * 1000),
                rule.channel_pair,
                tuple((name, tuple(values)) for name, values in rule.member.items()),
            )
        )
    return windows


# The derived tables' layout (windows, frictions, members): changed when what they keep changes, so they are derived
# again (5: members keep their steps).
LAYOUT = 5


def fingerprint(windows: Sequence[Window]) -> str:
    """What the stored windows were derived with: another catalogue (a rule added, a window changed) or another
    layout derives them again."""
    return hashlib.sha256(repr((LAYOUT, list(windows))).encode()).hexdigest()[:16]


# The members of a batch being stored: the table the store passes along as `{batch}` (a `member_id` column).
IN_BATCH = "member_key IN (SELECT cityHash64(member_id) FROM {batch})"


def _members(members: Sequence[str] | None, in_batch: bool, p: Parameters) -> str:
    if in_batch:
        return IN_BATCH
    return "1" if members is None else f"member_key IN (SELECT cityHash64(arrayJoin({p.strings(members)})))"


def derive_windows(
    windows: Sequence[Window], members: Sequence[str] | None = None, *, in_batch: bool = False
) -> Statement:
    """Store the absence windows the events start (`windows`): for the events of `members` (a batch just stored,
    or a member merged into another), or for every event (a new rule catalogue). Windows stored already are not
    stored again, so this can run any number of times.

    Each window keeps what reports count it by, so that they read it without a join: the start's library (else
    the home library), a sign-up its own profile, another start the member's profile as stored now (the store
    drops and derives again a member's other windows when a sign-up of theirs arrives later, or a merge changes
    the profile), and the Amsterdam day it closes."""
    p = Parameters()
    if not windows:
        return "SELECT 1 WHERE 0", {}
    narrowed = _members(members, in_batch, p)
    # The events read once (not once per rule), each a row per window it starts: rule, length, pair (NULL: its own).
    started = ", ".join(
        f"if({w.condition}, [CAST(({_text(w.rule)}, {w.within_ms}, "
        f"{_text(w.channel_pair) if w.channel_pair else 'NULL'}), 'Tuple(String, Int64, Nullable(String))')], [])"
        for w in windows
    )
    starts = f"""
        SELECT event_id, member_key, member_id, w.1 AS rule, toUnixTimestamp64Milli(time) + w.2 AS due, library,
               if(isNull(w.3), channel_pair, w.3) AS channel_pair, platform, toUInt8(type = '{SIGNED_UP}') AS signed_up,
               {", ".join(PROFILE_COLUMNS)}
        FROM (SELECT *, member_key, arrayJoin(arrayConcat({started})) AS w FROM {{db}}.events
              WHERE {narrowed} AND ({" OR ".join(f"({w.condition})" for w in windows)}))
    """
    stored = f"SELECT event_id, rule FROM {{db}}.windows WHERE {narrowed}"
    profile = ", ".join(f"if(s.signed_up = 1, s.{name}, p.{name})" for name in PROFILE_COLUMNS)
    sql = f"""
        INSERT INTO {{db}}.windows (event_id, member_key, member_id, rule, due, library, channel_pair, platform,
                                    signed_up, {", ".join(PROFILE_COLUMNS)}, day)
        SELECT s.event_id, s.member_key, s.member_id, s.rule, s.due,
               coalesce(s.library, if(s.signed_up = 1, s.home_library, p.home_library)), s.channel_pair,
               s.platform, s.signed_up, {profile}, toDate(fromUnixTimestamp64Milli(s.due), {ZONE})
        FROM ({starts}) AS s
        LEFT JOIN ({profiles(narrowed)}) AS p ON s.member_key = p.member_key
        WHERE (s.event_id, s.rule) NOT IN ({stored})
        SETTINGS join_use_nulls = 1
    """
    return sql, p.values


def derive_frictions(members: Sequence[str] | None = None, *, in_batch: bool = False) -> Statement:
    """Store a row per friction detected or resolved (for the events of `members`, or all), each with the
    detection's attributes and Amsterdam day (the due time), a resolution also with its seconds: reports count
    them in one pass, without joining resolutions to detections. A resolution whose detection is not stored yet
    waits for it (derived with the batch that brings it). Rows stored already are not stored again."""
    p = Parameters()
    narrowed = _members(members, in_batch, p)
    sql = f"""
        INSERT INTO {{db}}.frictions (event_id, member_key, member_id, rule, library, channel_pair, platform,
                                      age_band, day, detected, seconds)
        SELECT e.event_id, e.member_key, e.member_id, d.rule, d.library, d.channel_pair, d.platform, d.age_band,
               d.day, toUInt8(e.type = '{DETECTED}'), e.seconds
        FROM (SELECT event_id, member_key, member_id, type, friction_id, seconds FROM {{db}}.events
              WHERE type IN ('{DETECTED}', '{RESOLVED}') AND {narrowed}) AS e
        INNER JOIN (SELECT member_key, friction_id, any(rule) AS rule, any(library) AS library,
                           any(channel_pair) AS channel_pair, any(platform) AS platform, any(age_band) AS age_band,
                           any(toDate(due, {ZONE})) AS day
                    FROM {{db}}.events WHERE type = '{DETECTED}' AND {narrowed}
                    GROUP BY member_key, friction_id) AS d
        ON e.member_key = d.member_key AND e.friction_id = d.friction_id
        WHERE e.event_id NOT IN (SELECT event_id FROM {{db}}.frictions WHERE {narrowed})
    """
    return sql, p.values


def derived(windows: Sequence[Window], members: Sequence[str] | None = None) -> list[Statement]:
    """What reports read besides the events, derived for `members` (or all): absence windows and frictions."""
    return [derive_windows(windows, members), derive_frictions(members)]


def closed_windows(windows: Sequence[Window], closed_by: Sequence[str], p: Parameters) -> str:
    """Every absence window whose due time is at or before one of the clocks `closed_by` (placeholders), met or
    not (right-censored), with the attributes journey counts it by: the start's library (else the home library),
    the rule's channel pair (else the switch's), the start's platform, the member's age band; the Amsterdam day it
    closed and its due time. All kept on the window (`derive_windows`): no join."""
    admitted = "".join(f" AND (rule != {_text(w.rule)} OR ({_profile_filter(w)}))" for w in windows if w.member)
    latest = closed_by[0] if len(closed_by) == 1 else f"greatest({', '.join(closed_by)})"
    return f"""
        SELECT rule, library, channel_pair, platform, age_band, day, due
        FROM {{db}}.windows
        WHERE due <= {latest} AND rule IN {p.strings([w.rule for w in windows])}{admitted}
    """


def _profile_filter(window: Window) -> str:
    """The rule's condition on the member's profile (kept on the window)."""
    return " AND ".join(f"{name} IN ({', '.join(_text(v) for v in values)})" for name, values in window.member)


# ------------------------------------------------------------------------------------------- frictions


def period_sql(period: Period, day: str = "day") -> str:
    if period == "day":
        return f"toString({day})"
    if period == "week":
        return f"concat(toString(toISOYear({day})), '-W', leftPad(toString(toISOWeek({day})), 2, '0'))"
    return f"formatDateTime({day}, '%Y-%m')"


# A friction report's grouping: its dimensions and period. Reports asked at about the same time with the same
# filters (the dashboard's sections) are counted in one pass over the tables, one grouping set each.
Grouping = tuple[tuple[str, ...], Period | None]
Asked = tuple[Grouping, int]  # a grouping and the clock that closes its windows
# What a grouping set may group by; a row's `g` (`grouping()`, as standard SQL) has a bit set for each of those the
# sets use that its set is not grouped by, the first the highest. `one`, a constant, is the empty grouping's key:
# over no rows it gives no row (`rows_of` makes the total row) (not in every set: one key is grouped faster than two).
SET_KEYS = ("one", "rule", "library", "channel_pair", "platform", "age_band", "per_day", "per_week", "per_month")
_FIRST_DAY: dict[Period, str] = {"day": "day", "week": "toMonday(day)", "month": "toStartOfMonth(day)"}


def _set_keys(grouping: Grouping) -> tuple[str, ...]:
    by, period = grouping
    return (*by, *((f"per_{period}",) if period else ())) or ("one",)


def _used(sets: Sequence[Grouping]) -> list[str]:
    """The keys the grouping sets use, in `SET_KEYS` order: what `g` has a bit for."""
    return [k for k in SET_KEYS if any(k in _set_keys(g) for g in sets)]


def friction_counts(filters: FrictionQuery, asked: Sequence[Asked], windows: Sequence[Window]) -> Statement:
    """Per group (and period) of each grouping asked (with the clock that closes its windows), with `filters`'
    filters: frictions detected, those of absence rules (`windowed`), resolved, the median seconds to resolve,
    closed windows (`starts_<n>`: of the nth distinct clock). `rows_of` picks one grouping's rows out."""
    p = Parameters()
    absence = p.strings([w.rule for w in windows])
    clocks = list(dict.fromkeys(clock for _, clock in asked))
    sets = list(dict.fromkeys(grouping for grouping, _ in asked))
    used = _used(sets)
    periods = [period for period in _FIRST_DAY if f"per_{period}" in used]
    filter_list = ["1"]
    for bound, compared in ((filters.start, ">="), (filters.end, "<=")):
        if bound is not None:
            filter_list.append(f"day {compared} {p.add('Date', bound.isoformat())}")
    for column, values in (("library", filters.libraries), ("rule", filters.rules), ("age_band", filters.age_bands)):
        if values:
            filter_list.append(f"{column} IN {p.strings(list(values))}")
    closed_by = [p.add("Int64", clock) for clock in clocks]
    columns = ["*", "toUInt8(1) AS one", *(f"{_FIRST_DAY[period]} AS per_{period}" for period in periods)]
    # Each table grouped on its own, then the groups added up (a fifth less work than grouping their union); a key
    # a set is not grouped by is NULL in both tables' rows (`group_by_use_nulls`; else each its own default).
    grouped = f"""SELECT grouping({", ".join(used)}) AS g, {", ".join(used)}"""
    grouping_sets = ", ".join(f"({', '.join(_set_keys(g))})" for g in sets)
    where = f"WHERE {' AND '.join(filter_list)} GROUP BY GROUPING SETS ({grouping_sets})"
    sql = f"""
        SELECT g, {", ".join(k for k in used if not k.startswith("per_"))},
               {"".join(f"{period_sql(period, f'per_{period}')} AS period_{period}, " for period in periods)}
               sum(d) AS detected, sum(w) AS windowed, sum(r) AS resolved, any(m) AS median_seconds, sum(f) AS rows,
               {", ".join(f"sum(s{n}) AS starts_{n}" for n in range(len(clocks)))}
        FROM (
            {grouped}, sum(detected) AS d, sumIf(detected, rule IN {absence}) AS w, count(seconds) AS r,
                   quantileExactInclusive(0.5)(seconds) AS m, count() AS f,
                   {", ".join(f"0 AS s{n}" for n in range(len(clocks)))}
            FROM (SELECT {", ".join(columns)} FROM {{db}}.frictions) {where}
            UNION ALL
            {grouped}, 0, 0, 0, NULL, 0, {", ".join(f"countIf(due <= {c})" for c in closed_by)}
            FROM (SELECT {", ".join(columns)} FROM ({closed_windows(windows, closed_by, p)})) {where}
        )
        GROUP BY g, {", ".join(used)}
        SETTINGS group_by_use_nulls = 1
    """
    return sql, p.values


def rows_of(counted: Sequence[Mapping[str, Any]], asked: Sequence[Asked], which: int) -> list[Row]:
    """The rows of `asked[which]` in the answer of `friction_counts(..., asked, ...)`, as `reports.friction_report`
    takes them: the grouping's dimensions, `period`, the figures and its clock's closed windows as `starts`."""
    (by, period), clock = asked[which]
    used, keys = _used(list(dict.fromkeys(g for g, _ in asked))), _set_keys((by, period))
    mask = sum(1 << (len(used) - 1 - n) for n, key in enumerate(used) if key not in keys)
    at = list(dict.fromkeys(c for _, c in asked)).index(clock)
    figures = ("detected", "windowed", "resolved", "median_seconds")
    names = (*by, *(("period",) if period else ()), *figures, "starts")
    starts = f"starts_{at}"
    # Tens of thousands of rows (by rule, library and week): each made in one call, its values picked by one getter.
    picked = itemgetter(*by, *((f"period_{period}",) if period else ()), *figures, starts)
    # A group of windows closed by a later clock only is not a group at this one.
    rows = [dict(zip(names, picked(c), strict=True)) for c in counted if c["g"] == mask and (c["rows"] or c[starts])]
    if not rows and keys == ("one",):  # one total row, also over no rows
        rows.append({"detected": 0, "windowed": 0, "resolved": 0, "median_seconds": None, "starts": 0})
    return rows


def members_by_library(libraries: frozenset[str], age_bands: frozenset[str]) -> Statement:
    """Members per home library (in the age bands): the denominator of frictions per 1,000 members."""
    p = Parameters()
    filters = ["1"]
    if libraries:
        filters.append(f"home_library IN {p.strings(list(libraries))}")
    if age_bands:
        filters.append(f"age_band IN {p.strings(list(age_bands))}")
    sql = f"""SELECT home_library AS library, count() AS members FROM ({profiles()})
              WHERE {" AND ".join(filters)} GROUP BY home_library"""
    return sql, p.values


# ------------------------------------------------------------------------------------------------- reach


def reach_counts(bands: Sequence[str], since_ms: int, libraries: frozenset[str]) -> Statement:
    """Members and those active since `since_ms`, per home library and age band (from the sign-up). Activity:
    any member or usage event except merges and erasures (the store keeps each member's latest)."""
    p = Parameters()
    filters = [f"age_band IN {p.strings(list(bands))}"]
    if libraries:
        filters.append(f"home_library IN {p.strings(list(libraries))}")
    since = p.add("Int64", since_ms)
    sql = f"""
        SELECT home_library AS library, age_band AS band, count() AS members,
               countIf(last_active >= {since}) AS active
        FROM ({profiles()})
        WHERE {" AND ".join(filters)}
        GROUP BY home_library, age_band
    """
    return sql, p.values


# ---------------------------------------------------------------------------------------------- timeline


def survivor_of(member_id: str) -> Statement:
    return "SELECT survivor_id FROM {db}.merges FINAL WHERE member_id = {m:String}", {"m": member_id}


def member_events(member_id: str) -> Statement:
    """One member's rows, oldest first (the timeline)."""
    sql = """SELECT type, toUnixTimestamp64Milli(time) AS ms, library, channel, platform, home_library, age_band,
                    postcode_area, source, rule, friction_id, channel_pair,
                    toUnixTimestamp64Milli(started) AS started_ms, toUnixTimestamp64Milli(due) AS due_ms
             FROM {db}.events WHERE member_key = cityHash64({m:String}) AND member_id = {m:String}
             ORDER BY time, event_id"""
    return sql, {"m": member_id}


def latest_event_ms() -> Statement:
    """The latest event time stored: the maximum of every member's latest (without FINAL: a maximum of maxima)."""
    return "SELECT max(last_event) AS ms FROM {db}.members", {}
