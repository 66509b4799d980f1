"""The web tracker's events on the real broker, Redis and analytics store: journey's rule "viewed a proposition
online, no sign-up or registration within 14 days", and analytics' report of online interest versus take-up."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.analytics.app import create_app as analytics_app
from services.analytics.settings import AnalyticsSettings
from services.journey.app import create_app as journey_app
from services.journey.handlers import FrictionDetector
from services.journey.settings import JourneySettings
from shared.events import CloudEvent
from shared.events.client import PropositionViewed
from shared.events.members import MemberSignedUp
from shared.events.propositions import ActivityRegistered
from shared.settings import Settings
from tests.integration.conftest import MakeKey
from tests.support import eventually, header, publish_as_harness, read_to_end, running

pytestmark = pytest.mark.integration

RULE = "viewed-online-not-taken-up"


def days_ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


def signed_up(member: str, days: float) -> CloudEvent:
    data = MemberSignedUp(age_band="18-64", home_library="oba", postcode_area="1034")
    return CloudEvent.create(data, subject=member, source="/libraries/oba/website", library="oba", channel="online",
                             platform="website", time=days_ago(days))  # fmt: skip


def viewed(subject: str, days: float, proposition: str = "boekstart", library: str = "oba") -> CloudEvent:
    data = PropositionViewed(proposition=proposition, path=f"/{proposition}")
    return CloudEvent.create(data, subject=subject, source=f"/libraries/{library}/website", library=library,
                             channel="online", platform="website", time=days_ago(days))  # fmt: skip


def registered(member: str, days: float, proposition: str = "boekstart") -> CloudEvent:
    data = ActivityRegistered(activity_id=f"oba.{proposition}.3f9a1c2e7d4b", proposition=proposition)
    return CloudEvent.create(data, subject=member, source="/libraries/oba/website", library="oba", channel="online",
                             platform="website", time=days_ago(days))  # fmt: skip


async def test_a_member_who_viewed_boekstart_online_and_took_it_up_nowhere_in_14_days_is_a_friction(
    journey_settings: JourneySettings,
) -> None:
    app = journey_app(journey_settings)
    async with running(app):
        await publish_as_harness(journey_settings, [
            signed_up("lost", 30), viewed("lost", 20),
            signed_up("took-up", 30), viewed("took-up", 20), registered("took-up", 18),
            viewed("anonymous-visitor", 20),
        ])  # fmt: skip
        detector: FrictionDetector = app.state.detector

        async def frictions() -> list[dict[str, Any]] | None:
            records = await read_to_end(
                journey_settings.kafka_bootstrap, journey_settings.topic("journey.frictions.v1")
            )
            found = [{"member": header(r, "ce_subject"), **json.loads(r.value)} for r in records]
            return found if any(f["member"] == "lost" and f["rule"] == RULE for f in found) else None

        found = await eventually(frictions, within=60)

        async def settled() -> bool:
            return detector.settled()

        await eventually(settled, within=60)
        found = await frictions() or []
    hit = {f["member"] for f in found if f["rule"] == RULE}
    assert hit == {"lost"}
    [friction] = [f for f in found if f["rule"] == RULE]
    assert (friction["library"], friction["channel_pair"]) == ("oba", "online→online")


async def test_interest_against_take_up_per_proposition_and_library(
    settings: Settings, make_key: MakeKey, tmp_path: Path
) -> None:
    service = analytics_app(
        AnalyticsSettings(**settings.model_dump(), analytics_path=tmp_path / "analytics", analytics_min_cell=1,
                          analytics_cache_seconds=0)
    )  # fmt: skip
    analyst = {"Authorization": f"Bearer {await make_key('analyst')}"}
    haarlem_analyst = {"Authorization": f"Bearer {await make_key('analyst', library='haarlem')}"}
    async with running(service) as analytics:
        await publish_as_harness(settings, [
            viewed("took-up", 20), viewed("took-up", 19), registered("took-up", 15),  # within 14 days of the first
            viewed("too-late", 40), registered("too-late", 10),
            viewed("visitor", 20),
            viewed("still-deciding", 2),
            viewed("reader", 5, "e-books", library="haarlem"),
        ])  # fmt: skip

        async def report() -> dict[tuple[str, str], dict[str, Any]] | None:
            response = await analytics.get("/v1/reports/interest", headers=analyst)
            assert response.status_code == 200, response.text
            rows = {(r["library"], r["proposition"]): r for r in response.json()["rows"]}
            return rows if rows.get(("*", "*"), {}).get("viewers") == 5 else None

        rows = await eventually(report, within=60)
        scoped = await analytics.get("/v1/reports/interest", headers=haarlem_analyst)
    boekstart = rows[("oba", "boekstart")]
    # took-up: yes; too-late and the visitor: no; still-deciding: inside the window (pending, not counted lost).
    assert (boekstart["viewers"], boekstart["took_up"], boekstart["pending"], boekstart["take_up"]) == (4, 1, 1, 0.3333)
    assert rows[("haarlem", "e-books")]["pending"] == 1
    assert {(r["library"], r["proposition"]) for r in scoped.json()["rows"]} == {
        ("haarlem", "e-books"),
        ("haarlem", "*"),
    }
