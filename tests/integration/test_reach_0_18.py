"""Active reach 0-18 end to end on the real broker, Redis and analytics store: babies signed up for BoekStart at
the consultatiebureau, at childcare and online (identity, POST /v1/families) reach analytics over Kafka, and with
known population figures (a CBS file loaded through the API) the reach report gives known percentages."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.analytics.app import create_app as analytics_app
from services.analytics.family import Families
from services.analytics.settings import AnalyticsSettings
from services.identity.app import create_app as identity_app
from services.identity.settings import IdentitySettings
from shared.events import CloudEvent
from shared.events.members import CardActivated, GuardianSet, LoginSucceeded, MemberSignedUp, Referred
from shared.events.propositions import ActivityAttended, LoanBorrowed
from shared.settings import Settings
from tests.integration.conftest import MakeKey
from tests.support import eventually, running

pytestmark = pytest.mark.integration

TODAY = datetime.now(UTC).date()
BABY = date(TODAY.year - 1, 3, 1).isoformat()
PARENT = "1990-05-17"
# Children of 0-3 per postcode area: OBA serves 1034 and 1102 (8 + 0), Haarlem 2011 (10); the 12 year olds of
# 1034 are another band; 18 year olds are not children.
POPULATION = "\n".join(
    [
        "# synthetic: figures for this test",
        '"Geslacht";"Leeftijd";"Postcode";"Perioden";"Bevolking (aantal)"',
        '"Totaal mannen en vrouwen";"0 jaar";"1034";"2026";"4"',
        '"Totaal mannen en vrouwen";"1 jaar";"1034";"2026";"4"',
        '"Totaal mannen en vrouwen";"12 jaar";"1034";"2026";"30"',
        '"Totaal mannen en vrouwen";"18 jaar";"1034";"2026";"40"',
        '"Totaal mannen en vrouwen";"0 tot 4 jaar";"2011";"2026";"10"',
    ]
)


@dataclass
class Doors:
    identity: httpx.AsyncClient
    analytics: httpx.AsyncClient
    admin: dict[str, str]
    analyst: dict[str, str]
    analytics_app: FastAPI

    async def family(self, **body: Any) -> dict[str, Any]:
        response = await self.identity.post("/v1/families", json=body, headers=self.admin)
        assert response.status_code == 202, response.text
        return dict(response.json())

    async def reach(self) -> dict[str, Any]:
        response = await self.analytics.get("/v1/reports/population-reach", headers=self.analyst)
        assert response.status_code == 200, response.text
        return dict(response.json())


@pytest.fixture
async def doors(
    settings: Settings, seed_libraries: list[str], admin_key: str, make_key: MakeKey, tmp_path: Path
) -> AsyncIterator[Doors]:
    analytics_settings = AnalyticsSettings(
        **settings.model_dump(), analytics_path=tmp_path / "analytics", analytics_min_cell=1, analytics_cache_seconds=0
    )
    analytics_service = analytics_app(analytics_settings)
    async with (
        running(identity_app(IdentitySettings(**settings.model_dump()))) as identity,
        running(analytics_service) as analytics,
    ):
        admin = {"Authorization": f"Bearer {admin_key}"}
        analyst = {"Authorization": f"Bearer {await make_key('analyst')}"}
        yield Doors(identity, analytics, admin, analyst, analytics_service)


def guardian(postcode: str) -> dict[str, Any]:
    return {"name": "Ouder", "email": f"{uuid.uuid4().hex[:10]}@example.nl", "birth_date": PARENT, "postcode": postcode}


def by(rows: list[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {tuple(row[k] for k in keys): row for row in rows}


async def test_boekstart_sign_ups_give_known_reach_against_known_population(doors: Doors) -> None:
    loaded = await doors.analytics.post(
        "/v1/population", content=POPULATION, headers={**doors.admin, "Content-Type": "text/csv"}
    )
    assert loaded.status_code == 200, loaded.text
    assert loaded.json() == {
        "period": "2026",
        "synthetic": True,
        "areas": 2,
        "children": {"0-3": 18, "4-11": 0, "12-17": 30},
    }
    # Twins at the consultatiebureau in Amsterdam (1034), a baby signed up online in Amsterdam-Noord (1102), a
    # baby at childcare in Haarlem (2011).
    twins = await doors.family(
        guardian=guardian("1034 AB"),
        children=[{"name": "Sem", "birth_date": BABY}, {"name": "Saar", "birth_date": BABY}],
        home_library="oba",
        platform="partner",
        source="consultatiebureau",
        proposition="boekstart",
        consents=[{"medium": "email", "purpose": "service"}],
    )
    await doors.family(
        guardian=guardian("1102 AA"), children=[{"name": "Noor", "birth_date": BABY}], home_library="oba",
        platform="website", proposition="boekstart",
    )  # fmt: skip
    await doors.family(
        guardian=guardian("2011 AB"), children=[{"name": "Liam", "birth_date": BABY}], home_library="haarlem",
        platform="partner", source="kinderopvang", proposition="boekstart",
    )  # fmt: skip
    target = await doors.analytics.put("/v1/population/targets/oba", json={"target": 0.5}, headers=doors.admin)
    assert target.status_code == 200, target.text

    async def all_four() -> dict[str, Any] | None:
        answer = await doors.reach()
        return answer if by(answer["rows"], "library", "age_band")[("*", "0-3")]["reached"] == 4 else None

    answer = await eventually(all_four, within=60)
    rows = by(answer["rows"], "library", "age_band")
    oba = rows[("oba", "0-3")]
    assert (oba["children"], oba["reached"], oba["share"], oba["target"], oba["gap"]) == (8, 3, 0.375, 0.5, 1)
    assert oba["by_first_contact"] == {
        "consultatiebureau": 2, "kinderopvang": 0, "school": 0, "library": 0, "online": 1,
    }  # fmt: skip
    haarlem = rows[("haarlem", "0-3")]
    assert (haarlem["children"], haarlem["reached"], haarlem["share"], haarlem["target"], haarlem["gap"]) == (
        10, 1, 0.1, 1.0, 9,
    )  # fmt: skip
    assert haarlem["by_first_contact"]["kinderopvang"] == 1
    # The parents (18-64) are no children: the 12-17 band of OBA has children and no reach.
    assert (rows[("oba", "12-17")]["children"], rows[("oba", "12-17")]["reached"]) == (30, 0)
    network = rows[("*", "*")]
    assert (network["children"], network["reached"], network["share"]) == (48, 4, round(4 / 48, 4))
    assert answer["synthetic_population"] is True and answer["population_period"] == "2026"
    [now] = [r for r in answer["trend"] if r["library"] == "*"][-1:]
    assert (now["reached"], now["children"]) == (4, 48)
    assert len(twins["children"]) == 2
    # identity published the children's birth year (for their band on the reporting day), not the parents'.
    years = await Families(doors.analytics_app.state.store).birth_years()
    assert {years.get(child) for child in twins["children"]} == {TODAY.year - 1}
    assert twins["guardian_id"] not in years

    page = await signed_in_page(doors, "/pages/dashboard/reach-0-18")
    assert "Actief bereik 0\u201318" in page  # with an en dash
    assert "37,5%" in page and "Consultatiebureau" in page  # OBA's 0-3 reach, and the split by first contact


async def test_a_target_for_a_library_not_in_the_catalogue_is_refused(doors: Doors) -> None:
    refused = await doors.analytics.put("/v1/population/targets/tilburg", json={"target": 0.8}, headers=doors.admin)
    assert refused.status_code == 422
    assert refused.json()["errors"] == [{"field": "library", "message": "no such library in the catalogue"}]
    wrong = await doors.analytics.post(
        "/v1/population",
        content='"Leeftijd";"Postcode"\n"0 jaar";"1034"',
        headers={**doors.admin, "Content-Type": "text/csv"},
    )
    assert wrong.status_code == 422 and "no column 'Perioden'" in wrong.json()["detail"]


async def signed_in_page(doors: Doors, path: str) -> str:
    """The page as an analyst sees it after signing in with their key (the session cookie, the form's token)."""
    client = doors.analytics
    form = await client.get("/pages/sign-in")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None, form.text
    key = doors.analyst["Authorization"].removeprefix("Bearer ")
    signed = await client.post("/pages/sign-in", data={"csrf": token.group(1), "api_key": key, "next": path})
    assert signed.status_code == 303, signed.text
    page = await client.get(path)
    assert page.status_code == 200, page.text
    return page.text


# ------------------------------------------------------------------------------------------ BoekStart funnel


def at(days_ago: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days_ago)


def child_events(child: str, days_ago: float, source: str | None, band: str = "0-3") -> list[CloudEvent]:
    data = MemberSignedUp(
        age_band=band, home_library="oba", postcode_area="1034", source=source, proposition="boekstart"
    )
    return [
        CloudEvent.create(data, subject=child, source="/libraries/oba/partner", library="oba", channel="offline",
                          platform="partner", time=at(days_ago))
    ]  # fmt: skip


def borrowed(child: str, days_ago: float) -> CloudEvent:
    data = LoanBorrowed(item_id="9789025764435", loan_id=uuid.uuid4().hex)
    return CloudEvent.create(data, subject=child, source="/libraries/oba/ils", library="oba", channel="offline",
                             platform="ils", time=at(days_ago))  # fmt: skip


def guardian_of(child: str, parent: str) -> CloudEvent:
    return CloudEvent.create(GuardianSet(guardian_id=parent), subject=child, source="/identity/guardians",
                             library="oba", channel="offline", platform="partner", time=at(1))  # fmt: skip


def logged_in(member: str, days_ago: float) -> CloudEvent:
    return CloudEvent.create(LoginSucceeded(login_platform="app"), subject=member, source="/identity/logins",
                             library="oba", channel="online", platform="app", time=at(days_ago))  # fmt: skip


def activated(child: str, days_ago: float) -> CloudEvent:
    return CloudEvent.create(CardActivated(branch="oosterdok"), subject=child, source="/libraries/oba/desk",
                             library="oba", channel="offline", platform="desk", time=at(days_ago))  # fmt: skip


async def test_the_boekstart_funnel_follows_partner_sign_ups_to_a_first_loan_and_years_of_borrowing(
    doors: Doors,
) -> None:
    a, b, c, online, adult, parent_a, parent_b = (str(uuid.uuid4()) for _ in range(7))
    events = [
        # A: at the consultatiebureau 800 days ago, the parent's first login 10 days later, a loan 30 days after
        # the sign-up, borrowing in years 1 and 2
        *child_events(a, 800, "consultatiebureau"), guardian_of(a, parent_a), logged_in(parent_a, 790),
        borrowed(a, 770), borrowed(a, 500), borrowed(a, 200),
        # B: 400 days ago, a first loan only after 100 days (dropped), but borrowing in year 1; the child's own
        # card activation is no visit of the parent's
        *child_events(b, 400, "consultatiebureau"), guardian_of(b, parent_b), activated(b, 390), borrowed(b, 300),
        # C: at childcare 10 days ago: still inside the 60 days
        *child_events(c, 10, "kinderopvang"),
        # Not via a partner, and not a baby: not in the funnel
        *child_events(online, 100, None), borrowed(online, 90),
        *child_events(adult, 100, "consultatiebureau", band="18-64"),
    ]  # fmt: skip
    await doors.analytics_app.state.parts.publisher.publish_many(events)

    async def all_in() -> dict[tuple[Any, ...], dict[str, Any]] | None:
        response = await doors.analytics.get("/v1/reports/boekstart-funnel", headers=doors.analyst)
        assert response.status_code == 200, response.text
        rows = by(response.json()["rows"], "library", "partner")
        oba = rows.get(("oba", "*"), {})
        # The parent's link and login come on other partitions than the children's events: wait for them too.
        done = (oba.get("signed_up"), oba.get("borrowing_2y"), oba.get("visited")) == (3, 1, 1)
        return rows if done else None

    rows = await eventually(all_in, within=60)
    clinic = rows[("oba", "consultatiebureau")]
    assert {k: clinic[k] for k in ("signed_up", "visited", "first_loan", "first_loan_pending")} == {
        "signed_up": 2, "visited": 1, "first_loan": 1, "first_loan_pending": 0,
    }  # fmt: skip
    assert (clinic["first_loan_rate"], clinic["due_1y"], clinic["borrowing_1y"], clinic["retention_1y"]) == (
        0.5,
        2,
        2,
        1.0,
    )
    assert (clinic["due_2y"], clinic["borrowing_2y"], clinic["due_3y"], clinic["retention_3y"]) == (1, 1, 0, None)
    childcare = rows[("oba", "kinderopvang")]
    assert (childcare["signed_up"], childcare["first_loan_pending"], childcare["first_loan_rate"]) == (1, 1, None)
    assert rows[("*", "*")]["signed_up"] == 3  # the online sign-up and the adult are not in it


# ------------------------------------------------------------------------------------------- referrals


async def test_a_desk_referral_is_followed_through_when_the_member_attends_within_30_days(doors: Doors) -> None:
    async def member(**overrides: Any) -> str:
        response = await doors.identity.post(
            "/v1/members",
            json={"name": "Lid", "email": f"{uuid.uuid4().hex[:10]}@example.nl", "birth_date": PARENT,
                  "postcode": "1034 AB", "home_library": "oba", "platform": "desk", **overrides},
            headers=doors.admin,
        )  # fmt: skip
        assert response.status_code == 202, response.text
        return str(response.json()["member_id"])

    went, stayed_home = await member(), await member()
    for referred in (went, stayed_home):
        response = await doors.identity.post(
            f"/v1/members/{referred}/referrals", json={"proposition": "digitaalhuis"}, headers=doors.admin
        )
        assert response.status_code == 202, response.text
    unknown = await doors.identity.post(
        f"/v1/members/{went}/referrals", json={"proposition": "digitaalhuis", "library": "tilburg"}, headers=doors.admin
    )
    assert (unknown.status_code, unknown.json()["errors"][0]["field"]) == (422, "body.library")
    # An older referral, 40 days ago, never followed; the one who went attended a session a day after the referral.
    missed = str(uuid.uuid4())
    old = CloudEvent.create(Referred(proposition="digitaalhuis"), subject=missed, source="/identity/referrals",
                            library="oba", channel="offline", platform="desk", time=at(40))  # fmt: skip
    attended = CloudEvent.create(
        ActivityAttended(activity_id="oba.digitaalhuis.3f9a1c2e7d4b", proposition="digitaalhuis", walk_in=True),
        subject=went, source="/libraries/oba/desk", library="oba", channel="offline", platform="desk",
        time=datetime.now(UTC) + timedelta(seconds=1),
    )  # fmt: skip
    await doors.analytics_app.state.parts.publisher.publish_many([old, attended])

    async def counted() -> dict[tuple[Any, ...], dict[str, Any]] | None:
        response = await doors.analytics.get("/v1/reports/referrals", headers=doors.analyst)
        assert response.status_code == 200, response.text
        rows = by(response.json()["rows"], "library", "proposition")
        row = rows.get(("oba", "digitaalhuis"), {})
        return rows if row.get("referred") == 3 and row.get("followed") == 1 else None

    rows = await eventually(counted, within=60)
    row = rows[("oba", "digitaalhuis")]
    # The one who went: followed; the one who stayed home: still inside 30 days (pending); the old one: missed.
    assert (row["referred"], row["followed"], row["pending"], row["follow_through"]) == (3, 1, 1, 0.5)
