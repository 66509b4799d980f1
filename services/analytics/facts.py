"""An event as the analytics store keeps it: one flat, pseudonymous row (no names, contact details, item ids or
free text), without I/O.

Every row has the member id, the event type (short name, as in rules.yaml), the event time (UTC, epoch
milliseconds) and the envelope's library, channel and platform. The other columns are filled by the event types
that carry them: the sign-up profile (home library, age band, postcode area, source, proposition), a usage event's
proposition, a channel switch's target channel and pair, a friction's rule, id, start, due time and attributes, a
resolution's seconds, a message's outcome.

A row is a tuple (`Fact`), so that a batch of them turns into the store's columns in one `zip`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from shared.events import CloudEvent, EventData
from shared.events.journey import FrictionDetected, FrictionResolved
from shared.events.members import ChannelSwitched, GuardianSet, MemberMerged, MemberSignedUp
from shared.events.registry import TYPE_PREFIX

SIGNED_UP = "member.signed_up.v1"
MERGED = "member.merged.v1"
ERASED = "member.erased.v1"
DETECTED = "friction.detected.v1"
RESOLVED = "friction.resolved.v1"


class Envelope(NamedTuple):
    """The envelope attributes a row keeps."""

    id: str
    subject: str
    type: str  # the full CloudEvents type
    time: int  # UTC, epoch milliseconds
    library: str | None
    channel: str | None
    platform: str | None


class Fact(NamedTuple):
    """An event's row (the first fields, `COLUMNS`, as stored) and what the consumer needs besides."""

    event_id: str
    member_id: str
    type: str  # short name
    time: int  # instants: UTC, epoch milliseconds
    library: str | None
    channel: str | None
    platform: str | None
    home_library: str | None
    age_band: str | None
    postcode_area: str | None
    source: str | None
    proposition: str | None
    to_channel: str | None
    rule: str | None
    channel_pair: str | None
    outcome: str | None
    friction_id: str | None
    started: int | None
    due: int | None
    seconds: float | None
    merged_from: str
    # Not stored here: a merge's survivor, a guardian set's guardian and a young member's birth year (the family
    # tables', `family.py`), and where the record came from (the consume loop's).
    survivor_id: str | None
    guardian_id: str | None
    birth_year: int | None
    topic: str
    partition: int
    offset: int
    event_type: str


COLUMNS: tuple[str, ...] = Fact._fields[: Fact._fields.index("merged_from") + 1]
TIMES = ("time", "started", "due")  # instants; `seconds` is a number; the rest text

# Data fields copied as they are, per event type (their models say they are text).
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
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_NOTHING: dict[str, str | None] = {}


def epoch_ms(value: datetime) -> int:
    """An aware instant as the store keeps it: UTC epoch milliseconds (sub-millisecond digits dropped)."""
    return (value - _EPOCH) // _MS


def short_type(event_type: str) -> str:
    return event_type.removeprefix(TYPE_PREFIX)


def envelope_of(event: CloudEvent) -> Envelope | None:
    """The attributes of a decoded event; None for an event about no member (no subject): it has no row."""
    if event.subject is None:
        return None
    e = event
    return Envelope(e.id, event.subject, e.type, epoch_ms(e.time), e.library, e.channel, e.platform)


def fact(envelope: Envelope, data: EventData, topic: str = "", partition: int = 0, offset: int = 0) -> Fact:
    """The row of an event about a member, from its envelope and validated payload (only whitelisted fields)."""
    kind = short_type(envelope.type)
    copied = _COPIED.get(kind)
    kept = {name: getattr(data, name) for name in copied} if copied else _NOTHING
    library, platform, pair = envelope.library, envelope.platform, kept.get("channel_pair")
    outcome: str | None = None
    started = due = survivor = guardian = born = None
    seconds: float | None = None
    if isinstance(data, MemberSignedUp):
        born = data.birth_year
    elif isinstance(data, GuardianSet):
        guardian = data.guardian_id
    elif isinstance(data, ChannelSwitched):
        pair = f"{data.from_channel}→{data.to_channel}"
    elif isinstance(data, FrictionDetected):
        # A friction's own attributes, as journey reports them (not the envelope's).
        library, platform, outcome = data.library, data.platform, "detected"
        started, due = epoch_ms(data.started_at), epoch_ms(data.due_at)
    elif isinstance(data, FrictionResolved):
        outcome, seconds = "resolved", data.seconds_to_resolve
    elif isinstance(data, MemberMerged):
        survivor = data.survivor_id
    elif kind.startswith("message."):
        outcome = getattr(data, "reason", None) or kind.removeprefix("message.").split(".")[0]
    get = kept.get
    return Fact(
        envelope.id, envelope.subject, kind, envelope.time, library, envelope.channel, platform,
        get("home_library"), get("age_band"), get("postcode_area"), get("source"), get("proposition"),
        get("to_channel"), get("rule"), pair, outcome, get("friction_id"), started, due, seconds, "",
        survivor, guardian, born, topic, partition, offset, envelope.type,
    )  # fmt: skip


def fact_row(event: CloudEvent, data: EventData) -> Fact | None:
    """The row of a decoded event; None for an event about no member (no subject)."""
    envelope = envelope_of(event)
    return None if envelope is None else fact(envelope, data)
