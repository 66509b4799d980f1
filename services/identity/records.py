"""identity's member record: the typed state the operations work with. `MemberStore` alone converts it to and
from the stored form (a Redis hash of strings; see store.py)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime

from shared.events.types import Language


@dataclass(frozen=True)
class MemberRecord:
    """One member as identity knows them. A child signed up with a family has no contact details of their own
    (`email` None): messages for them go to their guardian."""

    name: str
    email: str | None
    phone: str | None
    birth_date: date
    postcode: str
    home_library: str
    signed_up_at: datetime
    channel: str
    platform: str
    source: str | None = None
    language: Language = "nl"
    last_channel: str | None = None
    last_platform: str | None = None
    card_activated_at: datetime | None = None
    guardian_id: str | None = None

    @property
    def last_touch(self) -> tuple[str, str] | None:
        """(channel, platform) where the member was last, if anywhere yet."""
        if self.last_platform is None:
            return None
        return self.last_channel or "", self.last_platform

    def touched(self, channel: str, platform: str) -> MemberRecord:
        return replace(self, last_channel=channel, last_platform=platform)
