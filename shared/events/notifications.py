"""Events notifications publishes: deliveries (subject = member_id) and the compacted campaign audit trail
(subject = campaign id).

Every decision about a (campaign, member, trigger) is published once: sent, suppressed (with the reason),
deferred (quiet hours; a sent or a suppressed follows) or failed. Ids are derived from the message id, so a
redelivered trigger republishes the same events. No address ever appears in an event.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, Field

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
    # The campaign was paused or archived while its message waited (quiet hours, retries).
    "campaign_inactive",
    # The trigger happened longer ago than the freshness limit (a history loaded into the platform): it goes into
    # the reports, not into members' inboxes.
    "stale",
    # The address bounced hard before (refused by the mail server, or reported by the provider).
    "undeliverable",
    # The message would show an empty placeholder for this member (a library without opening hours, a recipient
    # without a name): not sent; the log names the placeholder.
    "empty_placeholder",
]
Recipient = Literal["member", "guardian"]


@event("message.sent.v1", DELIVERIES)
class MessageSent(EventData):
    """A message was delivered: to the member, or to their guardian when the member is a minor."""

    message_id: str
    campaign_id: str
    medium: Medium
    trigger_event_id: str
    locale: str = "nl"
    campaign_version: int | None = Field(default=None, ge=1)
    recipient: Recipient = "member"
    library: str | None = Field(default=None, description="the library the message was sent on behalf of")


@event("message.suppressed.v1", DELIVERIES)
class MessageSuppressed(EventData):
    """A campaign was triggered for the member, and no message goes out, for this reason."""

    campaign_id: str
    trigger_event_id: str
    reason: SuppressionReason
    message_id: str | None = None
    campaign_version: int | None = Field(default=None, ge=1)


@event("message.deferred.v1", DELIVERIES)
class MessageDeferred(EventData):
    """Decided during quiet hours: the message waits until `until` (never dropped)."""

    message_id: str
    campaign_id: str
    medium: Medium
    trigger_event_id: str
    until: AwareDatetime
    campaign_version: int | None = Field(default=None, ge=1)


@event("message.failed.v1", DELIVERIES)
class MessageFailed(EventData):
    """Delivery failed for good (retries exhausted or refused by the provider); the job is on the dead-letter
    topic `notifications.deliveries.v1.dlq` with the reason."""

    campaign_id: str
    medium: Medium
    trigger_event_id: str
    error: str = Field(max_length=500)
    message_id: str | None = None
    attempts: int = Field(default=1, ge=1)
    campaign_version: int | None = Field(default=None, ge=1)


@event("campaign.changed.v1", CAMPAIGNS)
class CampaignChanged(EventData):
    """Every change of a campaign, with its whole definition at that version: the audit trail."""

    campaign_id: str
    version: int = Field(ge=1)
    status: Literal["draft", "active", "paused", "archived"]
    change: Literal["created", "edited", "activated", "paused", "archived", "restored"]
    definition: dict[str, Any] = Field(default_factory=dict)
    changed_by: str | None = Field(default=None, description="the API key id that made the change")
