"""The analytics service on the real broker, Redis and chDB (a data folder of its own): a scripted network of
members goes through Kafka into the store, then every report is read over HTTP — numbers, CSV, suppression,
censoring, scope, roles — and redelivery, replays, merges and erasures are checked."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI

from services.analytics.app import create_app
from services.analytics.facts import SIGNED_UP
from services.analytics.funnel import funnel_counts
from services.analytics.handlers import FactWriter
from services.analytics.paths import next_steps_up_to_date
from services.analytics.queries import Parameters, Statement, derived, fingerprint
from services.analytics.reading import Reports
from services.analytics.reports import FrictionQuery, FunnelQuery
from services.analytics.schema import ZONE, step_code
from services.analytics.settings import AnalyticsSettings
from services.analytics.store import AnalyticsStore, array_literal
from shared.auth import Keyring
from shared.events import CloudEvent
from shared.events.registry import TYPE_PREFIX, event_types
from shared.redis import make_redis
from tests.support import eventually, problem, publish_as_harness, running

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)
FUNNEL = "member.signed_up.v1,member.card_activated.v1,usage.loan_borrowed.v1"
NOT_ACTIVATED = "online-signup-not-activated"


def event(kind: str, member: str, at: datetime, *, library: str | None = "oba", channel: str | None = "offline",
          platform: str | None = "desk", **data: Any) -> CloudEvent:  # fmt: skip
    return CloudEvent(
        id=f"{kind}-{member}-{at.timestamp()}", source="/test", type=TYPE_PREFIX + kind, time=at, subject=member,
        library=library, channel=channel, platform=platform, data=data,
    )  # fmt: skip


def signed_up(member: str, at: datetime, *, library: str = "oba", online: bool = True,
              age_band: str = "18-64") -> CloudEvent:  # fmt: skip
    return event(
        "member.signed_up.v1", member, at, library=library, channel="online" if online else "offline",
        platform="website" if online else "desk", age_band=age_band, home_library=library, postcode_area="1034",
    )  # fmt: skip


def borrowed(member: str, at: datetime) -> CloudEvent:
    return event("usage.loan_borrowed.v1", member, at, item_id=f"item-{member}", loan_id=f"loan-{member}")


def detected(member: str, rule: str, started: datetime, due: datetime, library: str, **extra: Any) -> CloudEvent:
    friction_id = f"{rule}-{member}"
    return CloudEvent(
        id=friction_id, source="/journey", type=TYPE_PREFIX + "friction.detected.v1", time=due, subject=member,
        library=library, data={"friction_id": friction_id, "rule": rule, "start_event_id": "s", "library": library,
                               "started_at": started.isoformat(), "due_at": due.isoformat(), "platform": "website",
                               "channel_pair": "online→offline", "age_band": "18-64", **extra},
    )  # fmt: skip


def resolved(member: str, rule: str, due: datetime, at: datetime) -> CloudEvent:
    friction_id = f"{rule}-{member}"
    return CloudEvent(
        id=f"resolved-{friction_id}", source="/journey", type=TYPE_PREFIX + "friction.resolved.v1", time=at,
        subject=member, data={"friction_id": friction_id, "rule": rule, "resolved_by_event_id": "x",
                              "resolved_at": at.isoformat(), "seconds_to_resolve": (at - due).total_seconds()},
    )  # fmt: skip


def the_network() -> list[CloudEvent]:
    """oba, online sign-ups 40 days ago (18-64): on-0..2 activate the card 2 days later and borrow 3 days after;
    on-3, on-4 activate after 20 days (a friction of the 14-day rule, resolved; within the funnel's 30 days);
    on-5..9 never (frictions). `new` signed up 2 days ago: its window is still open. desk-0..4 (65+) signed up at
    the desk 10 days ago. kid-0..5 (4-11) signed up at the desk 400 days ago; kid-0..3 borrowed 100 days ago.
    haarlem: on-0..2 online 40 days ago, never activated (3 frictions); kid-0, kid-1 400 days ago.
    utrecht: kid-0..4 400 days ago, a friction each (never online).
    `merged` signs up a day ago and is merged into oba-on-5; `erased` is erased."""
    start, due, events = NOW - 40 * DAY, NOW - 26 * DAY, []
    for i in range(10):
        events.append(signed_up(f"oba-on-{i}", start))
    for i in range(3):
        events += [
            event("member.card_activated.v1", f"oba-on-{i}", start + 2 * DAY),
            borrowed(f"oba-on-{i}", start + 5 * DAY),
        ]
    for i in (3, 4):
        events += [event("member.card_activated.v1", f"oba-on-{i}", start + 20 * DAY)]
        events += [detected(f"oba-on-{i}", NOT_ACTIVATED, start, due, "oba"),
                   resolved(f"oba-on-{i}", NOT_ACTIVATED, due, start + 20 * DAY)]  # fmt: skip
    events += [detected(f"oba-on-{i}", NOT_ACTIVATED, start, due, "oba") for i in range(5, 10)]
    events.append(signed_up("oba-new", NOW - 2 * DAY))
    events += [signed_up(f"oba-desk-{i}", NOW - 10 * DAY, online=False, age_band="65+") for i in range(5)]
    for library, kids in (("oba", 6), ("haarlem", 2), ("utrecht", 5)):
        for i in range(kids):
            events.append(signed_up(f"{library}-kid-{i}", NOW - 400 * DAY, library=library, online=False,
                                    age_band="4-11"))  # fmt: skip
    events += [borrowed(f"oba-kid-{i}", NOW - 100 * DAY) for i in range(4)]
    events += [detected(f"utrecht-kid-{i}", "desk-signup-never-online", NOW - 400 * DAY, NOW - 370 * DAY, "utrecht")
               for i in range(5)]  # fmt: skip
    events += [signed_up(f"haarlem-on-{i}", start, library="haarlem") for i in range(3)]
    events += [detected(f"haarlem-on-{i}", NOT_ACTIVATED, start, due, "haarlem") for i in range(3)]
    events += [
        signed_up("merged", NOW - DAY),
        event("member.merged.v1", "merged", NOW - DAY + timedelta(hours=1), survivor_id="oba-on-5"),
        signed_up("erased", NOW - DAY),
        event("member.erased.v1", "erased", NOW - DAY + timedelta(hours=1)),
    ]
    return events


@dataclass
class Network:
    app: FastAPI
    keys: dict[str, str]
    published: int
    harness: AnalyticsSettings  # the tests' own client publishes the input (the service may not: tests/principals.py)

    @property
    def writer(self) -> FactWriter:
        writer: FactWriter = self.app.state.writer
        return writer

    @property
    def store(self) -> AnalyticsStore:
        store: AnalyticsStore = self.app.state.store
        return store

    async def publish(self, events: list[CloudEvent]) -> None:
        await publish_as_harness(self.harness, events)
        self.published += len(events)
        await eventually(lambda: self._caught_up(), within=60)

    async def _caught_up(self) -> bool:
        return self.writer.handled >= self.published

    async def get(self, key: str | None, path: str, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[key]}"} if key else {}
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as client:
            return await client.get(path, params=params)

    async def rows(self, key: str, path: str, **params: Any) -> list[dict[str, Any]]:
        response = await self.get(key, path, **params)
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()["rows"]
        return rows


@contextlib.asynccontextmanager
async def started(kafka_bootstrap: str, redis_url: str, path: Path, database: str) -> AsyncIterator[Network]:
    """The analytics service with topics, keys and a database of its own, the scripted network read into it. (chDB
    holds one data folder per process: the two stores of this module are two databases in one.)"""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    settings = AnalyticsSettings(
        kafka_bootstrap=kafka_bootstrap, redis_url=redis_url, topic_prefix=prefix, group_prefix=prefix,
        key_prefix=prefix, partitions=2, handler_retry_backoff_seconds=0.05, analytics_path=path,
        analytics_cache_seconds=0, analytics_allowed_lateness=timedelta(0), analytics_database=database,
    )  # fmt: skip
    redis = make_redis(settings)
    keyring = Keyring(redis, settings)
    keys = {
        "analyst": await keyring.create("network analyst", ["analyst"]),
        "oba-analyst": await keyring.create("oba analyst", ["analyst"], "oba"),
        "oba-desk": await keyring.create("oba front office", ["member-data"], "oba"),
        "marketing": await keyring.create("marketing", ["marketing"]),
    }
    await redis.aclose()
    app = create_app(settings)
    async with running(app):
        network = Network(app, keys, 0, settings)
        await network.publish(the_network())
        yield network


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("analytics")


@pytest.fixture(scope="module")
async def network(kafka_bootstrap: str, redis_url: str, store_path: Path) -> AsyncIterator[Network]:
    """The scripted network and nothing else (a replay of it aside, which changes nothing): the tests' exact
    figures hold in any order."""
    async with started(kafka_bootstrap, redis_url, store_path, "klantreis") as network:
        yield network


@pytest.fixture(scope="module")
async def growing(kafka_bootstrap: str, redis_url: str, store_path: Path) -> AsyncIterator[Network]:
    """The scripted network in a store of its own, for the tests that add members of their own libraries to it (or
    rebuild its derived tables): what they add never reaches the network-wide figures the other tests check."""
    async with started(kafka_bootstrap, redis_url, store_path, "growing") as network:
        yield network


# ------------------------------------------------------------------------------------ the funnel's steps


def funnel_from_events(query: FunnelQuery, clock_ms: int) -> Statement:
    """The funnel as it was counted before members kept their steps (session 5's SQL): grouping every step event
    by member. The reference the funnel over `members.steps` must equal."""
    p = Parameters()
    steps = query.steps
    within = p.add("Int64", int(query.within.total_seconds() * 1000))
    clock = p.add("Int64", clock_ms)
    ms = "toUnixTimestamp64Milli(time)"
    # The profile (from the sign-up) only when the funnel is narrowed by it: per member it costs.
    profiled = bool(query.libraries or query.age_bands)
    types = p.strings(sorted({*steps, *([SIGNED_UP] if profiled else [])}))
    own_latest = "(merged_from = '', time)"
    step = [p.add("String", s) for s in steps]
    split = "NULL" if query.by is None else f"argMinIf({query.by}, time, type = {step[0]})"
    profile = [
        f"argMaxIf(home_library, {own_latest}, type = '{SIGNED_UP}') AS home",
        f"argMaxIf(age_band, {own_latest}, type = '{SIGNED_UP}') AS band",
    ]
    per_member = [
        f"minIf({ms}, type = {step[0]}) AS at_1",
        f"{split} AS split",
        *(profile if profiled else []),
        f"countIf(type = {step[0]}) AS entered",
        *(f"groupArrayIf({ms}, type = {step[k]}) AS times_{k + 1}" for k in range(1, len(steps))),
    ]
    # Step k is reached at `at_k` (0: not reached); each builds on the one before. The first occurrence at or after
    # the previous step is the least such time: no sorting of each member's times.
    chain = ["toUInt8(1) AS ok_1"]
    for k in range(2, len(steps) + 1):
        found = f"arrayMin(arrayFilter(x -> x >= at_{k - 1}, times_{k}))"
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
    filters = ["entered > 0"]
    if query.start is not None:
        filters.append(f"toDate(fromUnixTimestamp64Milli(at_1), {ZONE}) >= {p.add('Date', query.start.isoformat())}")
    if query.end is not None:
        filters.append(f"toDate(fromUnixTimestamp64Milli(at_1), {ZONE}) <= {p.add('Date', query.end.isoformat())}")
    if query.libraries:
        filters.append(f"home IN {p.strings(list(query.libraries))}")
    if query.age_bands:
        filters.append(f"band IN {p.strings(list(query.age_bands))}")
    sql = f"""
        SELECT split, {", ".join(figures)}
        FROM (
            SELECT split, at_1, {", ".join(chain)}
            FROM (SELECT {", ".join(per_member)} FROM {{db}}.events WHERE type IN {types} GROUP BY member_key)
            WHERE {" AND ".join(filters)}
        )
        GROUP BY split
    """
    return sql, p.values


def by(rows: list[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {tuple(row[k] for k in keys): row for row in rows}


async def test_friction_rates_use_closed_windows_counted_from_the_events(network: Network) -> None:
    rows = by(await network.rows("analyst", "/v1/reports/frictions", by="rule,library"), "rule", "library")
    assert rows[(NOT_ACTIVATED, "oba")] == {
        "rule": NOT_ACTIVATED, "library": "oba",
        "detected": 7, "resolved": 2, "starts": 10,  # oba-new's and merged's windows are still open
        "rate_per_1000_starts": 700.0, "resolution_rate": 0.2857, "median_seconds_to_resolve": 6 * 86400.0,
        "members": 22, "frictions_per_1000_members": 318.18, "suppressed": False,
    }  # fmt: skip
    haarlem = rows[(NOT_ACTIVATED, "haarlem")]  # three frictions
    assert haarlem["suppressed"] is True and haarlem["detected"] is None
    # Utrecht's kids' desk sign-ups opened windows of the desk rule that closed long ago, none met.
    desk = rows[("desk-signup-never-online", "utrecht")]
    assert (desk["detected"], desk["starts"], desk["rate_per_1000_starts"]) == (5, 5, 1000.0)


async def test_one_total_row_over_no_frictions_is_a_suppressed_row_not_an_error(network: Network) -> None:
    [total] = await network.rows("analyst", "/v1/reports/frictions", by="", library="nowhere")
    assert (total["detected"], total["starts"], total["suppressed"]) == (None, None, True)


async def test_friction_reports_asked_at_once_each_get_the_rows_they_get_alone(network: Network) -> None:
    # The dashboard asks its friction sections at once: counted in one pass, each with its own grouping and clock.
    reading: Reports = network.app.state.reports
    clock = await reading.clock_ms()
    asked = [
        (FrictionQuery(by=("rule",), period="month"), clock),
        (FrictionQuery(by=("rule", "library")), clock - 30 * 86_400_000),  # oba's windows (due 26 days ago) open
        (FrictionQuery(by=("channel_pair", "platform"), period="week"), clock),
        (FrictionQuery(by=()), clock),
    ]
    alone = [(await reading.frictions(query, at)).rows for query, at in asked]
    together = await asyncio.gather(*(reading.frictions(query, at) for query, at in asked))
    assert [report.rows for report in together] == alone
    assert alone[0] and alone[1] != (await reading.frictions(asked[1][0], clock)).rows


async def test_reports_come_as_csv(network: Network) -> None:
    response = await network.get("analyst", "/v1/reports/frictions", by="rule,library", format="csv")
    assert response.headers["content-type"].startswith("text/csv")
    lines = list(csv.DictReader(io.StringIO(response.text)))
    oba = next(r for r in lines if r["rule"] == NOT_ACTIVATED and r["library"] == "oba")
    assert (oba["detected"], oba["rate_per_1000_starts"], oba["suppressed"]) == ("7", "700.0", "false")


async def test_the_funnel_never_counts_a_member_inside_the_window_as_dropped(network: Network) -> None:
    rows = by(await network.rows("analyst", "/v1/reports/funnel", steps=FUNNEL, by="channel", within="P30D"),
              "channel", "step_number")  # fmt: skip
    figures = ("entered", "reached", "dropped", "in_progress")
    assert [rows[("online", n)][k] for n in (1, 2, 3) for k in figures] == [
        14, 14, 0, 0,
        14, 5, 8, 1,  # the 2-day-old sign-up is in progress
        5, 3, 0, 2,  # activated 20 days ago, no loan yet: in progress, not dropped
    ]  # fmt: skip
    assert [rows[("offline", 2)][k] for k in figures] == [18, 0, 13, 5]


async def test_reach_suppresses_small_cells_and_one_more_so_the_total_gives_nothing_away(network: Network) -> None:
    rows = by(await network.rows("analyst", "/v1/reports/reach"), "library", "age_band")
    assert rows[("oba", "4-11")] == {
        "library": "oba", "age_band": "4-11", "members": 6, "active": 4, "share": 0.6667, "suppressed": False,
    }  # fmt: skip
    assert (rows[("*", "4-11")]["members"], rows[("*", "4-11")]["active"]) == (13, 4)
    assert rows[("haarlem", "4-11")]["suppressed"] and rows[("utrecht", "4-11")]["suppressed"]


async def test_a_library_key_sees_only_its_library_and_roles_are_checked(network: Network) -> None:
    frictions = await network.rows("oba-analyst", "/v1/reports/frictions", by="library")
    assert {r["library"] for r in frictions} == {"oba"}
    reach = by(await network.rows("oba-analyst", "/v1/reports/reach"), "library", "age_band")
    assert reach[("*", "*")]["members"] == 6
    other = await network.get("oba-analyst", "/v1/reports/frictions", library="haarlem")
    assert other.status_code == 403 and other.json()["errors"][0]["field"] == "query.library"
    assert (await network.get(None, "/v1/reports/frictions")).status_code == 401
    assert (await network.get("marketing", "/v1/reports/reach")).status_code == 403
    bad = await network.get("analyst", "/v1/reports/funnel", steps="member.signed_up.v1,member.teleported.v1")
    assert bad.status_code == 422 and "query.steps" in [e["field"] for e in bad.json()["errors"]]


async def test_a_timeline_follows_a_merge_and_is_gone_after_erasure(network: Network) -> None:
    view = (await network.get("oba-desk", "/v1/members/oba-on-0/timeline")).json()
    assert [m["type"] for m in view["milestones"]] == [
        "member.signed_up.v1", "member.card_activated.v1", "usage.loan_borrowed.v1",
    ]  # fmt: skip
    assert view["timeline"][0]["type"] == "usage.loan_borrowed.v1"
    stuck = (await network.get("oba-desk", "/v1/members/oba-on-6/timeline")).json()
    assert [f["rule"] for f in stuck["open_frictions"]] == [NOT_ACTIVATED]
    merged = await network.get("oba-desk", "/v1/members/merged/timeline")
    assert (merged.json()["member_id"], merged.json()["requested_id"]) == ("oba-on-5", "merged")
    assert problem(await network.get("oba-desk", "/v1/members/erased/timeline")) == (404, "the member does not exist")
    other = await network.get("oba-desk", "/v1/members/haarlem-on-0/timeline")
    assert other.status_code == 403 and "haarlem" not in other.json()["detail"]


async def test_redelivered_and_replayed_events_count_once_and_erased_members_stay_out(network: Network) -> None:
    before = await network.rows("analyst", "/v1/reports/funnel", steps=FUNNEL, by="channel")
    rows_before = await network.store.rows("SELECT count() AS n FROM {db}.events")
    await network.publish(the_network())  # the whole history again, same event ids
    assert await network.rows("analyst", "/v1/reports/funnel", steps=FUNNEL, by="channel") == before
    assert await network.store.rows("SELECT count() AS n FROM {db}.events") == rows_before
    erased = await network.store.rows("SELECT count() AS n FROM {db}.events WHERE member_id = 'erased'")
    merged = await network.store.rows("SELECT count() AS n FROM {db}.events WHERE member_id = 'merged'")
    assert erased == merged == [{"n": 0}]


async def test_paths_show_what_members_did_next_after_an_event(network: Network) -> None:
    rows = await network.rows("analyst", "/v1/reports/paths", event="member.signed_up.v1", depth=1, within="P30D")
    # Sign-ups younger than 30 days are left out (their next step may still come): new, desk-*, merged's.
    assert [(r["path"], r["occurrences"], r["share"]) for r in rows] == [
        ("(none)", 21, 0.8077),  # oba-on-5..9, haarlem-on-0..2, the 13 kids (their loans came 300 days later)
        ("member.card_activated.v1", 5, 0.1923),
    ]  # fmt: skip
    bad = await network.get("analyst", "/v1/reports/paths", event="member.teleported.v1")
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "query.event"


async def test_retention_follows_each_sign_up_cohort_month_by_month(network: Network) -> None:
    kids_month = (NOW - 400 * DAY).astimezone(ZoneInfo("Europe/Amsterdam")).strftime("%Y-%m")
    rows = [r for r in await network.rows("analyst", "/v1/reports/retention", months=24) if r["cohort"] == kids_month]
    assert (rows[0]["months_after"], rows[0]["members"], rows[0]["active"]) == (0, 13, 13)
    assert rows[-1]["months_after"] >= 12  # up to the clock's month
    loans = [r for r in rows if r["suppressed"]]  # the month four of them borrowed: fewer than five, suppressed
    assert len(loans) == 1 and loans[0]["members"] == 13 and loans[0]["active"] is None
    assert all(r["active"] == 0 for r in rows[1:] if not r["suppressed"])


async def test_frictions_compared_with_the_previous_period_and_date_presets(network: Network) -> None:
    start, end = (NOW - 30 * DAY).date(), (NOW - 20 * DAY).date()
    rows = await network.rows("analyst", "/v1/reports/frictions", by="rule", compare="previous",
                              **{"from": start.isoformat(), "to": end.isoformat()})  # fmt: skip
    [row] = [r for r in rows if r["rule"] == NOT_ACTIVATED]
    assert (row["detected"], row["previous_detected"], row["detected_change"]) == (10, None, None)
    answer = await network.get("analyst", "/v1/reports/frictions", by="rule", preset="last_30_days")
    assert (
        answer.json()["parameters"]["from"]
        == (datetime.now(ZoneInfo("Europe/Amsterdam")).date() - 29 * DAY).isoformat()
    )
    both = await network.get("analyst", "/v1/reports/frictions", preset="last_7_days", **{"from": "2026-01-01"})
    assert both.status_code == 422 and both.json()["errors"][0]["field"] == "query.preset"


async def test_a_window_read_before_its_member_s_sign_up_counts_by_the_profile_and_erasure_empties_derived_rows(
    growing: Network,
) -> None:
    # Reservations (their windows close after 7 days) read before the members' sign-ups: topics run side by side.
    members = [f"zaandam-teen-{i}" for i in range(5)]
    reserved = [
        event("usage.loan_reserved.v1", m, NOW - 30 * DAY, library="zaandam", channel="online", platform="app",
              item_id="i", reservation_id=f"r-{m}")
        for m in members
    ]  # fmt: skip
    await growing.publish(reserved)
    teens = [signed_up(m, NOW - 60 * DAY, library="zaandam", online=False, age_band="12-17") for m in members]
    frictions = [detected(m, "reservation-not-collected", NOW - 30 * DAY, NOW - 23 * DAY, "zaandam", age_band="12-17")
                 for m in members]  # fmt: skip
    await growing.publish([*teens, *frictions])
    query = {"by": "age_band", "library": "zaandam", "rule": "reservation-not-collected"}
    rows = by(await growing.rows("analyst", "/v1/reports/frictions", **query), "age_band")
    assert (rows[("12-17",)]["detected"], rows[("12-17",)]["starts"]) == (5, 5)
    assert list(rows) == [("12-17",)]  # no window counted without the band
    await growing.publish([event("member.erased.v1", members[0], NOW)])
    for table in ("windows", "frictions"):
        left = await growing.store.rows(f"SELECT count() AS n FROM {{db}}.{table} WHERE member_id = '{members[0]}'")
        assert left == [{"n": 0}], table
    rows = by(await growing.rows("analyst", "/v1/reports/frictions", **query), "age_band")
    assert rows[("12-17",)]["suppressed"] is True  # four frictions and windows left: fewer than five


async def test_a_resolution_read_before_its_detection_counts_once_the_detection_is_stored(growing: Network) -> None:
    members, rule = [f"leiden-{i}" for i in range(5)], "repeated-login-failures"
    due = NOW - 3 * DAY
    await growing.publish([resolved(m, rule, due, due + timedelta(hours=2)) for m in members])
    query = {"by": "rule,library", "library": "leiden"}
    assert await growing.rows("analyst", "/v1/reports/frictions", **query) == []  # nothing to resolve yet
    await growing.publish([detected(m, rule, due - timedelta(minutes=15), due, "leiden") for m in members])
    [row] = await growing.rows("analyst", "/v1/reports/frictions", **query)
    assert (row["detected"], row["resolved"], row["median_seconds_to_resolve"]) == (5, 5, 7200.0)


async def test_paths_follow_late_events_replays_and_erasure(growing: Network) -> None:
    members, at = [f"delft-{i}" for i in range(5)], NOW - 50 * DAY

    def login(kind: str, member: str, at: datetime, **data: Any) -> CloudEvent:
        return event(kind, member, at, channel="online", platform="ebook", login_platform="ebook", **data)

    failed = [login("member.login_failed.v1", m, at, reason="bad_credentials") for m in members]
    succeeded = [login("member.login_succeeded.v1", m, at + timedelta(hours=1)) for m in members]
    await growing.publish([*(signed_up(m, NOW - 60 * DAY, library="delft") for m in members), *failed, *succeeded])
    query = {"event": "member.login_failed.v1", "library": "delft", "depth": 2, "within": "P1D"}

    async def paths() -> list[tuple[str, int | None]]:
        return [(r["path"], r["occurrences"]) for r in await growing.rows("analyst", "/v1/reports/paths", **query)]

    assert await paths() == [("member.login_succeeded.v1 → (none)", 5)]
    # Read late: a second failure between the two, a loan after them. The paths are as if read in order.
    late = [login("member.login_failed.v1", m, at + timedelta(minutes=30), reason="locked") for m in members]
    late += [borrowed(m, at + timedelta(hours=2)) for m in members]
    await growing.publish(late)
    expected = [
        ("member.login_failed.v1 → member.login_succeeded.v1", 5),
        ("member.login_succeeded.v1 → usage.loan_borrowed.v1", 5),
    ]
    assert await paths() == expected
    await growing.publish([*failed, *late])  # replayed: nothing counts twice
    assert await paths() == expected
    await growing.publish([event("member.erased.v1", members[0], NOW)])
    assert await paths() == [(path, None) for path, _ in expected]  # four members left: suppressed
    left = "SELECT count() AS n FROM {db}.next_steps WHERE member_key = cityHash64('delft-0')"
    assert await growing.store.rows(left) == [{"n": 0}]


# Funnels the steps' table must count as the events did: a split each way, windows short and long, dates, a profile,
# steps that are not the journey's order, a type twice (the same event may be both steps).
STEPS = tuple(FUNNEL.split(","))
FUNNELS = [
    FunnelQuery(steps=STEPS, by="channel"),
    FunnelQuery(steps=STEPS, by="platform", within=timedelta(days=3)),
    FunnelQuery(steps=STEPS, within=timedelta(days=3660)),
    FunnelQuery(steps=STEPS, by="channel", start=(NOW - 45 * DAY).date(), end=(NOW - 30 * DAY).date()),
    FunnelQuery(steps=STEPS, by="platform", libraries=frozenset({"oba", "gouda"}), age_bands=frozenset({"18-64"})),
    FunnelQuery(steps=("member.card_activated.v1", "usage.loan_borrowed.v1"), within=timedelta(hours=80)),
    FunnelQuery(steps=("usage.loan_reserved.v1", "member.signed_up.v1", "usage.loan_borrowed.v1"), by="channel"),
    FunnelQuery(
        steps=("member.login_failed.v1", "member.login_failed.v1", "member.login_succeeded.v1"),
        within=timedelta(minutes=45),
    ),
]


FAILED = {"reason": "bad_credentials"}


async def funnels_of_both(network: Network) -> list[list[dict[str, Any]]]:
    """Each of `FUNNELS` from the members' steps, asserted equal to it counted from the events."""
    clock, counted = int(NOW.timestamp() * 1000), []
    for query in FUNNELS:
        steps = sorted(await network.store.rows(*funnel_counts(query, clock)), key=lambda r: str(r["split"]))
        events = sorted(await network.store.rows(*funnel_from_events(query, clock)), key=lambda r: str(r["split"]))
        assert steps == events, query
        counted.append(steps)
    return counted


async def test_the_funnel_from_members_steps_is_the_funnel_of_the_events(growing: Network) -> None:
    # With what the other tests of the growing store add (merges, erasures, replays, late events, windows read
    # before sign-ups), and members whose steps are out of the journey's usual order: a reservation before the
    # sign-up, two failed logins.
    members, at = [f"edam-{i}" for i in range(5)], NOW - 3 * DAY
    await growing.publish([
        *(event("usage.loan_reserved.v1", m, at, library="edam", item_id="i", reservation_id=m) for m in members),
        *(signed_up(m, at + timedelta(hours=1), library="edam") for m in members),
        *(event(kind, m, at + timedelta(minutes=minutes), library="edam", channel="online", platform="app",
                login_platform="app", **data)
          for m in members for kind, minutes, data in (("member.login_failed.v1", 70, FAILED),
                                                       ("member.login_failed.v1", 80, FAILED),
                                                       ("member.login_succeeded.v1", 100, {}))),
        *(borrowed(m, at + DAY) for m in members),
    ])  # fmt: skip
    counted = await funnels_of_both(growing)
    assert all(sum(int(r["reached_2"]) for r in rows) > 0 for rows in counted)  # every funnel counts someone


async def test_members_steps_follow_late_events_duplicates_merges_and_erasure(growing: Network) -> None:
    members, at = [f"gouda-{i}" for i in range(6)], NOW - 20 * DAY
    later = [event("member.card_activated.v1", m, at + DAY, library="gouda", channel="online") for m in members]
    later += [borrowed(m, at + 3 * DAY) for m in members]
    await growing.publish(later)  # read before the sign-ups: the topics run side by side
    await growing.publish([signed_up(m, at, library="gouda") for m in members])
    query, clock = FunnelQuery(steps=STEPS, by="channel", libraries=frozenset({"gouda"})), int(NOW.timestamp() * 1000)

    async def reached() -> dict[str | None, list[int]]:
        await funnels_of_both(growing)  # and every other funnel still as the events count it
        rows = await growing.store.rows(*funnel_counts(query, clock))
        return {r["split"]: [int(r[f"reached_{k}"]) for k in (1, 2, 3)] for r in rows}

    assert await reached() == {"online": [6, 6, 6]}
    await growing.publish([*later, *(signed_up(m, at, library="gouda") for m in members)])  # delivered again
    assert await reached() == {"online": [6, 6, 6]}
    # A member who signed up earlier at the desk is merged into gouda-5: the survivor's first sign-up is the desk's.
    await growing.publish([signed_up("gouda-desk", at - 10 * DAY, library="gouda", online=False)])
    await growing.publish([event("member.merged.v1", "gouda-desk", at - 9 * DAY, survivor_id="gouda-5")])
    assert await reached() == {"online": [5, 5, 5], "offline": [1, 1, 1]}
    await growing.publish([event("member.erased.v1", "gouda-0", NOW)])
    assert await reached() == {"online": [4, 4, 4], "offline": [1, 1, 1]}
    for member in ("gouda-desk", "gouda-0"):  # no row of the merged or the erased member: steps or anything else
        left = f"SELECT count() AS n FROM {{db}}.members WHERE member_key = cityHash64('{member}')"
        assert await growing.store.rows(left) == [{"n": 0}], member
    # The survivor's steps: each of its member and usage events once (its own and the merged member's).
    steps = "SELECT length(steps) AS n FROM {db}.members FINAL WHERE member_key = cityHash64('gouda-5')"
    events = (
        "SELECT count() AS n FROM {db}.events WHERE member_key = cityHash64('gouda-5') "
        "AND (type LIKE 'member.%' OR type LIKE 'usage.%')"
    )
    assert await growing.store.rows(steps) == await growing.store.rows(events) != [{"n": 0}]


async def test_every_event_type_has_a_step_code_of_its_own(network: Network) -> None:
    kinds = [kind.removeprefix(TYPE_PREFIX) for kind in event_types()]
    sql = f"SELECT uniqExact({step_code('kind')}) AS n FROM (SELECT arrayJoin({{kinds:Array(String)}}) AS kind)"
    assert await network.store.rows(sql, {"kinds": array_literal(kinds)}) == [{"n": len(kinds)}]


async def test_a_store_made_before_next_steps_gets_them_at_start(growing: Network) -> None:
    query = {"event": "member.signed_up.v1", "depth": 1, "within": "P30D"}
    before = await growing.rows("analyst", "/v1/reports/paths", **query)
    assert sum(r["occurrences"] or 0 for r in before) > 20
    for table in ("next_steps", "next_steps_done"):
        await growing.store.command(f"TRUNCATE TABLE {{db}}.{table}")
    assert await next_steps_up_to_date(growing.store) > 20  # what the service does at start: every member
    assert await growing.store.rows("SELECT count() > 0 AS some FROM {db}.next_steps") == [{"some": 1}]
    assert await growing.rows("analyst", "/v1/reports/paths", **query) == before
    assert await next_steps_up_to_date(growing.store) == 0  # nothing stored since: nothing derived


async def test_a_store_of_the_previous_layout_gets_its_members_active_months_and_steps_at_start(
    growing: Network,
) -> None:
    # It empties and then rebuilds the derived tables of its store: the store of the tests that change theirs.
    before = await growing.rows("analyst", "/v1/reports/retention", months=24)
    funnel = await growing.rows("analyst", "/v1/reports/funnel", steps=FUNNEL, by="channel")
    assert any(r["active"] for r in before) and any(r["reached"] for r in funnel)
    # As a store made before members kept their active months and steps: the columns empty, another layout's
    # fingerprint.
    await growing.store.command(
        "ALTER TABLE {db}.members UPDATE active_months = [], steps = [] WHERE 1 SETTINGS mutations_sync = 1"
    )
    await growing.store.command("INSERT INTO {db}.catalogue (fingerprint) VALUES ('layout-4')")
    assert not any(r["active"] for r in await growing.rows("analyst", "/v1/reports/retention", months=24))
    assert await growing.rows("analyst", "/v1/reports/funnel", steps=FUNNEL, by="channel") == []
    reading: Reports = growing.app.state.reports
    assert await growing.store.windows_for(fingerprint(reading.windows), derived(reading.windows))
    assert await growing.rows("analyst", "/v1/reports/retention", months=24) == before
    assert await growing.rows("analyst", "/v1/reports/funnel", steps=FUNNEL, by="channel") == funnel
    await funnels_of_both(growing)
