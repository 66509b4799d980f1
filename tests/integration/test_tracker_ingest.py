"""The web tracker's side of identity on the real broker and Redis: publishable keys, CORS for the library's website
origins only, client events on Kafka, and the published JSON Schemas they conform to."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jsonschema
import pytest

from services.identity.app import create_app
from services.identity.settings import IdentitySettings
from shared.settings import Settings
from tests.integration.conftest import MakeKey
from tests.support import header, posted_event, problem, read_topic, running

pytestmark = pytest.mark.integration

OBA_SITE = "https://www.oba.nl"  # oba's website origin in the seed
FOREIGN = "https://tracker.example"
PAGE_VIEWED = "nl.bibliotheek.client.page_viewed.v1"
PROPOSITION_VIEWED = "nl.bibliotheek.client.proposition_viewed.v1"


@pytest.fixture
async def identity(identity_settings: IdentitySettings, admin_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(identity_settings), admin_key) as client:
        yield client


async def publishable_key(identity: httpx.AsyncClient, library: str = "oba") -> str:
    response = await identity.post("/v1/publishable-keys", json={"library": library})
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    assert key.startswith(f"pk_{library}_")
    return key


def visitor_id() -> str:
    return f"v-{uuid.uuid4()}"


def client_event(kind: str = PAGE_VIEWED, *, library: str = "oba", visitor: str = "", **data: Any) -> dict[str, Any]:
    """A client event as the tracker sends it."""
    on_the_website = {"source": f"/libraries/{library}/website", "library": library, "channel": "online"}
    return posted_event(
        kind, visitor or visitor_id(), data or {"path": "/boekstart"}, **on_the_website, platform="website",
        datacontenttype="application/json",
    )  # fmt: skip


def from_browser(origin: str, **headers: str) -> dict[str, str]:
    """What a browser on `origin` sends: the Origin and no Authorization (the key is in the query)."""
    return {"Origin": origin, "Authorization": "", **headers}


async def test_a_library_site_posts_client_events_with_its_publishable_key_and_they_land_on_kafka(
    identity: httpx.AsyncClient, settings: Settings
) -> None:
    key = await publishable_key(identity)
    visitor = visitor_id()
    events = [
        client_event(visitor=visitor),
        client_event(PROPOSITION_VIEWED, visitor=visitor, proposition="boekstart", path="/boekstart"),
    ]
    response = await identity.post(
        f"/v1/events?key={key}",
        content=json.dumps(events),
        headers=from_browser(OBA_SITE, **{"Content-Type": "application/cloudevents-batch+json"}),
    )
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": [e["id"] for e in events], "rejected": []}
    assert response.headers["access-control-allow-origin"] == OBA_SITE

    ids = {e["id"] for e in events}
    records = await read_topic(
        settings.kafka_bootstrap,
        settings.topic("identity.members.v1"),
        until=lambda rs: ids <= {header(r, "ce_id") for r in rs},
    )
    landed = {header(r, "ce_id"): r for r in records if header(r, "ce_id") in ids}
    viewed = landed[events[1]["id"]]
    assert header(viewed, "ce_type") == PROPOSITION_VIEWED
    assert header(viewed, "ce_subject") == visitor
    assert (header(viewed, "ce_library"), header(viewed, "ce_channel")) == ("oba", "online")
    assert json.loads(viewed.value) == {"proposition": "boekstart", "path": "/boekstart"}


async def test_a_beacon_s_plain_text_body_is_taken_as_the_batch_it_is(identity: httpx.AsyncClient) -> None:
    key = await publishable_key(identity)
    event = client_event()
    response = await identity.post(
        f"/v1/events?key={key}",
        content=json.dumps([event]),
        headers=from_browser(OBA_SITE, **{"Content-Type": "text/plain;charset=UTF-8"}),
    )
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == [event["id"]]


async def test_the_preflight_is_answered_for_the_library_s_website_and_refused_for_any_other_origin(
    identity: httpx.AsyncClient,
) -> None:
    key = await publishable_key(identity)
    asks = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}

    allowed = await identity.options(f"/v1/events?key={key}", headers=from_browser(OBA_SITE, **asks))
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == OBA_SITE
    assert allowed.headers["access-control-allow-methods"] == "POST"
    assert "content-type" in allowed.headers["access-control-allow-headers"]

    foreign = await identity.options(f"/v1/events?key={key}", headers=from_browser(FOREIGN, **asks))
    assert foreign.status_code == 403
    assert "access-control-allow-origin" not in foreign.headers

    # Another library's website is foreign to oba's key.
    rotterdam = await identity.options(
        f"/v1/events?key={key}", headers=from_browser("https://www.bibliotheek.rotterdam.nl", **asks)
    )
    assert rotterdam.status_code == 403


async def test_a_post_from_a_foreign_origin_publishes_nothing(identity: httpx.AsyncClient) -> None:
    key = await publishable_key(identity)
    event = client_event()
    # A beacon needs no preflight: the ingest itself refuses the origin.
    response = await identity.post(f"/v1/events?key={key}", content=json.dumps([event]), headers=from_browser(FOREIGN))
    assert problem(response) == (403, "this page's origin is not a website of the key's library")
    assert "access-control-allow-origin" not in response.headers
    no_origin = await identity.post(f"/v1/events?key={key}", content=json.dumps([event]), headers={"Authorization": ""})
    assert no_origin.status_code == 403
    # Not taken: the same id posted properly later is published, not "already done".
    later = await identity.post(f"/v1/events?key={key}", content=json.dumps([event]), headers=from_browser(OBA_SITE))
    assert later.json()["accepted"] == [event["id"]]


async def test_a_publishable_key_posts_only_client_events_of_its_own_library(identity: httpx.AsyncClient) -> None:
    key = await publishable_key(identity)
    login_failed = {
        **client_event(),
        "type": "nl.bibliotheek.member.login_failed.v1",
        "data": {"login_platform": "website", "reason": "bad_credentials"},
    }
    for_rotterdam = client_event(library="rotterdam")
    as_a_member = client_event(visitor=str(uuid.uuid4()))  # a browser posts as a visitor, never as a member
    response = await identity.post(
        f"/v1/events?key={key}",
        content=json.dumps([client_event(), login_failed, for_rotterdam, as_a_member]),
        headers=from_browser(OBA_SITE),
    )
    assert response.status_code == 202, response.text
    rejected = {r["index"]: (r["status"], r["errors"][0]["field"]) for r in response.json()["rejected"]}
    assert rejected == {1: (403, "type"), 2: (403, "library"), 3: (422, "subject")}


async def test_after_login_the_site_s_server_links_the_visitor_and_its_events_become_the_member_s(
    identity: httpx.AsyncClient, settings: Settings, make_key: MakeKey
) -> None:
    key = await publishable_key(identity)
    signed_up = await identity.post(
        "/v1/members",
        json={"name": "Sanne de Vries", "email": f"{uuid.uuid4().hex[:10]}@example.nl", "birth_date": "1991-04-12",
              "postcode": "1034 AB", "home_library": "oba", "platform": "website"},
    )  # fmt: skip
    assert signed_up.status_code == 202, signed_up.text
    member = signed_up.json()["member_id"]
    visitor = visitor_id()
    before = client_event(visitor=visitor)
    await identity.post(f"/v1/events?key={key}", content=json.dumps([before]), headers=from_browser(OBA_SITE))

    rotterdam_site = {"Authorization": f"Bearer {await make_key('ingest', library='rotterdam')}"}
    link = {"member_id": member}
    refused = await identity.put(f"/v1/visitors/{visitor}/member", json=link, headers=rotterdam_site)
    assert problem(refused) == (403, "this key is scoped to library 'rotterdam'")  # cannot link oba's member
    not_a_visitor = await identity.put(f"/v1/visitors/{uuid.uuid4()}/member", json=link)
    assert not_a_visitor.status_code == 422
    oba_site = {"Authorization": f"Bearer {await make_key('ingest', library='oba')}"}
    assert (await identity.put(f"/v1/visitors/{visitor}/member", json=link, headers=oba_site)).status_code == 204

    after = client_event(PROPOSITION_VIEWED, visitor=visitor, proposition="boekstart")
    await identity.post(f"/v1/events?key={key}", content=json.dumps([after]), headers=from_browser(OBA_SITE))
    records = await read_topic(
        settings.kafka_bootstrap,
        settings.topic("identity.members.v1"),
        until=lambda rs: after["id"] in {header(r, "ce_id") for r in rs},
    )
    subjects = {header(r, "ce_id"): header(r, "ce_subject") for r in records}
    assert (subjects[before["id"]], subjects[after["id"]]) == (visitor, member)


async def test_an_unknown_or_revoked_publishable_key_is_refused(identity: httpx.AsyncClient) -> None:
    key = await publishable_key(identity)
    body = json.dumps([client_event()])
    unknown = await identity.post(
        "/v1/events?key=pk_oba_notakeyofanyoneatallxx", content=body, headers=from_browser(OBA_SITE)
    )
    assert problem(unknown) == (401, "the publishable key is unknown or revoked")
    assert (await identity.delete(f"/v1/publishable-keys/{key}")).status_code == 204
    revoked = await identity.post(f"/v1/events?key={key}", content=body, headers=from_browser(OBA_SITE))
    assert problem(revoked) == (401, "the publishable key is unknown or revoked")


async def test_only_an_admin_of_the_library_makes_its_publishable_keys(
    identity: httpx.AsyncClient, make_key: MakeKey
) -> None:
    oba_admin = {"Authorization": f"Bearer {await make_key('admin', library='oba')}"}
    assert (await identity.post("/v1/publishable-keys", json={"library": "oba"}, headers=oba_admin)).status_code == 201
    other = await identity.post("/v1/publishable-keys", json={"library": "rotterdam"}, headers=oba_admin)
    assert problem(other) == (403, "this key is scoped to library 'oba'")
    marketing = {"Authorization": f"Bearer {await make_key('marketing', library='oba')}"}
    refused = await identity.post("/v1/publishable-keys", json={"library": "oba"}, headers=marketing)
    assert problem(refused) == (403, "this key lacks the role admin")
    unknown = await identity.post("/v1/publishable-keys", json={"library": "atlantis"})
    assert unknown.status_code == 422
    assert [e["field"] for e in unknown.json()["errors"]] == ["library"]


async def test_every_event_type_has_a_published_schema_that_the_posted_events_meet(identity: httpx.AsyncClient) -> None:
    everything = (await identity.get("/schemas")).json()
    client_types = {t for t in everything if t.startswith("nl.bibliotheek.client.")}
    assert client_types == {
        PAGE_VIEWED,
        PROPOSITION_VIEWED,
        "nl.bibliotheek.client.search_performed.v1",
        "nl.bibliotheek.client.platform_handoff.v1",
    }
    assert "nl.bibliotheek.member.signed_up.v1" in everything
    schema = (await identity.get(f"/schemas/{PROPOSITION_VIEWED}")).json()
    assert schema == everything[PROPOSITION_VIEWED]
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(client_event(PROPOSITION_VIEWED, proposition="boekstart"))
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(client_event(PROPOSITION_VIEWED, proposition="BoekStart!"))
    with pytest.raises(jsonschema.ValidationError):  # a page's query may hold personal data: never sent
        jsonschema.validate(client_event(path="/zoeken?q=jan"), everything[PAGE_VIEWED])
    unknown = await identity.get("/schemas/nl.bibliotheek.client.nothing.v1")
    assert problem(unknown) == (404, "event type does not exist")

    messages = (await identity.get("/asyncapi")).json()["components"]["messages"]
    links = {m["externalDocs"]["url"] for m in messages.values()}
    assert f"/schemas/{PROPOSITION_VIEWED}" in links
    assert all(m["externalDocs"]["url"].startswith("/schemas/nl.bibliotheek.") for m in messages.values())
