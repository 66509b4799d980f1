"""Usage on the real broker and Redis: loans reserved, borrowed and returned, one at a time, in batches of
thousands and as CloudEvents; each item accepted or rejected with its reason, each accepted one published once."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from services.propositions.app import create_app
from shared.events import BATCH, STRUCTURED, from_kafka
from shared.settings import Settings
from tests.integration.conftest import MakeKey
from tests.integration.test_propositions_catalogue import Propositions, fields, short_type
from tests.support import header, posted_event, problem, read_topic, running

pytestmark = pytest.mark.integration

USAGE = "propositions.usage.v1"


@pytest.fixture(name="propositions")
async def stocked_propositions(settings: Settings, admin_key: str, make_key: MakeKey) -> AsyncIterator[Propositions]:
    """The service with the catalogue's basics in it (`Propositions.basics`)."""
    async with running(create_app(settings), admin_key) as client:
        service = Propositions(client, settings, make_key)
        await service.basics()
        yield service


def loan(event: str = "borrowed", **overrides: Any) -> dict[str, Any]:
    """A book borrowed at the OBA Oosterdok kiosk, as the ILS reports it."""
    report: dict[str, Any] = {
        "event": event,
        "member_id": str(uuid.uuid4()),
        "library": "oba",
        "branch": "oosterdok",
        "channel": "offline",
        "platform": "kiosk",
        "item_id": "9789021416011",
        "format": "book",
        "time": datetime.now(UTC).isoformat(),
    }
    if event == "reserved":
        report["reservation_id"] = f"R-{uuid.uuid4().hex[:8]}"
    else:
        report["loan_id"] = f"L-{uuid.uuid4().hex[:8]}"
    return {**report, **overrides}


def cloud_event(kind: str, member_id: str, data: dict[str, Any], **attributes: Any) -> dict[str, Any]:
    """A usage event as oba's e-book platform posts it."""
    on_the_ebook_platform = {"source": "/libraries/oba/ebook", "channel": "online", "platform": "ebook"}
    return posted_event(f"nl.bibliotheek.usage.{kind}.v1", member_id, data, **{**on_the_ebook_platform, **attributes})


async def published(propositions: Propositions, *event_ids: str) -> dict[str, Any]:
    """The usage records of these event ids, read until all are there."""
    wanted = set(event_ids)
    records = await read_topic(
        propositions.settings.kafka_bootstrap,
        propositions.settings.topic(USAGE),
        until=lambda rs: wanted <= {header(r, "ce_id") for r in rs},
    )
    return {event_id: r for r in records if (event_id := header(r, "ce_id")) is not None and event_id in wanted}


# ------------------------------------------------------------------------------------------------ one loan


async def test_a_borrowed_book_is_published_under_the_member_with_library_channel_and_platform(
    propositions: Propositions,
) -> None:
    report = loan(reservation_id="R-1")

    response = await propositions.client.post(
        "/v1/loans", json=report, headers=await propositions.key("ingest", library="oba")
    )

    assert response.status_code == 202, response.text
    record = (await published(propositions, response.json()["event_id"]))[response.json()["event_id"]]
    event = from_kafka(record.value, record.headers)
    assert (short_type(record), event.subject) == ("usage.loan_borrowed", report["member_id"])
    assert (event.library, event.channel, event.platform) == ("oba", "offline", "kiosk")
    assert event.data == {
        "item_id": "9789021416011",
        "loan_id": report["loan_id"],
        "format": "book",
        "branch": "oosterdok",
        "reservation_id": "R-1",
    }


async def test_a_reservation_and_a_return_are_published_as_their_own_types(propositions: Propositions) -> None:
    reserved = await propositions.ok("POST", "/v1/loans", loan("reserved", channel="online", platform="website"))
    returned = await propositions.ok("POST", "/v1/loans", loan("returned"))

    records = await published(propositions, reserved["event_id"], returned["event_id"])

    assert short_type(records[reserved["event_id"]]) == "usage.loan_reserved"
    assert json.loads(records[reserved["event_id"]].value)["pickup_branch"] == "oosterdok"
    assert short_type(records[returned["event_id"]]) == "usage.loan_returned"


async def test_a_borrowed_loan_without_a_loan_id_is_refused_naming_it(propositions: Propositions) -> None:
    report = {k: v for k, v in loan().items() if k != "loan_id"}
    response = await propositions.client.post("/v1/loans", json=report)
    assert response.status_code == 422
    assert fields(response) == ["body.loan_id"]


async def test_a_reservation_without_a_reservation_id_is_refused_naming_it(propositions: Propositions) -> None:
    report = {k: v for k, v in loan("reserved").items() if k != "reservation_id"}
    response = await propositions.client.post("/v1/loans", json=report)
    assert response.status_code == 422
    assert fields(response) == ["body.reservation_id"]


async def test_a_loan_at_an_unknown_library_or_branch_is_refused_naming_it(propositions: Propositions) -> None:
    unknown_library = await propositions.client.post("/v1/loans", json=loan(library="atlantis"))
    other_branch = await propositions.client.post("/v1/loans", json=loan(branch="centrum"))
    assert (unknown_library.status_code, other_branch.status_code) == (422, 422)
    assert (fields(unknown_library), fields(other_branch)) == (["body.library"], ["body.branch"])


async def test_a_loan_without_channel_or_on_an_unknown_format_is_refused_naming_both(
    propositions: Propositions,
) -> None:
    report = {k: v for k, v in loan(format="scroll").items() if k != "channel"}
    response = await propositions.client.post("/v1/loans", json=report)
    assert response.status_code == 422
    assert sorted(fields(response)) == ["body.channel", "body.format"]


async def test_haarlem_s_ingest_key_cannot_report_an_oba_loan_and_marketing_cannot_report_at_all(
    propositions: Propositions,
) -> None:
    haarlem = await propositions.client.post(
        "/v1/loans", json=loan(), headers=await propositions.key("ingest", library="haarlem")
    )
    marketing = await propositions.client.post("/v1/loans", json=loan(), headers=await propositions.key("marketing"))
    assert problem(haarlem) == (403, "body.library: this key is scoped to library 'haarlem'")
    assert problem(marketing) == (403, "this key lacks the role ingest")
    assert fields(haarlem) == ["body.library"]


async def test_a_report_posted_again_with_its_id_is_accepted_and_published_once(propositions: Propositions) -> None:
    report = loan(id=f"ils-{uuid.uuid4()}")

    first = await propositions.client.post("/v1/loans", json=report)
    again = await propositions.client.post("/v1/loans", json=report)

    assert (first.status_code, again.status_code) == (202, 202)
    assert first.json() == again.json() == {"event_id": report["id"]}
    await published(propositions, report["id"])
    ids = [header(r, "ce_id") for r in await propositions.usage_records()]
    assert ids.count(report["id"]) == 1


# ------------------------------------------------------------------------------------------------- batches


async def test_a_batch_accepts_the_good_reports_and_names_why_each_other_one_is_rejected(
    propositions: Propositions,
) -> None:
    good = [loan(), loan("reserved"), loan("returned", id="ils-ret-1")]
    bad = [
        {k: v for k, v in loan().items() if k != "loan_id"},  # 3: no loan id
        loan(library="haarlem", branch="centrum"),  # 4: outside the key's scope
        loan(branch="centrum"),  # 5: not an OBA branch
        "not a report",  # 6
        loan(event="lost"),  # 7
    ]

    response = await propositions.client.post(
        "/v1/loans/batch", json={"loans": good + bad}, headers=await propositions.key("ingest", library="oba")
    )

    assert response.status_code == 202, response.text
    result = response.json()
    assert len(result["accepted"]) == 3 and result["accepted"][2] == "ils-ret-1"
    rejected = {r["index"]: r for r in result["rejected"]}
    assert sorted(rejected) == [3, 4, 5, 6, 7]
    assert [e["field"] for e in rejected[3]["errors"]] == ["loan_id"]
    assert (rejected[4]["status"], rejected[4]["errors"][0]["field"]) == (403, "library")
    assert [e["field"] for e in rejected[5]["errors"]] == ["branch"]
    assert rejected[6]["status"] == 422
    assert [e["field"] for e in rejected[7]["errors"]] == ["event"]
    records = await published(propositions, *result["accepted"])
    assert {header(r, "ce_subject") for r in records.values()} == {g["member_id"] for g in good}


async def test_a_batch_with_nothing_acceptable_is_a_422_listing_every_report(propositions: Propositions) -> None:
    response = await propositions.client.post(
        "/v1/loans/batch", json={"loans": [{"event": "borrowed"}, loan(library="x")]}
    )
    assert response.status_code == 422
    assert [r["index"] for r in response.json()["rejected"]] == [0, 1]


async def test_an_empty_or_oversized_batch_is_refused_naming_loans(propositions: Propositions) -> None:
    empty = await propositions.client.post("/v1/loans/batch", json={"loans": []})
    oversized = await propositions.client.post("/v1/loans/batch", json={"loans": [{}] * 20_001})
    assert (empty.status_code, oversized.status_code) == (422, 422)
    assert fields(empty) == fields(oversized) == ["body.loans"]


async def test_a_batch_of_ten_thousand_loans_is_accepted_in_one_request_and_each_appears_once(
    propositions: Propositions,
) -> None:
    reports = [loan(id=f"bulk-{i:05d}", member_id=f"member-{i % 997}") for i in range(10_000)]
    reports[1_234] = loan(id="bulk-01234", platform="ebook", channel="online", format="ebook", branch=None)

    response = await propositions.client.post("/v1/loans/batch", json={"loans": reports}, timeout=120)

    assert response.status_code == 202, response.text[:500]
    result = response.json()
    assert result["rejected"] == []
    assert result["accepted"] == [r["id"] for r in reports]
    records = await read_topic(
        propositions.settings.kafka_bootstrap,
        propositions.settings.topic(USAGE),
        until=lambda rs: len(rs) >= 10_000,
        within=60,
    )
    everything = await propositions.usage_records()
    copies = Counter(header(r, "ce_id") for r in everything)
    assert len(records) == len(everything) == 10_000
    assert set(copies) == {r["id"] for r in reports} and set(copies.values()) == {1}
    keys = {r.key.decode() for r in everything if header(r, "ce_id") == "bulk-00042"}
    assert keys == {"member-42"}  # keyed by member, so a member's loans stay in order


async def test_a_batch_posted_again_publishes_nothing_new(propositions: Propositions) -> None:
    reports = [loan(id=f"again-{uuid.uuid4()}") for _ in range(50)]
    first = await propositions.client.post("/v1/loans/batch", json={"loans": reports})
    again = await propositions.client.post("/v1/loans/batch", json={"loans": reports})

    assert first.json()["accepted"] == again.json()["accepted"]
    await published(propositions, *first.json()["accepted"])
    assert len(await propositions.usage_records()) == 50


async def test_one_id_twice_in_a_batch_is_published_once_and_the_second_told_to_post_again(
    propositions: Propositions,
) -> None:
    twice = loan(id="ils-twice")
    response = await propositions.client.post("/v1/loans/batch", json={"loans": [twice, twice]})
    assert response.json()["accepted"] == ["ils-twice"]
    [rejected] = response.json()["rejected"]
    assert (rejected["index"], rejected["status"]) == (1, 409)


# ---------------------------------------------------------------------------------------------- CloudEvents


async def test_loans_posted_as_cloudevents_are_checked_one_by_one_and_published_together(
    propositions: Propositions,
) -> None:
    member_id = str(uuid.uuid4())
    ebook = {"item_id": "9789044652144", "loan_id": "EB-88213", "format": "ebook"}
    valid = cloud_event("loan_borrowed", member_id, ebook)
    returned = cloud_event("loan_returned", member_id, {"item_id": "9789044652144", "loan_id": "EB-88213"})
    unknown_library = cloud_event("loan_borrowed", member_id, ebook, library="atlantis")
    no_channel = {k: v for k, v in cloud_event("loan_borrowed", member_id, ebook).items() if k != "channel"}
    library = {"library": "oba", "name": "OBA"}
    catalogue_type = cloud_event("loan_borrowed", member_id, library, type="nl.bibliotheek.catalog.library_changed.v1")
    bad_branch = cloud_event(
        "loan_reserved", member_id, {"item_id": "x", "reservation_id": "r", "pickup_branch": "centrum"}
    )

    response = await propositions.client.post(
        "/v1/events",
        content=json.dumps([valid, returned, unknown_library, no_channel, catalogue_type, bad_branch]),
        headers={"Content-Type": BATCH, **await propositions.key("ingest", library="oba")},
    )

    assert response.status_code == 202, response.text
    result = response.json()
    assert result["accepted"] == [valid["id"], returned["id"]]
    rejected = {r["index"]: [e["field"] for e in r["errors"]] for r in result["rejected"]}
    assert rejected == {2: ["library"], 3: ["channel"], 4: ["type"], 5: ["data.pickup_branch"]}
    records = await published(propositions, valid["id"], returned["id"])
    event = from_kafka(records[valid["id"]].value, records[valid["id"]].headers)
    assert (event.subject, event.platform, event.data["format"]) == (member_id, "ebook", "ebook")


async def test_a_loan_posted_as_a_cloudevent_again_is_accepted_and_published_once(propositions: Propositions) -> None:
    event = cloud_event("loan_borrowed", str(uuid.uuid4()), {"item_id": "i", "loan_id": "l"})
    headers = {"Content-Type": STRUCTURED}

    first = await propositions.client.post("/v1/events", content=json.dumps(event), headers=headers)
    again = await propositions.client.post("/v1/events", content=json.dumps(event), headers=headers)

    assert (first.status_code, again.status_code) == (202, 202)
    await published(propositions, event["id"])
    assert [header(r, "ce_id") for r in await propositions.usage_records()] == [event["id"]]


async def test_a_single_loan_event_of_another_library_is_a_403_and_a_malformed_one_a_422(
    propositions: Propositions,
) -> None:
    haarlem = cloud_event("loan_borrowed", "m", {"item_id": "i", "loan_id": "l"}, library="haarlem")
    malformed = cloud_event("loan_borrowed", "m", {"item_id": "i"})
    headers = {"Content-Type": STRUCTURED, **await propositions.key("ingest", library="oba")}

    scoped = await propositions.client.post("/v1/events", content=json.dumps(haarlem), headers=headers)
    invalid = await propositions.client.post("/v1/events", content=json.dumps(malformed), headers=headers)

    assert problem(scoped) == (403, "this key is scoped to library 'oba'")
    assert invalid.status_code == 422
    assert fields(invalid) == ["data.loan_id"]
