"""Events notifications publishes: deliveries (subject = member_id) and the compacted campaign audit trail
(subject = campaign id)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from shared.events.envelope import EventData
from shared.events.registry import event
from shared.events.types import Medium
from shared.topics import CAMPAIGNS, DELIVERIES

SuppressionReason = Literal[
    "no_consent",
    "frequency_cap",
    "holdout",
    "duplicate",
    "not_in_audience",
    "not_offered",
    "no_contact",
    "erased",
]


@event("message.sent.v1", DELIVERIES)
class MessageSent(EventData):
    message_id: str
    campaign_id: str
    medium: Medium
    trigger_event_id: str
    locale: str = "nl"


@event("message.suppressed.v1", DELIVERIES)
class MessageSuppressed(EventData):
    campaign_id: str
    trigger_event_id: str
    reason: SuppressionReason


@event("message.failed.v1", DELIVERIES)
class MessageFailed(EventData):
    campaign_id: str
    medium: Medium
    trigger_event_id: str
    error: str = Field(max_length=500)


@event("campaign.changed.v1", CAMPAIGNS)
class CampaignChanged(EventData):
    campaign_id: str
    version: int = Field(ge=1)
    status: Literal["draft", "active", "paused", "archived"]
    change: Literal["created", "edited", "activated", "paused", "archived"]
    definition: dict[str, Any] = Field(default_factory=dict)
