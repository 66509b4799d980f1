"""The walking skeleton through identity, journey and notifications, on the real broker and Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from services.identity.app import create_app as identity_app
from services.identity.settings import IdentitySettings
from services.journey.app import create_app as journey_app
from services.journey.settings import JourneySettings
from services.notifications.app import create_app as notifications_app
from services.propositions.app import create_app as propositions_app
from shared.settings import Settings
from tests.integration.conftest import MakeKey
from tests.support import eventually, header, problem, read_topic, running

pytestmark = pytest.mark.integration

SIGN_UP = {
    "name": "Sanne de Vries",
    "email": "sanne@example.nl",
    "birth_date": "1991-04-12",
    "postcode": "1034 AB",
    "home_library": "oba",
    "platform": "website",
}


@dataclass
class Platform:
    identity: httpx.AsyncClient
    journey: httpx.AsyncClient
    notifications: httpx.AsyncClient
    settings: Settings

    async def sign_up(self, **overrides: Any) -> str:
        response = await self.identity.post("/v1/members", json={**SIGN_UP, **overrides})
        assert response.status_code == 202, response.text
        return str(response.json()["member_id"])

    async def inbox(self, member_id: str) -> list[dict[str, Any]]:
        response = await self.notifications.get(f"/v1/members/{member_id}/inbox")
        assert response.status_code == 200
        return list(response.json()["messages"])

    async def frictions(self, until: Any, within: float = 30.0) -> list[dict[str, Any]]:
        records = await read_topic(
            self.settings.kafka_bootstrap,
            self.settings.topic("journey.frictions.v1"),
            until=lambda rs: until([_friction(r) for r in rs]),
            within=within,
        )
        return [_friction(r) for r in records]


def _friction(record: Any) -> dict[str, Any]:
    return {"type": header(record, "ce_type"), "member": header(record, "ce_subject"), **json.loads(record.value)}


@pytest.fixture(name="platform")
async def platform_fixture(
    settings: Settings, identity_settings: IdentitySettings, journey_settings: JourneySettings, admin_key: str
) -> AsyncIterator[Platform]:
    async with (
        running(identity_app(identity_settings), admin_key) as identity,
        running(journey_app(journey_settings)) as journey,
        running(notifications_app(settings), admin_key) as notifications,
    ):
        yield Platform(identity, journey, notifications, settings)


async def test_an_online_sign_up_not_activated_in_time_becomes_a_friction_and_an_inbox_message(
    platform: Platform,
) -> None:
    member = await platform.sign_up()

    messages = await eventually(lambda: platform.inbox(member))
    assert [m["campaign_id"] for m in messages] == ["activate-your-card"]
    assert messages[0]["title"] == "Je bibliotheekpas wacht op je"
    assert messages[0]["read"] is False

    frictions = await platform.frictions(until=lambda fs: any(f["member"] == member for f in fs))
    [friction] = [f for f in frictions if f["member"] == member]
    assert friction["type"] == "nl.bibliotheek.friction.detected.v1"
    assert friction["rule"] == "online-signup-not-activated"
    assert friction["library"] == "oba"
    assert friction["channel_pair"] == "online→offline"
    assert friction["age_band"] == "18-64"


async def test_a_card_activated_before_the_deadline_means_no_friction_and_no_message(platform: Platform) -> None:
    activated = await platform.sign_up()
    response = await platform.identity.post(
        f"/v1/members/{activated}/card-activation", json={"library": "oba", "branch": "oosterdok"}
    )
    assert response.status_code == 202
    # A member signed up at the same moment who does not activate shows when the deadline has passed.
    control = await platform.sign_up()
    await eventually(lambda: platform.inbox(control))

    frictions = await platform.frictions(until=lambda fs: any(f["member"] == control for f in fs))
    assert activated not in {f["member"] for f in frictions}
    assert await platform.inbox(activated) == []


async def test_a_message_reaches_the_inbox_once_even_when_the_friction_is_published_twice(
    platform: Platform,
) -> None:
    member = await platform.sign_up()
    await eventually(lambda: platform.inbox(member))
    [record] = [
        r
        for r in await platform.frictions(until=lambda fs: any(f["member"] == member for f in fs))
        if r["member"] == member
    ]
    # Redeliver the very same friction event, as a producer retry or a replay would.
    records = await read_topic(
        platform.settings.kafka_bootstrap,
        platform.settings.topic("journey.frictions.v1"),
        until=lambda rs: any(header(r, "ce_subject") == member for r in rs),
    )
    original = next(r for r in records if header(r, "ce_subject") == member)
    producer = AIOKafkaProducer(bootstrap_servers=platform.settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            platform.settings.topic("journey.frictions.v1"), original.value, key=original.key,
            headers=list(original.headers),
        )  # fmt: skip
        # A second member's message proves the consumer went past the duplicate.
        later = await platform.sign_up()
        await eventually(lambda: platform.inbox(later))
    finally:
        await producer.stop()
    assert len(await platform.inbox(member)) == 1
    assert record["friction_id"]


async def test_a_malformed_kafka_message_goes_to_the_dead_letter_topic_and_the_consumer_carries_on(
    platform: Platform,
) -> None:
    members_topic = platform.settings.topic("identity.members.v1")
    producer = AIOKafkaProducer(bootstrap_servers=platform.settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(members_topic, b"{not json", key=b"broken", headers=[("ce_type", b"x")])
    finally:
        await producer.stop()

    member = await platform.sign_up()
    await eventually(lambda: platform.inbox(member))

    [dead] = await read_topic(platform.settings.kafka_bootstrap, members_topic + ".dlq", until=lambda rs: len(rs) >= 1)
    assert dead.value == b"{not json"
    assert dead.key == b"broken"
    assert header(dead, "dlq_reason") == "invalid_event"
    assert header(dead, "dlq_topic") == members_topic
    assert header(dead, "dlq_group") == platform.settings.group("journey")
    assert "body" in (header(dead, "dlq_error") or "")


async def test_bad_sign_up_input_gets_a_422_problem_naming_the_field(platform: Platform) -> None:
    response = await platform.identity.post("/v1/members", json={**SIGN_UP, "email": "not-an-address"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    answer = response.json()
    assert [e["field"] for e in answer["errors"]] == ["body.email"]
    assert "body.email" in answer["detail"]
    assert "not-an-address" not in response.text


async def test_a_postcode_that_is_not_dutch_is_refused_by_name(platform: Platform) -> None:
    response = await platform.identity.post("/v1/members", json={**SIGN_UP, "postcode": "SW1A 1AA"})
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["body.postcode"]


async def test_activating_the_card_of_an_unknown_member_is_a_404_problem(platform: Platform) -> None:
    response = await platform.identity.post("/v1/members/nobody/card-activation", json={"library": "oba"})
    assert problem(response) == (404, "member does not exist")
    assert response.json()["title"] == "Not Found"


async def test_the_signed_up_event_is_on_kafka_when_the_202_comes_back_and_holds_no_personal_data(
    platform: Platform,
) -> None:
    member = await platform.sign_up()
    [record] = await read_topic(
        platform.settings.kafka_bootstrap,
        platform.settings.topic("identity.members.v1"),
        until=lambda rs: any(header(r, "ce_subject") == member for r in rs),
        within=5,
    )
    text = record.value.decode() + json.dumps([(k, v.decode()) for k, v in record.headers])
    for personal in ("Sanne", "Vries", "sanne@example.nl", "1991", "1034 AB"):
        assert personal not in text
    assert json.loads(record.value) == {
        "age_band": "18-64", "home_library": "oba", "postcode_area": "1034", "source": None, "proposition": None,
        "language": "nl", "birth_year": None,  # a birth year only for members under 18 (docs/soob.md)
    }  # fmt: skip


async def test_every_service_reports_healthy_and_ready(settings: Settings) -> None:
    async with running(propositions_app(settings)) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok", "service": "propositions"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"kafka": "ok", "redis": "ok"}


async def test_a_request_without_a_valid_key_is_refused_with_401(platform: Platform) -> None:
    no_key = await platform.identity.post("/v1/members", json=SIGN_UP, headers={"Authorization": ""})
    assert problem(no_key) == (401, "send an API key: Authorization: Bearer <key>")
    assert no_key.headers["www-authenticate"] == "Bearer"
    wrong = await platform.identity.post("/v1/members", json=SIGN_UP, headers={"Authorization": "Bearer kr_x_y"})
    assert problem(wrong) == (401, "the API key is unknown or revoked")


async def test_a_library_key_cannot_sign_up_members_for_another_library(platform: Platform, make_key: MakeKey) -> None:
    haarlem = {"Authorization": f"Bearer {await make_key('ingest', library='haarlem')}"}
    refused = await platform.identity.post("/v1/members", json=SIGN_UP, headers=haarlem)
    assert refused.status_code == 403
    assert "haarlem" in refused.json()["detail"]
    own = await platform.identity.post("/v1/members", json={**SIGN_UP, "home_library": "haarlem"}, headers=haarlem)
    assert own.status_code == 202


async def test_a_key_without_the_ingest_role_cannot_post(platform: Platform, make_key: MakeKey) -> None:
    analyst = {"Authorization": f"Bearer {await make_key('analyst')}"}
    refused = await platform.identity.post("/v1/members", json=SIGN_UP, headers=analyst)
    assert refused.status_code == 403
    assert "ingest" in refused.json()["detail"]


async def test_a_library_key_reads_only_its_own_library_s_messages(platform: Platform, make_key: MakeKey) -> None:
    member = await platform.sign_up()
    await eventually(lambda: platform.inbox(member))
    path = f"/v1/members/{member}/inbox"
    oba = await platform.notifications.get(
        path, headers={"Authorization": f"Bearer {await make_key('member-data', library='oba')}"}
    )
    other = await platform.notifications.get(
        path, headers={"Authorization": f"Bearer {await make_key('member-data', library='haarlem')}"}
    )
    assert len(oba.json()["messages"]) == 1
    assert other.json()["messages"] == []


async def test_readiness_reports_an_unreachable_redis_with_503(settings: Settings) -> None:
    from deploy.runtime import free_port

    without_redis = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    async with running(propositions_app(without_redis)) as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["kafka"] == "ok"
        assert ready.json()["checks"]["redis"].startswith("unreachable")
