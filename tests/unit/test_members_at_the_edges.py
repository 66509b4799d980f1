"""Identity's rules at their edges: exact ages around 16, a baby born today, a keyed hash of a fixed value, and
who may be merged."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.identity.domain import (
    MergeCandidate,
    is_minor,
    keyed_hash,
    member_age_band,
    merge_refusal,
    normalise_email,
    normalise_phone,
    normalise_postcode,
    postcode_area,
)

TODAY = date(2026, 6, 1)


def born_years_ago(years: int, days_later: int = 0) -> date:
    return date(TODAY.year - years, TODAY.month, TODAY.day + days_later)


def test_the_keyed_hash_of_a_fixed_address_is_the_known_hmac_sha256() -> None:
    # Known answer: HMAC-SHA256(key "pepper", "email:sanne@example.nl"); a hash without the value or the kind
    # would make every member a duplicate of every other.
    digest = keyed_hash(b"pepper", "email", "sanne@example.nl")
    assert digest == "816f6b485f3914daf1e4aec5f93a298cc5a36491e42f9b061891092a46bd53b9"
    assert keyed_hash(b"pepper", "email", "sanne@example.nl") != keyed_hash(b"pepper", "email", "jan@example.nl")
    assert keyed_hash(b"pepper", "phone", "0612345678") != keyed_hash(b"pepper", "email", "0612345678")


def test_an_e_mail_address_is_normalised_to_lower_case_without_surrounding_space() -> None:
    assert normalise_email("  Sanne.de.Vries@Example.NL\n") == "sanne.de.vries@example.nl"


@pytest.mark.parametrize(
    ("phone", "national"),
    [("+31 6 1234 5678", "0612345678"), ("0031 6 1234 5678", "0612345678"), ("+32 470 12 34 56", "32470123456")],
)
def test_a_phone_number_keeps_every_digit_of_the_national_number(phone: str, national: str) -> None:
    assert normalise_phone(phone) == national


@pytest.mark.parametrize("postcode", ["0134 AB", "1234", "1234 ABC", ""])
def test_a_malformed_postcode_is_never_normalised(postcode: str) -> None:
    with pytest.raises(ValueError):
        normalise_postcode(postcode)


def test_the_area_is_the_first_four_digits_not_the_letters() -> None:
    assert postcode_area("9711 xz") == "9711"
    assert normalise_postcode(" 9711xz ") == "9711 XZ"


@pytest.mark.parametrize(
    ("born", "minor"),
    [
        (TODAY, True),  # a baby born today is 0
        (born_years_ago(15), True),
        (born_years_ago(16, days_later=1), True),  # turns 16 tomorrow
        (born_years_ago(16), False),  # 16 today
        (born_years_ago(17), False),
    ],
    ids=["0", "15", "16-tomorrow", "16-today", "17"],
)
def test_a_member_is_a_minor_until_their_sixteenth_birthday(born: date, minor: bool) -> None:
    assert is_minor(born, TODAY) is minor


def test_the_cut_off_can_be_another_age() -> None:
    assert is_minor(born_years_ago(17), TODAY, below=18)
    assert not is_minor(born_years_ago(18), TODAY, below=18)


def test_a_baby_born_today_is_in_the_youngest_band_and_one_born_tomorrow_is_refused() -> None:
    assert member_age_band(TODAY, TODAY) == "0-3"
    assert member_age_band(born_years_ago(17), TODAY) == "12-17"
    with pytest.raises(ValueError, match="future"):
        member_age_band(date(2026, 6, 2), TODAY)


def candidate(member_id: str, born: date, guardian: str | None = None) -> MergeCandidate:
    return MergeCandidate(member_id, born, guardian)


def test_two_adults_with_different_birth_dates_may_be_merged() -> None:
    # The birth date check protects minors; adults' records differ in birth date by typing mistakes.
    assert merge_refusal(candidate("a", date(1980, 1, 1)), candidate("b", date(1980, 1, 2)), TODAY) is None


def test_a_sixteen_year_old_may_be_merged_with_a_record_born_on_another_day_but_a_fifteen_year_old_not() -> None:
    adult = candidate("a", date(1985, 3, 3))
    assert merge_refusal(candidate("s", born_years_ago(16)), adult, TODAY) is None
    refusal = "a minor is never merged with someone born on another day"
    assert merge_refusal(candidate("f", born_years_ago(15)), adult, TODAY) == refusal
    assert merge_refusal(adult, candidate("f", born_years_ago(15)), TODAY) == refusal
    assert merge_refusal(candidate("s", born_years_ago(16)), adult, TODAY, below=18) == refusal


def test_two_records_of_one_minor_born_on_the_same_day_may_be_merged() -> None:
    assert merge_refusal(candidate("c1", date(2018, 5, 5)), candidate("c2", date(2018, 5, 5)), TODAY) is None


def test_the_reasons_a_merge_is_refused_name_what_is_wrong() -> None:
    same = candidate("a", date(1980, 1, 1))
    assert merge_refusal(same, same, TODAY) == "a member cannot be merged into itself"
    guarded = candidate("c", date(1980, 1, 1), guardian="p")  # an adult still listed with a guardian
    guardian = candidate("p", date(1980, 1, 1))
    assert merge_refusal(guarded, guardian, TODAY) == "a child is never merged into their guardian"
    assert merge_refusal(guardian, guarded, TODAY) == "a child is never merged into their guardian"


@given(st.dates(min_value=date(1900, 1, 1), max_value=TODAY))
def test_a_minor_is_never_merged_with_someone_born_on_another_day(born: date) -> None:
    other = candidate("o", date(1990, 7, 7) if born != date(1990, 7, 7) else date(1990, 7, 8))
    refused = merge_refusal(candidate("m", born), other, TODAY) is not None
    assert refused == is_minor(born, TODAY)
