"""Pure rules of identity: what of a person may leave this service, and in what form."""

from __future__ import annotations

import re
from datetime import date

from shared.events.types import AgeBand, age_band

_POSTCODE = re.compile(r"^([1-9][0-9]{3}) ?([A-Za-z]{2})$")


def postcode_area(postcode: str) -> str:
    """The 4-digit area of a Dutch postcode (`1034 AB` → `1034`): coarse enough to publish."""
    match = _POSTCODE.match(postcode.strip())
    if not match:
        raise ValueError("not a Dutch postcode (1234 AB)")
    return match.group(1)


def normalise_postcode(postcode: str) -> str:
    match = _POSTCODE.match(postcode.strip())
    if not match:
        raise ValueError("not a Dutch postcode (1234 AB)")
    return f"{match.group(1)} {match.group(2).upper()}"


def normalise_email(email: str) -> str:
    return email.strip().lower()


def member_age_band(birth_date: date, today: date) -> AgeBand:
    if birth_date > today:
        raise ValueError("birth date lies in the future")
    return age_band(birth_date, today)
