"""Bad rows kept beyond the batch routes, on the real broker and Redis: a single loan report refused by its schema,
identity's commands that platforms post (logins, card activations, consents, sign-ups…), and what a web tracker
posted with its publishable key; each kept with its reason (personal data removed), and a replay after the fix has
the effect the original post would have had, once however often it is replayed."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest
from aiokafka.structs import ConsumerRecord
from fastapi import FastAPI

from deploy import runtime
from services.identity.app import create_app as identity_app
from services.identity.settings import IdentitySettings
from services.propositions.app import create_app as propositions_app
from shared.events import BATCH
from shared.failed_items import REDACTED
from shared.redis import make_redis
from shared.settings import Settings
from shared.topics import FAILED_INGEST, MEMBERS, USAGE
from tests.integration.conftest import MakeKey
from tests.integration.test_failed_items import loan
from tests.integration.test_propositions_catalogue import HAARLEM, OBA
from tests.integration.test_tracker_ingest import OBA_SITE, PAGE_VIEWED, client_event, from_browser
from tests.support import header, klantreis, problem, read_to_end

pytestmark = pytest.mark.integration

Records = list[ConsumerRecord[Any, Any]]


@asynccontextmanager
async def serving(
    app: FastAPI, service: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """The service on a free port, and `klantreis` (run in this process) pointed at it and at this test's
    namespace."""
    async with runtime.serving(app, lifespan="on") as url:
        for name, value in [(f"{service.upper()}_URL", url), ("KAFKA_BOOTSTRAP", settings.kafka_bootstrap),
                            ("REDIS_URL", settings.redis_url), ("TOPIC_PREFIX", settings.topic_prefix),
                            ("KEY_PREFIX", settings.key_prefix)]:  # fmt: skip
            monkeypatch.setenv(f"KLANTREIS_{name}", value)
        yield url


async def kept(settings: Settings) -> Records:
    """Everything on the failed-events topic now (a refusal is answered only once Kafka acknowledged its record)."""
    return await read_to_end(settings.kafka_bootstrap, settings.topic(FAILED_INGEST.name))


def headers_of(record: ConsumerRecord[Any, Any]) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}


@contextmanager
def no_key(http: httpx.AsyncClient) -> Iterator[httpx.AsyncClient]:
    saved = http.headers.pop("Authorization")
    try:
        yield http
    finally:
        http.headers["Authorization"] = saved


async def test_a_single_loan_or_registration_refused_before_or_in_the_route_is_kept_and_replayed_once(
    settings: Settings, admin_key: str, make_key: MakeKey, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    key = await make_key("ingest")  # the whole network's
    bad_format = loan(format="vinyl")  # refused by the schema, before the route
    leaky = loan(email="jan@example.nl")  # an unknown field, and a personal one
    early = loan(library="haarlem", branch=None, id=None)  # haarlem is not in the catalogue yet; no id of its own
    del early["id"]
    async with serving(propositions_app(settings), "propositions", settings, monkeypatch) as url:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
            admin = {"Authorization": f"Bearer {admin_key}"}
            assert (await http.put("/v1/libraries/oba", json=OBA, headers=admin)).status_code in (200, 202)
            for body in (bad_format, leaky, early):
                answer = await http.post("/v1/loans", json=body)
                assert answer.status_code == 422, answer.text
            not_json = await http.post("/v1/loans", content=b"borrowed;oba;9789021416011",
                                       headers={"Content-Type": "application/json"})  # fmt: skip
            assert not_json.status_code == 422, not_json.text
            with no_key(http):  # no key: refused, and nothing kept for it
                refused = await http.post("/v1/loans", json=loan(format="vinyl"))
                assert problem(refused) == (401, "send an API key: Authorization: Bearer <key>")
            nowhere = "/v1/activities/oba.taalcafe.3f9a1c2e7d4b/registrations"  # no such activity
            registration = await http.post(nowhere, json={"member_id": str(uuid.uuid4())})
            assert problem(registration) == (404, "activity does not exist")

            everything = await kept(settings)
            [registered] = [r for r in everything if header(r, "failed_endpoint") == nowhere]
            assert (header(registered, "dlq_reason"), header(registered, "failed_method")) == ("not_found", "POST")
            records = [r for r in everything if r is not registered]
            assert len(records) == 4
            assert {header(r, "failed_endpoint") for r in records} == {"/v1/loans/batch"}
            assert {header(r, "dlq_reason") for r in records} == {"invalid"}
            by_id = {r.key.decode(): r for r in records}
            assert json.loads(by_id[bad_format["id"]].value) == bad_format  # as posted
            assert "body.format" in (header(by_id[bad_format["id"]], "dlq_error") or "")
            assert json.loads(by_id[leaky["id"]].value)["email"] == REDACTED
            assert header(by_id[leaky["id"]], "failed_redacted") == "true"
            assert all(b"jan@example.nl" not in r.value for r in records)
            assert [r.value for r in records if r.value.startswith(b"borrowed")] == [b"borrowed;oba;9789021416011"]
            assert "body.library" in (header(next(r for r in records if b"haarlem" in r.value), "dlq_error") or "")

            # The fix: haarlem joins the catalogue. The early report is replayed, and (by mistake) again.
            assert (await http.put("/v1/libraries/haarlem", json=HAARLEM, headers=admin)).status_code in (200, 202)
        early_kept = next(r for r in records if b"haarlem" in r.value)
        position = f"{early_kept.partition}:{early_kept.offset}"
        for _ in range(2):
            replayed = await klantreis(capsys, "dead-letters", "replay", "--topic", FAILED_INGEST.name,
                                       "--offset", position)  # fmt: skip
            assert "reposted 1 to propositions: 1 accepted, 0 refused again" in replayed
        # The early report again (no effect), the still wrong ones refused again and kept again; the redacted one
        # and the bytes are left alone.
        rest = await klantreis(capsys, "dead-letters", "replay", "--topic", FAILED_INGEST.name, "--all")
        assert "reposted 3 to propositions: 1 accepted, 2 refused again" in rest and "2 left alone" in rest

    usage = await read_to_end(settings.kafka_bootstrap, settings.topic(USAGE.name))
    assert [header(r, "ce_library") for r in usage] == ["haarlem"]  # one loan published, once
    again = await kept(settings)
    twice = [bad_format["id"], registered.key.decode()]  # kept again under the same ids
    assert sorted(r.key.decode() for r in again) == sorted([*(r.key.decode() for r in everything), *twice])


async def test_identity_s_refused_commands_are_kept_without_personal_data_and_a_replay_after_the_fix_acts_once(
    identity_settings: IdentitySettings, make_key: MakeKey, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    settings = identity_settings
    key = await make_key("ingest", library="oba")
    async with serving(identity_app(settings), "identity", settings, monkeypatch) as url:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
            started = await http.post("/v1/registrations", json={"home_library": "oba"})
            assert started.status_code == 202, started.text
            late = started.json()["registration_id"]  # the member id once the sign-up completes it

            # The kiosk reports the card activation before the sign-up has arrived (404), with its Idempotency-Key,
            # and posts it again with the same key (the same item); the consent arrives early too.
            activation = {"library": "oba", "branch": "oosterdok", "platform": "kiosk"}
            for _ in range(2):
                answer = await http.post(f"/v1/members/{late}/card-activation", json=activation,
                                         headers={"Idempotency-Key": f"activation-{late}"})  # fmt: skip
                assert problem(answer) == (404, "member does not exist")
            early = await http.put(f"/v1/members/{late}/consents/email/marketing", json={"granted": True})
            assert problem(early) == (404, "member does not exist")
            # A bus is not a platform that activates cards: refused by the schema, before the route.
            bus = await http.post(f"/v1/members/{late}/card-activation", json={**activation, "platform": "bus"})
            assert bus.status_code == 422, bus.text
            login = {"platform": "ebook", "external_id": "eb-wilhelmina-1880", "outcome": "succeeded"}
            unlinked = await http.post("/v1/logins", json=login)
            assert problem(unlinked) == (404, "no member has this account on ebook linked")
            person = {"name": "Wilhelmina Jansen", "email": "wilhelmina@example.nl", "birth_date": "1990-01-01",
                      "postcode": "1011 AB", "home_library": "oba", "registration_id": late}  # fmt: skip
            sign_up = await http.post("/v1/members", json={**person, "email": "wilhelmina@"})
            assert sign_up.status_code == 422, sign_up.text
            with no_key(http):
                refused = await http.post(f"/v1/members/{late}/card-activation", json=activation)
                assert problem(refused) == (401, "send an API key: Authorization: Bearer <key>")

            records = await kept(settings)
            assert len(records) == 6
            assert {header(r, "failed_service") for r in records} == {"identity"}
            activations = [r for r in records if header(r, "dlq_reason") == "not_found" and b"oosterdok" in r.value]
            assert len(activations) == 2 and activations[0].key == activations[1].key  # posted again: the same item
            assert [json.loads(r.value) for r in activations] == [activation, activation]  # as posted
            assert {header(r, "failed_endpoint") for r in activations} == {f"/v1/members/{late}/card-activation"}
            consent = next(r for r in records if header(r, "failed_method") == "PUT")
            assert (header(consent, "dlq_reason"), json.loads(consent.value)) == ("not_found", {"granted": True})
            refused_bus = next(r for r in records if b'"bus"' in r.value)
            assert "body.platform" in (header(refused_bus, "dlq_error") or "")
            # What names a person is removed before keeping, and such an item is not replayed.
            by_endpoint = {header(r, "failed_endpoint"): r for r in records}
            assert json.loads(by_endpoint["/v1/logins"].value)["external_id"] == REDACTED
            signed = json.loads(by_endpoint["/v1/members"].value)
            assert signed["name"] == signed["email"] == signed["birth_date"] == signed["postcode"] == REDACTED
            assert {header(by_endpoint[e], "failed_redacted") for e in ("/v1/logins", "/v1/members")} == {"true"}
            assert all(b"ilhelmina" not in r.value and b"1011 AB" not in r.value for r in records)

            # The fix: the sign-up arrives, completing the registration.
            signed_up = await http.post("/v1/members", json=person)
            assert signed_up.status_code == 202, signed_up.text
        for _ in range(2):  # replayed, and (by mistake) again
            replayed = await klantreis(capsys, "dead-letters", "replay", "--topic", FAILED_INGEST.name,
                                       "--reason", "not_found")  # fmt: skip
            assert "reposted 3 to identity: 3 accepted, 0 refused again" in replayed
            assert "1 left alone" in replayed  # the login, kept without its account
        invalid = await klantreis(
            capsys, "dead-letters", "replay", "--topic", FAILED_INGEST.name, "--reason", "invalid"
        )
        assert "reposted 1 to identity: 0 accepted, 1 refused again" in invalid and "1 left alone" in invalid

    members = await read_to_end(settings.kafka_bootstrap, settings.topic(MEMBERS.name))
    effects = [header(r, "ce_type") for r in members if header(r, "ce_subject") == late]
    assert effects.count("nl.bibliotheek.member.card_activated.v1") == 1
    assert effects.count("nl.bibliotheek.member.consent_changed.v1") == 1


async def test_a_web_tracker_s_refused_events_are_replayed_with_a_publishable_key_s_limits_and_once(
    identity_settings: IdentitySettings, admin_key: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    settings = identity_settings
    held = client_event()  # its id is being handled by another request: 409, post it again
    as_member = client_event(visitor=str(uuid.uuid4()))  # a browser posts as a visitor, never as a member
    # Not a client event: a browser may not post it.
    registration = {
        **client_event(),
        "type": "nl.bibliotheek.member.registration_started.v1",
        "data": {"home_library": "oba"},
    }
    redis = make_redis(settings)
    claim = settings.key("identity", "ingested", held["id"])
    await redis.set(claim, "pending", ex=60)
    try:
        async with serving(identity_app(settings), "identity", settings, monkeypatch) as url:
            async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {admin_key}"}) as http:
                made = await http.post("/v1/publishable-keys", json={"library": "oba"})
                assert made.status_code == 201, made.text
                answer = await http.post(
                    f"/v1/events?key={made.json()['key']}",
                    content=json.dumps([held, as_member, registration]),
                    headers=from_browser(OBA_SITE, **{"Content-Type": BATCH}),
                )
                assert answer.status_code == 422, answer.text
                assert [r["status"] for r in answer.json()["rejected"]] == [409, 422, 403]

            records = await kept(settings)
            assert {header(r, "failed_role") for r in records} == {"publishable"}
            assert sorted(r.key.decode() for r in records) == sorted([held["id"], as_member["id"], registration["id"]])
            await redis.delete(claim)  # the fix: the other request gave the id up
            # Replayed, and (by mistake) again, with the two refused again and kept again the first time. An ingest
            # key would have published those two; under the publishable key's limits they are refused, as they were.
            for refused in (2, 4):
                replayed = await klantreis(capsys, "dead-letters", "replay", "--topic", FAILED_INGEST.name, "--all")
                assert f"reposted {1 + refused} to identity: 1 accepted, {refused} refused again" in replayed
    finally:
        await redis.aclose()

    members = await read_to_end(settings.kafka_bootstrap, settings.topic(MEMBERS.name))
    assert [(header(r, "ce_id"), header(r, "ce_type"), header(r, "ce_subject")) for r in members] == [
        (held["id"], PAGE_VIEWED, held["subject"])]  # fmt: skip
