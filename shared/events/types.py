"""Value types that events and APIs share (DESIGN §7 conventions)."""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, StringConstraints

# Short lowercase slugs: `oba`, `rotterdam`, `haarlem`.
LibraryCode = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{1,39}$")]
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,79}$")]
Channel = Literal["online", "offline"]
# website, app, ebook, desk, kiosk, school, partner, ils…: an open set of slugs.
Platform = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{1,31}$")]
# A website's origin as a browser sends it in `Origin`: scheme, host and port only (`https://www.oba.nl`).
WebOrigin = Annotated[str, StringConstraints(pattern=r"^https?://[a-z0-9.-]+(:[0-9]{1,5})?$", max_length=200)]
PostcodeArea = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{3}$")]
AgeBand = Literal["0-3", "4-11", "12-17", "18-64", "65+"]
MemberId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Medium = Literal["email", "sms", "push", "in_app"]
Purpose = Literal["service", "marketing"]
# The language a member reads messages in (not personal data: a preference, like a channel consent).
Language = Literal["nl", "en"]


# Unicode categories a name never holds: control characters (line breaks, escapes), private-use code points (they
# render as nothing, or as a vendor's glyph), lone surrogates and code points not assigned yet.
_NOT_IN_NAMES = frozenset({"Cc", "Co", "Cs", "Cn"})


def _printable(value: str) -> str:
    for position, character in enumerate(value):
        if unicodedata.category(character) in _NOT_IN_NAMES:
            raise ValueError(f"holds a control or private-use character (U+{ord(character):04X} at {position})")
    return value


# A name people read (a library, a branch, a proposition, a campaign, a person): printable text only.
Name = Annotated[str, AfterValidator(_printable)]

_ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_ISO_DATETIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}")


def _iso_date(value: object) -> object:
    # Pydantic reads a number (`?to=0`) as seconds since 1970; a day is only ever asked for as 2025-03-31.
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_DATE.match(value):
        raise ValueError("a day as ISO 8601 text, e.g. 2025-03-31")
    return value


def _iso_datetime(value: object) -> object:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_DATETIME.match(value):
        raise ValueError("a moment as ISO 8601 text with its offset, e.g. 2025-03-31T09:30:00+02:00")
    return value


# Days and moments as ISO 8601 text only (query parameters and request bodies): never a number read as epoch time.
IsoDate = Annotated[date, BeforeValidator(_iso_date)]
IsoDateTime = Annotated[AwareDatetime, BeforeValidator(_iso_datetime)]

AGE_BANDS: tuple[AgeBand, ...] = ("0-3", "4-11", "12-17", "18-64", "65+")


def age_band(birth_date: date, on: date) -> AgeBand:
    """The age band of someone born on `birth_date`, on the day `on`."""
    years = on.year - birth_date.year - ((on.month, on.day) < (birth_date.month, birth_date.day))
    if years <= 3:
        return "0-3"
    if years <= 11:
        return "4-11"
    if years <= 17:
        return "12-17"
    if years <= 64:
        return "18-64"
    return "65+"
