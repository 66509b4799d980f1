"""What of a person identity lets out: a postcode area and an age band."""

from __future__ import annotations

from datetime import date

import pytest

from services.identity.domain import (
    MergeCandidate,
    channel_of,
    channel_switch,
    is_minor,
    keyed_hash,
    member_age_band,
    merge_refusal,
    normalise_email,
    normalise_phone,
    normalise_postcode,
    postcode_area,
)
from shared.events.types import age_band


@pytest.mark.parametrize(("postcode", "area"), [("1034 AB", "1034"), ("1034ab", "1034"), (" 9711 XZ ", "9711")])
def test_a_postcode_is_reduced_to_its_four_digit_area(postcode: str, area: str) -> None:
    assert postcode_area(postcode) == area


@pytest.mark.parametrize("postcode", ["0134 AB", "123 AB", "1234 A1", "abcd ef", ""])
def test_a_malformed_postcode_is_refused(postcode: str) -> None:
    with pytest.raises(ValueError):
        postcode_area(postcode)


def test_postcodes_are_normalised_to_the_usual_form() -> None:
    assert normalise_postcode("1034ab") == "1034 AB"


@pytest.mark.parametrize(
    ("born", "band"),
    [
        (date(2026, 1, 1), "0-3"),
        (date(2022, 6, 2), "0-3"),  # turns 4 the day after
        (date(2022, 6, 1), "4-11"),  # 4 today
        (date(2014, 6, 1), "12-17"),
        (date(2008, 6, 1), "18-64"),
        (date(1961, 6, 2), "18-64"),
        (date(1961, 6, 1), "65+"),
    ],
)
def test_age_bands_change_on_the_birthday(born: date, band: str) -> None:
    assert age_band(born, on=date(2026, 6, 1)) == band


def test_a_birth_date_in_the_future_is_refused() -> None:
    with pytest.raises(ValueError):
        member_age_band(date(2030, 1, 1), today=date(2026, 6, 1))


@pytest.mark.parametrize("phone", ["+31 6 1234 5678", "0031612345678", "06-12345678", "(06) 1234 5678"])
def test_dutch_phone_numbers_written_differently_are_one_number(phone: str) -> None:
    assert normalise_phone(phone) == "0612345678"


def test_e_mail_addresses_match_whatever_their_case_and_surrounding_space() -> None:
    key = b"k"
    assert keyed_hash(key, "email", normalise_email(" Sanne@Example.NL ")) == keyed_hash(
        key, "email", normalise_email("sanne@example.nl")
    )
    assert keyed_hash(b"other key", "email", "sanne@example.nl") != keyed_hash(key, "email", "sanne@example.nl")


@pytest.mark.parametrize(
    ("platform", "channel"),
    [("website", "online"), ("app", "online"), ("ebook", "online"), ("desk", "offline"), ("kiosk", "offline"),
     ("partner", "offline"), ("school", "offline")],
)  # fmt: skip
def test_each_platform_is_online_or_in_a_building(platform: str, channel: str) -> None:
    assert channel_of(platform) == channel


def test_a_touch_on_another_platform_is_a_channel_switch() -> None:
    assert channel_switch(("online", "website"), ("online", "ebook")) == (("online", "website"), ("online", "ebook"))
    assert channel_switch(("online", "website"), ("online", "website")) is None
    assert channel_switch(None, ("offline", "desk")) is None


TODAY = date(2026, 6, 1)


def candidate(member_id: str, born: date, guardian: str | None = None) -> MergeCandidate:
    return MergeCandidate(member_id, born, guardian)


def test_two_adults_with_the_same_birth_date_may_be_merged() -> None:
    assert merge_refusal(candidate("a", date(1980, 1, 1)), candidate("b", date(1980, 1, 1)), TODAY) is None


def test_a_child_is_never_merged_into_their_guardian() -> None:
    child, parent = candidate("c", date(2016, 1, 1), guardian="p"), candidate("p", date(1985, 1, 1))
    assert merge_refusal(child, parent, TODAY) == "a child is never merged into their guardian"
    assert merge_refusal(parent, child, TODAY) == "a child is never merged into their guardian"


def test_a_child_sharing_an_adult_s_e_mail_is_not_that_adult() -> None:
    refusal = merge_refusal(candidate("c", date(2016, 1, 1)), candidate("a", date(1985, 1, 1)), TODAY)
    assert refusal == "a minor is never merged with someone born on another day"


def test_a_member_is_not_merged_into_itself() -> None:
    refusal = merge_refusal(candidate("a", date(1980, 1, 1)), candidate("a", date(1980, 1, 1)), TODAY)
    assert refusal == "a member cannot be merged into itself"


def test_minors_are_under_sixteen_by_birth_date() -> None:
    assert is_minor(date(2010, 6, 2), TODAY)
    assert not is_minor(date(2010, 6, 1), TODAY)
