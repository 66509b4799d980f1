"""The catalogue's pure rules: postcode areas, what a library may offer, who may still register, how it is searched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.propositions import domain
from services.propositions.domain import (
    Activity,
    ActivityQuery,
    Library,
    Offering,
    OfferingQuery,
    Proposition,
    PropositionQuery,
)
from shared.events import CloudEvent
from shared.events.propositions import (
    ActivityCancelled,
    ActivityScheduled,
    Branch,
    LibraryChanged,
    OfferingChanged,
    PropositionPublished,
    PropositionRetired,
)

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def proposition(slug: str = "boekstart", *, retired: bool = False, **overrides: Any) -> Proposition:
    fields: dict[str, Any] = {
        "slug": slug,
        "name_nl": "BoekStart",
        "name_en": "BookStart",
        "theme": "reading-and-language",
        "target_groups": ["babies-and-toddlers", "parents"],
        "channels": "both",
        "programme": "Kunst van Lezen",
        **overrides,
    }
    data = PropositionRetired(**fields) if retired else PropositionPublished(**fields)
    return Proposition(data, retired, NOW)


def library(code: str = "oba", areas: tuple[str, ...] = ("1000-1109",), branches: tuple[str, ...] = ()) -> Library:
    data = LibraryChanged(
        library=code,
        name=code.upper(),
        postcode_areas=list(areas),
        branches=[Branch(code=b, name=b.title()) for b in branches or ("oosterdok", "banne")],
    )
    return Library(data, NOW)


def offering(library_code: str = "oba", slug: str = "boekstart", *, active: bool = True, **overrides: Any) -> Offering:
    data = OfferingChanged(
        offering_id=f"{library_code}.{slug}",
        library=library_code,
        proposition=slug,
        channels=overrides.pop("channels", ["offline"]),
        branches=overrides.pop("branches", ["oosterdok"]),
        active=active,
        **overrides,
    )
    return Offering(data, NOW)


def activity(*, cancelled: bool = False, starts_in: timedelta = timedelta(days=1), **overrides: Any) -> Activity:
    starts_at = NOW + starts_in
    fields: dict[str, Any] = {
        "activity_id": "oba.taalcafe.3f9a1c2e7d4b",
        "proposition": "taalcafe",
        "library": "oba",
        "branch": "banne",
        "starts_at": starts_at,
        "ends_at": starts_at + timedelta(hours=2),
        "capacity": 12,
        **overrides,
    }
    data = ActivityCancelled(**fields) if cancelled else ActivityScheduled(**fields)
    return Activity(data, cancelled, NOW)


# ------------------------------------------------------------------------------------------- postcode areas


@pytest.mark.parametrize(("text", "expected"), [("1000-1109", (1000, 1109)), ("1034", (1034, 1034))])
def test_a_postcode_area_or_a_range_of_them_is_read_as_its_bounds(text: str, expected: tuple[int, int]) -> None:
    assert domain.area_range(text) == expected


@pytest.mark.parametrize("text", ["0999", "1034AB", "1109-1000", "10345", "", "1000-"])
def test_what_is_no_postcode_area_or_runs_backwards_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        domain.area_range(text)


def test_overlapping_and_adjacent_ranges_are_joined_and_sorted() -> None:
    assert domain.normalise_areas(["1035-1109", "1034", "1000-1033", "2000"]) == ["1000-1109", "2000"]
    assert domain.normalise_areas(["3191-3199", "3000-3089"]) == ["3000-3089", "3191-3199"]


def test_a_library_serves_the_areas_inside_its_ranges_only() -> None:
    oba = library(areas=("1000-1109",))
    assert domain.serves(oba, "1034")
    assert domain.serves(oba, "1109")
    assert not domain.serves(oba, "1110")


def test_areas_another_library_serves_already_are_named_per_library() -> None:
    others = [library("oba", ("1000-1109",)), library("haarlem", ("2000-2037",))]
    assert domain.area_conflicts("amstelland", ["1100-1189"], others) == {"oba": ["1100-1109"]}
    assert domain.area_conflicts("oba", ["1000-1120"], others) == {}  # its own areas are no conflict


def test_the_library_serving_an_area_is_found_among_all() -> None:
    libraries = [library("oba", ("1000-1109",)), library("rotterdam", ("3000-3089",))]
    served = domain.library_serving(libraries, "3011")
    assert served is not None and served.code == "rotterdam"
    assert domain.library_serving(libraries, "9711") is None


# ------------------------------------------------------------------------------------------------ offerings


def test_an_offering_at_branches_the_library_has_through_allowed_channels_is_fine() -> None:
    refusals = domain.offering_refusals(proposition(), library(), ["oosterdok"], ["offline", "online"])
    assert refusals == []


def test_an_offering_at_a_branch_of_another_library_is_refused_naming_branches() -> None:
    [refusal] = domain.offering_refusals(proposition(), library(), ["lochal"], ["offline"])
    assert refusal.field == "branches"
    assert "lochal" in refusal.message


def test_an_online_only_proposition_cannot_be_offered_offline() -> None:
    ebooks = proposition("ebooks", channels="online")
    refusals = domain.offering_refusals(ebooks, library(), ["oosterdok"], ["offline"])
    assert [r.field for r in refusals] == ["channels"]


def test_an_offline_offering_names_where_it_is_offered() -> None:
    refusals = domain.offering_refusals(proposition(), library(), [], ["offline"])
    assert [r.field for r in refusals] == ["branches"]


def test_target_groups_are_kept_once_in_the_catalogue_s_order() -> None:
    assert domain.normalise_target_groups(["parents", "babies-and-toddlers", "parents"]) == [
        "babies-and-toddlers",
        "parents",
    ]


# ---------------------------------------------------------------------------------------------- activities


def test_registration_is_open_until_the_session_ends() -> None:
    session = activity(starts_in=timedelta(hours=-1))  # started an hour ago, ends in an hour
    assert domain.registration_refusal(session, NOW) is None
    assert domain.registration_refusal(session, NOW + timedelta(hours=1)) == "the activity has ended"


def test_nobody_registers_for_or_attends_a_cancelled_session() -> None:
    cancelled = activity(cancelled=True)
    assert domain.registration_refusal(cancelled, NOW) == "the activity is cancelled"
    assert domain.attendance_refusal(cancelled, NOW + timedelta(days=1), NOW + timedelta(days=1)) == (
        "the activity is cancelled"
    )


def test_attendance_is_refused_for_a_session_that_has_not_started() -> None:
    session = activity(starts_in=timedelta(days=400))
    refusal = "the session has not started: attendance is recorded from an hour before its start"
    assert domain.attendance_refusal(session, NOW, NOW) == refusal
    # A reported time in the future does not make it start: the time counts no later than now.
    assert domain.attendance_refusal(session, NOW + timedelta(days=401), NOW) == refusal
    starts = activity(starts_in=timedelta(minutes=30))
    assert domain.attendance_refusal(starts, NOW, NOW) is None  # doors open an hour before the start
    started = activity(starts_in=timedelta(hours=-1))
    assert domain.attendance_refusal(started, NOW, NOW) is None


def test_places_left_never_go_below_zero() -> None:
    assert domain.places_left(activity(capacity=2), 1) == 1
    assert domain.places_left(activity(capacity=2), 3) == 0


def test_an_activity_id_never_reads_as_a_slug_or_an_offering_id() -> None:
    activity_id = domain.activity_id("oba", "taalcafe", "3f9a1c2e-7d4b-4c1d-9a55-5d8c1b2f7e10")
    assert activity_id == "oba.taalcafe.3f9a1c2e7d4b"
    assert activity_id.count(".") == 2
    assert domain.offering_id("oba", "boekstart").count(".") == 1
    assert domain.library_subject("oba") == "library:oba"


# -------------------------------------------------------------------------------------------------- queries


def test_where_a_parent_in_1034_gets_boekstart_is_the_library_serving_1034() -> None:
    libraries = [library("oba", ("1000-1109",)), library("haarlem", ("2000-2037",), ("centrum",))]
    propositions = {"boekstart": proposition(), "taalcafe": proposition("taalcafe", theme="social-participation")}
    offerings = [offering("oba"), offering("haarlem", branches=["centrum"]), offering("oba", "taalcafe")]

    found = domain.find_offerings(
        offerings, propositions, libraries, OfferingQuery(proposition="boekstart", postcode_area="1034")
    )

    assert [o.id for o in found] == ["oba.boekstart"]


def test_an_area_no_library_serves_finds_nothing() -> None:
    found = domain.find_offerings(
        [offering()], {"boekstart": proposition()}, [library()], OfferingQuery(postcode_area="9711")
    )
    assert found == []


def test_withdrawn_offerings_and_offerings_of_retired_propositions_are_not_offered() -> None:
    propositions = {"boekstart": proposition(), "taalcafe": proposition("taalcafe", retired=True)}
    offerings = [offering("oba", active=False), offering("oba", "taalcafe"), offering("haarlem")]

    active = domain.find_offerings(offerings, propositions, [], OfferingQuery())
    withdrawn = domain.find_offerings(offerings, propositions, [], OfferingQuery(status="withdrawn"))

    assert [o.id for o in active] == ["haarlem.boekstart"]
    assert [o.id for o in withdrawn] == ["oba.boekstart", "oba.taalcafe"]


def test_offerings_are_found_by_theme_target_group_and_channel_of_what_they_offer() -> None:
    propositions = {
        "boekstart": proposition(),
        "klik-en-tik": proposition("klik-en-tik", theme="digital-skills", target_groups=["seniors"]),
    }
    offerings = [offering("oba"), offering("oba", "klik-en-tik", channels=["offline", "online"])]

    def ids(query: OfferingQuery) -> list[str]:
        return [o.id for o in domain.find_offerings(offerings, propositions, [], query)]

    assert ids(OfferingQuery(theme="digital-skills")) == ["oba.klik-en-tik"]
    assert ids(OfferingQuery(target_group="babies-and-toddlers")) == ["oba.boekstart"]
    assert ids(OfferingQuery(channel="online")) == ["oba.klik-en-tik"]


def test_propositions_are_found_by_theme_group_channel_programme_and_status() -> None:
    boekstart, ebooks = proposition(), proposition("ebooks", channels="online", programme="de online Bibliotheek")
    retired = proposition("old", retired=True)

    def slugs(query: PropositionQuery) -> list[str]:
        return [p.slug for p in (boekstart, ebooks, retired) if domain.proposition_matches(p, query)]

    assert slugs(PropositionQuery()) == ["boekstart", "ebooks"]
    assert slugs(PropositionQuery(channel="offline")) == ["boekstart"]
    assert slugs(PropositionQuery(programme="De Online Bibliotheek")) == ["ebooks"]
    assert slugs(PropositionQuery(status="retired")) == ["old"]
    assert slugs(PropositionQuery(target_group="seniors")) == []


def test_sessions_are_found_by_proposition_branch_and_start_time() -> None:
    tomorrow, next_week = activity(), activity(starts_in=timedelta(days=7), branch="oosterdok")
    assert domain.activity_matches(tomorrow, ActivityQuery(branch="banne", starts_before=NOW + timedelta(days=2)))
    assert not domain.activity_matches(next_week, ActivityQuery(starts_before=NOW + timedelta(days=2)))
    assert not domain.activity_matches(activity(cancelled=True), ActivityQuery())
    assert domain.activity_matches(activity(cancelled=True), ActivityQuery(include_cancelled=True))


def test_pages_turn_after_the_cursor_and_the_last_page_has_no_cursor() -> None:
    items = ["a", "b", "c", "d", "e"]
    first, cursor = domain.page(items, str, None, 2)
    second, cursor2 = domain.page(items, str, cursor, 2)
    last, cursor3 = domain.page(items, str, cursor2, 2)
    assert (first, second, last) == (["a", "b"], ["c", "d"], ["e"])
    assert (cursor, cursor2, cursor3) == ("b", "d", None)


# ---------------------------------------------------------------------------------------------- entities


def test_the_latest_catalogue_event_of_a_subject_is_its_entity() -> None:
    retired = CloudEvent.create(
        PropositionRetired(**proposition().data.model_dump()), subject="boekstart", source="/test", time=NOW
    )
    [entity] = domain.entities([retired], Proposition)
    assert entity.retired and entity.slug == "boekstart" and entity.updated_at == NOW


def test_times_are_shown_in_amsterdam() -> None:
    assert domain.shown(datetime(2026, 7, 1, 12, 0, tzinfo=UTC)) == "2026-07-01T14:00:00+02:00"
    assert domain.shown(NOW) == "2026-11-23T11:00:00+01:00"
