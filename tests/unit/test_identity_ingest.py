"""identity's posted events as one batch: handled in order, as one by one would, without I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from services.identity.ingest import Plan, plan
from services.identity.records import MemberChange
from services.identity.store import Standing
from services.identity.touches import Touch, member_event, member_record
from shared.auth import NETWORK, Principal
from shared.events import CloudEvent, EventData, from_kafka
from shared.events.members import CardActivated, ConsentChanged, LoginSucceeded, RegistrationStarted
from shared.ingest import Item
from shared.publishing import encoded

NETWORK_KEY = Principal("k1", "kiosks", frozenset({"ingest"}), NETWORK)
HAARLEM_KEY = Principal("k2", "haarlem", frozenset({"ingest"}), "haarlem")
AT = datetime(2026, 11, 23, 10, 15, tzinfo=UTC)
SANNE, BRAM = "member-sanne", "member-bram"


def item(index: int, data: EventData, subject: str, platform: str = "kiosk", library: str = "oba") -> Item:
    event = CloudEvent.create(
        data,
        id=str(uuid.uuid4()),
        subject=subject,
        source=f"/libraries/{library}/{platform}",
        library=library,
        platform=platform,
        time=AT,
    )
    return Item(index, event, data)


def on_the_website(member_id: str, library: str = "oba") -> Standing:
    return Standing(member_id, library, ("online", "website"))


def published(result: Plan) -> list[CloudEvent]:
    """The planned records as their consumers read them."""
    return [from_kafka(record.value, record.headers) for record in result.events]


def types(events: list[CloudEvent]) -> list[str]:
    return [e.type.removeprefix("nl.bibliotheek.member.").removesuffix(".v1") for e in events]


def test_a_login_after_a_card_activation_in_one_batch_switches_from_where_the_activation_left_the_member() -> None:
    items = [item(0, CardActivated(branch="oosterdok"), SANNE), item(1, LoginSucceeded(login_platform="app"), SANNE)]

    result = plan(items, {SANNE: on_the_website(SANNE)}, NETWORK_KEY)

    assert types(published(result)) == ["channel_switched", "card_activated", "channel_switched", "login_succeeded"]
    first, second = published(result)[0].data, published(result)[2].data
    assert (first["from_platform"], first["to_platform"]) == ("website", "kiosk")
    assert (second["from_platform"], second["to_platform"]) == ("kiosk", "app")
    assert result.changes.members[SANNE] == MemberChange(
        last_channel="online", last_platform="app", card_activated_at=AT
    )
    assert result.refused == {}


def test_the_same_batch_planned_again_publishes_the_same_event_ids() -> None:
    """A retry after a 503 changed nothing, so it publishes what the first attempt tried to, under the same ids."""
    items = [item(0, CardActivated(branch="oosterdok"), SANNE)]
    standings = {SANNE: on_the_website(SANNE)}

    first, retry = plan(items, standings, NETWORK_KEY), plan(items, standings, NETWORK_KEY)

    assert [e.event_id for e in first.events] == [e.event_id for e in retry.events]


def test_an_unknown_member_is_refused_and_the_rest_of_the_batch_goes_on() -> None:
    items = [item(0, CardActivated(), "nobody"), item(1, CardActivated(), BRAM)]
    standings = {"nobody": Standing("nobody", None, None), BRAM: Standing(BRAM, "oba", ("offline", "kiosk"))}

    result = plan(items, standings, NETWORK_KEY)

    assert result.refused[0].status == 404
    assert [(e.subject, t) for e, t in zip(published(result), types(published(result)), strict=True)] == [
        (BRAM, "card_activated")
    ]
    assert set(result.changes.members) == {BRAM}


def test_events_of_a_merged_member_are_published_under_the_survivor() -> None:
    result = plan([item(0, CardActivated(), "old-id")], {"old-id": Standing(SANNE, "oba", None)}, NETWORK_KEY)

    assert [e.subject for e in published(result)] == [SANNE]
    assert SANNE in result.changes.members


def test_a_haarlem_key_may_not_change_the_consent_of_an_oba_member() -> None:
    consent = ConsentChanged(medium="email", purpose="marketing", granted=True)

    result = plan([item(0, consent, SANNE, library="haarlem")], {SANNE: on_the_website(SANNE)}, HAARLEM_KEY)

    assert result.refused[0].status == 403
    assert result.events == []
    assert result.changes.consents == {}


def test_a_consent_change_is_stored_and_published_from_where_the_member_last_was() -> None:
    consent = ConsentChanged(medium="email", purpose="marketing", granted=False)

    result = plan([item(0, consent, SANNE)], {SANNE: on_the_website(SANNE)}, NETWORK_KEY)

    [event] = published(result)
    assert (event.platform, event.source) == ("website", "/identity/consents")
    assert result.changes.consents == {SANNE: {"email:marketing": False}}


def test_a_registration_under_the_id_of_an_existing_member_is_a_conflict() -> None:
    started = RegistrationStarted(home_library="oba")

    result = plan(
        [item(0, started, SANNE), item(1, started, "new-registration")],
        {SANNE: on_the_website(SANNE), "new-registration": Standing("new-registration", None, None)},
        NETWORK_KEY,
    )

    assert result.refused[0].status == 409
    assert [e.subject for e in published(result)] == ["new-registration"]
    assert result.changes.registrations["new-registration"].home_library == "oba"


def test_a_record_built_straight_is_the_record_of_the_event_model() -> None:
    """The ingest skips the CloudEvent model; consumers must not see the difference."""
    touch = Touch("oba", "kiosk", AT, "/libraries/oba/kiosk")
    data = LoginSucceeded(login_platform="kiosk")

    assert member_record(data, SANNE, touch, "e-1") == encoded(member_event(data, SANNE, touch, "e-1"))
