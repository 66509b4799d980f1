"""identity's HTTP API on the real broker and Redis: what every endpoint answers and what it leaves on Kafka."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeAlias

import httpx
import pytest
from aiokafka import ConsumerRecord
from fastapi import FastAPI

from services.identity.app import create_app
from services.identity.settings import IdentitySettings
from shared.events import BATCH, STRUCTURED
from shared.settings import Settings
from tests.integration.conftest import MakeKey
from tests.support import header, posted_event, problem, read_topic, running

pytestmark = pytest.mark.integration

TYPE_PREFIX = "nl.bibliotheek.member."
TODAY = datetime.now(UTC).date()
ADULT = "1991-04-12"
TEN_YEARS_OLD = date(TODAY.year - 10, 1, 1).isoformat()
BORN_2016 = "2016-03-14"

Record: TypeAlias = ConsumerRecord[Any, Any]
Event: TypeAlias = tuple[str, dict[str, Any]]


def short_type(record: Record) -> str:
    """`nl.bibliotheek.member.signed_up.v1` → `signed_up`."""
    return (header(record, "ce_type") or "").removeprefix(TYPE_PREFIX).removesuffix(".v1")


def subject(record: Record) -> str | None:
    return header(record, "ce_subject")


def fields(response: httpx.Response) -> list[str]:
    """The field paths a problem document names."""
    assert response.headers["content-type"] == "application/problem+json", response.text
    return [e["field"] for e in response.json().get("errors", [])]


def cloud_event(kind: str, member_id: str | None, **attributes: Any) -> dict[str, Any]:
    """A structured CloudEvent of identity's, as a kiosk at the OBA would post it."""
    return posted_event(f"{TYPE_PREFIX}{kind}.v1", member_id, **attributes)


@dataclass
class Identity:
    """The identity service under test, talked to with an admin key unless a request says otherwise."""

    client: httpx.AsyncClient
    settings: Settings
    make_key: MakeKey
    app: FastAPI

    async def key(self, *roles: str, library: str = "*") -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.make_key(*roles, library=library)}"}

    @staticmethod
    def person(**overrides: Any) -> dict[str, Any]:
        """A sign-up body; every person gets an e-mail address of their own unless told otherwise."""
        return {
            "name": "Sanne de Vries",
            "email": f"{uuid.uuid4().hex[:12]}@example.nl",
            "birth_date": ADULT,
            "postcode": "1034 AB",
            "home_library": "oba",
            "platform": "website",
            **overrides,
        }

    async def sign_up(self, **overrides: Any) -> str:
        response = await self.client.post("/v1/members", json=self.person(**overrides))
        assert response.status_code == 202, response.text
        return str(response.json()["member_id"])

    async def member(self, member_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/members/{member_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def link(self, member_id: str, external_id: str, platform: str = "ebook") -> httpx.Response:
        return await self.client.post(
            f"/v1/members/{member_id}/accounts", json={"platform": platform, "external_id": external_id}
        )

    async def suspicions(self, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
        response = await self.client.get("/v1/duplicates", headers=headers)
        assert response.status_code == 200, response.text
        return list(response.json())

    async def suspicion_of(self, member_id: str) -> dict[str, Any]:
        [suspicion] = [s for s in await self.suspicions() if member_id in (s["member_id"], s["other_member_id"])]
        return suspicion

    # ------------------------------------------------------------------------------------------ Kafka

    async def records(self, until: Callable[[list[Record]], bool]) -> list[Record]:
        return await read_topic(self.settings.kafka_bootstrap, self.settings.topic("identity.members.v1"), until=until)

    async def records_of(self, member_id: str, *wanted: str) -> list[Record]:
        """The member's records, read until one of each `wanted` event type is there."""

        def mine(records: list[Record]) -> list[Record]:
            return [r for r in records if subject(r) == member_id]

        return mine(await self.records(lambda rs: set(wanted) <= {short_type(r) for r in mine(rs)}))

    async def events(self, member_id: str, *wanted: str) -> list[Event]:
        """(type, data) of the member's events, read until one of each `wanted` type is there."""
        return [(short_type(r), json.loads(r.value)) for r in await self.records_of(member_id, *wanted)]

    async def published(self, event_id: str) -> Record:
        """The record of the event with this id."""
        records = await self.records(lambda rs: any(header(r, "ce_id") == event_id for r in rs))
        return next(r for r in records if header(r, "ce_id") == event_id)

    async def everything_of(self, member_id: str) -> list[Record]:
        """Every record of the member so far: read up to a marker card activation published after them.

        A member's records share a partition, so once the marker is read, everything before it is too."""
        response = await self.client.post(
            f"/v1/members/{member_id}/card-activation", json={"library": "oba", "branch": "marker"}
        )
        assert response.status_code == 202, response.text
        marker = response.json()["event_id"]
        records = await self.records(lambda rs: any(header(r, "ce_id") == marker for r in rs))
        before = records[: next(i for i, r in enumerate(records) if header(r, "ce_id") == marker)]
        return [r for r in before if subject(r) == member_id]


@pytest.fixture(name="identity")
async def identity_fixture(
    identity_settings: IdentitySettings, settings: Settings, admin_key: str, make_key: MakeKey
) -> AsyncIterator[Identity]:
    app = create_app(identity_settings)
    async with running(app, admin_key) as client:
        yield Identity(client, settings, make_key, app)


# ----------------------------------------------------------------------------------------- registration


async def test_a_completed_registration_becomes_the_member_under_the_registration_s_id(identity: Identity) -> None:
    started = await identity.client.post(
        "/v1/registrations", json={"home_library": "oba", "platform": "website", "source": "consultatiebureau"}
    )
    assert started.status_code == 202, started.text
    registration_id = started.json()["registration_id"]

    completed = await identity.client.post("/v1/members", json=identity.person(registration_id=registration_id))

    assert completed.status_code == 202, completed.text
    assert completed.json()["member_id"] == registration_id
    events = dict(await identity.events(registration_id, "registration_started", "signed_up"))
    assert events["registration_started"] == {"home_library": "oba", "source": "consultatiebureau"}
    assert events["signed_up"]["home_library"] == "oba"


async def test_a_registration_cannot_be_completed_twice(identity: Identity) -> None:
    started = await identity.client.post("/v1/registrations", json={"home_library": "oba"})
    registration_id = started.json()["registration_id"]
    assert await identity.sign_up(registration_id=registration_id) == registration_id

    again = await identity.client.post("/v1/members", json=identity.person(registration_id=registration_id))

    assert problem(again) == (404, "registration does not exist or was completed already")
    assert again.json()["title"] == "Not Found"


async def test_completing_a_registration_nobody_started_is_a_404(identity: Identity) -> None:
    response = await identity.client.post("/v1/members", json=identity.person(registration_id="never-started"))
    assert problem(response) == (404, "registration does not exist or was completed already")


async def test_a_registration_for_something_that_is_no_library_code_is_refused_by_name(identity: Identity) -> None:
    response = await identity.client.post("/v1/registrations", json={"home_library": "Openbare Bibliotheek"})
    assert response.status_code == 422
    assert fields(response) == ["body.home_library"]


# ---------------------------------------------------------------------------------------------- sign-up


async def test_a_sign_up_at_the_desk_is_published_as_offline_on_the_desk_platform(identity: Identity) -> None:
    member = await identity.sign_up(platform="desk")

    [record] = await identity.records_of(member, "signed_up")

    assert header(record, "ce_channel") == "offline"
    assert header(record, "ce_platform") == "desk"
    assert header(record, "ce_library") == "oba"


async def test_a_sign_up_via_a_partner_carries_its_source_and_proposition(identity: Identity) -> None:
    member = await identity.sign_up(
        platform="partner", source="consultatiebureau", proposition="boekstart", birth_date=TEN_YEARS_OLD
    )

    [data] = [data for kind, data in await identity.events(member, "signed_up") if kind == "signed_up"]

    assert data["source"] == "consultatiebureau"
    assert data["proposition"] == "boekstart"
    assert data["age_band"] == "4-11"


async def test_the_language_a_member_reads_is_kept_and_published_dutch_unless_told(identity: Identity) -> None:
    english = await identity.sign_up(language="en")
    dutch = await identity.sign_up()

    for member, language in ((english, "en"), (dutch, "nl")):
        [data] = [data for kind, data in await identity.events(member, "signed_up") if kind == "signed_up"]
        assert data["language"] == language
        assert (await identity.client.get(f"/v1/members/{member}")).json()["language"] == language
    refused = await identity.client.post("/v1/members", json=identity.person(language="de"))
    assert (refused.status_code, [e["field"] for e in refused.json()["errors"]]) == (422, ["body.language"])


async def test_a_birth_date_in_the_future_is_refused_by_name(identity: Identity) -> None:
    tomorrow = (TODAY + timedelta(days=1)).isoformat()
    response = await identity.client.post("/v1/members", json=identity.person(birth_date=tomorrow))
    assert response.status_code == 422
    assert fields(response) == ["body.birth_date"]


async def test_a_sign_up_on_an_unknown_platform_is_refused_by_name(identity: Identity) -> None:
    response = await identity.client.post("/v1/members", json=identity.person(platform="carrier-pigeon"))
    assert response.status_code == 422
    assert fields(response) == ["body.platform"]


# ----------------------------------------------------------------------------------------- member data


async def test_front_office_staff_see_the_member_s_name_email_accounts_and_consents(identity: Identity) -> None:
    member = await identity.sign_up(name="Sanne de Vries", email="Sanne.Test@Example.nl")
    assert (await identity.link(member, "eb-1")).status_code == 202
    granted = await identity.client.put(f"/v1/members/{member}/consents/email/service", json={"granted": True})
    assert granted.status_code == 202
    staff = await identity.key("member-data", library="oba")

    response = await identity.client.get(f"/v1/members/{member}", headers=staff)

    assert response.status_code == 200, response.text
    seen = response.json()
    assert seen["member_id"] == member
    assert seen["name"] == "Sanne de Vries"
    assert seen["email"] == "sanne.test@example.nl"
    assert seen["accounts"] == ["ebook"]
    assert seen["consents"] == {"email:service": "granted"}
    assert (seen["home_library"], seen["channel"], seen["platform"]) == ("oba", "online", "website")


async def test_a_key_of_another_library_may_not_read_the_member(identity: Identity) -> None:
    member = await identity.sign_up(home_library="oba")
    response = await identity.client.get(
        f"/v1/members/{member}", headers=await identity.key("member-data", library="haarlem")
    )
    assert problem(response) == (403, "this key is scoped to library 'haarlem'")
    assert "Sanne" not in response.text


async def test_an_unknown_member_is_a_404_problem(identity: Identity) -> None:
    response = await identity.client.get("/v1/members/nobody-at-all")
    assert problem(response) == (404, "member does not exist")
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["title"] == "Not Found"


async def test_an_ingest_only_key_may_not_read_personal_data(identity: Identity) -> None:
    member = await identity.sign_up()
    response = await identity.client.get(f"/v1/members/{member}", headers=await identity.key("ingest"))
    assert response.status_code == 403
    assert "member-data" in response.json()["detail"]


# ------------------------------------------------------------------------------------------ card activation


async def test_activating_a_card_publishes_card_activated(identity: Identity) -> None:
    member = await identity.sign_up()

    response = await identity.client.post(
        f"/v1/members/{member}/card-activation", json={"library": "oba", "branch": "oosterdok"}
    )

    assert response.status_code == 202, response.text
    record = await identity.published(response.json()["event_id"])
    assert (short_type(record), subject(record)) == ("card_activated", member)
    assert json.loads(record.value) == {"branch": "oosterdok"}
    assert (await identity.member(member))["card_activated_at"] is not None


async def test_activating_the_card_of_an_unknown_member_is_a_404(identity: Identity) -> None:
    response = await identity.client.post("/v1/members/nobody-at-all/card-activation", json={"library": "oba"})
    assert problem(response) == (404, "member does not exist")


async def test_a_haarlem_key_cannot_activate_a_card_at_the_oba(identity: Identity) -> None:
    member = await identity.sign_up(home_library="oba")
    response = await identity.client.post(
        f"/v1/members/{member}/card-activation",
        json={"library": "oba"},
        headers=await identity.key("ingest", library="haarlem"),
    )
    assert response.status_code == 403
    assert "haarlem" in response.json()["detail"]


async def test_a_card_is_not_activated_on_a_website(identity: Identity) -> None:
    member = await identity.sign_up()
    response = await identity.client.post(
        f"/v1/members/{member}/card-activation", json={"library": "oba", "platform": "website"}
    )
    assert response.status_code == 422
    assert fields(response) == ["body.platform"]


# ------------------------------------------------------------------------------------------------ accounts


async def test_a_linked_ebook_account_is_listed_on_the_member_and_published_by_reference(identity: Identity) -> None:
    member = await identity.sign_up()

    response = await identity.link(member, "eb-449120")

    assert response.status_code == 202, response.text
    linked = response.json()
    assert (linked["member_id"], linked["platform"]) == (member, "ebook")
    assert linked["account_ref"]
    assert (await identity.member(member))["accounts"] == ["ebook"]
    [data] = [data for kind, data in await identity.events(member, "account_linked") if kind == "account_linked"]
    assert data == {"account_platform": "ebook", "account_ref": linked["account_ref"]}
    assert "eb-449120" not in json.dumps(data)


async def test_an_account_linked_to_one_member_cannot_be_linked_to_another(identity: Identity) -> None:
    first, second = await identity.sign_up(), await identity.sign_up()
    assert (await identity.link(first, "eb-shared")).status_code == 202

    response = await identity.link(second, "eb-shared")

    assert response.status_code == 409
    assert (await identity.member(second))["accounts"] == []


async def test_a_member_cannot_link_a_second_ebook_account(identity: Identity) -> None:
    member = await identity.sign_up()
    assert (await identity.link(member, "eb-first")).status_code == 202

    response = await identity.link(member, "eb-second")

    assert response.status_code == 409
    # The refused account stays free for whoever owns it.
    assert (await identity.link(await identity.sign_up(), "eb-second")).status_code == 202


async def test_linking_the_same_account_again_answers_with_the_same_reference(identity: Identity) -> None:
    member = await identity.sign_up()
    first = await identity.link(member, "eb-449120")

    again = await identity.link(member, "eb-449120")

    assert again.status_code == 202
    assert again.json()["account_ref"] == first.json()["account_ref"]
    linked = [r for r in await identity.everything_of(member) if short_type(r) == "account_linked"]
    assert len(linked) == 1


async def test_an_unlinked_account_is_gone_and_free_for_another_member(identity: Identity) -> None:
    member, other = await identity.sign_up(), await identity.sign_up()
    ref = (await identity.link(member, "eb-449120")).json()["account_ref"]

    unlinked = await identity.client.delete(f"/v1/members/{member}/accounts/ebook")

    assert unlinked.status_code == 202, unlinked.text
    record = await identity.published(unlinked.json()["event_id"])
    assert short_type(record) == "account_unlinked"
    assert json.loads(record.value) == {"account_platform": "ebook", "account_ref": ref}
    assert (await identity.member(member))["accounts"] == []
    assert problem(await identity.client.delete(f"/v1/members/{member}/accounts/ebook")) == (
        404,
        "the member has no account on ebook linked",
    )
    taken_over = await identity.link(other, "eb-449120")
    assert taken_over.status_code == 202
    assert taken_over.json()["member_id"] == other


async def test_an_account_on_an_unknown_platform_is_refused_by_name(identity: Identity) -> None:
    member = await identity.sign_up()
    linked = await identity.link(member, "x-1", platform="myspace")
    assert linked.status_code == 422
    assert fields(linked) == ["body.platform"]
    unlinked = await identity.client.delete(f"/v1/members/{member}/accounts/myspace")
    assert unlinked.status_code == 422
    assert fields(unlinked) == ["path.platform"]


# ------------------------------------------------------------------------------------------------- logins


async def test_a_failed_login_with_bad_credentials_is_published_with_its_reason(identity: Identity) -> None:
    member = await identity.sign_up()
    await identity.link(member, "eb-449120")

    response = await identity.client.post(
        "/v1/logins",
        json={"platform": "ebook", "external_id": "eb-449120", "outcome": "failed", "reason": "bad_credentials"},
    )

    assert response.status_code == 202, response.text
    assert response.json()["member_id"] == member
    record = await identity.published(response.json()["event_id"])
    assert (short_type(record), subject(record)) == ("login_failed", member)
    assert json.loads(record.value) == {"login_platform": "ebook", "reason": "bad_credentials"}


async def test_a_failed_login_without_a_reason_is_refused_as_a_whole(identity: Identity) -> None:
    response = await identity.client.post(
        "/v1/logins", json={"platform": "ebook", "external_id": "eb-449120", "outcome": "failed"}
    )
    assert response.status_code == 422
    # A model validator's error belongs to the body as a whole, not to one field of it.
    assert fields(response) == ["body"]
    assert "reason is required" in response.json()["detail"]


async def test_a_login_with_an_account_nobody_linked_is_a_404(identity: Identity) -> None:
    response = await identity.client.post(
        "/v1/logins", json={"platform": "ebook", "external_id": "eb-nobody", "outcome": "succeeded"}
    )
    assert problem(response) == (404, "no member has this account on ebook linked")


async def test_logging_in_on_the_ebook_platform_after_a_website_sign_up_is_a_channel_switch(
    identity: Identity,
) -> None:
    member = await identity.sign_up(platform="website")
    await identity.link(member, "eb-449120")

    response = await identity.client.post(
        "/v1/logins", json={"platform": "ebook", "external_id": "eb-449120", "outcome": "succeeded"}
    )

    assert response.status_code == 202, response.text
    events = await identity.events(member, "channel_switched", "login_succeeded")
    [switch] = [data for kind, data in events if kind == "channel_switched"]
    assert switch == {
        "from_channel": "online",
        "from_platform": "website",
        "to_channel": "online",
        "to_platform": "ebook",
    }


# ------------------------------------------------------------------------------------------------ consent


async def test_a_granted_marketing_consent_is_published_and_shown_on_the_member(identity: Identity) -> None:
    member = await identity.sign_up()

    response = await identity.client.put(f"/v1/members/{member}/consents/email/marketing", json={"granted": True})

    assert response.status_code == 202, response.text
    record = await identity.published(response.json()["event_id"])
    assert (short_type(record), subject(record)) == ("consent_changed", member)
    assert json.loads(record.value) == {"medium": "email", "purpose": "marketing", "granted": True}
    assert (await identity.member(member))["consents"] == {"email:marketing": "granted"}


async def test_consent_for_an_unknown_medium_is_refused_by_name(identity: Identity) -> None:
    member = await identity.sign_up()
    response = await identity.client.put(f"/v1/members/{member}/consents/pigeon/marketing", json={"granted": True})
    assert response.status_code == 422
    assert fields(response) == ["path.medium"]


# ------------------------------------------------------------------------------------ guardians and contact


async def test_a_child_gets_an_adult_guardian(identity: Identity) -> None:
    child, parent = await identity.sign_up(birth_date=TEN_YEARS_OLD), await identity.sign_up()

    response = await identity.client.put(f"/v1/members/{child}/guardian", json={"guardian_id": parent})

    assert response.status_code == 202, response.text
    record = await identity.published(response.json()["event_id"])
    assert (short_type(record), subject(record)) == ("guardian_set", child)
    assert json.loads(record.value) == {"guardian_id": parent}
    assert (await identity.member(child))["guardian_id"] == parent


async def test_an_adult_member_cannot_get_a_guardian(identity: Identity) -> None:
    adult, other = await identity.sign_up(), await identity.sign_up()
    response = await identity.client.put(f"/v1/members/{adult}/guardian", json={"guardian_id": other})
    assert response.status_code == 422
    assert (await identity.member(adult))["guardian_id"] is None


async def test_a_guardian_who_is_not_a_member_is_a_404(identity: Identity) -> None:
    child = await identity.sign_up(birth_date=TEN_YEARS_OLD)
    response = await identity.client.put(f"/v1/members/{child}/guardian", json={"guardian_id": "nobody-at-all"})
    assert problem(response) == (404, "the guardian is not a member")


async def test_a_guardian_body_without_a_guardian_is_refused_by_name(identity: Identity) -> None:
    child = await identity.sign_up(birth_date=TEN_YEARS_OLD)
    response = await identity.client.put(f"/v1/members/{child}/guardian", json={})
    assert response.status_code == 422
    assert fields(response) == ["body.guardian_id"]


async def test_messages_for_a_child_go_to_the_guardian_s_email_address(identity: Identity) -> None:
    child = await identity.sign_up(name="Noor", birth_date=TEN_YEARS_OLD)
    parent = await identity.sign_up(name="Ouder van Noor", email="ouder.van.noor@example.nl")
    await identity.client.put(f"/v1/members/{child}/guardian", json={"guardian_id": parent})

    response = await identity.client.get(
        f"/internal/v1/members/{child}/contact", params={"medium": "email"}, headers=await identity.key("service")
    )

    assert response.status_code == 200, response.text
    assert response.json() == {
        "member_id": child,
        "medium": "email",
        "recipient": "guardian",
        "address": "ouder.van.noor@example.nl",
        "name": "Ouder van Noor",
    }


async def test_an_analyst_key_may_not_ask_where_to_reach_a_member(identity: Identity) -> None:
    member = await identity.sign_up()
    response = await identity.client.get(
        f"/internal/v1/members/{member}/contact", params={"medium": "email"}, headers=await identity.key("analyst")
    )
    assert problem(response) == (403, "this key lacks the role service")


async def test_messages_for_an_adult_go_to_the_member_themselves(identity: Identity) -> None:
    member = await identity.sign_up(email="sanne.contact@example.nl")
    response = await identity.client.get(
        f"/internal/v1/members/{member}/contact", params={"medium": "email"}, headers=await identity.key("service")
    )
    assert response.status_code == 200, response.text
    assert (response.json()["recipient"], response.json()["address"]) == ("member", "sanne.contact@example.nl")


async def test_an_sms_to_a_member_without_a_phone_number_is_a_conflict(identity: Identity) -> None:
    member = await identity.sign_up(phone=None)
    response = await identity.client.get(
        f"/internal/v1/members/{member}/contact", params={"medium": "sms"}, headers=await identity.key("service")
    )
    assert response.status_code == 409


async def test_asking_where_to_reach_a_member_without_a_medium_is_refused_by_name(identity: Identity) -> None:
    member = await identity.sign_up()
    response = await identity.client.get(
        f"/internal/v1/members/{member}/contact", headers=await identity.key("service")
    )
    assert response.status_code == 422
    assert fields(response) == ["query.medium"]


# ----------------------------------------------------------------------------------------------- duplicates


async def test_two_sign_ups_with_one_email_address_at_two_libraries_are_suspected_duplicates(
    identity: Identity,
) -> None:
    first = await identity.sign_up(email="Jan.Jansen@Example.nl", home_library="oba")
    second = await identity.sign_up(email="  jan.jansen@example.nl ", home_library="haarlem")

    [suspicion] = await identity.suspicions()

    assert {suspicion["member_id"], suspicion["other_member_id"]} == {first, second}
    assert {suspicion["library"], suspicion["other_library"]} == {"oba", "haarlem"}
    assert suspicion["matched_on"] == ["email"]
    [data] = [data for kind, data in await identity.events(second, "duplicate_suspected") if kind != "signed_up"]
    assert data == {"other_member_id": first, "other_library": "oba", "matched_on": ["email"]}
    assert [s["id"] for s in await identity.suspicions(await identity.key("member-data", library="oba"))] == [
        suspicion["id"]
    ]
    assert await identity.suspicions(await identity.key("member-data", library="utrecht")) == []


async def test_two_simultaneous_sign_ups_with_one_email_address_are_suspected_once(identity: Identity) -> None:
    responses = await asyncio.gather(
        *(identity.client.post("/v1/members", json=identity.person(email="gelijk@example.nl", home_library=library))
          for library in ("oba", "haarlem"))
    )  # fmt: skip
    members = {response.json()["member_id"] for response in responses}

    [suspicion] = await identity.suspicions()
    assert {suspicion["member_id"], suspicion["other_member_id"]} == members
    records = [r for member in members for r in await identity.everything_of(member)]
    assert [short_type(r) for r in records].count("duplicate_suspected") == 1


async def test_a_confirmed_duplicate_is_merged_into_the_survivor(identity: Identity) -> None:
    survivor = await identity.sign_up(email="jan@example.nl", home_library="oba")
    merged = await identity.sign_up(email="JAN@example.nl", home_library="haarlem")
    suspicion = await identity.suspicion_of(merged)

    confirmed = await identity.client.post(
        f"/v1/duplicates/{suspicion['id']}/confirm", json={"survivor_id": survivor, "confirmed_by": "desk"}
    )

    assert confirmed.status_code == 202, confirmed.text
    assert confirmed.json() == {"merged_id": merged, "survivor_id": survivor}
    [data] = [data for kind, data in await identity.events(merged, "merged") if kind == "merged"]
    assert data == {"survivor_id": survivor}
    assert (await identity.member(merged))["member_id"] == survivor
    assert await identity.suspicions() == []

    activated = await identity.client.post(f"/v1/members/{merged}/card-activation", json={"library": "haarlem"})
    assert activated.status_code == 202, activated.text
    record = await identity.published(activated.json()["event_id"])
    assert (short_type(record), subject(record)) == ("card_activated", survivor)

    again = await identity.client.post(
        f"/v1/duplicates/{suspicion['id']}/confirm", json={"survivor_id": survivor, "confirmed_by": "desk"}
    )
    assert again.status_code == 409


async def test_a_child_sharing_an_adult_s_email_address_is_never_merged_into_the_adult(identity: Identity) -> None:
    adult = await identity.sign_up(name="Moeder", email="gezin@example.nl")
    child = await identity.sign_up(name="Kind", email="gezin@example.nl", birth_date=BORN_2016)
    suspicion = await identity.suspicion_of(child)

    refused = await identity.client.post(
        f"/v1/duplicates/{suspicion['id']}/confirm", json={"survivor_id": adult, "confirmed_by": "desk"}
    )

    assert refused.status_code == 409
    assert "minor" in refused.json()["detail"]
    assert "merged" not in {short_type(r) for r in await identity.everything_of(child)}
    assert "merged" not in {short_type(r) for r in await identity.everything_of(adult)}
    assert (await identity.member(child))["name"] == "Kind"


async def test_a_dismissed_suspicion_leaves_the_list(identity: Identity) -> None:
    first = await identity.sign_up(email="twee@example.nl")
    second = await identity.sign_up(email="twee@example.nl")
    suspicion = await identity.suspicion_of(second)

    dismissed = await identity.client.post(f"/v1/duplicates/{suspicion['id']}/dismiss")

    assert dismissed.status_code == 200, dismissed.text
    assert dismissed.json() == {"id": suspicion["id"], "status": "dismissed"}
    assert await identity.suspicions() == []
    assert (await identity.member(first))["member_id"] == first
    assert (await identity.client.post(f"/v1/duplicates/{suspicion['id']}/dismiss")).status_code == 409


async def test_a_merge_must_keep_one_of_the_two_suspected_members(identity: Identity) -> None:
    await identity.sign_up(email="drie@example.nl")
    second = await identity.sign_up(email="drie@example.nl")
    bystander = await identity.sign_up()
    suspicion = await identity.suspicion_of(second)
    path = f"/v1/duplicates/{suspicion['id']}/confirm"

    stranger = await identity.client.post(path, json={"survivor_id": bystander, "confirmed_by": "desk"})
    by_whom = await identity.client.post(path, json={"survivor_id": second, "confirmed_by": "the-cat"})

    assert stranger.status_code == 422
    assert by_whom.status_code == 422
    assert fields(by_whom) == ["body.confirmed_by"]
    assert [s["id"] for s in await identity.suspicions()] == [suspicion["id"]]


async def test_confirming_or_dismissing_an_unknown_suspicion_is_a_404(identity: Identity) -> None:
    member = await identity.sign_up()
    confirm = await identity.client.post(
        "/v1/duplicates/no-such-suspicion/confirm", json={"survivor_id": member, "confirmed_by": "desk"}
    )
    dismiss = await identity.client.post("/v1/duplicates/no-such-suspicion/dismiss")
    assert [problem(confirm), problem(dismiss)] == [(404, "duplicate suspicion does not exist")] * 2


# -------------------------------------------------------------------------------------------------- erasure


async def test_an_erased_member_is_gone_and_every_service_is_told(identity: Identity) -> None:
    member = await identity.sign_up()

    erased = await identity.client.delete(f"/v1/members/{member}")

    assert erased.status_code == 202, erased.text
    record = await identity.published(erased.json()["event_id"])
    assert (short_type(record), subject(record)) == ("erased", member)
    assert json.loads(record.value) == {}
    assert problem(await identity.client.get(f"/v1/members/{member}")) == (404, "member does not exist")
    # Erasing again tells the services again (a service may have taken in later events meanwhile).
    again = await identity.client.delete(f"/v1/members/{member}")
    assert again.status_code == 202 and again.json()["event_id"] != erased.json()["event_id"]
    assert subject(await identity.published(again.json()["event_id"])) == member


async def test_a_member_identity_never_knew_is_erased_by_a_network_wide_key_only(identity: Identity) -> None:
    # A member known only from events a platform produced straight to Kafka: identity cannot tell their library.
    one_library = await identity.key("member-data", library="oba")
    refused = await identity.client.delete("/v1/members/only-kafka-knew-me", headers=one_library)
    assert problem(refused) == (403, "this key is scoped to library 'oba'")

    erased = await identity.client.delete("/v1/members/only-kafka-knew-me")

    assert erased.status_code == 202, erased.text
    record = await identity.published(erased.json()["event_id"])
    assert (short_type(record), subject(record)) == ("erased", "only-kafka-knew-me")
    assert header(record, "ce_library") is None


# ------------------------------------------------------------------------------------------- Idempotency-Key


async def test_a_sign_up_retried_with_the_same_idempotency_key_makes_one_member(identity: Identity) -> None:
    body = identity.person()
    key = {"Idempotency-Key": str(uuid.uuid4())}

    first = await identity.client.post("/v1/members", json=body, headers=key)
    retried = await identity.client.post("/v1/members", json=body, headers=key)

    assert (first.status_code, retried.status_code) == (202, 202)
    member = first.json()["member_id"]
    assert retried.json()["member_id"] == member
    assert "idempotent-replayed" not in first.headers
    assert retried.headers["idempotent-replayed"] == "true"
    signed_up = [r for r in await identity.everything_of(member) if short_type(r) == "signed_up"]
    assert len(signed_up) == 1


async def test_an_idempotency_key_used_again_for_another_sign_up_is_refused(identity: Identity) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = await identity.client.post("/v1/members", json=identity.person(), headers=key)
    assert first.status_code == 202

    other = await identity.client.post("/v1/members", json=identity.person(), headers=key)

    assert other.status_code == 422
    assert "different request" in other.json()["detail"]


# ------------------------------------------------------------------------------------------ CloudEvents ingest


async def test_a_batch_accepts_the_valid_event_and_names_the_field_each_rejected_one_fails_on(
    identity: Identity,
) -> None:
    member = await identity.sign_up(home_library="oba")
    valid = cloud_event("card_activated", member, data={"branch": "oosterdok"})
    without_id = {k: v for k, v in cloud_event("card_activated", member).items() if k != "id"}
    not_ingestible = cloud_event(
        "signed_up", member, data={"age_band": "18-64", "home_library": "oba", "postcode_area": "1034"}
    )
    other_library = cloud_event("card_activated", member, library="haarlem", source="/libraries/haarlem/kiosk")

    response = await identity.client.post(
        "/v1/events",
        content=json.dumps([valid, without_id, not_ingestible, other_library]),
        headers={"Content-Type": BATCH, **await identity.key("ingest", library="oba")},
    )

    assert response.status_code == 202, response.text
    result = response.json()
    assert result["accepted"] == [valid["id"]]
    rejected = {r["index"]: r for r in result["rejected"]}
    assert sorted(rejected) == [1, 2, 3]
    assert [e["field"] for e in rejected[1]["errors"]] == ["id"]
    assert [e["field"] for e in rejected[2]["errors"]] == ["type"]
    assert [e["field"] for e in rejected[3]["errors"]] == ["library"]
    assert (rejected[2]["id"], rejected[3]["id"]) == (not_ingestible["id"], other_library["id"])
    record = await identity.published(valid["id"])
    assert (short_type(record), subject(record), header(record, "ce_library")) == ("card_activated", member, "oba")
    published = {header(r, "ce_id") for r in await identity.everything_of(member)}
    assert not_ingestible["id"] not in published
    assert other_library["id"] not in published


async def test_a_batch_is_handled_in_order_and_leaves_the_member_s_state_for_the_next_one(identity: Identity) -> None:
    member = await identity.sign_up(platform="website")
    activated = cloud_event("card_activated", member, data={"branch": "oosterdok"})
    logged_in = cloud_event("login_succeeded", member, source="/libraries/oba/app", channel="online",
                            platform="app", data={"login_platform": "app"})  # fmt: skip
    consent = cloud_event("consent_changed", member, data={"medium": "email", "purpose": "marketing", "granted": True})

    first = await identity.client.post(
        "/v1/events", content=json.dumps([activated, logged_in]), headers={"Content-Type": BATCH}
    )
    then = await identity.client.post("/v1/events", content=json.dumps(consent), headers={"Content-Type": STRUCTURED})

    assert (first.status_code, then.status_code) == (202, 202), (first.text, then.text)
    events = await identity.events(member, "signed_up", "consent_changed")
    assert [kind for kind, _ in events] == [
        "signed_up", "channel_switched", "card_activated", "channel_switched", "login_succeeded", "consent_changed"
    ]  # fmt: skip
    switches = [(data["from_platform"], data["to_platform"]) for kind, data in events if kind == "channel_switched"]
    assert switches == [("website", "kiosk"), ("kiosk", "app")]
    seen = await identity.member(member)
    assert seen["card_activated_at"] is not None
    assert seen["consents"] == {"email:marketing": "granted"}
    # The consent change went out from where the member was last: the app.
    [record] = [r for r in await identity.records_of(member, "consent_changed") if short_type(r) == "consent_changed"]
    assert header(record, "ce_platform") == "app"


async def test_an_event_posted_again_is_accepted_and_published_once(identity: Identity) -> None:
    member = await identity.sign_up()
    event = cloud_event("card_activated", member, data={"branch": "oosterdok"})
    headers = {"Content-Type": STRUCTURED}

    first = await identity.client.post("/v1/events", content=json.dumps(event), headers=headers)
    again = await identity.client.post("/v1/events", content=json.dumps(event), headers=headers)

    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == {"accepted": [event["id"]], "rejected": []}
    copies = [r for r in await identity.everything_of(member) if header(r, "ce_id") == event["id"]]
    assert len(copies) == 1


async def test_an_event_posted_twice_at_the_same_moment_is_published_once_and_the_second_told_to_retry(
    identity: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    member = await identity.sign_up()
    event = cloud_event("card_activated", member, data={"branch": "oosterdok"})
    headers = {"Content-Type": STRUCTURED}
    # The first attempt held while it publishes, so that the retry surely comes while it is in flight.
    publisher = identity.app.state.parts.publisher
    publish_encoded, publishing, go_on = publisher.publish_encoded, asyncio.Event(), asyncio.Event()

    async def held(records: Any, **options: Any) -> None:
        if not publishing.is_set():  # the first attempt's events; what comes after (the refusal kept) goes on
            publishing.set()
            await go_on.wait()
        await publish_encoded(records, **options)

    monkeypatch.setattr(publisher, "publish_encoded", held)

    # A platform retrying while its first attempt is still in flight.
    first = asyncio.create_task(identity.client.post("/v1/events", content=json.dumps(event), headers=headers))
    await publishing.wait()
    in_flight = await identity.client.post("/v1/events", content=json.dumps(event), headers=headers)
    go_on.set()

    # One is handled; the other is told to retry, and its retry is accepted without publishing again.
    assert (await first).status_code == 202
    assert in_flight.status_code == 409
    assert in_flight.headers["retry-after"] == "1"
    again = await identity.client.post("/v1/events", content=json.dumps(event), headers=headers)
    assert again.status_code == 202
    copies = [r for r in await identity.everything_of(member) if header(r, "ce_id") == event["id"]]
    assert len(copies) == 1


async def test_a_registration_posted_as_a_cloudevent_can_be_completed_under_its_subject(identity: Identity) -> None:
    registration_id = str(uuid.uuid4())
    event = cloud_event(
        "registration_started",
        registration_id,
        source="/libraries/oba/website",
        channel="online",
        platform="website",
        data={"home_library": "oba", "source": "consultatiebureau"},
    )
    posted = await identity.client.post("/v1/events", content=json.dumps(event), headers={"Content-Type": STRUCTURED})
    assert posted.status_code == 202, posted.text
    assert posted.json()["accepted"] == [event["id"]]

    completed = await identity.client.post("/v1/members", json=identity.person(registration_id=registration_id))

    assert completed.status_code == 202, completed.text
    assert completed.json()["member_id"] == registration_id
    records = await identity.records_of(registration_id, "registration_started", "signed_up")
    [record] = [r for r in records if short_type(r) == "registration_started"]
    assert header(record, "ce_id") == event["id"]


async def test_a_single_event_with_a_branch_that_is_no_text_is_refused_naming_data_branch(
    identity: Identity,
) -> None:
    member = await identity.sign_up()
    event = cloud_event("card_activated", member, data={"branch": 42})

    response = await identity.client.post("/v1/events", content=json.dumps(event), headers={"Content-Type": STRUCTURED})

    assert response.status_code == 422
    assert fields(response) == ["data.branch"]


async def test_a_body_that_is_not_json_is_refused(identity: Identity) -> None:
    response = await identity.client.post(
        "/v1/events", content=b"<event>card activated</event>", headers={"Content-Type": STRUCTURED}
    )
    assert response.status_code == 422
    assert fields(response) == ["body"]


# ------------------------------------------------------------------------------------------------------ keys

ENDPOINTS = [
    ("POST", "/v1/registrations", {"home_library": "oba"}),
    ("POST", "/v1/members", Identity.person()),
    ("GET", "/v1/members/someone", None),
    ("DELETE", "/v1/members/someone", None),
    ("POST", "/v1/members/someone/card-activation", {"library": "oba"}),
    ("POST", "/v1/members/someone/accounts", {"platform": "ebook", "external_id": "eb-1"}),
    ("DELETE", "/v1/members/someone/accounts/ebook", None),
    ("POST", "/v1/logins", {"platform": "ebook", "external_id": "eb-1", "outcome": "succeeded"}),
    ("PUT", "/v1/members/someone/consents/email/marketing", {"granted": True}),
    ("PUT", "/v1/members/someone/guardian", {"guardian_id": "someone-else"}),
    ("GET", "/v1/duplicates", None),
    ("POST", "/v1/duplicates/some-suspicion/confirm", {"survivor_id": "someone", "confirmed_by": "desk"}),
    ("POST", "/v1/duplicates/some-suspicion/dismiss", None),
    ("GET", "/internal/v1/members/someone/contact?medium=email", None),
    ("POST", "/v1/events", [cloud_event("card_activated", "someone")]),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS])
async def test_every_endpoint_refuses_a_request_without_a_key(
    identity: Identity, method: str, path: str, body: Any
) -> None:
    response = await identity.client.request(method, path, json=body, headers={"Authorization": ""})
    assert problem(response) == (401, "send an API key: Authorization: Bearer <key>")
    assert response.headers["www-authenticate"] == "Bearer"
