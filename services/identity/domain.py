"""Pure rules of identity: what of a person may leave this service, in what form, and who may be merged."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import date

from shared.events.types import AgeBand, Channel, age_band

_POSTCODE = re.compile(r"^([1-9][0-9]{3}) ?([A-Za-z]{2})$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# What a phone number typed at the desk looks like (a member id never does: it has letters).
PHONE = re.compile(r"^\+?[0-9][0-9 ()-]{7,19}$")

# Where a member meets the network online; every other platform (desk, kiosk, school, partner…) is in a building.
ONLINE_PLATFORMS = frozenset({"website", "app", "ebook"})


def channel_of(platform: str) -> Channel:
    return "online" if platform in ONLINE_PLATFORMS else "offline"


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


def normalise_phone(phone: str) -> str:
    """Digits only, Dutch numbers in national form: `+31 6 1234 5678` and `06-12345678` both → `0612345678`."""
    digits = re.sub(r"[^0-9+]", "", phone)
    if digits.startswith("+31"):
        digits = "0" + digits[3:]
    elif digits.startswith("0031"):
        digits = "0" + digits[4:]
    return digits.lstrip("+")


def keyed_hash(key: bytes, kind: str, value: str) -> str:
    """HMAC-SHA256 of a normalised value: equal values match without the value being stored in an index."""
    return hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


def years_old(birth_date: date, today: date) -> int:
    return today.year - birth_date.year - ((today.month, today.day) < (birth_date.month, birth_date.day))


def member_age_band(birth_date: date, today: date) -> AgeBand:
    if birth_date > today:
        raise ValueError("birth date lies in the future")
    return age_band(birth_date, today)


def is_minor(birth_date: date, today: date, below: int = 16) -> bool:
    return years_old(birth_date, today) < below


# A guardian is of age (18): from 16 a member manages their own consent, but is no one's guardian yet.
ADULT_AGE = 18


def is_adult(birth_date: date, today: date) -> bool:
    return years_old(birth_date, today) >= ADULT_AGE


def youth_birth_year(birth_date: date, today: date) -> int | None:
    """The birth year published for a member under 18 (analytics' reach 0-18 ages them by it); none for adults:
    a year, never the date, and only where the KPI needs it."""
    return birth_date.year if not is_adult(birth_date, today) else None


def channel_switch(
    previous: tuple[str, str] | None, current: tuple[str, str]
) -> tuple[tuple[str, str], tuple[str, str]] | None:
    """(from, to) as (channel, platform) when this touch is on another channel or platform than the last."""
    if previous is None or previous == current:
        return None
    return previous, current


@dataclass(frozen=True)
class MergeCandidate:
    member_id: str
    birth_date: date
    guardian_id: str | None


def merge_refusal(merged: MergeCandidate, survivor: MergeCandidate, today: date, below: int = 16) -> str | None:
    """Why these two records must not become one member, or None when they may."""
    if merged.member_id == survivor.member_id:
        return "a member cannot be merged into itself"
    if merged.guardian_id == survivor.member_id or survivor.guardian_id == merged.member_id:
        return "a child is never merged into their guardian"
    minor = is_minor(merged.birth_date, today, below) or is_minor(survivor.birth_date, today, below)
    if minor and merged.birth_date != survivor.birth_date:
        # A child sharing a parent's e-mail address is not the parent.
        return "a minor is never merged with someone born on another day"
    return None
