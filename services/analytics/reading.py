"""The reports over the store: run the SQL (`queries`), shape the rows (`reports`). Thin; no HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from services.analytics import cohorts, queries, reports
from services.analytics.cohorts import PathQuery, RetentionQuery
from services.analytics.funnel import funnel_counts
from services.analytics.paths import next_steps_up_to_date
from services.analytics.reports import Cell, FrictionQuery, FunnelQuery, Report, Row
from services.analytics.settings import AnalyticsSettings
from services.analytics.store import AnalyticsStore
from services.journey.rules import RuleCatalogue, load_rules, with_window

TIMELINE_LENGTH = 25
NOT_JOURNEY = ("friction.", "message.")  # not a member's own doing: out of milestones and the timeline


def rules_in_force(settings: AnalyticsSettings) -> RuleCatalogue:
    """journey's catalogue, with the same override of the activation window (one environment for both)."""
    catalogue = load_rules(settings.analytics_rules_file)
    if settings.journey_activation_window is not None:
        catalogue = with_window(catalogue, "online-signup-not-activated", settings.journey_activation_window)
    return catalogue


class FrictionCounts:
    """Friction counts, those asked at about the same time with the same filters in one pass over the store: the
    dashboard asks five groupings of the same frictions at once, and one query with a grouping set each reads the
    tables once (half the CPU of five). The first to ask waits `GATHER_SECONDS` for the others; each gets its own
    grouping's rows, its windows closed by its own clock."""

    GATHER_SECONDS = 0.05  # the dashboard's sections arrive within milliseconds of each other (tens on a busy machine)

    def __init__(self, store: AnalyticsStore, windows: Sequence[queries.Window]) -> None:
        self._store = store
        self._windows = windows
        self._gathering: dict[FrictionQuery, list[tuple[queries.Grouping, int, asyncio.Future[list[Row]]]]] = {}
        self._running: set[asyncio.Task[None]] = set()

    async def counts(self, query: FrictionQuery, closed_by_ms: int) -> list[Row]:
        filters = replace(query, by=(), period=None)
        asked = self._gathering.get(filters)
        if asked is None:
            asked = self._gathering[filters] = []
            task = asyncio.create_task(self._count(filters))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        answer: asyncio.Future[list[Row]] = asyncio.get_running_loop().create_future()
        asked.append(((query.by, query.period), closed_by_ms, answer))
        return await answer

    async def _count(self, filters: FrictionQuery) -> None:
        await asyncio.sleep(self.GATHER_SECONDS)
        waiting = self._gathering.pop(filters)
        asked = [(grouping, clock) for grouping, clock, _ in waiting]
        try:
            counted = await self._store.rows(*queries.friction_counts(filters, asked, self._windows))
        except Exception as failure:  # each asker's report fails with it
            for _, _, answer in waiting:
                if not answer.done():
                    answer.set_exception(failure)
            return
        for n, (_, _, answer) in enumerate(waiting):
            if not answer.done():
                answer.set_result(queries.rows_of(counted, asked, n))


class Reports:
    def __init__(self, store: AnalyticsStore, settings: AnalyticsSettings) -> None:
        self._store = store
        self._settings = settings
        self.windows = queries.windows_of(rules_in_force(settings))
        self._lateness_ms = int(settings.analytics_allowed_lateness.total_seconds() * 1000)
        self.min_cell = settings.analytics_min_cell
        self._frictions = FrictionCounts(store, self.windows)

    async def clock_ms(self) -> int:
        """The wall clock in live operation (`auto`, never behind the latest event); in `event` mode (replays of
        history) the latest event time stored."""
        wall = int(time.time() * 1000)
        [row] = await self._store.rows(*queries.latest_event_ms())
        latest = int(row["ms"] or 0)
        return max(latest, wall) if self._settings.analytics_clock == "auto" else latest or wall

    async def frictions(self, query: FrictionQuery, clock_ms: int) -> Report:
        counting = self._frictions.counts(query, clock_ms - self._lateness_ms)
        members = None
        if "library" in query.by:  # the members per library asked alongside (reads run side by side)
            [counted, rows] = await asyncio.gather(
                counting, self._store.rows(*queries.members_by_library(query.libraries, query.age_bands))
            )
            members = {r["library"]: int(r["members"]) for r in rows}
        else:
            counted = await counting
        return reports.friction_report(counted, query, min_cell=self.min_cell, members_by_library=members)

    async def funnel(self, query: FunnelQuery, clock_ms: int) -> Report:
        counted = await self._store.rows(*funnel_counts(query, clock_ms))
        return reports.funnel_report(counted, query, self.min_cell)

    async def reach(self, bands: Sequence[str], months: int, libraries: frozenset[str], clock_ms: int) -> Report:
        since = reports.months_before(clock_ms, months)
        rows = await self._store.rows(*queries.reach_counts(bands, since, libraries))
        counts: dict[Cell, tuple[int, int]] = {
            (r["library"], r["band"]): (int(r["members"]), int(r["active"])) for r in rows
        }
        return reports.reach_report(counts, bands, self.min_cell)

    async def retention(self, query: RetentionQuery, clock_ms: int) -> Report:
        counted = await self._store.rows(*cohorts.retention_counts(query))
        return cohorts.retention_report(counted, query, clock_ms, self.min_cell)

    async def paths(self, query: PathQuery, clock_ms: int) -> Report:
        await next_steps_up_to_date(self._store)
        counted = await self._store.rows(*cohorts.path_counts(query, clock_ms))
        return cohorts.paths_report(counted, query, self.min_cell)

    async def timeline(self, member_id: str) -> dict[str, Any] | None:
        """One member's journey (the survivor's, for a merged id); None for an unknown or erased member."""
        survivor = await self._store.rows(*queries.survivor_of(member_id))
        member = survivor[0]["survivor_id"] if survivor else member_id
        rows = await self._store.rows(*queries.member_events(member))
        if not rows:
            return None
        return timeline_view(member, member_id, rows)


def timeline_view(member_id: str, requested_id: str, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One member's journey as front-office staff read it (times in Amsterdam, newest events first), from the
    member's rows oldest first."""
    own = [r for r in rows if not str(r["type"]).startswith(NOT_JOURNEY)]
    signups = [r for r in own if r["type"] == "member.signed_up.v1"]
    profile = signups[-1] if signups else {}
    touches: dict[str, dict[str, str | None]] = {"channels": {}, "platforms": {}}
    firsts: dict[str, dict[str, Any]] = {}
    for row in own:
        firsts.setdefault(row["type"], row)
        for kind, name in (("channels", row["channel"]), ("platforms", row["platform"])):
            if name is not None:
                touches[kind][name] = reports.local_time(int(row["ms"]))
    activity = [int(r["ms"]) for r in own if r["type"] not in ("member.erased.v1", "member.merged.v1")]
    resolved = {r["friction_id"] for r in rows if r["type"] == "friction.resolved.v1"}
    open_frictions = [r for r in rows if r["type"] == "friction.detected.v1" and r["friction_id"] not in resolved]
    return {
        "member_id": member_id,
        "requested_id": requested_id,
        "profile": {
            "age_band": profile.get("age_band"),
            "home_library": profile.get("home_library"),
            "postcode_area": profile.get("postcode_area"),
            "channel": profile.get("channel"),
            "platform": profile.get("platform"),
            "source": profile.get("source"),
        },
        "milestones": [
            {"type": kind, "at": reports.local_time(int(r["ms"])), "channel": r["channel"], "platform": r["platform"]}
            for kind, r in sorted(firsts.items(), key=lambda kv: (kv[1]["ms"], kv[0]))
        ],
        "last_touch": {kind: dict(sorted(names.items())) for kind, names in touches.items()},
        "last_activity": reports.local_time(max(activity)) if activity else None,
        "timeline": [
            {
                "at": reports.local_time(int(r["ms"])),
                "type": r["type"],
                "channel": r["channel"],
                "platform": r["platform"],
                "library": r["library"],
            }
            for r in reversed(own[-TIMELINE_LENGTH:])
        ],
        "open_frictions": [
            {
                "friction_id": r["friction_id"],
                "rule": r["rule"],
                "started": reports.local_time(r["started_ms"]),
                "detected": reports.local_time(r["due_ms"]),
                "library": r["library"],
                "channel_pair": r["channel_pair"],
                "platform": r["platform"],
            }
            for r in sorted(open_frictions, key=lambda r: (r["due_ms"], r["friction_id"]))
        ],
    }
