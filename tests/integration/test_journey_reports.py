"""The journey reports on the real broker and Redis: a scripted network of members goes through Kafka into the
journey service, then every report is read over HTTP — numbers, CSV, suppression, censoring, scope and roles."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI

from services.journey.app import create_app
from services.journey.handlers import FrictionDetector
from services.journey.settings import JourneySettings
from shared.auth import Keyring
from shared.events import CloudEvent
from shared.events.registry import TYPE_PREFIX
from shared.kafka import EventPublisher
from shared.redis import make_redis
from shared.settings import Settings
from tests.integration.conftest import MakeKey
from tests.support import eventually, running

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)
FUNNEL = "member.signed_up.v1,member.card_activated.v1,usage.loan_borrowed.v1"


def event(kind: str, member: str, at: datetime, *, library: str = "oba", channel: str = "offline",
          platform: str = "desk", **data: Any) -> CloudEvent:  # fmt: skip
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


def activated(member: str, at: datetime, library: str = "oba") -> CloudEvent:
    return event("member.card_activated.v1", member, at, library=library)


def borrowed(member: str, at: datetime) -> CloudEvent:
    return event("usage.loan_borrowed.v1", member, at, item_id=f"item-{member}", loan_id=f"loan-{member}")


def the_network() -> list[CloudEvent]:
    """Who did what (times before now):

    oba, online sign-ups 40 days ago (18-64): on-0..2 activate the card 2 days later and borrow 3 days after that;
      on-3, on-4 activate after 20 days (too late for the 14-day rule, within the funnel's 30 days); on-5..9 never.
      new signed up 2 days ago: its windows are still open. desk-0..4 (65+) signed up at the desk 10 days ago.
      kid-0..5 (4-11) signed up at the desk 400 days ago; kid-0..3 borrowed 100 days ago.
    haarlem: on-0..2 online sign-ups 40 days ago, never activated; kid-0, kid-1 (4-11) 400 days ago, inactive since.
    utrecht: kid-0..4 (4-11) 400 days ago, inactive since.
    Also: `merged` signs up a day ago and is merged into oba-on-5; `erased` signs up and is erased."""
    start, events = NOW - 40 * DAY, []
    for i in range(10):
        events.append(signed_up(f"oba-on-{i}", start))
    for i in range(3):
        events += [activated(f"oba-on-{i}", start + 2 * DAY), borrowed(f"oba-on-{i}", start + 5 * DAY)]
    events += [activated(f"oba-on-{i}", start + 20 * DAY) for i in (3, 4)]
    events.append(signed_up("oba-new", NOW - 2 * DAY))
    events += [signed_up(f"oba-desk-{i}", NOW - 10 * DAY, online=False, age_band="65+") for i in range(5)]
    for library, kids in (("oba", 6), ("haarlem", 2), ("utrecht", 5)):
        for i in range(kids):
            events.append(signed_up(f"{library}-kid-{i}", NOW - 400 * DAY, library=library, online=False,
                                    age_band="4-11"))  # fmt: skip
    events += [borrowed(f"oba-kid-{i}", NOW - 100 * DAY) for i in range(4)]
    events += [signed_up(f"haarlem-on-{i}", start, library="haarlem") for i in range(3)]
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
    settings: JourneySettings
    keys: dict[str, str]

    def client(self, key: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.keys[key]}"} if key else {}
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers)

    async def get(self, key: str | None, path: str, **params: Any) -> httpx.Response:
        async with self.client(key) as client:
            return await client.get(path, params=params)

    async def rows(self, key: str, path: str, **params: Any) -> list[dict[str, Any]]:
        response = await self.get(key, path, **params)
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()["rows"]
        return rows


def report_settings(kafka_bootstrap: str, redis_url: str, **overrides: Any) -> JourneySettings:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    values: dict[str, Any] = {
        "kafka_bootstrap": kafka_bootstrap, "redis_url": redis_url, "topic_prefix": prefix, "group_prefix": prefix,
        "key_prefix": prefix, "partitions": 2, "handler_retry_backoff_seconds": 0.05,
        "journey_allowed_lateness": timedelta(0), "journey_timer_tick_seconds": 0.2, "journey_idle_seconds": 0.5,
        "journey_report_cache_seconds": 0, **overrides,
    }  # fmt: skip
    return JourneySettings(**values)


async def settle(app: FastAPI) -> None:
    detector: FrictionDetector = app.state.detector
    await eventually(detector.settled, within=240, every=0.5)


@pytest.fixture(scope="module")
async def network(kafka_bootstrap: str, redis_url: str) -> AsyncIterator[Network]:
    settings = report_settings(kafka_bootstrap, redis_url)
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
        publisher: EventPublisher = app.state.parts.publisher
        await publisher.publish_many(the_network())
        await settle(app)
        yield Network(app, settings, keys)


def by(rows: list[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {tuple(row[k] for k in keys): row for row in rows}


# -------------------------------------------------------------------------------------------- frictions


async def test_friction_report_counts_detected_resolved_closed_windows_rates_and_time_to_resolve(
    network: Network,
) -> None:
    rows = by(await network.rows("analyst", "/v1/reports/frictions", by="rule,library"), "rule", "library")
    assert rows[("online-signup-not-activated", "oba")] == {
        "rule": "online-signup-not-activated", "library": "oba",
        "detected": 7, "resolved": 2, "starts": 10,  # oba-new's window is still open: counted nowhere yet
        "rate_per_1000_starts": 700.0, "resolution_rate": 0.2857, "median_seconds_to_resolve": 6 * 86400.0,
        "members": 22, "frictions_per_1000_members": 318.18, "suppressed": False,
    }  # fmt: skip
    inactive = rows[("youth-inactive", "oba")]
    assert (inactive["detected"], inactive["resolved"], inactive["starts"]) == (6, 4, None)
    assert rows[("desk-signup-never-online", "utrecht")]["detected"] == 5


async def test_a_friction_row_with_fewer_than_five_frictions_is_suppressed(network: Network) -> None:
    rows = by(await network.rows("analyst", "/v1/reports/frictions", by="rule,library"), "rule", "library")
    haarlem = rows[("online-signup-not-activated", "haarlem")]  # three frictions
    assert haarlem["suppressed"] is True
    assert {haarlem[k] for k in ("detected", "resolved", "starts", "rate_per_1000_starts")} == {None}


async def test_grouped_by_library_the_report_shows_members_and_frictions_per_thousand_members(
    network: Network,
) -> None:
    rows = by(await network.rows("analyst", "/v1/reports/frictions", by="library"), "library")
    # oba: 10 online + 1 new + 5 desk + 6 kids (the merged and the erased record are gone)
    assert rows[("oba",)]["members"] == 22
    detected = rows[("oba",)]["detected"]
    assert rows[("oba",)]["frictions_per_1000_members"] == round(detected * 1000 / 22, 2)
    assert rows[("utrecht",)]["members"] == 5


async def test_frictions_by_period_use_amsterdam_months_and_from_to_filter_them(network: Network) -> None:
    rows = await network.rows("analyst", "/v1/reports/frictions", by="rule", period="month",
                              rule="online-signup-not-activated")  # fmt: skip
    due = (NOW - 26 * DAY).astimezone(ZoneInfo("Europe/Amsterdam"))
    assert [(r["period"], r["detected"]) for r in rows] == [(f"{due.year}-{due.month:02d}", 10)]  # oba 7, haarlem 3
    today = NOW.astimezone(ZoneInfo("Europe/Amsterdam")).date().isoformat()
    assert await network.rows("analyst", "/v1/reports/frictions", by="rule", **{"from": today}) == []


async def test_reports_come_as_csv_by_accept_header_or_format_parameter(network: Network) -> None:
    async with network.client("analyst") as client:
        response = await client.get(
            "/v1/reports/frictions", params={"by": "rule,library"}, headers={"Accept": "text/csv"}
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    lines = list(csv.DictReader(io.StringIO(response.text)))
    assert list(lines[0])[:3] == ["rule", "library", "detected"]
    haarlem = next(r for r in lines if r["rule"] == "online-signup-not-activated" and r["library"] == "haarlem")
    assert (haarlem["detected"], haarlem["suppressed"]) == ("", "true")
    oba = next(r for r in lines if r["rule"] == "online-signup-not-activated" and r["library"] == "oba")
    assert (oba["detected"], oba["rate_per_1000_starts"]) == ("7", "700.0")
    reach = await network.get("analyst", "/v1/reports/reach", format="csv")
    assert reach.headers["content-type"].startswith("text/csv")
    assert reach.text.splitlines()[0] == "library,age_band,members,active,share,suppressed"


# ----------------------------------------------------------------------------------------------- funnel


async def test_the_funnel_splits_by_channel_and_never_counts_a_member_inside_the_window_as_dropped(
    network: Network,
) -> None:
    rows = by(await network.rows("analyst", "/v1/reports/funnel", steps=FUNNEL, by="channel", within="P30D"),
              "channel", "step_number")  # fmt: skip
    figures = ("entered", "reached", "dropped", "in_progress")
    assert [rows[("online", n)][k] for n in (1, 2, 3) for k in figures] == [
        14, 14, 0, 0,
        14, 5, 8, 1,  # the 2-day-old sign-up is in progress
        5, 3, 0, 2,  # activated 20 days ago, no loan yet: in progress, not dropped
    ]  # fmt: skip
    assert rows[("online", 2)]["conversion"] == round(5 / 13, 4)
    # The desk sign-ups of 10 days ago are in progress; the kids of 400 days ago never activated a card.
    assert [rows[("offline", 2)][k] for k in figures] == [18, 0, 13, 5]
    assert rows[("offline", 3)]["suppressed"] is True  # nobody entered the third step


async def test_a_funnel_of_other_steps_within_a_shorter_time(network: Network) -> None:
    rows = await network.rows("analyst", "/v1/reports/funnel", steps="member.card_activated.v1,usage.loan_borrowed.v1",
                              within="P2D")  # fmt: skip
    # five activations; the three loans came three days after them: dropped with two days allowed
    assert [(r["entered"], r["reached"], r["dropped"]) for r in rows] == [(5, 5, 0), (5, 0, 5)]


# ------------------------------------------------------------------------------------------------ reach


async def test_reach_shows_active_members_per_library_and_band_with_the_network_total(network: Network) -> None:
    rows = by(await network.rows("analyst", "/v1/reports/reach", age_bands="0-3,4-11,12-17", months=12),
              "library", "age_band")  # fmt: skip
    assert rows[("oba", "4-11")] == {
        "library": "oba", "age_band": "4-11", "members": 6, "active": 4, "share": 0.6667, "suppressed": False,
    }  # fmt: skip
    assert rows[("*", "4-11")] == {
        "library": "*", "age_band": "4-11", "members": 13, "active": 4, "share": 0.3077, "suppressed": False,
    }  # fmt: skip
    assert (rows[("*", "*")]["members"], rows[("*", "0-3")]["members"]) == (13, 0)


async def test_reach_suppresses_a_small_library_and_one_more_so_the_total_does_not_give_it_away(
    network: Network,
) -> None:
    rows = by(await network.rows("analyst", "/v1/reports/reach"), "library", "age_band")
    assert rows[("haarlem", "4-11")]["suppressed"] and rows[("haarlem", "4-11")]["members"] is None  # two kids
    # 13 in the network minus oba's 6 would leave haarlem's 2 if utrecht's 5 were shown
    assert rows[("utrecht", "4-11")]["suppressed"] and rows[("utrecht", "4-11")]["members"] is None


# ------------------------------------------------------------------------------------ scope and roles


async def test_a_library_key_sees_only_its_library(network: Network) -> None:
    frictions = await network.rows("oba-analyst", "/v1/reports/frictions", by="library")
    assert {r["library"] for r in frictions} == {"oba"}
    reach = by(await network.rows("oba-analyst", "/v1/reports/reach"), "library", "age_band")
    assert set(reach) == {("oba", "4-11"), ("oba", "*"), ("*", "0-3"), ("*", "4-11"), ("*", "12-17"), ("*", "*")}
    assert reach[("*", "*")]["members"] == 6
    funnel = by(await network.rows("oba-analyst", "/v1/reports/funnel", steps=FUNNEL, by="channel"),
                "channel", "step_number")  # fmt: skip
    assert funnel[("online", 1)]["entered"] == 11


async def test_a_library_key_asking_for_another_library_gets_403_naming_library(network: Network) -> None:
    for path in ("/v1/reports/frictions", "/v1/reports/reach"):
        response = await network.get("oba-analyst", path, library="haarlem")
        assert response.status_code == 403
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"][0]["field"] == "query.library"
    assert (await network.get("oba-analyst", "/v1/reports/frictions", library="oba")).status_code == 200


async def test_a_network_key_may_filter_by_library(network: Network) -> None:
    rows = await network.rows("analyst", "/v1/reports/frictions", by="rule,library", library="haarlem,utrecht")
    assert {r["library"] for r in rows} == {"haarlem", "utrecht"}


async def test_reports_need_an_analyst_key(network: Network) -> None:
    assert (await network.get(None, "/v1/reports/frictions")).status_code == 401
    assert (await network.get("marketing", "/v1/reports/reach")).status_code == 403
    assert (await network.get("oba-desk", "/v1/reports/funnel", steps=FUNNEL)).status_code == 403


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"by": "rule,colour"}, "query.by"),
        ({"period": "fortnight"}, "query.period"),
        ({"from": "yesterday"}, "query.from"),
        ({"from": "2026-03-10", "to": "2026-03-01"}, "query.to"),
        ({"age_band": "70+"}, "query.age_band"),
        ({"library": "Not A Code"}, "query.library"),
    ],
)
async def test_a_bad_friction_query_is_a_422_naming_the_parameter(
    network: Network, params: dict[str, str], field: str
) -> None:
    response = await network.get("analyst", "/v1/reports/frictions", **params)
    assert response.status_code == 422
    assert field in [e["field"] for e in response.json()["errors"]]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"steps": "member.signed_up.v1,member.teleported.v1"}, "query.steps"),
        ({"steps": "member.signed_up.v1"}, "query.steps"),
        ({"steps": FUNNEL, "within": "P0D"}, "query.within"),
        ({"steps": FUNNEL, "within": "a month"}, "query.within"),
        ({"steps": FUNNEL, "by": "colour"}, "query.by"),
        ({}, "query.steps"),
    ],
)
async def test_a_bad_funnel_query_is_a_422_naming_the_parameter(
    network: Network, params: dict[str, str], field: str
) -> None:
    response = await network.get("analyst", "/v1/reports/funnel", **params)
    assert response.status_code == 422
    assert field in [e["field"] for e in response.json()["errors"]]


async def test_a_bad_reach_query_is_a_422_naming_the_parameter(network: Network) -> None:
    for params, field in (({"months": "0"}, "query.months"), ({"age_bands": "0-3,old"}, "query.age_bands")):
        response = await network.get("analyst", "/v1/reports/reach", **params)
        assert response.status_code == 422
        assert field in [e["field"] for e in response.json()["errors"]]


# --------------------------------------------------------------------------------------------- timeline


async def test_a_member_s_timeline_shows_milestones_across_channels_for_front_office_help(network: Network) -> None:
    response = await network.get("oba-desk", "/v1/members/oba-on-0/timeline")
    assert response.status_code == 200, response.text
    view = response.json()
    assert [m["type"] for m in view["milestones"]] == [
        "member.signed_up.v1", "member.card_activated.v1", "usage.loan_borrowed.v1",
    ]  # fmt: skip
    assert [m["channel"] for m in view["milestones"]] == ["online", "offline", "offline"]
    assert view["timeline"][0]["type"] == "usage.loan_borrowed.v1"  # newest first
    assert view["profile"]["home_library"] == "oba"
    stuck = (await network.get("oba-desk", "/v1/members/oba-on-6/timeline")).json()
    assert [f["rule"] for f in stuck["open_frictions"]] == ["online-signup-not-activated"]


async def test_a_timeline_follows_a_merge_and_is_gone_after_erasure(network: Network) -> None:
    merged = await network.get("oba-desk", "/v1/members/merged/timeline")
    assert merged.status_code == 200
    assert (merged.json()["member_id"], merged.json()["requested_id"]) == ("oba-on-5", "merged")
    assert (await network.get("oba-desk", "/v1/members/erased/timeline")).status_code == 404
    assert (await network.get("oba-desk", "/v1/members/nobody/timeline")).status_code == 404


async def test_a_library_key_reads_only_its_own_members_timelines(network: Network) -> None:
    response = await network.get("oba-desk", "/v1/members/haarlem-on-0/timeline")
    assert response.status_code == 403
    assert "haarlem" not in response.json()["detail"]  # the member's library is not given away
    assert (await network.get("oba-analyst", "/v1/members/oba-on-0/timeline")).status_code == 403
    assert (await network.get(None, "/v1/members/oba-on-0/timeline")).status_code == 401


# ------------------------------------------------------------------------------------------------ cache


async def test_a_report_is_served_from_the_cache_for_a_few_seconds(settings: Settings, make_key: MakeKey) -> None:
    cached = report_settings(settings.kafka_bootstrap, settings.redis_url, journey_report_cache_seconds=300,
                             key_prefix=settings.key_prefix)  # fmt: skip
    app = create_app(cached)
    key = await make_key("analyst")
    async with running(app, key) as client:
        publisher: EventPublisher = app.state.parts.publisher
        await publisher.publish_many([signed_up(f"kid-{i}", NOW - DAY, age_band="0-3") for i in range(5)])
        await settle(app)
        first = (await client.get("/v1/reports/reach")).json()
        await publisher.publish(signed_up("kid-5", NOW - DAY, age_band="0-3"))
        await settle(app)
        again = (await client.get("/v1/reports/reach")).json()
        other_query = (await client.get("/v1/reports/reach", params={"months": 6})).json()
    assert again == first  # the same answer, computed once
    assert by(first["rows"], "library", "age_band")[("oba", "0-3")]["members"] == 5
    assert by(other_query["rows"], "library", "age_band")[("oba", "0-3")]["members"] == 6
