"""Activities on the real broker and Redis: sessions scheduled, members registered within the capacity, attendance
recorded, and an erased member leaving every session."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from shared.events import BATCH, STRUCTURED, CloudEvent, to_kafka
from shared.events.members import MemberErased
from tests.integration.test_propositions_catalogue import Propositions, fields, latest, short_type, soon
from tests.integration.test_propositions_usage import cloud_event, stocked_propositions  # noqa: F401  (`propositions`)
from tests.support import eventually, header, problem, read_topic

pytestmark = pytest.mark.integration


def session(**overrides: Any) -> dict[str, Any]:
    """A Taalcafé at OBA Banne tomorrow afternoon."""
    return {
        "proposition": "taalcafe",
        "library": "oba",
        "branch": "banne",
        "title": "Taalcafé Noord",
        "starts_at": soon(1),
        "ends_at": soon(1, 2),
        "capacity": 12,
        **overrides,
    }


async def schedule(propositions: Propositions, **overrides: Any) -> str:
    return str((await propositions.ok("POST", "/v1/activities", session(**overrides)))["activity_id"])


def starting() -> dict[str, str]:
    """A session starting in half an hour: attendance is recorded from an hour before the start."""
    return {"starts_at": soon(0, 0.5), "ends_at": soon(0, 2.5)}


def member() -> str:
    return str(uuid.uuid4())


async def usage_of(propositions: Propositions, member_id: str, count: int = 1) -> list[tuple[str, dict[str, Any]]]:
    """(type, data) of a member's usage events, read until `count` are there."""
    records = await read_topic(
        propositions.settings.kafka_bootstrap,
        propositions.settings.topic("propositions.usage.v1"),
        until=lambda rs: sum(header(r, "ce_subject") == member_id for r in rs) >= count,
    )
    return [(short_type(r), json.loads(r.value)) for r in records if header(r, "ce_subject") == member_id]


def posted(kind: str, member_id: str, activity_id: str, **attributes: Any) -> dict[str, Any]:
    """A usage event of a taalcafé session, posted by oba's kiosk."""
    at_the_kiosk = {"source": "/libraries/oba/kiosk", "channel": "offline", "platform": "kiosk"}
    data = {"activity_id": activity_id, "proposition": "taalcafe"}
    return {**cloud_event(kind, member_id, data, **at_the_kiosk), **attributes}


# ----------------------------------------------------------------------------------------------- schedule


async def test_a_scheduled_session_is_shown_with_its_places_and_published_on_the_catalogue_topic(
    propositions: Propositions,
) -> None:
    response = await propositions.client.post(
        "/v1/activities", json=session(), headers=await propositions.key("marketing", library="oba")
    )

    assert response.status_code == 202, response.text
    activity = response.json()
    assert activity["activity_id"].startswith("oba.taalcafe.")
    assert (activity["capacity"], activity["registered"], activity["places_left"]) == (12, 0, 12)
    assert activity["starts_at"].endswith(("+01:00", "+02:00"))  # shown in Amsterdam
    assert await propositions.ok("GET", f"/v1/activities/{activity['activity_id']}") == activity
    record = latest(await propositions.catalogue_records())[activity["activity_id"]]
    assert short_type(record) == "catalog.activity_scheduled"
    assert json.loads(record.value)["capacity"] == 12


async def test_sessions_are_listed_by_library_proposition_and_branch_in_start_order(propositions: Propositions) -> None:
    later = await schedule(propositions, starts_at=soon(3), ends_at=soon(3, 2))
    sooner = await schedule(propositions)
    await propositions.ok("PUT", "/v1/offerings/oba.boekstart", {"branches": ["oosterdok"], "channels": ["offline"]})
    elsewhere = await schedule(propositions, proposition="boekstart", branch="oosterdok")

    async def ids(**query: str) -> list[str]:
        return [a["activity_id"] for a in await propositions.everything("/v1/activities", **query)]

    assert await ids(proposition="taalcafe") == [sooner, later]
    assert await ids(branch="oosterdok") == [elsewhere]
    assert await ids(library="haarlem") == []
    assert await ids(before=soon(2)) == [sooner, elsewhere]  # scheduled in that order, each a day ahead
    bad = await propositions.client.get("/v1/activities", params={"from": "tomorrow"})
    assert bad.status_code == 422
    assert fields(bad) == ["query.from"]


async def test_a_session_of_something_the_library_does_not_offer_is_a_409(propositions: Propositions) -> None:
    response = await propositions.client.post("/v1/activities", json=session(proposition="ebooks"))
    assert response.status_code == 409
    assert "does not offer" in response.json()["detail"]


async def test_a_session_ending_before_it_starts_is_refused_naming_ends_at(propositions: Propositions) -> None:
    response = await propositions.client.post("/v1/activities", json=session(ends_at=soon(0.5)))
    assert response.status_code == 422
    assert fields(response) == ["body.ends_at"]


async def test_a_session_at_a_branch_of_another_library_is_refused_naming_branch(propositions: Propositions) -> None:
    response = await propositions.client.post("/v1/activities", json=session(branch="centrum"))
    assert response.status_code == 422
    assert fields(response) == ["body.branch"]


async def test_a_session_without_capacity_is_refused_naming_it(propositions: Propositions) -> None:
    response = await propositions.client.post("/v1/activities", json=session(capacity=0))
    assert response.status_code == 422
    assert fields(response) == ["body.capacity"]


async def test_haarlem_s_marketing_cannot_schedule_at_the_oba(propositions: Propositions) -> None:
    response = await propositions.client.post(
        "/v1/activities", json=session(), headers=await propositions.key("marketing", library="haarlem")
    )
    assert problem(response) == (403, "this key is scoped to library 'haarlem'")


async def test_an_unknown_session_is_a_404(propositions: Propositions) -> None:
    assert problem(await propositions.client.get("/v1/activities/oba.taalcafe.000000000000")) == (
        404,
        "activity does not exist",
    )
    malformed = await propositions.client.get("/v1/activities/taalcafe")
    assert malformed.status_code == 422
    assert fields(malformed) == ["path.activity_id"]


async def test_a_cancelled_session_takes_no_registrations_and_cannot_be_cancelled_twice(
    propositions: Propositions,
) -> None:
    activity_id = await schedule(propositions)

    cancelled = await propositions.client.delete(f"/v1/activities/{activity_id}")
    twice = await propositions.client.delete(f"/v1/activities/{activity_id}")
    registration = await propositions.client.post(
        f"/v1/activities/{activity_id}/registrations", json={"member_id": member()}
    )

    assert (cancelled.status_code, twice.status_code, registration.status_code) == (202, 409, 409)
    assert (await propositions.ok("GET", f"/v1/activities/{activity_id}"))["status"] == "cancelled"
    assert (await propositions.ok("GET", "/v1/activities"))["items"] == []
    assert short_type(latest(await propositions.catalogue_records())[activity_id]) == "catalog.activity_cancelled"
    assert problem(await propositions.client.delete("/v1/activities/oba.taalcafe.000000000000")) == (
        404,
        "activity does not exist",
    )


# ---------------------------------------------------------------------------------------------- registration


async def test_a_registered_member_takes_a_place_and_the_registration_is_published_under_the_member(
    propositions: Propositions,
) -> None:
    activity_id = await schedule(propositions, capacity=3)
    someone = member()

    response = await propositions.client.post(
        f"/v1/activities/{activity_id}/registrations",
        json={"member_id": someone, "platform": "app"},
        headers=await propositions.key("ingest", library="oba"),
    )

    assert response.status_code == 202, response.text
    assert response.json()["member_id"] == someone
    assert (await propositions.ok("GET", f"/v1/activities/{activity_id}"))["places_left"] == 2
    [(kind, data)] = await usage_of(propositions, someone)
    assert kind == "usage.activity_registered"
    assert data == {"activity_id": activity_id, "proposition": "taalcafe"}


async def test_a_member_registered_already_is_a_409(propositions: Propositions) -> None:
    activity_id = await schedule(propositions)
    someone = {"member_id": member()}
    first = await propositions.client.post(f"/v1/activities/{activity_id}/registrations", json=someone)

    again = await propositions.client.post(f"/v1/activities/{activity_id}/registrations", json=someone)

    assert (first.status_code, again.status_code) == (202, 409)
    assert "registered" in again.json()["detail"]
    assert (await propositions.ok("GET", f"/v1/activities/{activity_id}"))["registered"] == 1


async def test_a_full_session_turns_away_everyone_over_capacity_even_all_at_once(propositions: Propositions) -> None:
    activity_id = await schedule(propositions, capacity=3)

    answers = await asyncio.gather(
        *(
            propositions.client.post(f"/v1/activities/{activity_id}/registrations", json={"member_id": member()})
            for _ in range(8)
        )
    )

    assert sorted(a.status_code for a in answers) == [202] * 3 + [409] * 5
    assert {a.json()["detail"] for a in answers if a.status_code == 409} == {"the activity is full"}
    shown = await propositions.ok("GET", f"/v1/activities/{activity_id}")
    assert (shown["registered"], shown["places_left"]) == (3, 0)


async def test_haarlem_s_ingest_key_cannot_register_members_for_an_oba_session(propositions: Propositions) -> None:
    activity_id = await schedule(propositions)
    response = await propositions.client.post(
        f"/v1/activities/{activity_id}/registrations",
        json={"member_id": member()},
        headers=await propositions.key("ingest", library="haarlem"),
    )
    assert problem(response) == (403, "this key is scoped to library 'haarlem'")


async def test_a_marketing_key_cannot_register_members(propositions: Propositions) -> None:
    activity_id = await schedule(propositions)
    response = await propositions.client.post(
        f"/v1/activities/{activity_id}/registrations",
        json={"member_id": member()},
        headers=await propositions.key("marketing"),
    )
    assert problem(response) == (403, "this key lacks the role ingest")


async def test_registering_for_an_unknown_session_is_a_404(propositions: Propositions) -> None:
    response = await propositions.client.post(
        "/v1/activities/oba.taalcafe.000000000000/registrations", json={"member_id": member()}
    )
    assert problem(response) == (404, "activity does not exist")


async def test_a_registration_without_a_member_is_refused_naming_member_id(propositions: Propositions) -> None:
    activity_id = await schedule(propositions)
    response = await propositions.client.post(f"/v1/activities/{activity_id}/registrations", json={"platform": "app"})
    assert response.status_code == 422
    assert fields(response) == ["body.member_id"]


async def test_a_registration_retried_with_its_idempotency_key_takes_one_place(propositions: Propositions) -> None:
    activity_id = await schedule(propositions)
    body, key = {"member_id": member()}, {"Idempotency-Key": str(uuid.uuid4())}
    path = f"/v1/activities/{activity_id}/registrations"

    first = await propositions.client.post(path, json=body, headers=key)
    retried = await propositions.client.post(path, json=body, headers=key)

    assert (first.status_code, retried.status_code) == (202, 202)
    assert retried.json()["event_id"] == first.json()["event_id"]
    assert (await propositions.ok("GET", f"/v1/activities/{activity_id}"))["registered"] == 1


# ------------------------------------------------------------------------------------------------ attendance


async def test_attendance_says_whether_the_member_registered_or_walked_in(propositions: Propositions) -> None:
    activity_id = await schedule(propositions, **starting())
    registered, walked_in = member(), member()
    await propositions.ok("POST", f"/v1/activities/{activity_id}/registrations", {"member_id": registered})
    path = f"/v1/activities/{activity_id}/attendance"

    first = await propositions.client.post(path, json={"member_id": registered, "platform": "desk"})
    second = await propositions.client.post(path, json={"member_id": walked_in, "platform": "kiosk"})

    assert (first.status_code, second.status_code) == (202, 202)
    assert (first.json()["walk_in"], second.json()["walk_in"]) == (False, True)
    events = await usage_of(propositions, registered, 2)
    assert events[-1] == (
        "usage.activity_attended",
        {"activity_id": activity_id, "proposition": "taalcafe", "walk_in": False},
    )
    [(kind, data)] = await usage_of(propositions, walked_in)
    assert (kind, data["walk_in"]) == ("usage.activity_attended", True)


async def test_attendance_for_a_session_that_has_not_started_is_refused(propositions: Propositions) -> None:
    next_year = await schedule(propositions, starts_at=soon(365), ends_at=soon(365, 2))

    refused = await propositions.client.post(f"/v1/activities/{next_year}/attendance", json={"member_id": member()})

    assert refused.status_code == 409, refused.text
    assert refused.json()["detail"].startswith("the session has not started")
    assert (await propositions.ok("GET", f"/v1/activities/{next_year}"))["registered"] == 0


async def test_attendance_recorded_twice_is_a_409(propositions: Propositions) -> None:
    activity_id = await schedule(propositions, **starting())
    someone = {"member_id": member()}
    path = f"/v1/activities/{activity_id}/attendance"
    assert (await propositions.client.post(path, json=someone)).status_code == 202
    again = await propositions.client.post(path, json=someone)
    assert again.status_code == 409


async def test_attendance_at_an_unknown_session_is_a_404_and_from_another_library_a_403(
    propositions: Propositions,
) -> None:
    activity_id = await schedule(propositions, **starting())
    unknown = await propositions.client.post(
        "/v1/activities/oba.taalcafe.000000000000/attendance", json={"member_id": member()}
    )
    other = await propositions.client.post(
        f"/v1/activities/{activity_id}/attendance",
        json={"member_id": member()},
        headers=await propositions.key("ingest", library="haarlem"),
    )
    assert problem(unknown) == (404, "activity does not exist")
    assert problem(other) == (403, "this key is scoped to library 'haarlem'")


async def test_attendance_on_an_unknown_channel_is_refused_naming_it(propositions: Propositions) -> None:
    activity_id = await schedule(propositions, **starting())
    response = await propositions.client.post(
        f"/v1/activities/{activity_id}/attendance", json={"member_id": member(), "channel": "telepathy"}
    )
    assert response.status_code == 422
    assert fields(response) == ["body.channel"]


# -------------------------------------------------------------------------------------------- as CloudEvents


async def test_registrations_and_attendance_posted_as_cloudevents_take_places_and_keep_their_ids(
    propositions: Propositions,
) -> None:
    activity_id = await schedule(propositions, **starting(), capacity=1)
    first, second = member(), member()
    registrations = [
        posted("activity_registered", first, activity_id),
        posted("activity_registered", second, activity_id),
    ]
    attendance = posted("activity_attended", first, activity_id)

    response = await propositions.client.post(
        "/v1/events",
        content=json.dumps([*registrations, attendance]),
        headers={"Content-Type": BATCH, **await propositions.key("ingest", library="oba")},
    )

    assert response.status_code == 202, response.text
    result = response.json()
    assert result["accepted"] == [registrations[0]["id"], attendance["id"]]
    [full] = result["rejected"]
    assert (full["index"], full["status"], full["errors"][0]["field"]) == (1, 409, "data.activity_id")
    assert "full" in full["errors"][0]["message"]
    events = await usage_of(propositions, first, 2)
    assert [kind for kind, _ in events] == ["usage.activity_registered", "usage.activity_attended"]
    records = await propositions.usage_records()
    assert {header(r, "ce_id") for r in records} == {registrations[0]["id"], attendance["id"]}


async def test_a_posted_registration_naming_another_proposition_is_refused_naming_it(
    propositions: Propositions,
) -> None:
    activity_id = await schedule(propositions, **starting())
    event = posted(
        "activity_registered", member(), activity_id, data={"activity_id": activity_id, "proposition": "boekstart"}
    )

    response = await propositions.client.post(
        "/v1/events", content=json.dumps(event), headers={"Content-Type": STRUCTURED}
    )

    assert response.status_code == 422
    assert fields(response) == ["data.proposition"]


# --------------------------------------------------------------------------------------------------- erasure


async def test_an_erased_member_leaves_every_session_and_frees_their_place(propositions: Propositions) -> None:
    activity_id = await schedule(propositions, **starting(), capacity=2)
    erased, staying = member(), member()
    for someone in (erased, staying):
        await propositions.ok("POST", f"/v1/activities/{activity_id}/registrations", {"member_id": someone})
    await propositions.ok("POST", f"/v1/activities/{activity_id}/attendance", {"member_id": erased})

    record = to_kafka(CloudEvent.create(MemberErased(), subject=erased, source="/identity/erasure"))
    producer = AIOKafkaProducer(bootstrap_servers=propositions.settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            propositions.settings.topic("identity.members.v1"),
            record.value,
            key=record.key,
            headers=[(k, v.encode()) for k, v in record.headers.items()],
        )
    finally:
        await producer.stop()

    async def freed() -> bool:
        registered: int = (await propositions.ok("GET", f"/v1/activities/{activity_id}"))["registered"]
        return registered == 1

    await eventually(freed)
    # The place is free again, and the erased member could be registered anew like anyone.
    assert (await propositions.ok("GET", f"/v1/activities/{activity_id}"))["places_left"] == 1
    again = await propositions.client.post(f"/v1/activities/{activity_id}/registrations", json={"member_id": staying})
    assert again.status_code == 409
