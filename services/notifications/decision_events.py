"""The events notifications publishes about a message, built the one way deciding and delivering share."""

from __future__ import annotations

from datetime import datetime

from shared.events import CloudEvent, EventData, deterministic_id

SOURCE = "/notifications"


def campaign_source(campaign_id: str) -> str:
    return f"{SOURCE}/campaigns/{campaign_id}"


def decision_event(
    data: EventData, message_id: str, kind: str, member_id: str, library: str | None, at: datetime
) -> CloudEvent:
    """A `message.<kind>` event; its id is stable per (kind, message), so republishing it is harmless. A message
    sent carries the message id itself."""
    campaign_id = str(data.model_dump()["campaign_id"])
    return CloudEvent.create(
        data,
        id=message_id if kind == "sent" else deterministic_id(kind, message_id),
        subject=member_id,
        source=campaign_source(campaign_id),
        library=library,
        time=at,
    )
