"""Events journey publishes on `journey.frictions.v1` and `journey.windows.v1`; subject = member_id."""

from __future__ import annotations

from pydantic import AwareDatetime, Field

from shared.events.envelope import EventData
from shared.events.registry import event
from shared.events.types import AgeBand, LibraryCode
from shared.topics import FRICTIONS, WINDOWS


@event("friction.detected.v1", FRICTIONS)
class FrictionDetected(EventData):
    friction_id: str = Field(description="deterministic: the same rule, member and start give the same id")
    rule: str = Field(min_length=1, max_length=80)
    start_event_id: str
    started_at: AwareDatetime
    due_at: AwareDatetime
    library: LibraryCode | None = None
    channel_pair: str | None = Field(default=None, description="e.g. online→offline")
    platform: str | None = None
    age_band: AgeBand | None = None


@event("friction.resolved.v1", FRICTIONS)
class FrictionResolved(EventData):
    friction_id: str
    rule: str = Field(min_length=1, max_length=80)
    resolved_by_event_id: str
    resolved_at: AwareDatetime
    seconds_to_resolve: float = Field(ge=0)


@event("window.closed.v1", WINDOWS)
class WindowClosed(EventData):
    """An absence rule's window closed, met or not: the denominator of friction rates. Right-censored: a window
    still open is never counted. One per start event and rule (deterministic id), so replays count it once."""

    rule: str = Field(min_length=1, max_length=80)
    start_event_id: str
    due_at: AwareDatetime
    met: bool = Field(description="the expected event came within the window (false: a friction was raised)")
    library: LibraryCode | None = None
    channel_pair: str | None = Field(default=None, description="e.g. online→offline")
    platform: str | None = None
    age_band: AgeBand | None = None
