"""What the journey engine decides (services/journey/engine.py): frictions detected and resolved, windows closed,
and the timers an event starts. Plain values, turned into events by services/journey/derived.py."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.journey.state import Timer


@dataclass(frozen=True)
class Friction:
    friction_id: str
    rule: str
    member_id: str
    start_event_id: str
    started_ms: int
    due_ms: int
    library: str | None
    channel_pair: str | None
    platform: str | None
    age_band: str | None


@dataclass(frozen=True)
class Resolution:
    friction_id: str
    rule: str
    member_id: str
    library: str | None
    due_ms: int
    event_id: str  # the event that resolved it
    at_ms: int


@dataclass(frozen=True)
class ClosedWindow:
    """An absence window that closed, met or not: the denominator of friction rates (right-censored)."""

    rule: str
    member_id: str
    start_event_id: str
    due_ms: int
    met: bool
    library: str | None
    channel_pair: str | None
    platform: str | None
    age_band: str | None


@dataclass
class Outcome:
    timers: list[Timer] = field(default_factory=list)
    detected: list[Friction] = field(default_factory=list)
    resolved: list[Resolution] = field(default_factory=list)
    closed: list[ClosedWindow] = field(default_factory=list)
