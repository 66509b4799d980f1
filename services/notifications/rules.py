"""The deciding rules, without I/O: for one campaign, one member and one trigger, send, defer or suppress.

In order (the first that applies decides):
1. erased: the member was erased → suppressed `erased`;
2. audience: outside the campaign's audience → `not_in_audience`;
3. proposition: a campaign about a proposition reaches members whose library offers it → `not_offered`;
4. once: a message for this (campaign, member, trigger) went out already → `duplicate`;
5. consent: the media the recipient (the guardian, for a minor) agreed to for the purpose, in the
   campaign's order; none → `no_consent`;
6. frequency cap: the member had the network-wide maximum of messages in the window → `frequency_cap`;
7. holdout: a deterministic share of members, by a hash of (campaign, member) → `holdout`;
8. quiet hours: a medium that interrupts, inside quiet hours in Europe/Amsterdam → deferred to their end;
9. otherwise: send now.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

from services.notifications.campaigns import BROADCAST, AudienceFacts, Campaign, TriggerEvent, in_audience
from services.notifications.settings import NotificationsSettings
from shared.events import deterministic_id
from shared.events.notifications import Recipient, SuppressionReason
from shared.events.types import Medium, Purpose

Outcome = Literal["send", "defer", "suppress"]


@dataclass(frozen=True)
class Policy:
    frequency_cap: int
    quiet_start: time
    quiet_end: time
    timezone: ZoneInfo
    quiet_media: frozenset[Medium]
    plain_language_propositions: frozenset[str]
    freshness: timedelta = timedelta(days=2)

    @classmethod
    def from_settings(cls, settings: NotificationsSettings) -> Policy:
        return cls(
            frequency_cap=settings.notifications_frequency_cap,
            quiet_start=settings.notifications_quiet_hours_start,
            quiet_end=settings.notifications_quiet_hours_end,
            timezone=ZoneInfo(settings.notifications_timezone),
            quiet_media=frozenset(settings.notifications_quiet_media),
            plain_language_propositions=frozenset(settings.notifications_plain_language_propositions),
            freshness=settings.notifications_freshness_limit,
        )


@dataclass(frozen=True)
class MemberFacts:
    member_id: str
    audience: AudienceFacts
    # Set when identity told us the member is a minor with a guardian: messages go to the guardian.
    guardian_id: str | None = None
    # "<medium>:<purpose>" → granted, of whoever receives the message (the guardian, for a minor).
    consents: Mapping[str, bool] | None = None
    erased: bool = False
    language: str = "nl"  # the member's, from sign-up


@dataclass(frozen=True)
class Circumstances:
    now: datetime
    sent_in_window: int = 0
    # The message holding the once-per-(campaign, member, trigger) claim, if one does.
    claimed_by: str | None = None
    # Libraries offering the campaign's proposition (None: the campaign is about no proposition).
    offered_by: frozenset[str] | None = None


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    message_id: str
    reason: SuppressionReason | None = None
    media: tuple[Medium, ...] = ()
    locale: str = "nl"
    until: datetime | None = None
    recipient: Recipient = "member"

    @property
    def medium(self) -> Medium:
        return self.media[0]

    @property
    def claims(self) -> bool:
        """Takes the (campaign, member, trigger) slot: a message goes out, or the member is held out."""
        return self.outcome != "suppress" or self.reason == "holdout"

    @property
    def counts_toward_cap(self) -> bool:
        return self.outcome != "suppress"


@lru_cache(maxsize=16384)  # asked by the decision and again by its events
def message_id(campaign_id: str, member_id: str, trigger_event_id: str) -> str:
    return deterministic_id("message", campaign_id, member_id, trigger_event_id)


def decide(
    campaign: Campaign, trigger: TriggerEvent, member: MemberFacts, now: Circumstances, policy: Policy
) -> Decision:
    definition = campaign.definition
    mid = message_id(campaign.id, member.member_id, trigger.event_id)
    recipient: Recipient = "guardian" if member.guardian_id else "member"

    def suppressed(reason: SuppressionReason) -> Decision:
        return Decision("suppress", mid, reason, recipient=recipient)

    if member.erased:
        return suppressed("erased")
    if trigger.type != BROADCAST and trigger.time < now.now - policy.freshness:
        return suppressed("stale")
    if not in_audience(definition, member.audience):
        return suppressed("not_in_audience")
    if now.offered_by is not None and member.audience.library not in now.offered_by:
        return suppressed("not_offered")
    if now.claimed_by is not None and now.claimed_by != mid:
        return suppressed("duplicate")
    media = consented_media(definition.channels, definition.purpose, member.consents or {})
    if not media:
        return suppressed("no_consent")
    if now.sent_in_window >= policy.frequency_cap:
        return suppressed("frequency_cap")
    if in_holdout(campaign.id, member.member_id, definition.holdout_percent):
        return Decision("suppress", mid, "holdout", media=media, recipient=recipient)
    locale = choose_locale(campaign, member.audience.propositions, member.language, policy)
    until = quiet_until(now.now, policy) if media[0] in policy.quiet_media else None
    if until is not None:
        return Decision("defer", mid, media=media, locale=locale, until=until, recipient=recipient)
    return Decision("send", mid, media=media, locale=locale, recipient=recipient)


def consented(consents: Mapping[str, bool], medium: Medium, purpose: Purpose) -> bool:
    """Marketing needs the recipient's explicit consent for the medium (opt-in); a service message (about the
    membership itself) is sent unless the recipient withdrew it."""
    granted = consents.get(f"{medium}:{purpose}")
    return granted is True if purpose == "marketing" else granted is not False


def consented_media(channels: list[Medium], purpose: Purpose, consents: Mapping[str, bool]) -> tuple[Medium, ...]:
    return tuple(medium for medium in channels if consented(consents, medium, purpose))


def in_holdout(campaign_id: str, member_id: str, percent: float) -> bool:
    """The same member is always in or out of a campaign's holdout, on every instance and every replay."""
    if percent <= 0:
        return False
    digest = hashlib.sha256(f"{campaign_id}:{member_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100 < percent


def quiet_until(now: datetime, policy: Policy) -> datetime | None:
    """The end of the quiet hours `now` falls in (in the policy's time zone), or None outside them."""
    start, end = policy.quiet_start, policy.quiet_end
    if start == end:
        return None
    local = now.astimezone(policy.timezone)
    t = local.time().replace(tzinfo=None)
    overnight = start > end  # e.g. 21:00-08:00
    inside = (t >= start or t < end) if overnight else (start <= t < end)
    if not inside:
        return None
    day = local.date() if t < end else local.date() + timedelta(days=1)
    # Built as a wall-clock time in the zone, so the end is 08:00 local on both sides of a DST change.
    return datetime.combine(day, end, tzinfo=policy.timezone)


def choose_locale(campaign: Campaign, propositions: frozenset[str], language: str, policy: Policy) -> str:
    """The member's language when the campaign speaks it; for Dutch, plain-language Dutch to members who came in
    through a basic-skills proposition, when the campaign has it; Dutch, every member's fallback, otherwise."""
    locales = {locale for by_locale in campaign.definition.messages.values() for locale in by_locale}
    if language != "nl" and language in locales:
        return language
    return "nl-plain" if "nl-plain" in locales and propositions & policy.plain_language_propositions else "nl"
