"""The BoekStart funnel's second step is the guardian's first visit or login after the child's sign-up, and the
reach 0-18 counts each child in the band of their age on the reporting day: known events on the real broker into
the real analytics service and store (chDB) give known numbers. The guardian links follow merges and erasures and
stay the same under replays; siblings share a guardian."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.analytics.app import create_app as analytics_app
from services.analytics.family import Families
from services.analytics.settings import AnalyticsSettings
from shared.events import CloudEvent, EventData
from shared.events.members import (
    CardActivated,
    GuardianSet,
    LoginSucceeded,
    MemberErased,
    MemberMerged,
    MemberSignedUp,
)
from shared.events.propositions import ActivityAttended
from shared.settings import Settings
from tests.integration.conftest import MakeKey
from tests.support import eventually, running

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
YEAR = NOW.astimezone(UTC).year


@dataclass
class Analytics:
    client: httpx.AsyncClient
    app: FastAPI
    analyst: dict[str, str]
    admin: dict[str, str]

    async def publish(self, events: list[CloudEvent]) -> None:
        await self.app.state.parts.publisher.publish_many(events)

    async def handled(self, at_least: int) -> None:
        """Wait until the fact writer handled this many records (a replay adds nothing to see otherwise)."""

        async def done() -> bool:
            return bool(self.app.state.writer.handled >= at_least)

        await eventually(done, within=60)

    async def funnel(self) -> dict[tuple[str, str], dict[str, Any]]:
        response = await self.client.get("/v1/reports/boekstart-funnel", headers=self.analyst)
        assert response.status_code == 200, response.text
        return {(r["library"], r["partner"]): r for r in response.json()["rows"]}


@pytest.fixture
async def analytics(
    settings: Settings, seed_libraries: list[str], admin_key: str, make_key: MakeKey, tmp_path: Path
) -> AsyncIterator[Analytics]:
    values = AnalyticsSettings(
        **settings.model_dump(), analytics_path=tmp_path / "analytics", analytics_min_cell=1, analytics_cache_seconds=0
    )
    app = analytics_app(values)
    async with running(app) as client:
        analyst = {"Authorization": f"Bearer {await make_key('analyst')}"}
        yield Analytics(client, app, analyst, {"Authorization": f"Bearer {admin_key}"})


def event(data: EventData, member: str, days_ago: float) -> CloudEvent:
    return CloudEvent.create(data, subject=member, source="/identity", library="oba", channel="offline",
                             platform="desk", time=NOW - timedelta(days=days_ago))  # fmt: skip


def baby(child: str, days_ago: float, birth_year: int | None = None, band: str = "0-3") -> CloudEvent:
    data = MemberSignedUp(age_band=band, home_library="oba", postcode_area="1034", source="consultatiebureau",
                          proposition="boekstart", birth_year=birth_year)  # fmt: skip
    return event(data, child, days_ago)


def linked(child: str, guardian: str, days_ago: float) -> CloudEvent:
    return event(GuardianSet(guardian_id=guardian), child, days_ago)


def logged_in(member: str, days_ago: float) -> CloudEvent:
    return event(LoginSucceeded(login_platform="app"), member, days_ago)


def attended(member: str, days_ago: float) -> CloudEvent:
    data = ActivityAttended(activity_id="oba.boekstart.3f9a1c2e7d4b", proposition="boekstart")
    return event(data, member, days_ago)


def ids(n: int) -> list[str]:
    return [f"m-{uuid.uuid4().hex[:12]}" for _ in range(n)]


async def test_the_funnel_counts_the_guardian_s_first_visit_after_the_child_s_sign_up(analytics: Analytics) -> None:
    a, b, c, d, e, f = ids(6)
    parent, other, before, merged_away, erased_parent = ids(5)
    links = [linked(a, parent, 100), linked(b, parent, 50), linked(c, other, 30), linked(d, before, 20),
             linked(e, erased_parent, 20), linked(f, parent, 10)]  # fmt: skip
    events = [
        # A and B are siblings: their parent logged in 90 days ago (after A's sign-up, before B's) and came to a
        # BoekStart morning 40 days ago (after both): both visited.
        baby(a, 100), baby(b, 50), logged_in(parent, 90), attended(parent, 40),
        # C's guardian logged in only before C was signed up; C's own card activation is not the guardian's visit.
        baby(c, 30), logged_in(other, 60), event(CardActivated(branch="oosterdok"), c, 20),
        # D's guardian logged in, then was merged into another member: the link and the visit follow the merge.
        baby(d, 20), logged_in(before, 10), event(MemberMerged(survivor_id=merged_away), before, 5),
        # E's guardian came by, then was erased: the link (and their events) go.
        baby(e, 20), logged_in(erased_parent, 15), event(MemberErased(), erased_parent, 4),
        # F, a third child of the same parent, was erased: gone from the funnel and from the links.
        baby(f, 10), event(MemberErased(), f, 3),
        *links,
    ]  # fmt: skip
    await analytics.publish(events)
    # Links, visits, merges and erasures come on several partitions, in any order: read once all are handled.
    await analytics.handled(len(events))

    rows = await analytics.funnel()
    clinic = rows[("oba", "consultatiebureau")]
    assert (clinic["signed_up"], clinic["visited"]) == (5, 3)  # A, B (siblings: one parent counts for each), D
    families = Families(analytics.app.state.store)
    assert await families.guardians() == {a: {parent}, b: {parent}, c: {other}, d: {merged_away}}

    # Everything again (a replay after a restart), and the erased members' links once more: nothing changes.
    handled = analytics.app.state.writer.handled
    await analytics.publish([*events, *links])
    await analytics.handled(handled + len(events) + len(links))
    assert await families.guardians() == {a: {parent}, b: {parent}, c: {other}, d: {merged_away}}
    again = (await analytics.funnel())[("oba", "consultatiebureau")]
    assert (again["signed_up"], again["visited"]) == (5, 3)


POPULATION = "\n".join(
    [
        "# synthetic: figures for this test",
        '"Leeftijd";"Postcode";"Perioden";"Bevolking (aantal)"',
        '"1 jaar";"1034";"2026";"10"',
        '"5 jaar";"1034";"2026";"20"',
    ]
)


async def test_reach_counts_each_child_in_the_band_of_their_age_on_the_reporting_day(analytics: Analytics) -> None:
    loaded = await analytics.client.post(
        "/v1/population", content=POPULATION, headers={**analytics.admin, "Content-Type": "text/csv"}
    )
    assert loaded.status_code == 200, loaded.text
    grown, newborn, legacy_grown, legacy_baby, now_adult = ids(5)
    events = [
        # Signed up at 3 two years ago: 4 or more on 1 January this year, so 4-11 now.
        baby(grown, 730, birth_year=YEAR - 5), logged_in(grown, 10),
        baby(newborn, 30, birth_year=YEAR - 1),
        # Signed up before identity published birth years: the youngest they can be (0 + whole years since).
        baby(legacy_grown, 1830), logged_in(legacy_grown, 10),
        baby(legacy_baby, 365), logged_in(legacy_baby, 10),
        # Signed up at 16, 18 on 1 January this year: no child any more.
        baby(now_adult, 1000, birth_year=YEAR - 19, band="12-17"), logged_in(now_adult, 10),
    ]  # fmt: skip
    await analytics.publish(events)
    await analytics.handled(len(events))
    response = await analytics.client.get("/v1/reports/population-reach", headers=analytics.analyst)
    assert response.status_code == 200, response.text
    answer = response.json()
    rows = {(r["library"], r["age_band"]): r for r in answer["rows"]}
    assert (rows[("oba", "0-3")]["reached"], rows[("oba", "0-3")]["share"]) == (2, 0.2)  # of 10
    assert (rows[("oba", "4-11")]["reached"], rows[("oba", "4-11")]["share"]) == (2, 0.1)  # of 20
    assert rows[("oba", "12-17")]["reached"] == 0
    assert rows[("*", "*")]["reached"] == 4  # the one now 18 counts nowhere
    [now] = [r for r in answer["trend"] if r["library"] == "*"][-1:]
    assert now["reached"] == 4  # the quarter so far, each child in their band at its end: the same
