"""A member's journey state: only what the friction rules need, as msgspec structs stored as MessagePack.

Nothing here is history: a pending window is dropped when its timer fires, expected events are kept only while a
window could still need them, and an open friction only until it resolves. Structs are `array_like` (fields by
position, defaults at the end left out), so a member who signed up and got through costs a few dozen bytes.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec


class Profile(msgspec.Struct, array_like=True, omit_defaults=True):
    """From the member's sign-up: what rules filter on (`member:`) and frictions are counted by."""

    age_band: str | None = None
    home_library: str | None = None


class Start(msgspec.Struct, array_like=True, omit_defaults=True):
    """A pending absence window: its timer fires at `t + within`."""

    rule: str
    corr: str
    t: int
    event_id: str
    library: str | None = None
    platform: str | None = None
    pair: str | None = None
    stream: str = ""


class Seen(msgspec.Struct, array_like=True):
    """An expected event of an absence rule (the two latest per rule and correlation are kept)."""

    rule: str
    corr: str
    t: int
    event_id: str


class Burst(msgspec.Struct, array_like=True, omit_defaults=True):
    """A threshold rule's matches within its window, its resets, and the checks still to decide."""

    rule: str
    corr: str
    matches: list[int] = msgspec.field(default_factory=list)
    resets: list[int] = msgspec.field(default_factory=list)
    checks: list[tuple[int, str]] = msgspec.field(default_factory=list)  # (time, event id)
    raised: int = -1
    library: str | None = None
    platform: str | None = None
    stream: str = ""


class Activity(msgspec.Struct, array_like=True, omit_defaults=True):
    """An inactivity rule: the latest activity, and whether its wait is armed."""

    rule: str
    t: int
    event_id: str
    armed: bool = True
    stream: str = ""


class OpenFriction(msgspec.Struct, array_like=True, omit_defaults=True):
    """A friction raised and not resolved yet: what its resolution needs."""

    friction_id: str
    rule: str
    key: str
    started: int
    due: int
    library: str | None = None


class MemberState(msgspec.Struct, array_like=True, omit_defaults=True):
    profile: Profile | None = None
    starts: list[Start] = msgspec.field(default_factory=list)
    seen: list[Seen] = msgspec.field(default_factory=list)
    bursts: list[Burst] = msgspec.field(default_factory=list)
    activity: list[Activity] = msgspec.field(default_factory=list)
    open: list[OpenFriction] = msgspec.field(default_factory=list)
    # Set once the record was merged into another member: its later events go to the survivor.
    merged_into: str | None = None


class Timer(NamedTuple):
    """A decision waiting for the clock: ordered by due time (heaps of them per partition and stream)."""

    due: int
    member: str
    kind: str  # "a" absence, "t" threshold check, "i" inactivity, "f" forget expected events no window waits for
    rule: str
    corr: str
    t: int
    event_id: str
    stream: str = ""


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(MemberState)


def encode(state: MemberState) -> bytes:
    return _ENCODER.encode(state)


def decode(raw: bytes) -> MemberState:
    return _DECODER.decode(raw)
