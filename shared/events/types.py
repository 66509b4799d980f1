"""Value types that events and APIs share (DESIGN §7 conventions)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import StringConstraints

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
