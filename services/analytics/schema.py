"""The analytics store's tables (docs/reports.md, "How the store is laid out"): made at start, the same on chDB
and on a server; statements run in order, so a store made by an earlier version gets its new columns and views."""

from __future__ import annotations

from services.analytics.facts import ERASED, MERGED, SIGNED_UP

ZONE = "'Europe/Amsterdam'"  # days and periods
# What counts as a member's activity (reach): any member or usage event except merges and erasures (and a visit
# to the library's website: the web tracker's client events are interest, not use).
ACTIVITY = (
    "NOT startsWith(type, 'friction.') AND NOT startsWith(type, 'message.') AND NOT startsWith(type, 'client.') "
    f"AND type NOT IN ('{MERGED}', '{ERASED}')"
)

# A member's steps (`members.steps`: what a funnel reads, not the events): each of their journey's events (member
# and usage events: those a funnel's steps may be) as one number that orders them by time — the epoch milliseconds,
# then the channel (`STEP_CHANNELS`: 0 none, 1 online, 2 offline), then a 16-bit code of the type (`step_code`; the
# codes of all event types differ: tests/unit/test_analytics_funnel.py). A set: an event stored twice adds nothing.
STEP_TYPES = ("member.", "usage.", "client.")  # the prefixes of journey's event types (`answers.journey_types`)
STEP_CHANNELS = ("online", "offline")
TYPE_BITS, CHANNEL_BITS = 16, 2


def step_code(type_sql: str) -> str:
    """The code of an event type (a SQL expression of it) in a step number's lowest bits."""
    return f"cityHash64({type_sql}) % {1 << TYPE_BITS}"


IS_STEP = " OR ".join(f"startsWith(type, '{prefix}')" for prefix in STEP_TYPES)
STEP_OF_EVENT = (
    f"bitShiftLeft(toUInt64(toUnixTimestamp64Milli(time)), {TYPE_BITS + CHANNEL_BITS}) + "
    f"bitShiftLeft(indexOf({list(STEP_CHANNELS)}, channel), {TYPE_BITS}) + {step_code('type')}"
)

# A member's row of `members` from one of their events (kept by a materialized view; rebuilt from every event when
# the layout changes): the profile of a sign-up, the first sign-up, the latest activity, and the month of an activity
# (`toRelativeMonthNum` in Amsterdam: retention counts members active per month without reading their events), and
# the latest event of any kind (the reports' clock in `event` mode: the latest of 4 million, not of 21 million), and
# when the member's latest row was stored (`next_steps` is derived again for the members stored since it last was),
# the member's steps and, per step type, the platform of its first occurrence (a funnel split by platform).
MEMBER_OF_EVENT = f"""
    cityHash64(member_id) AS member_key, member_id,
    if(type = '{SIGNED_UP}' AND merged_from = '', home_library, NULL) AS home_library,
    if(type = '{SIGNED_UP}' AND merged_from = '', age_band, NULL) AS age_band,
    if(type = '{SIGNED_UP}' AND merged_from = '', postcode_area, NULL) AS postcode_area,
    if(type = '{SIGNED_UP}' AND merged_from = '', source, NULL) AS source,
    if(type = '{SIGNED_UP}' AND merged_from != '', home_library, NULL) AS merged_home_library,
    if(type = '{SIGNED_UP}' AND merged_from != '', age_band, NULL) AS merged_age_band,
    toUInt8(type = '{SIGNED_UP}') AS signed_up,
    if(type = '{SIGNED_UP}', toUnixTimestamp64Milli(time), 9223372036854775807) AS joined,
    if({ACTIVITY}, toUnixTimestamp64Milli(time), 0) AS last_active,
    if({ACTIVITY}, [toUInt16(toRelativeMonthNum(time, {ZONE}))], []) AS active_months,
    toUnixTimestamp64Milli(time) AS last_event,
    toUnixTimestamp64Milli(now64(3)) AS stored,
    if({IS_STEP}, [{STEP_OF_EVENT}], []) AS steps,
    if({IS_STEP}, ([toUInt16({step_code("type")})], [(toUnixTimestamp64Milli(time), platform)]), ([], []))
        AS first_platforms
"""

# The columns friction reports read of every row, compressed with LZ4 rather than ZSTD (what the engine takes for
# large parts): decompressing ZSTD was a fifth of frictions by rule, library and week at 4 million members. Set on
# the tables as made (a change of metadata only: parts written since, and merges, use it).
TEXT = "LowCardinality(Nullable(String))"
READ_WHOLE = {
    "windows": {"rule": "LowCardinality(String)", "due": "Int64", "library": TEXT, "channel_pair": TEXT,
                "platform": TEXT, "age_band": TEXT, "day": "Date"},
    "frictions": {"rule": TEXT, "library": TEXT, "channel_pair": TEXT, "platform": TEXT, "age_band": TEXT,
                  "day": "Nullable(Date)", "detected": "UInt8", "seconds": "Nullable(Float64)"},
}  # fmt: skip
LZ4 = tuple(
    f"ALTER TABLE {{db}}.{table} " + ", ".join(f"MODIFY COLUMN {name} {kind} CODEC(LZ4)" for name, kind in read.items())
    for table, read in READ_WHOLE.items()
)

# Every table with rows of a member: a merge moves them (events; the others follow), an erasure deletes them all.
MEMBER_TABLES = ("events", "members", "frictions", "windows")

SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS {db}.events (
        event_id String,
        member_id String,
        member_key UInt64 MATERIALIZED cityHash64(member_id),
        type LowCardinality(String),
        time DateTime64(3, 'UTC'),
        library LowCardinality(Nullable(String)),
        channel LowCardinality(Nullable(String)),
        platform LowCardinality(Nullable(String)),
        home_library LowCardinality(Nullable(String)),
        age_band LowCardinality(Nullable(String)),
        postcode_area LowCardinality(Nullable(String)),
        source LowCardinality(Nullable(String)),
        proposition LowCardinality(Nullable(String)),
        to_channel LowCardinality(Nullable(String)),
        rule LowCardinality(Nullable(String)),
        channel_pair LowCardinality(Nullable(String)),
        outcome LowCardinality(Nullable(String)),
        friction_id Nullable(String),
        started Nullable(DateTime64(3, 'UTC')),
        due Nullable(DateTime64(3, 'UTC')),
        seconds Nullable(Float64),
        merged_from String DEFAULT ''
    ) ENGINE = ReplacingMergeTree ORDER BY (member_key, time, event_id)
    """,
    """
    CREATE TABLE IF NOT EXISTS {db}.members (
        member_key UInt64,
        member_id SimpleAggregateFunction(any, String),
        home_library SimpleAggregateFunction(anyLast, LowCardinality(Nullable(String))),
        age_band SimpleAggregateFunction(anyLast, LowCardinality(Nullable(String))),
        postcode_area SimpleAggregateFunction(anyLast, LowCardinality(Nullable(String))),
        source SimpleAggregateFunction(anyLast, LowCardinality(Nullable(String))),
        merged_home_library SimpleAggregateFunction(anyLast, LowCardinality(Nullable(String))),
        merged_age_band SimpleAggregateFunction(anyLast, LowCardinality(Nullable(String))),
        signed_up SimpleAggregateFunction(max, UInt8),
        joined SimpleAggregateFunction(min, Int64),
        last_active SimpleAggregateFunction(max, Int64),
        active_months SimpleAggregateFunction(groupUniqArrayArray, Array(UInt16)),
        last_event SimpleAggregateFunction(max, Int64),
        stored SimpleAggregateFunction(max, Int64),
        steps SimpleAggregateFunction(groupUniqArrayArray, Array(UInt64)) CODEC(LZ4),
        first_platforms SimpleAggregateFunction(minMap, Tuple(Array(UInt16), Array(Tuple(Int64, Nullable(String)))))
            CODEC(LZ4)
    ) ENGINE = AggregatingMergeTree ORDER BY member_key
    """,
    # Stores made before members kept their active months (filled again: the layout is part of the fingerprint).
    "ALTER TABLE {db}.members ADD COLUMN IF NOT EXISTS active_months "
    "SimpleAggregateFunction(groupUniqArrayArray, Array(UInt16))",
    "ALTER TABLE {db}.members ADD COLUMN IF NOT EXISTS last_event SimpleAggregateFunction(max, Int64)",
    "ALTER TABLE {db}.members ADD COLUMN IF NOT EXISTS stored SimpleAggregateFunction(max, Int64)",
    # LZ4, not the engine's default for large parts (ZSTD): a funnel reads every member's steps, and decompressing
    # them with ZSTD took twice as long as all the rest of it.
    "ALTER TABLE {db}.members ADD COLUMN IF NOT EXISTS steps "
    "SimpleAggregateFunction(groupUniqArrayArray, Array(UInt64)) CODEC(LZ4)",
    "ALTER TABLE {db}.members ADD COLUMN IF NOT EXISTS first_platforms SimpleAggregateFunction(minMap, "
    "Tuple(Array(UInt16), Array(Tuple(Int64, Nullable(String))))) CODEC(LZ4)",
    f"""
    CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.members_of_events_4 TO {{db}}.members AS
    SELECT {MEMBER_OF_EVENT} FROM {{db}}.events
    """,  # noqa: S608 (the code's own SQL, no values)
    # The views before members kept their active months, when they were stored and their steps (created again above
    # under a new name; the members' columns are idempotent aggregates, so the moment both views write is harmless).
    "DROP VIEW IF EXISTS {db}.members_of_events",
    "DROP VIEW IF EXISTS {db}.members_of_events_2",
    "DROP VIEW IF EXISTS {db}.members_of_events_3",
    """
    CREATE TABLE IF NOT EXISTS {db}.frictions (
        event_id String,
        member_key UInt64,
        member_id String,
        rule LowCardinality(Nullable(String)),
        library LowCardinality(Nullable(String)),
        channel_pair LowCardinality(Nullable(String)),
        platform LowCardinality(Nullable(String)),
        age_band LowCardinality(Nullable(String)),
        day Nullable(Date),
        detected UInt8,
        seconds Nullable(Float64)
    ) ENGINE = ReplacingMergeTree ORDER BY (member_key, event_id)
    """,
    """
    CREATE TABLE IF NOT EXISTS {db}.windows (
        event_id String,
        member_key UInt64,
        member_id String,
        rule LowCardinality(String),
        due Int64,
        library LowCardinality(Nullable(String)),
        channel_pair LowCardinality(Nullable(String)),
        platform LowCardinality(Nullable(String)),
        signed_up UInt8,
        home_library LowCardinality(Nullable(String)),
        age_band LowCardinality(Nullable(String)),
        postcode_area LowCardinality(Nullable(String)),
        source LowCardinality(Nullable(String)),
        day Date
    ) ENGINE = ReplacingMergeTree ORDER BY (member_key, rule, event_id)
    """,
    # Stores made before windows kept their closing day (derived again: the layout is part of their fingerprint).
    "ALTER TABLE {db}.windows ADD COLUMN IF NOT EXISTS day Date",
    *LZ4,
    # Each member or usage event with the next three (type, ms after the one before; '' where none), in the order
    # paths start from: a path report reads its event's rows only. Kept by services/analytics/paths.py.
    """
    CREATE TABLE IF NOT EXISTS {db}.next_steps (
        type LowCardinality(String), ms Int64 CODEC(Delta, LZ4), member_key UInt64, event_key UInt64,
        type_1 LowCardinality(String), gap_1 Int64, type_2 LowCardinality(String), gap_2 Int64,
        type_3 LowCardinality(String), gap_3 Int64, version UInt64
    ) ENGINE = ReplacingMergeTree(version) ORDER BY (type, ms, member_key, event_key)
    """,
    "CREATE TABLE IF NOT EXISTS {db}.next_steps_done (upto Int64) ENGINE = MergeTree ORDER BY upto",
    """
    CREATE TABLE IF NOT EXISTS {db}.catalogue (fingerprint String, at DateTime64(3, 'UTC') DEFAULT now64())
    ENGINE = MergeTree ORDER BY at
    """,
    """
    CREATE TABLE IF NOT EXISTS {db}.merges (member_id String, survivor_id String)
    ENGINE = ReplacingMergeTree ORDER BY member_id
    """,
    """
    CREATE TABLE IF NOT EXISTS {db}.erasures (member_id String) ENGINE = ReplacingMergeTree ORDER BY member_id
    """,
    # Families (family.py): each child's guardians, the birth year of members signed up under 18.
    """
    CREATE TABLE IF NOT EXISTS {db}.guardians (child_id String, guardian_id String, since DateTime64(3, 'UTC'))
    ENGINE = ReplacingMergeTree ORDER BY (child_id, guardian_id)
    """,
    """
    CREATE TABLE IF NOT EXISTS {db}.birth_years (member_id String, birth_year UInt16)
    ENGINE = ReplacingMergeTree ORDER BY member_id
    """,
)
