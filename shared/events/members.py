"""Events identity publishes on `identity.members.v1`; subject = member_id. Pseudonymous only."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.events.envelope import EventData
from shared.events.registry import event
from shared.events.types import (
    AgeBand,
    Channel,
    Language,
    LibraryCode,
    Medium,
    MemberId,
    Platform,
    PostcodeArea,
    Purpose,
    Slug,
)
from shared.topics import MEMBERS


@event("member.registration_started.v1", MEMBERS)
class RegistrationStarted(EventData):
    home_library: LibraryCode
    source: str | None = Field(default=None, max_length=80, description="e.g. consultatiebureau, a school")


@event("member.signed_up.v1", MEMBERS)
class MemberSignedUp(EventData):
    age_band: AgeBand
    home_library: LibraryCode
    postcode_area: PostcodeArea
    source: str | None = Field(default=None, max_length=80, description="e.g. consultatiebureau, a school")
    proposition: str | None = Field(default=None, max_length=80, description="e.g. boekstart")
    language: Language = Field(default="nl", description="the language the member reads messages in")
    birth_year: int | None = Field(
        default=None,
        ge=1900,
        le=2200,
        description="only for a member under 18 at sign-up: the reach 0-18 counts children in the band of their age "
        "on 1 January, as CBS counts them (a year, never the date)",
    )


@event("member.card_activated.v1", MEMBERS)
class CardActivated(EventData):
    branch: str | None = Field(default=None, max_length=80)


@event("member.account_linked.v1", MEMBERS)
class AccountLinked(EventData):
    account_platform: Platform
    account_ref: str = Field(max_length=100, description="keyed hash of the external account id")


@event("member.account_unlinked.v1", MEMBERS)
class AccountUnlinked(EventData):
    account_platform: Platform
    account_ref: str = Field(max_length=100)


@event("member.login_succeeded.v1", MEMBERS)
class LoginSucceeded(EventData):
    login_platform: Platform


LoginFailure = Literal["bad_credentials", "account_not_linked", "card_blocked", "card_expired", "locked", "other"]


@event("member.login_failed.v1", MEMBERS)
class LoginFailed(EventData):
    login_platform: Platform
    reason: LoginFailure


@event("member.channel_switched.v1", MEMBERS)
class ChannelSwitched(EventData):
    from_channel: Channel
    from_platform: Platform
    to_channel: Channel
    to_platform: Platform


@event("member.consent_changed.v1", MEMBERS)
class ConsentChanged(EventData):
    medium: Medium
    purpose: Purpose
    granted: bool


@event("member.language_changed.v1", MEMBERS)
class LanguageChanged(EventData):
    """The member chose the language messages are sent in (e.g. in the preference centre)."""

    language: Language


@event("member.guardian_set.v1", MEMBERS)
class GuardianSet(EventData):
    guardian_id: MemberId


@event("member.duplicate_suspected.v1", MEMBERS)
class DuplicateSuspected(EventData):
    other_member_id: MemberId
    other_library: LibraryCode
    matched_on: list[Literal["email", "phone"]] = Field(min_length=1)


@event("member.referred.v1", MEMBERS)
class Referred(EventData):
    """Front-office staff referred the member onward to a proposition (a course, a programme such as the
    digiTaalhuis); reports follow whether they took part within 30 days."""

    proposition: Slug


@event("member.merged.v1", MEMBERS)
class MemberMerged(EventData):
    survivor_id: MemberId


@event("member.erased.v1", MEMBERS)
class MemberErased(EventData):
    pass
