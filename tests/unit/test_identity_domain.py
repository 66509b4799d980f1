"""What of a person identity lets out: a postcode area and an age band."""

from __future__ import annotations

from datetime import date

import pytest

from services.identity.domain import member_age_band, normalise_postcode, postcode_area
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
