"""Events journey publishes on `journey.frictions.v1`; subject = member_id."""

from __future__ import annotations

from pydantic import AwareDatetime, Field

from shared.events.envelope import EventData
from shared.events.registry import event
from shared.events.types import AgeBand, LibraryCode
from shared.topics import FRICTIONS


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
