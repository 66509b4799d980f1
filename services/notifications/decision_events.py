"""The events notifications publishes about a message, built the one way deciding and delivering share."""

from __future__ import annotations

from datetime import datetime

from shared.events import CloudEvent, deterministic_id
from shared.events.notifications import MessageDeferred, MessageFailed, MessageSent, MessageSuppressed, Recipient
from shared.events.types import Medium

SOURCE = "/notifications"
MessageEvent = MessageSent | MessageSuppressed | MessageDeferred | MessageFailed


def campaign_source(campaign_id: str) -> str:
    return f"{SOURCE}/campaigns/{campaign_id}"


def decision_event(
    data: MessageEvent, message_id: str, kind: str, member_id: str, library: str | None, at: datetime
) -> CloudEvent:
    """A `message.<kind>` event; its id is stable per (kind, message), so republishing it is harmless. A message
    sent carries the message id itself."""
    return CloudEvent.create(
        data,
        id=message_id if kind == "sent" else deterministic_id(kind, message_id),
        subject=member_id,
        source=campaign_source(data.campaign_id),
        library=library,
        time=at,
    )


def message_sent(
    *,
    message_id: str,
    campaign_id: str,
    version: int,
    member_id: str,
    medium: Medium,
    trigger_event_id: str,
    locale: str,
    recipient: Recipient,
    library: str | None,
    at: datetime,
) -> CloudEvent:
    """`message.sent`: by the delivery loop, or by deciding itself for an in-app message it delivered at once."""
    data = MessageSent(
        message_id=message_id, campaign_id=campaign_id, medium=medium, trigger_event_id=trigger_event_id,
        locale=locale, campaign_version=version, recipient=recipient, library=library,
    )  # fmt: skip
    return decision_event(data, message_id, "sent", member_id, library, at)
