"""A member's journey state: only what the friction rules need, as msgspec structs stored as MessagePack.

Nothing here is history: a pending window is dropped when its timer fires, expected events are kept only while a
window could still need them, and an open friction only until it resolves. Structs are `array_like` (fields by
position, defaults at the end left out), so a member who signed up and got through costs a few dozen bytes.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import msgspec

from shared.events.envelope import uuid_text


class Profile(msgspec.Struct, array_like=True, omit_defaults=True):
    """From the member's sign-up: what rules filter on (`member:`) and frictions are counted by."""

    age_band: str | None = None
    home_library: str | None = None


class Start(msgspec.Struct, array_like=True, omit_defaults=True):
    """A pending absence window: its timer fires at `t + within`."""

    rule: int  # the rule's code (services/journey/rules.py)
    corr: str
    t: int
    event_id: bytes  # as `ref` keeps it
    library: str | None = None
    platform: str | None = None
    pair: str | None = None
    stream: str = ""


class Seen(msgspec.Struct, array_like=True):
    """An expected event of an absence rule (the two latest per rule and correlation are kept)."""

    rule: int  # the rule's code (services/journey/rules.py)
    corr: str
    t: int
    event_id: bytes  # as `ref` keeps it


class Burst(msgspec.Struct, array_like=True, omit_defaults=True):
    """A threshold rule's matches within its window, its resets, and the checks still to decide."""

    rule: int  # the rule's code (services/journey/rules.py)
    corr: str
    matches: list[int] = msgspec.field(default_factory=list)
    resets: list[int] = msgspec.field(default_factory=list)
    checks: list[tuple[int, bytes]] = msgspec.field(default_factory=list)  # (time, the event's `ref`)
    raised: int = -1
    library: str | None = None
    platform: str | None = None
    stream: str = ""


class Activity(msgspec.Struct, array_like=True, omit_defaults=True):
    """An inactivity rule: the latest activity, and whether its wait is armed."""

    rule: int  # the rule's code (services/journey/rules.py)
    t: int
    event_id: bytes  # as `ref` keeps it
    armed: bool = True
    stream: str = ""


class OpenFriction(msgspec.Struct, array_like=True, omit_defaults=True):
    """A friction raised and not resolved yet: what its resolution needs."""

    friction_id: bytes  # as `ref` keeps it
    rule: int  # the rule's code (services/journey/rules.py)
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
    rule: int  # the rule's code (services/journey/rules.py)
    corr: str
    t: int
    event_id: bytes  # as `ref` keeps it
    stream: str = ""


def stored_id(event_id: str) -> bytes:
    """An id as a state keeps it: a UUID (what the platform's producers give events, and derived ids are) in its 16
    bytes, any other id as UTF-8 (marked when it is 16 bytes long too; 0xFF never occurs in UTF-8). Millions of
    members' states hold a few ids each: 20 bytes saved per id. Only a UUID written as `full_id` writes it back (in
    lowercase) is kept as bytes, so every id comes back exactly as it came."""
    if (
        len(event_id) == 36
        and event_id[8] == event_id[13] == event_id[18] == event_id[23] == "-"
        and event_id == event_id.lower()
    ):
        try:
            kept = bytes.fromhex(event_id.replace("-", ""))
        except ValueError:
            kept = b""
        if len(kept) == 16:
            return kept
    raw = event_id.encode()
    return b"\xff" + raw if len(raw) == 16 else raw


# An event's id is kept by several rules in a row, and fired timers name recent ones: cached. Not a member's, which the
# store asks once per batch for every member it writes (thousands, which would only push the events' ids out).
ref = lru_cache(maxsize=1024)(stored_id)


def full_id(kept: bytes) -> str:
    """The id `stored_id` (or `ref`) kept."""
    if len(kept) == 16:
        return uuid_text(kept)
    return kept[1:].decode() if kept[:1] == b"\xff" else kept.decode()


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(MemberState)


def encode(state: MemberState) -> bytes:
    return _ENCODER.encode(state)


def decode(raw: bytes) -> MemberState:
    return _DECODER.decode(raw)
