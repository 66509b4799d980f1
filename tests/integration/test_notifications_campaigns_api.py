"""The campaign API on the real broker and Redis: create, edit (versioned), preview, activate, pause, archive, the
audit trail on the compacted campaigns topic, template checks on save, roles and library scope."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from shared.settings import Settings
from tests.integration.conftest import MakeKey
from tests.integration.test_notifications_support import (
    FakeContacts,
    Notifications,
    TestClock,
    Webhook,
    campaign,
    member,
    notifications,
    notifications_settings,
    serving,
)
from tests.support import eventually, header, problem, read_topic

pytestmark = pytest.mark.integration


@pytest.fixture
async def service(settings: Settings, admin_key: str) -> AsyncIterator[Notifications]:
    async with notifications(notifications_settings(settings), admin_key) as n:
        yield n


def fields(response: httpx.Response) -> list[str]:
    assert response.headers["content-type"] == "application/problem+json", response.text
    return [e["field"] for e in response.json().get("errors", [])]


async def changes(n: Notifications, campaign_id: str, count: int) -> list[dict[str, Any]]:
    """The campaign's records on the campaigns topic, once there are `count` of them."""
    topic = n.settings.topic("notifications.campaigns.v1")

    def mine(records: list[Any]) -> list[Any]:
        return [r for r in records if r.key == campaign_id.encode()]

    records = await read_topic(n.settings.kafka_bootstrap, topic, until=lambda rs: len(mine(rs)) >= count)
    return [{"type": header(r, "ce_type"), **json.loads(r.value)} for r in mine(records)]


async def test_a_new_campaign_is_a_draft_and_its_creation_is_on_the_compacted_campaigns_topic(
    service: Notifications,
) -> None:
    response = await service.client.post("/v1/campaigns", json=campaign(name="Welkom"))

    assert response.status_code == 201, response.text
    created = response.json()
    assert (created["status"], created["version"], created["name"]) == ("draft", 1, "Welkom")
    [change] = await changes(service, created["id"], 1)
    assert change["type"] == "nl.bibliotheek.campaign.changed.v1"
    assert (change["change"], change["status"], change["version"]) == ("created", "draft", 1)
    assert change["definition"]["messages"]["in_app"]["nl"]["title"] == "Je pas wacht"


async def test_an_edit_makes_a_new_version_and_every_version_stays_readable(service: Notifications) -> None:
    campaign_id = await service.create(campaign(name="Versie 1"), activate=False)

    edited = await service.client.put(f"/v1/campaigns/{campaign_id}", json={**campaign(name="Versie 2"), "version": 1})

    assert edited.status_code == 200, edited.text
    assert (edited.json()["version"], edited.json()["name"]) == (2, "Versie 2")
    versions = (await service.client.get(f"/v1/campaigns/{campaign_id}/versions")).json()["versions"]
    assert [(v["version"], v["definition"]["name"]) for v in versions] == [(1, "Versie 1"), (2, "Versie 2")]
    assert [c["change"] for c in await changes(service, campaign_id, 2)] == ["created", "edited"]


async def test_an_edit_from_a_version_that_is_no_longer_current_is_a_409(service: Notifications) -> None:
    campaign_id = await service.create(campaign(), activate=False)
    await service.client.put(f"/v1/campaigns/{campaign_id}", json={**campaign(name="eerst"), "version": 1})

    stale = await service.client.put(f"/v1/campaigns/{campaign_id}", json={**campaign(name="later"), "version": 1})

    assert stale.status_code == 409
    assert "current version is 2" in stale.json()["detail"]


@pytest.mark.parametrize(
    ("medium", "template", "message"),
    [
        ("email", {"subject": "Hallo", "body": "Kom naar {{ library.name "}, "syntax"),
        ("email", {"subject": "Hallo", "body": "Kom naar {{ libary.name }}"}, "unknown placeholder 'libary'"),
        ("email", {"subject": "Hallo", "body": "{{ library.adress }}"}, "unknown placeholder 'library.adress'"),
        ("email", {"subject": "Hallo", "body": "{{ ''.__class__.__mro__ }}"}, "cannot be rendered"),
        ("email", {"subject": "Hallo", "body": "{{ library.name | shout }}"}, "No filter named 'shout'"),
        ("email", {"subject": "Hallo", "body": "{{ proposition.name }}"}, "unknown placeholder 'proposition'"),
    ],
    ids=["syntax", "unknown-root", "unknown-attribute", "sandbox", "unknown-filter", "no-proposition"],
)
async def test_a_template_that_cannot_be_sent_is_refused_on_save_naming_the_field(
    service: Notifications, medium: str, template: dict[str, str], message: str
) -> None:
    definition = campaign(channels=[medium], messages={medium: {"nl": template}})

    response = await service.client.post("/v1/campaigns", json=definition)

    assert response.status_code == 422
    assert fields(response) == [f"body.messages.{medium}.nl.body"]
    assert message in response.json()["errors"][0]["message"]


async def test_the_in_app_inbox_cannot_hold_the_recipient_s_name(service: Notifications) -> None:
    definition = campaign(messages={"in_app": {"nl": {"title": "Hoi {{ recipient.name }}", "body": "x"}}})
    response = await service.client.post("/v1/campaigns", json=definition)
    assert response.status_code == 422
    assert fields(response) == ["body.messages.in_app.nl.title"]


async def test_a_trigger_of_an_unknown_event_type_or_on_an_unknown_field_is_refused_by_name(
    service: Notifications,
) -> None:
    trigger = {
        "event_types": ["nl.bibliotheek.member.signed_up.v1", "nl.bibliotheek.member.teleported.v1"],
        "filters": {"data.colour": ["red"], "library": ["oba"]},
    }
    response = await service.client.post("/v1/campaigns", json=campaign(trigger=trigger))
    assert response.status_code == 422
    assert fields(response) == ["body.trigger.event_types.1", "body.trigger.filters.data.colour"]


async def test_a_campaign_cannot_be_triggered_by_its_own_deliveries(service: Notifications) -> None:
    trigger = {"event_types": ["nl.bibliotheek.message.sent.v1"]}
    response = await service.client.post("/v1/campaigns", json=campaign(trigger=trigger))
    assert fields(response) == ["body.trigger.event_types.0"]


async def test_an_inconsistent_definition_is_refused_naming_every_field(service: Notifications) -> None:
    definition = campaign(
        channels=["email", "sms"],
        messages={"email": {"en": {"subject": "Hi", "body": "Hi"}}, "sms": {"nl": {"title": "x", "body": "Hoi"}}},
        holdout_percent=80,
    )
    response = await service.client.post("/v1/campaigns", json=definition)
    assert response.status_code == 422
    assert fields(response) == ["body.holdout_percent"]

    del definition["holdout_percent"]
    response = await service.client.post("/v1/campaigns", json=definition)
    assert fields(response) == ["body.messages.email.nl", "body.messages.sms.nl.title"]

    broadcast = {**campaign(), "kind": "broadcast", "trigger": None}
    assert fields(await service.client.post("/v1/campaigns", json=broadcast)) == ["body.schedule.send_at"]


async def test_the_preview_renders_every_message_for_a_sample_member_of_a_library(service: Notifications) -> None:
    await service.catalogue(
        "library_changed", "library:haarlem", library="haarlem", name="Bibliotheek Zuid-Kennemerland",
        website="https://www.bibliotheekzk.nl", branches=[{"code": "centrum", "name": "Haarlem Centrum"}],
    )  # fmt: skip

    async def known() -> bool:
        return await service.stores.catalogue.library("haarlem") is not None

    await eventually(known)
    campaign_id = await service.create(
        campaign(
            channels=["email", "in_app"],
            messages={
                "email": {
                    "nl": {"subject": "Welkom bij {{ library.name }}", "body": "Beste {{ recipient.name }}, tot in "
                           "{{ branch.name }}."},
                    "en": {"subject": "Welcome to {{ library.name }}", "body": "See you at {{ branch.name }}."},
                },
                "in_app": {"nl": {"title": "Welkom", "body": "{{ links.library }}"}},
            },
        ),
        activate=False,
    )  # fmt: skip

    response = await service.client.post(
        f"/v1/campaigns/{campaign_id}/preview", json={"library": "haarlem", "branch": "centrum"}
    )

    assert response.status_code == 200, response.text
    rendered = {(m["medium"], m["locale"]): m for m in response.json()["messages"]}
    assert rendered[("email", "nl")]["subject"] == "Welkom bij Bibliotheek Zuid-Kennemerland"
    assert rendered[("email", "nl")]["body"] == "Beste Sam Jansen, tot in Haarlem Centrum."
    assert rendered[("email", "en")]["body"] == "See you at Haarlem Centrum."
    assert rendered[("in_app", "nl")]["body"] == "https://www.bibliotheekzk.nl"
    only_sms = await service.client.post(f"/v1/campaigns/{campaign_id}/preview", json={"medium": "sms"})
    assert only_sms.json()["messages"] == []
    bad = await service.client.post(f"/v1/campaigns/{campaign_id}/preview", json={"locale": "fr"})
    assert fields(bad) == ["body.locale"]


async def test_activating_a_second_campaign_for_the_same_trigger_and_audience_flags_the_overlap(
    service: Notifications, seed_libraries: list[str]
) -> None:
    first = await service.create(campaign(name="eerste", audience={"libraries": ["oba"]}))
    elsewhere = await service.create(campaign(name="elders", audience={"libraries": ["haarlem"]}))
    second = await service.client.post("/v1/campaigns", json=campaign(name="tweede"))

    activated = await service.client.post(f"/v1/campaigns/{second.json()['id']}/activate")

    assert activated.status_code == 200, activated.text
    assert activated.json()["overlaps"] == sorted([first, elsewhere])
    other_trigger = await service.client.post(
        "/v1/campaigns", json=campaign(name="ander", trigger={"friction_rules": ["reservation-not-collected"]})
    )
    assert (await service.client.post(f"/v1/campaigns/{other_trigger.json()['id']}/activate")).json()["overlaps"] == []
    [*_, change] = await changes(service, second.json()["id"], 2)
    assert (change["change"], change["definition"]["overlaps"]) == ("activated", sorted([first, elsewhere]))


async def test_pause_and_archive_are_published_and_an_archived_campaign_can_no_longer_change(
    service: Notifications,
) -> None:
    campaign_id = await service.create(campaign())

    paused = await service.client.post(f"/v1/campaigns/{campaign_id}/pause")
    assert paused.json()["status"] == "paused"
    assert (await service.client.post(f"/v1/campaigns/{campaign_id}/pause")).status_code == 409
    archived = await service.client.post(f"/v1/campaigns/{campaign_id}/archive")
    assert archived.json()["status"] == "archived"

    assert (await service.client.post(f"/v1/campaigns/{campaign_id}/activate")).status_code == 409
    edit = await service.client.put(f"/v1/campaigns/{campaign_id}", json={**campaign(), "version": 1})
    assert edit.status_code == 409
    trail = await changes(service, campaign_id, 4)
    assert [(c["change"], c["status"]) for c in trail] == [
        ("created", "draft"), ("activated", "active"), ("paused", "paused"), ("archived", "archived"),
    ]  # fmt: skip
    listed = (await service.client.get("/v1/campaigns", params={"status": "archived"})).json()["campaigns"]
    assert [c["id"] for c in listed] == [campaign_id]


async def test_messages_waiting_for_the_end_of_quiet_hours_are_not_sent_once_the_campaign_is_paused(
    settings: Settings, admin_key: str
) -> None:
    evening = datetime(2026, 3, 10, 23, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))
    clock, contacts = TestClock(evening.astimezone(UTC)), FakeContacts()
    async with serving(Webhook()) as webhook:
        overrides = {"notifications_sms_webhook_url": webhook.url}
        async with notifications(
            notifications_settings(settings, **overrides), admin_key, clock=clock, contacts=contacts
        ) as n:
            campaign_id = await n.create(campaign(channels=["sms"], messages={"sms": {"nl": {"body": "Hoi"}}}))
            m = member()
            contacts.add(m, "sms", "0612345678")
            await n.friction(m)
            [deferred] = await n.decisions(lambda ds: any(d.member == m for d in ds))
            assert deferred.type == "deferred"

            await n.client.post(f"/v1/campaigns/{campaign_id}/pause")
            clock.jump_to(datetime.fromisoformat(deferred.data["until"]) + timedelta(minutes=1))

            decided = await n.decided_for([m])
            assert [(d.type, d.data.get("reason")) for d in decided[m]] == [
                ("deferred", None),
                ("suppressed", "campaign_inactive"),
            ]
            assert webhook.calls == []


async def test_the_built_in_campaign_is_listed_and_pausing_it_stops_its_messages(service: Notifications) -> None:
    listed = (await service.client.get("/v1/campaigns", params={"limit": 1})).json()
    assert [(c["id"], c["built_in"], c["status"]) for c in listed["campaigns"]] == [
        ("activate-your-card", True, "active")
    ]
    paused = await service.client.post("/v1/campaigns/activate-your-card/pause")
    assert (paused.json()["status"], paused.json()["built_in"]) == ("paused", False)

    control = await service.create(campaign(trigger={"friction_rules": ["online-signup-not-activated"]}))
    m = member()
    await service.friction(m, rule="online-signup-not-activated")
    decided = await service.decided_for([m])
    assert {d.data["campaign_id"] for d in decided[m]} == {control}


async def test_a_campaign_created_again_with_the_same_idempotency_key_is_created_once(service: Notifications) -> None:
    headers = {"Idempotency-Key": "welkom-2026"}
    first = await service.client.post("/v1/campaigns", json=campaign(), headers=headers)
    again = await service.client.post("/v1/campaigns", json=campaign(), headers=headers)
    other = await service.client.post("/v1/campaigns", json=campaign(name="anders"), headers=headers)

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert other.status_code == 422
    ids = [c["id"] for c in (await service.client.get("/v1/campaigns")).json()["campaigns"]]
    assert ids.count(first.json()["id"]) == 1


async def test_a_library_key_manages_its_own_library_s_campaigns_and_no_others(
    service: Notifications, make_key: MakeKey, seed_libraries: list[str]
) -> None:
    oba = {"Authorization": f"Bearer {await make_key('marketing', library='oba')}"}
    network_campaign = await service.create(campaign(name="netwerk"), activate=False)

    refused = await service.client.post("/v1/campaigns", json=campaign(), headers=oba)
    assert refused.status_code == 403
    assert "network-wide key" in refused.json()["detail"]
    foreign = await service.client.post("/v1/campaigns", json=campaign(library="haarlem"), headers=oba)
    assert problem(foreign) == (403, "this key is scoped to library 'oba'")
    own = await service.client.post("/v1/campaigns", json=campaign(library="oba"), headers=oba)
    assert own.status_code == 201, own.text
    reaching_out = campaign(library="oba", audience={"libraries": ["haarlem"]})
    assert fields(await service.client.post("/v1/campaigns", json=reaching_out, headers=oba)) == [
        "body.audience.libraries"
    ]

    activated = await service.client.post(f"/v1/campaigns/{network_campaign}/activate", headers=oba)
    assert problem(activated) == (
        403,
        "this key is scoped to library 'oba': campaigns of the whole network need a network-wide key",
    )
    assert (await service.client.get(f"/v1/campaigns/{network_campaign}", headers=oba)).status_code == 200
    haarlem = {"Authorization": f"Bearer {await make_key('marketing', library='haarlem')}"}
    assert problem(await service.client.get(f"/v1/campaigns/{own.json()['id']}", headers=haarlem)) == (
        403,
        "this key is scoped to library 'haarlem'",
    )
    listed = (await service.client.get("/v1/campaigns", headers=haarlem)).json()["campaigns"]
    assert own.json()["id"] not in [c["id"] for c in listed]


async def test_keys_without_the_marketing_role_and_requests_without_a_key_are_refused(
    service: Notifications, make_key: MakeKey
) -> None:
    analyst = {"Authorization": f"Bearer {await make_key('analyst')}"}
    refused = await service.client.post("/v1/campaigns", json=campaign(), headers=analyst)
    assert problem(refused) == (403, "this key lacks the role marketing")
    without = await service.client.get("/v1/campaigns", headers={"Authorization": ""})
    assert problem(without) == (401, "send an API key: Authorization: Bearer <key>")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/campaigns/nope"),
        ("GET", "/v1/campaigns/nope/versions"),
        ("GET", "/v1/campaigns/nope/results"),
        ("POST", "/v1/campaigns/nope/activate"),
        ("POST", "/v1/campaigns/nope/pause"),
        ("POST", "/v1/campaigns/nope/archive"),
        ("POST", "/v1/campaigns/nope/preview"),
        ("PUT", "/v1/campaigns/nope"),
    ],
)
async def test_an_unknown_campaign_is_a_404(service: Notifications, method: str, path: str) -> None:
    body = {**campaign(), "version": 1} if method == "PUT" else {} if path.endswith("preview") else None
    response = await service.client.request(method, path, json=body)
    assert problem(response) == (404, "campaign does not exist")
    assert response.json()["title"] == "Not Found"


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/campaigns", {"cursor": "abc"}, "query.cursor"),
        ("/v1/campaigns", {"status": "running"}, "query.status"),
        ("/v1/campaigns/activate-your-card/results", {"within_days": 0}, "query.within_days"),
        ("/v1/members/m/inbox", {"limit": 0}, "query.limit"),
    ],
)
async def test_a_bad_query_parameter_is_a_422_naming_it(
    service: Notifications, path: str, params: dict[str, Any], field: str
) -> None:
    response = await service.client.get(path, params=params)
    assert response.status_code == 422
    assert fields(response) == [field]


async def test_the_results_of_a_campaign_list_every_count_even_before_anything_happened(
    service: Notifications,
) -> None:
    campaign_id = await service.create(campaign(), activate=False)
    results = await service.client.get(f"/v1/campaigns/{campaign_id}/results")
    assert results.json() == {
        "campaign_id": campaign_id, "triggered": 0, "sent": 0, "suppressed": {}, "failed": 0, "deferred": 0,
        "waiting": 0, "warnings": [],
        "effect": {
            "within_days": 14, "messaged": {"frictions": 0, "resolved": 0, "share": None},
            "holdout": {"frictions": 0, "resolved": 0, "share": None}, "difference": None, "too_recent": 0,
        },
    }  # fmt: skip
