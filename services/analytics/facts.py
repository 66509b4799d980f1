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

import functools
import operator
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

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
    e = envelope
    make = row_maker(e.type, type(data))
    return make(e.id, e.subject, e.time, e.library, e.channel, e.platform, data, topic, partition, offset)


# A row from the envelope's id, subject, time, library, channel and platform, the payload and where it came from.
RowMaker = Callable[[str, str, int, str | None, str | None, str | None, Any, str, int, int], Fact]
# The row's columns a payload may fill: from home_library to birth_year.
_PAYLOAD = Fact._fields[Fact._fields.index("home_library") : Fact._fields.index("topic")]


@functools.cache
def row_maker(event_type: str, model: type[EventData]) -> RowMaker:
    """How the rows of one event type are made, worked out once per type (a decoder makes hundreds of thousands a
    second): which payload fields fill which columns, which are computed, which are always the same."""
    kind = short_type(event_type)
    taken = {name: name for name in _COPIED.get(kind, ())}  # column: the payload's attribute
    computed: dict[str, Callable[[Any], Any]] = {}
    fixed: dict[str, Any] = {"merged_from": ""}
    own_place = False
    if issubclass(model, MemberSignedUp):
        taken["birth_year"] = "birth_year"
    elif issubclass(model, GuardianSet):
        taken["guardian_id"] = "guardian_id"
    elif issubclass(model, ChannelSwitched):
        computed["channel_pair"] = lambda d: f"{d.from_channel}→{d.to_channel}"
    elif issubclass(model, FrictionDetected):
        # A friction's own attributes, as journey reports them (not the envelope's).
        own_place, fixed["outcome"] = True, "detected"
        computed["started"], computed["due"] = lambda d: epoch_ms(d.started_at), lambda d: epoch_ms(d.due_at)
    elif issubclass(model, FrictionResolved):
        fixed["outcome"], taken["seconds"] = "resolved", "seconds_to_resolve"
    elif issubclass(model, MemberMerged):
        taken["survivor_id"] = "survivor_id"
    elif kind.startswith("message."):
        sent = kind.removeprefix("message.").split(".")[0]
        computed["outcome"] = lambda d: getattr(d, "reason", None) or sent
    filled: list[tuple[int, Callable[[Any], Any]]] = [
        (_PAYLOAD.index(c), operator.attrgetter(a)) for c, a in taken.items()
    ]
    filled += [(_PAYLOAD.index(column), compute) for column, compute in computed.items()]
    template = [fixed.get(column) for column in _PAYLOAD]
    constant = tuple(template)
    new = tuple.__new__

    def make(
        event_id: str, subject: str, time: int, library: str | None, channel: str | None, platform: str | None,
        data: Any, topic: str, partition: int, offset: int,
    ) -> Fact:  # fmt: skip
        columns: Sequence[Any] = constant
        if filled:
            columns = template.copy()
            for at, value_of in filled:
                columns[at] = value_of(data)
        if own_place:
            library, platform = data.library, data.platform
        return new(Fact, (event_id, subject, kind, time, library, channel, platform, *columns, topic, partition,
                          offset, event_type))  # fmt: skip

    return make


def fact_row(event: CloudEvent, data: EventData) -> Fact | None:
    """The row of a decoded event; None for an event about no member (no subject)."""
    envelope = envelope_of(event)
    return None if envelope is None else fact(envelope, data)
