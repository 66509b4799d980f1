"""Campaigns as data, decided without I/O. The skeleton ships one default campaign."""

from __future__ import annotations

from dataclasses import dataclass

from shared.events import CloudEvent, deterministic_id
from shared.events.journey import FrictionDetected
from shared.events.types import Medium


@dataclass(frozen=True)
class Message:
    title: str
    body: str


@dataclass(frozen=True)
class Campaign:
    id: str
    trigger_rule: str
    medium: Medium
    messages: dict[str, Message]  # by locale

    def triggered_by(self, friction: FrictionDetected) -> bool:
        return friction.rule == self.trigger_rule


ACTIVATE_YOUR_CARD = Campaign(
    id="activate-your-card",
    trigger_rule="online-signup-not-activated",
    medium="in_app",
    messages={
        "nl": Message(
            title="Je bibliotheekpas wacht op je",
            body="Je hebt je online aangemeld, maar je pas is nog niet geactiveerd. Neem een identiteitsbewijs "
            "mee naar een vestiging van je bibliotheek; aan de balie of bij de kiosk is het zo geregeld.",
        ),
        "en": Message(
            title="Your library card is waiting for you",
            body="You signed up online but have not activated your card yet. Bring an ID to any branch of "
            "your library; it takes a minute at the desk or the kiosk.",
        ),
    },
)

DEFAULT_CAMPAIGNS = (ACTIVATE_YOUR_CARD,)


@dataclass(frozen=True)
class Delivery:
    """One message for one member: at most one per (campaign, member, trigger)."""

    message_id: str
    campaign: Campaign
    member_id: str
    trigger_event_id: str
    locale: str


def decide(campaigns: tuple[Campaign, ...], trigger: CloudEvent, friction: FrictionDetected) -> list[Delivery]:
    if trigger.subject is None:
        return []
    return [
        Delivery(
            message_id=deterministic_id("message", campaign.id, trigger.subject, trigger.id),
            campaign=campaign,
            member_id=trigger.subject,
            trigger_event_id=trigger.id,
            locale="nl",
        )
        for campaign in campaigns
        if campaign.triggered_by(friction)
    ]
