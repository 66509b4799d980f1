"""Keeps `next_steps` (each event with the steps that followed it: what the paths report reads) up to date.

Derived when read, not when stored: a paths report (and the service's start) first derives the members stored
since the last derivation — `members.stored`, kept by the store's materialized view at every insert, says which
— and only then counts. Ingest pays nothing for it; a paths report after a quiet spell reads only its event's
rows. Every derivation is a whole member's rows with a newer version, so a member's late or out-of-order event,
a merge (the survivor's rows are stored again) and a replay (same rows again) give the rows as they are now;
an erasure or a merge deletes the member's rows (`AnalyticsStore`).
"""

from __future__ import annotations

from services.analytics.cohorts import derive_next_steps
from services.analytics.store import AnalyticsStore

# Members stored this long before the last derivation are derived again: a server's inserts by other instances
# may become visible a moment after a later one (chDB: one process, no such race).
MARGIN_MS = 60_000
SLICE = 500_000  # members per statement: a whole store is derived in slices (memory)


async def next_steps_up_to_date(store: AnalyticsStore) -> int:
    """Derive `next_steps` for the members stored since the last time (for all of them the first time); returns
    how many members were derived."""
    [done] = await store.rows("SELECT max(upto) AS upto, count() AS n FROM {db}.next_steps_done")
    since = int(done["upto"]) - MARGIN_MS if int(done["n"]) else None
    [latest] = await store.rows(
        "SELECT max(stored) AS latest, toUnixTimestamp64Milli(now64(3)) AS now, "
        "uniqIf(member_key, stored > {s:Int64}) AS changed FROM {db}.members",  # members: a row per insert till merged
        {"s": -1 if since is None else since},
    )
    if since is not None and int(latest["latest"]) <= int(done["upto"]):
        return 0
    changed = int(latest["changed"])
    parts = 1 + changed // SLICE
    for part in range(parts):
        await store.command(*derive_next_steps(since, part, parts))
    # Everything stored before the derivation began is derived (a later insert has a later `stored`: next time).
    await store.command("INSERT INTO {db}.next_steps_done (upto) VALUES ({u:Int64})", {"u": int(latest["now"])})
    return changed
