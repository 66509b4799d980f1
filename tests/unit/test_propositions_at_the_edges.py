"""Propositions' rules at their edges: the first and last postcode of a range, ranges that touch, a session that
ends this very moment, the last free place, a page of exactly the limit."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from services.propositions import domain
from services.propositions.domain import ActivityQuery, OfferingQuery
from shared.events import CloudEvent
from shared.events.members import MemberErased
from tests.unit.test_propositions_domain import NOW, activity, library, offering, proposition


@pytest.mark.parametrize(
    ("ranges", "joined"),
    [
        (["1034", "1000-1033"], ["1000-1034"]),  # adjacent: one range
        (["1000-1032", "1034"], ["1000-1032", "1034"]),  # a gap of one area: two
        (["1000-1109", "1034-1040"], ["1000-1109"]),  # inside another
        (["1100-1200", "1000-1100"], ["1000-1200"]),  # sharing one area
        (["1034", "1034"], ["1034"]),
    ],
)
def test_ranges_that_touch_or_overlap_are_one_range(ranges: list[str], joined: list[str]) -> None:
    assert domain.normalise_areas(ranges) == joined


@pytest.mark.parametrize(("area", "served"), [("0999", False), ("1000", True), ("1109", True), ("1110", False)])
def test_a_library_serves_the_first_and_last_area_of_its_range(area: str, served: bool) -> None:
    assert domain.serves(library(areas=("1000-1109",)), area) is served


def test_ranges_that_share_only_their_edge_overlap_there() -> None:
    assert domain.overlaps(["1000-1034"], ["1034-1100"]) == ["1034"]
    assert domain.overlaps(["1000-1033"], ["1034-1100"]) == []
    assert domain.overlaps(["1000-1010", "2000-2010"], ["1005-2005"]) == ["1005-1010", "2000-2005"]
    conflicts = domain.area_conflicts("oba", ["1000-1050"], [library("oba"), library("zaanstad", ("1040-1060",))])
    assert conflicts == {"zaanstad": ["1040-1050"]}


def test_a_session_ending_now_is_closed_for_registration_and_one_ending_a_second_later_is_open() -> None:
    ends_now = activity(starts_in=timedelta(hours=-2))
    assert domain.registration_refusal(ends_now, NOW) == "the activity has ended"
    assert domain.registration_refusal(activity(starts_in=timedelta(hours=-2, seconds=1)), NOW) is None
    assert domain.registration_refusal(activity(cancelled=True), NOW) == "the activity is cancelled"


@pytest.mark.parametrize(("registered", "left"), [(0, 12), (11, 1), (12, 0), (13, 0)])
def test_the_last_place_is_left_until_the_session_is_full(registered: int, left: int) -> None:
    assert domain.places_left(activity(), registered) == left


def test_a_page_of_exactly_the_limit_is_the_last_and_one_more_item_makes_another() -> None:
    assert domain.page(["a", "b"], str, None, 2) == (["a", "b"], None)
    assert domain.page(["a", "b", "c"], str, None, 2) == (["a", "b"], "b")
    assert domain.page(["a", "b", "c"], str, "b", 2) == (["c"], None)
    assert domain.page(["a", "b", "c"], str, "c", 2) == ([], None)


def test_sessions_from_a_moment_include_one_starting_then_and_before_a_moment_exclude_it() -> None:
    tomorrow = activity()
    start = NOW + timedelta(days=1)
    assert domain.activity_matches(tomorrow, ActivityQuery(starts_from=start))
    assert not domain.activity_matches(tomorrow, ActivityQuery(starts_from=start + timedelta(seconds=1)))
    assert not domain.activity_matches(tomorrow, ActivityQuery(starts_before=start))
    assert domain.activity_matches(tomorrow, ActivityQuery(starts_before=start + timedelta(seconds=1)))
    assert domain.activity_matches(tomorrow, ActivityQuery(proposition="taalcafe", library="oba"))
    assert not domain.activity_matches(tomorrow, ActivityQuery(proposition="boekstart"))
    assert not domain.activity_matches(tomorrow, ActivityQuery(library="zaanstad"))


def test_offerings_are_found_by_proposition_library_channel_and_status() -> None:
    props = {"boekstart": proposition(), "taalcafe": proposition("taalcafe", theme="digital-skills")}
    offerings = [
        offering("oba", "boekstart"),
        offering("oba", "taalcafe", channels=["online"], branches=[]),
        offering("zaanstad", "boekstart", active=False),
    ]
    libraries = [library("oba", ("1000-1109",)), library("zaanstad", ("1500-1509",))]

    def found(**query: object) -> list[str]:
        return [o.id for o in domain.find_offerings(offerings, props, libraries, OfferingQuery(**query))]  # type: ignore[arg-type]

    assert found() == ["oba.boekstart", "oba.taalcafe"]
    assert found(proposition="taalcafe") == ["oba.taalcafe"]
    assert found(channel="online") == ["oba.taalcafe"]
    assert found(status="withdrawn") == ["zaanstad.boekstart"]
    assert found(status="all", library="zaanstad") == ["zaanstad.boekstart"]
    assert found(postcode_area="1500") == []  # zaanstad's only offering is withdrawn
    assert found(postcode_area="1034", library="zaanstad") == []
    assert found(postcode_area="1034", theme="digital-skills") == ["oba.taalcafe"]


def test_ids_of_offerings_and_activities() -> None:
    assert domain.split_offering_id("oba.boekstart") == ("oba", "boekstart")
    assert domain.activity_id("oba", "taalcafe", "3f9a1c2e-7d4b-11ee-8c90-0242ac120002") == "oba.taalcafe.3f9a1c2e7d4b"
    assert domain.library_subject("oba") == "library:oba"
    assert domain.channel_of("ebook") == "online" and domain.channel_of("kiosk") == "offline"


def test_each_catalogue_event_is_read_as_its_entity_and_other_events_are_refused() -> None:
    def cloud(data: Any, subject: str) -> CloudEvent:
        return CloudEvent.create(data, subject=subject, source="/test", time=NOW)

    oba, boekstart, session = library().data, offering().data, activity().data
    cancelled = activity(cancelled=True).data
    read = [domain.entity(cloud(d, s)) for d, s in [(oba, "library:oba"), (boekstart, "oba.boekstart"),
                                                    (session, session.activity_id), (cancelled, "x")]]  # fmt: skip
    assert [type(e).__name__ for e in read] == ["Library", "Offering", "Activity", "Activity"]
    assert isinstance(read[0], domain.Library) and read[0].code == "oba" and read[0].updated_at == NOW
    assert isinstance(read[1], domain.Offering) and read[1].id == "oba.boekstart"
    assert isinstance(read[2], domain.Activity) and read[2].id == "oba.taalcafe.3f9a1c2e7d4b"
    assert isinstance(read[3], domain.Activity) and read[3].cancelled and not read[2].cancelled
    assert [o.id for o in domain.entities([cloud(oba, "library:oba"), cloud(boekstart, "b")], domain.Offering)] == [
        "oba.boekstart"
    ]
    with pytest.raises(ValueError, match=r"member\.erased\.v1 is not a catalogue event"):
        domain.entity(cloud(MemberErased(), "m"))


def test_repeats_are_dropped_keeping_the_first_order() -> None:
    assert domain.dedupe(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]


def test_propositions_are_found_by_their_own_theme_only() -> None:
    reading = proposition()
    assert domain.proposition_matches(reading, domain.PropositionQuery(theme="reading-and-language"))
    assert not domain.proposition_matches(reading, domain.PropositionQuery(theme="digital-skills"))


def test_the_next_page_starts_after_the_last_item_of_this_one() -> None:
    items = ["a", "b", "c", "d"]
    assert domain.page(items, str, None, 3) == (["a", "b", "c"], "c")
