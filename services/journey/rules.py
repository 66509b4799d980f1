"""Friction rules as data, evaluated without I/O.

A rule turns one event into effects: start a timer (the start of an absence rule) or meet an expectation
(its expected event). The store applies effects; the timer loop turns expired timers into frictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.events import CloudEvent, deterministic_id
from shared.events.registry import TYPE_PREFIX


class EventMatch(BaseModel):
    """An event type (without the `nl.bibliotheek.` prefix) and attribute or data fields it must have."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    where: dict[str, str] = Field(default_factory=dict)

    def matches(self, event: CloudEvent) -> bool:
        if event.type != TYPE_PREFIX + self.type:
            return False
        for name, wanted in self.where.items():
            value = getattr(event, name, None) if name in CloudEvent.model_fields else event.data.get(name)
            if str(value) != wanted:
                return False
        return True


class AbsenceRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    kind: Literal["absence"] = "absence"
    description: str = ""
    start: EventMatch
    expect: EventMatch
    within: timedelta
    channel_pair: str | None = Field(default=None, description="the switch the rule watches, e.g. online→offline")


def online_signup_not_activated(window: timedelta) -> AbsenceRule:
    return AbsenceRule(
        id="online-signup-not-activated",
        description="Signed up online but did not activate the card at a branch in time",
        start=EventMatch(type="member.signed_up.v1", where={"channel": "online"}),
        expect=EventMatch(type="member.card_activated.v1"),
        within=window,
        channel_pair="online→offline",
    )


@dataclass(frozen=True)
class StartTimer:
    friction_id: str
    rule: str
    member_id: str
    due_at: datetime
    start_event_id: str
    started_at: datetime
    library: str | None
    channel_pair: str | None
    platform: str | None
    age_band: str | None
    kind: Literal["start"] = "start"


@dataclass(frozen=True)
class MeetExpectation:
    rule: str
    member_id: str
    event_id: str
    at: datetime
    kind: Literal["expect"] = "expect"


Effect = StartTimer | MeetExpectation


def evaluate(rules: list[AbsenceRule], event: CloudEvent) -> list[Effect]:
    if event.subject is None:
        return []
    effects: list[Effect] = []
    for rule in rules:
        # The expectation first: an event that both meets and restarts a rule ends the old wait.
        if rule.expect.matches(event):
            effects.append(MeetExpectation(rule.id, event.subject, event.id, event.utc_time))
        if rule.start.matches(event):
            age = event.data.get("age_band")
            effects.append(
                StartTimer(
                    # Deterministic, so a redelivered start or a replay raises the very same friction.
                    friction_id=deterministic_id("friction", rule.id, event.subject, event.id),
                    rule=rule.id,
                    member_id=event.subject,
                    due_at=event.utc_time + rule.within,
                    start_event_id=event.id,
                    started_at=event.utc_time,
                    library=event.library,
                    channel_pair=rule.channel_pair,
                    platform=event.platform,
                    age_band=str(age) if age is not None else None,
                )
            )
    return effects
