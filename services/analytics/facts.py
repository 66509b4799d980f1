"""An event as the analytics store keeps it: one flat, pseudonymous row (no names, contact details, item ids or
free text), without I/O.

Every row has the member id, the event type (short name, as in rules.yaml), the event time (UTC) and the
envelope's library, channel and platform. The other columns are filled by the event types that carry them: the
sign-up profile (home library, age band, postcode area, source, proposition), a usage event's proposition, a
channel switch's target channel and pair, a friction's rule, id, start, due time and attributes, a resolution's
seconds, a message's outcome.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.events import CloudEvent
from shared.events.registry import TYPE_PREFIX

Row = dict[str, Any]

COLUMNS: tuple[str, ...] = (
    "event_id",
    "member_id",
    "type",
    "time",
    "library",
    "channel",
    "platform",
    "home_library",
    "age_band",
    "postcode_area",
    "source",
    "proposition",
    "to_channel",
    "rule",
    "channel_pair",
    "outcome",
    "friction_id",
    "started",
    "due",
    "seconds",
    "merged_from",
)

SIGNED_UP = "member.signed_up.v1"
MERGED = "member.merged.v1"
ERASED = "member.erased.v1"
DETECTED = "friction.detected.v1"
RESOLVED = "friction.resolved.v1"

# Data fields copied as they are, per event type.
_COPIED: dict[str, tuple[str, ...]] = {
    SIGNED_UP: ("home_library", "age_band", "postcode_area", "source", "proposition"),
    "member.registration_started.v1": ("home_library", "source"),
    "member.channel_switched.v1": ("to_channel",),
    "member.referred.v1": ("proposition",),
    "usage.activity_registered.v1": ("proposition",),
    "usage.activity_attended.v1": ("proposition",),
    "client.proposition_viewed.v1": ("proposition",),
    "client.platform_handoff.v1": ("proposition",),
    DETECTED: ("rule", "friction_id", "channel_pair", "age_band"),
    RESOLVED: ("rule", "friction_id"),
}


TIMES = ("time", "started", "due")  # instants (UTC, milliseconds); `seconds` is a number; the rest text


def stored_time(value: datetime) -> datetime:
    """An instant as the store keeps it: UTC, milliseconds."""
    return value.astimezone(UTC).replace(microsecond=value.microsecond // 1000 * 1000)


def short_type(event: CloudEvent) -> str:
    return event.type.removeprefix(TYPE_PREFIX)


def fact_row(event: CloudEvent) -> Row | None:
    """The event's row; None for an event about no member (no subject)."""
    if event.subject is None:
        return None
    kind = short_type(event)
    data = event.data
    row: Row = dict.fromkeys(COLUMNS)
    row |= {
        "event_id": event.id,
        "member_id": event.subject,
        "type": kind,
        "time": stored_time(event.time),
        "library": event.library,
        "channel": event.channel,
        "platform": event.platform,
        "merged_from": "",
    }
    for name in _COPIED.get(kind, ()):
        value = data.get(name)
        row[name] = None if value is None else str(value)
    if kind == "member.channel_switched.v1" and data.get("from_channel") and data.get("to_channel"):
        row["channel_pair"] = f"{data['from_channel']}→{data['to_channel']}"
    elif kind == DETECTED:
        # A friction's own attributes, as journey reports them (not the envelope's).
        row |= {"library": data.get("library"), "platform": data.get("platform"), "outcome": "detected"}
        row["started"] = stored_time(datetime.fromisoformat(str(data["started_at"])))
        row["due"] = stored_time(datetime.fromisoformat(str(data["due_at"])))
    elif kind == RESOLVED:
        row |= {"outcome": "resolved", "seconds": float(data.get("seconds_to_resolve") or 0.0)}
    elif kind.startswith("message."):
        row["outcome"] = data.get("reason") or kind.removeprefix("message.").split(".")[0]
    return row
