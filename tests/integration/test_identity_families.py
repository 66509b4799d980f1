"""A family at the door and the one list of libraries, on the real broker and Redis: identity signs up children
with their guardian in one request, and refuses library codes the catalogue does not have."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest

from shared.events import CloudEvent
from shared.events.propositions import LibraryChanged
from shared.settings import Settings
from tests.integration.test_identity_api import (
    ADULT,
    Identity,
    cloud_event,
    identity_fixture,  # noqa: F401  (the fixture `identity`)
    short_type,
    subject,
)
from tests.support import header, problem

pytestmark = pytest.mark.integration

TODAY = datetime.now(UTC).date()
BABY = date(TODAY.year - 1, 1, 15).isoformat()
TODDLER = date(TODAY.year - 3, 6, 1).isoformat()
SIXTEEN = date(TODAY.year - 16, 1, 1).isoformat()


def guardian(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "Fatima el Amrani",
        "email": f"{uuid.uuid4().hex[:12]}@example.nl",
        "birth_date": ADULT,
        "postcode": "1034 AB",
        "language": "en",
        **overrides,
    }


def family(**overrides: Any) -> dict[str, Any]:
    """A baby signed up for BoekStart at the consultatiebureau with a parent who is not a member yet."""
    return {
        "guardian": guardian(),
        "children": [{"name": "Noor el Amrani", "birth_date": BABY}],
        "home_library": "oba",
        "platform": "partner",
        "source": "consultatiebureau",
        "proposition": "boekstart",
        "consents": [{"medium": "email", "purpose": "service"}, {"medium": "email", "purpose": "marketing"}],
        **overrides,
    }


def problem_fields(response: Any) -> list[str]:
    assert response.headers["content-type"] == "application/problem+json", response.text
    return [e["field"] for e in response.json().get("errors", [])]


async def test_a_baby_signed_up_at_the_consultatiebureau_reaches_the_guardian(identity: Identity) -> None:
    body = family()
    response = await identity.client.post("/v1/families", json=body)
    assert response.status_code == 202, response.text
    parent, [baby] = response.json()["guardian_id"], response.json()["children"]

    child = await identity.member(baby)
    assert (child["email"], child["phone"], child["guardian_id"]) == (None, None, parent)
    assert child["language"] == "en"  # the guardian's
    assert child["postcode"] == "1034 AB"  # the guardian's, as none was given
    assert (await identity.member(parent))["consents"] == {"email:service": "granted", "email:marketing": "granted"}

    # The child's guardian_set comes before their signed_up on their partition: whoever answers the sign-up (the
    # BoekStart welcome) knows already that messages go to the guardian.
    child_events = [(short_type(r), json.loads(r.value)) for r in await identity.records_of(baby, "signed_up")]
    assert [kind for kind, _ in child_events] == ["guardian_set", "signed_up"]
    signed_up = child_events[1][1]
    assert signed_up["age_band"] == "0-3"
    assert (signed_up["source"], signed_up["proposition"], signed_up["language"]) == (
        "consultatiebureau",
        "boekstart",
        "en",
    )
    assert child_events[0][1] == {"guardian_id": parent}
    parent_kinds = [short_type(r) for r in await identity.records_of(parent, "signed_up", "consent_changed")]
    assert "signed_up" in parent_kinds and "duplicate_suspected" not in parent_kinds

    service = await identity.key("service")
    contact = await identity.client.get(f"/internal/v1/members/{baby}/contact?medium=email", headers=service)
    assert contact.status_code == 200, contact.text
    assert contact.json()["recipient"] == "guardian"
    assert contact.json()["address"] == body["guardian"]["email"]
    assert contact.json()["name"] == "Fatima el Amrani"


async def test_siblings_share_their_guardian_and_nobody_in_a_family_is_a_suspected_duplicate(
    identity: Identity,
) -> None:
    parent = await identity.sign_up(name="Jan de Boer", email="jan.deboer@example.nl")
    first = await identity.client.post(
        "/v1/families", json=family(guardian=None, guardian_id=parent, children=[{"name": "Sem", "birth_date": BABY}])
    )
    second = await identity.client.post(
        "/v1/families",
        json=family(
            guardian=None,
            guardian_id=parent,
            platform="desk",
            source=None,
            children=[{"name": "Lotte", "birth_date": TODDLER}, {"name": "Bram", "birth_date": BABY}],
        ),
    )
    assert (first.status_code, second.status_code) == (202, 202), (first.text, second.text)
    children = first.json()["children"] + second.json()["children"]

    assert len(set(children)) == 3
    for child in children:
        record = await identity.member(child)
        assert (record["guardian_id"], record["email"]) == (parent, None)
    family_members = {parent, *children}
    assert not [s for s in await identity.suspicions() if {s["member_id"], s["other_member_id"]} & family_members]
    # The parent's own record keeps their own address and language.
    assert (await identity.member(parent))["email"] == "jan.deboer@example.nl"


async def test_a_family_request_is_refused_naming_what_is_wrong(identity: Identity) -> None:
    sixteen = await identity.client.post(
        "/v1/families", json=family(children=[{"name": "Sara", "birth_date": SIXTEEN}])
    )
    assert sixteen.status_code == 422
    assert problem_fields(sixteen) == ["body.children.0.birth_date"]
    assert "from 16" in sixteen.json()["detail"]

    young_guardian = await identity.client.post("/v1/families", json=family(guardian=guardian(birth_date=SIXTEEN)))
    assert (young_guardian.status_code, problem_fields(young_guardian)) == (422, ["body.guardian.birth_date"])

    both = await identity.client.post("/v1/families", json=family(guardian_id=str(uuid.uuid4())))
    assert both.status_code == 422 and "either guardian_id" in both.text

    unknown = await identity.client.post("/v1/families", json=family(guardian=None, guardian_id=str(uuid.uuid4())))
    assert problem(unknown) == (404, "member does not exist")

    tilburg = await identity.client.post("/v1/families", json=family(home_library="tilburg"))
    assert (tilburg.status_code, problem_fields(tilburg)) == (422, ["body.home_library"])


# --------------------------------------------------------------------------------------- library codes


async def test_library_codes_not_in_the_catalogue_are_refused_naming_the_field(identity: Identity) -> None:
    signed = await identity.client.post("/v1/members", json=identity.person(home_library="tilburg"))
    assert (signed.status_code, problem_fields(signed)) == (422, ["body.home_library"])
    assert signed.json()["errors"][0]["message"] == "no such library in the catalogue"

    started = await identity.client.post("/v1/registrations", json={"home_library": "tilburg"})
    assert (started.status_code, problem_fields(started)) == (422, ["body.home_library"])

    member = await identity.sign_up(home_library="midden-brabant")
    activated = await identity.client.post(f"/v1/members/{member}/card-activation", json={"library": "tilburg"})
    assert (activated.status_code, problem_fields(activated)) == (422, ["body.library"])

    posted = cloud_event("card_activated", member, source="/libraries/tilburg/kiosk", library="tilburg")
    batch = await identity.client.post(
        "/v1/events", content=json.dumps([posted]), headers={"Content-Type": "application/cloudevents-batch+json"}
    )
    assert batch.status_code == 422, batch.text
    [rejected] = batch.json()["rejected"]
    assert rejected["errors"] == [{"field": "library", "message": "no such library in the catalogue"}]
    kinds = [short_type(r) for r in await identity.everything_of(member)]
    assert "card_activated" not in kinds  # nothing published for the unknown library


async def test_a_library_added_to_the_catalogue_is_known_at_once(identity: Identity, settings: Settings) -> None:
    code = f"nieuw-{uuid.uuid4().hex[:6]}"
    assert (await identity.client.post("/v1/members", json=identity.person(home_library=code))).status_code == 422

    data = LibraryChanged(library=code, name="Bibliotheek Nieuw", postcode_areas=["8000-8010"])
    event = CloudEvent.create(data, subject=f"library:{code}", source="/propositions/catalog", library=code)
    await publish(settings, event)

    signed = await identity.client.post("/v1/members", json=identity.person(home_library=code))
    assert signed.status_code == 202, signed.text
    [record] = [r for r in await identity.records_of(signed.json()["member_id"], "signed_up")]
    assert header(record, "ce_library") == code and subject(record) == signed.json()["member_id"]


async def publish(settings: Settings, event: CloudEvent) -> None:
    from aiokafka import AIOKafkaProducer

    from shared.events.envelope import to_kafka
    from shared.topics import CATALOG

    record = to_kafka(event)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        headers = [(k, v.encode()) for k, v in record.headers.items()]
        await producer.send_and_wait(settings.topic(CATALOG.name), record.value, key=record.key, headers=headers)
    finally:
        await producer.stop()
