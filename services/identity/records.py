"""identity's member record: the typed state the operations work with. `MemberStore` alone converts it to and
from the stored form (a Redis hash of strings; see store.py)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
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


@dataclass(frozen=True)
class LinkedAccount:
    """A platform account linked to a member: the pseudonymous `ref` events carry, and the keyed hash (`index`) of
    the platform's external id that finds its owner."""

    ref: str
    index: str


@dataclass(frozen=True)
class Registration:
    """A started registration, not completed yet: its id becomes the member id at sign-up."""

    home_library: str
    started_at: datetime


@dataclass(frozen=True)
class MemberChange:
    """What handling posted events changes of a member's record (None: unchanged)."""

    last_channel: str | None = None
    last_platform: str | None = None
    card_activated_at: datetime | None = None
    language: Language | None = None

    def then(self, later: MemberChange) -> MemberChange:
        """This change followed by `later`: what `later` sets wins."""
        return replace(
            self, **{f.name: getattr(later, f.name) for f in fields(later) if getattr(later, f.name) is not None}
        )


@dataclass(frozen=True)
class Suspicion:
    """Two members sharing an e-mail address or phone number, awaiting confirmation (`status` pending) or closed
    (confirmed into a merge, dismissed, refused)."""

    id: str
    member_id: str
    other_member_id: str
    library: str
    other_library: str
    matched_on: tuple[str, ...]
    status: str
    created_at: str

    def names(self, member_id: str) -> bool:
        return member_id in (self.member_id, self.other_member_id)


@dataclass(frozen=True)
class Recipient:
    """Where a message for a member goes now: their own address, or their guardian's for a minor."""

    member_id: str
    medium: str
    recipient: str  # member | guardian
    address: str
    name: str
