"""Two years of a network's history, loaded straight into an analytics data folder: the dashboard's layout test
reads a long history the way library staff would (the page must stay a few screens tall).

`python -m tests.browser.dashboard_history` (with the analytics service's settings in the environment) fills the
service's data folder and then runs the service on it, in one process: an embedded ClickHouse data folder belongs
to one process at a time, and starting Python and chDB once rather than twice saves the test seconds. The service
derives its absence windows from the events as it does for any store.

The history, made inside the store: `MEMBERS` members of 40 libraries signing up evenly over the last 730 days,
each with eight later events within 240 days (logins, failed logins, loans, activities: retention and paths);
half of them meet one friction of one of the catalogue's rules 14 to 44 days after signing up, two in three of
those resolved within ten days. Deterministic (hashes of the member number), nothing personal.
"""

from __future__ import annotations

import asyncio
import runpy
from pathlib import Path

from services.analytics.settings import AnalyticsSettings
from services.analytics.store import AnalyticsStore, array_literal
from services.journey.offline.simulator import LIBRARIES
from services.journey.rules import load_rules

MEMBERS = 4_000
DAYS = 730
LIBRARY_CODES = [*LIBRARIES, *(f"bibliotheek-{n:02d}" for n in range(40 - len(LIBRARIES)))]
ACTIVITY = [
    "member.login_succeeded.v1", "member.login_succeeded.v1", "member.login_failed.v1", "member.card_activated.v1",
    "usage.loan_reserved.v1", "usage.loan_borrowed.v1", "usage.loan_borrowed.v1", "usage.loan_returned.v1",
    "usage.activity_attended.v1",
]  # fmt: skip
COLUMNS = (
    "event_id, member_id, type, time, library, channel, platform, home_library, age_band, postcode_area, rule, "
    "channel_pair, outcome, friction_id, started, due, seconds"
)


def history_sql() -> list[str]:
    """The INSERTs that make the history (`{db}`: the store's database)."""
    rules = array_literal([rule.id for rule in load_rules().rules])
    now = "toStartOfMinute(now64(3, 'UTC'))"
    member = "UUIDNumToString(MD5(concat('member-', toString(m))))"
    home = f"{array_literal(LIBRARY_CODES)}[1 + cityHash64(m, 1) % {len(LIBRARY_CODES)}]"
    band = "['0-3', '4-11', '12-17', '18-64', '65+'][1 + cityHash64(m, 2) % 5]"
    joined = f"{now} - toIntervalSecond({DAYS} * 86400) + toIntervalSecond(cityHash64(m, 3) % ({DAYS} * 86400))"
    online = "cityHash64(m, 4) % 2 = 0"
    channel = f"if({online}, 'online', 'offline')"
    platform = f"if({online}, ['website', 'app', 'ebook'][1 + cityHash64(m, 5) % 3], 'desk')"
    due = f"{joined} + toIntervalDay(14 + cityHash64(m, 6) % 30)"
    rule = f"{rules}[1 + cityHash64(m, 7) % length({rules})]"
    insert = f"INSERT INTO {{db}}.events ({COLUMNS})"
    null = "NULL"
    sign_ups = f"""{insert}
        SELECT concat('signup-', toString(m)), {member}, 'member.signed_up.v1', {joined}, {home}, {channel},
               {platform}, {home}, {band}, toString(1000 + cityHash64(m, 8) % 8999), {null}, {null}, {null}, {null},
               {null}, {null}, {null}
        FROM (SELECT number AS m FROM numbers({MEMBERS}))"""
    activity = f"""{insert}
        SELECT concat('activity-', toString(n)), {member}, kind, at, {home}, {channel}, {platform}, {null}, {null},
               {null}, {null}, {null}, {null}, {null}, {null}, {null}, {null}
        FROM (SELECT number AS n, n % {MEMBERS} AS m,
                     {array_literal(ACTIVITY)}[1 + cityHash64(n, 9) % {len(ACTIVITY)}] AS kind,
                     {joined} + toIntervalSecond(3600 + cityHash64(n, 10) % (240 * 86400)) AS at
              FROM numbers({MEMBERS * 8}))
        WHERE at <= {now}"""
    frictions = f"""{insert}
        SELECT concat('detected-', toString(m)), {member}, 'friction.detected.v1', {due}, {home}, {null}, {platform},
               {null}, {band}, {null}, {rule}, if({online}, 'online→offline', 'offline→online'), 'detected',
               concat('friction-', toString(m)), {joined}, {due}, {null}
        FROM (SELECT number AS m FROM numbers({MEMBERS}))
        WHERE cityHash64(m, 11) % 2 = 0 AND {due} <= {now}"""
    resolutions = f"""{insert}
        SELECT concat('resolved-', toString(m)), {member}, 'friction.resolved.v1', at, {null}, {null}, {null},
               {null}, {null}, {null}, {rule}, {null}, 'resolved', concat('friction-', toString(m)), {null}, {null},
               toFloat64(dateDiff('second', {due}, at))
        FROM (SELECT number AS m, {due} + toIntervalSecond(600 + cityHash64(m, 12) % (10 * 86400)) AS at
              FROM numbers({MEMBERS}))
        WHERE cityHash64(m, 11) % 2 = 0 AND cityHash64(m, 13) % 3 != 0 AND at <= {now}"""
    return [sign_ups, activity, frictions, resolutions]


async def load(folder: Path) -> int:
    """Fill `folder` with the history; returns the events stored."""
    store = AnalyticsStore(AnalyticsSettings(analytics_path=folder))
    await store.open()
    try:
        for statement in history_sql():
            await store.command(statement)
        [row] = await store.rows("SELECT count() AS n FROM {db}.events")
        return int(row["n"])
    finally:
        await store.close()


if __name__ == "__main__":
    print(f"history loaded: {asyncio.run(load(AnalyticsSettings().analytics_path))} events", flush=True)
    runpy.run_module("services.analytics", run_name="__main__")
