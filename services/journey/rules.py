"""Friction rules as data (DESIGN §4): a YAML catalogue validated by pydantic. Adding a rule needs no code.

Four kinds:
- absence: after `start`, expect `expect` within `within` (optionally the `same` fields correlating the two,
  e.g. the item of a reservation, or the platform a member switched to); else a friction, which resolves when
  `expect` comes after all.
- threshold: `count` events matching `match` within `within` (with the same `same` fields) and no `reset` between;
  resolves on `reset`.
- inactivity: no event of `activity` for `within` since the last one (each re-arms it); resolves on the next one.
- immediate: one event that is itself a friction; resolves on `resolve`, if given.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from shared.events import CloudEvent, event_types
from shared.events.registry import TYPE_PREFIX

CATALOGUE = Path(__file__).with_name("rules.yaml")

Scalar = str | int | float | bool
# The sign-up fields a rule's `member:` filter may name (services/journey/state.py Profile keeps these).
PROFILE_FIELDS = ("age_band", "home_library")
# What an event matching a type must have: per field, the values (as text) that match.
Conditions = tuple[tuple[str, frozenset[str]], ...]


class JourneyEvent(NamedTuple):
    """What the rules see of an event: envelope attributes and the validated payload's fields."""

    id: str
    kind: str  # the type without `nl.bibliotheek.`, e.g. member.signed_up.v1
    t: int  # event time, ms since the epoch (UTC)
    subject: str
    channel: str | None
    platform: str | None
    library: str | None
    data: Mapping[str, Any]

    def field(self, name: str) -> Any:
        """An envelope extension (channel, platform, library) or else a data field (e.g. a sign-up's `source`)."""
        if name == "channel":
            return self.channel
        if name == "platform":
            return self.platform
        if name == "library":
            return self.library
        return self.data.get(name)

    @classmethod
    def of(cls, event: CloudEvent, subject: str | None = None) -> JourneyEvent:
        return cls(
            event.id,
            event.type.removeprefix(TYPE_PREFIX),
            int(event.utc_time.timestamp() * 1000),
            subject or event.subject or "",
            event.channel,
            event.platform,
            event.library,
            event.data,
        )


class EventMatch(BaseModel):
    """Event types (without `nl.bibliotheek.`) and the values their attributes or data fields must have.

    `where: {channel: online}` compares an envelope attribute or a data field; a list means any of its values.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: list[str] = Field(min_length=1)
    where: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict)

    @field_validator("type", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("type")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        known = {t.removeprefix(TYPE_PREFIX) for t in event_types()}
        unknown = [t for t in value if t not in known]
        if unknown:
            raise ValueError(f"unknown event type {', '.join(unknown)}")
        return value

    @cached_property
    def kinds(self) -> frozenset[str]:
        return frozenset(self.type)

    @cached_property
    def _allowed(self) -> Conditions:
        return tuple(
            (name, frozenset(str(a) for a in (wanted if isinstance(wanted, list) else [wanted])))
            for name, wanted in self.where.items()
        )

    def matches(self, event: JourneyEvent) -> bool:
        conditions = self.conditions(event.kind)
        return conditions is not None and meets(event, conditions)

    def conditions(self, kind: str) -> Conditions | None:
        """What an event of this type must have to match (nothing: every one matches); None: no event of it."""
        return self._allowed if kind in self.kinds else None


def meets(event: JourneyEvent, conditions: Conditions) -> bool:
    for name, allowed in conditions:
        value = event.field(name)
        if value is None or str(value) not in allowed:
            return False
    return True


class _Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,63}$")
    description: str = ""
    within: timedelta
    # Only members with these profile values (from their sign-up), e.g. {age_band: [0-3, 4-11, 12-17]}.
    member: dict[str, list[str]] = Field(default_factory=dict)
    # For reports: the switch between channels this rule is about, e.g. online→offline.
    channel_pair: str | None = None

    @field_validator("within")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration, e.g. P14D or PT15M")
        return value

    @field_validator("member")
    @classmethod
    def _profile_fields(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = sorted(set(value) - set(PROFILE_FIELDS))
        if unknown:
            raise ValueError(f"members can be chosen by {', '.join(PROFILE_FIELDS)}, not by {', '.join(unknown)}")
        return value

    @cached_property
    def code(self) -> int:
        """How a member's state names the rule: 4 bytes derived from the id, the same on every instance and after
        every restart, instead of the id itself in each of millions of states (the engine refuses two ids with one
        code). A rule renamed is a new rule: its old windows are no longer decided."""
        return zlib.crc32(self.id.encode())

    def admits(self, profile: Mapping[str, Any]) -> bool:
        if not self.member:
            return True
        return all(str(profile.get(name)) in values for name, values in self.member.items())

    def kinds(self) -> frozenset[str]:
        """Every event type the rule looks at."""
        return frozenset()

    def conditions(self, kind: str) -> tuple[Conditions | None, Conditions | None]:
        """What an event of type `kind` must have for the engine's handler of the rule (None: never)."""
        return None, None


class AbsenceRule(_Rule):
    kind: Literal["absence"]
    start: EventMatch
    expect: EventMatch
    # Fields that must be equal in start and expect: a list of names, or start field → expect field.
    same: dict[str, str] = Field(default_factory=dict)

    @field_validator("same", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        return {name: name for name in value} if isinstance(value, list) else value

    def kinds(self) -> frozenset[str]:
        return self.start.kinds | self.expect.kinds

    def conditions(self, kind: str) -> tuple[Conditions | None, Conditions | None]:
        """To be expected, to start a window."""
        return self.expect.conditions(kind), self.start.conditions(kind)

    @cached_property
    def start_fields(self) -> tuple[str, ...]:
        """The start's fields that correlate it with the expected event (in `same`'s order)."""
        return tuple(self.same)

    @cached_property
    def expect_fields(self) -> tuple[str, ...]:
        return tuple(self.same.values())


class ThresholdRule(_Rule):
    kind: Literal["threshold"]
    match: EventMatch
    count: int = Field(ge=2)
    reset: EventMatch | None = None
    same: list[str] = Field(default_factory=list)

    def kinds(self) -> frozenset[str]:
        return self.match.kinds | (self.reset.kinds if self.reset else frozenset())

    def conditions(self, kind: str) -> tuple[Conditions | None, Conditions | None]:
        """To count, to reset."""
        return self.match.conditions(kind), self.reset.conditions(kind) if self.reset else None

    @cached_property
    def same_fields(self) -> tuple[str, ...]:
        return tuple(self.same)


class InactivityRule(_Rule):
    kind: Literal["inactivity"]
    activity: EventMatch

    def kinds(self) -> frozenset[str]:
        return self.activity.kinds

    def conditions(self, kind: str) -> tuple[Conditions | None, Conditions | None]:
        """To be activity."""
        return self.activity.conditions(kind), None


class ImmediateRule(_Rule):
    kind: Literal["immediate"]
    match: EventMatch
    resolve: EventMatch | None = None
    # Immediate rules have no window; `within` bounds nothing and defaults to a day for reports.
    within: timedelta = timedelta(days=1)

    def kinds(self) -> frozenset[str]:
        return self.match.kinds | (self.resolve.kinds if self.resolve else frozenset())

    def conditions(self, kind: str) -> tuple[Conditions | None, Conditions | None]:
        """To raise, to resolve."""
        return self.match.conditions(kind), self.resolve.conditions(kind) if self.resolve else None


Rule = Annotated[AbsenceRule | ThresholdRule | InactivityRule | ImmediateRule, Field(discriminator="kind")]


class RuleCatalogue(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: list[Rule]

    @model_validator(mode="after")
    def _unique(self) -> RuleCatalogue:
        ids = [r.id for r in self.rules]
        doubles = sorted({i for i in ids if ids.count(i) > 1})
        if doubles:
            raise ValueError(f"rule ids must be unique: {', '.join(doubles)}")
        return self

    def by_id(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)


_ADAPTER = TypeAdapter(RuleCatalogue)


def parse_rules(text: str) -> RuleCatalogue:
    """Rules from YAML text; pydantic's ValidationError names the rule and field that is wrong."""
    return _ADAPTER.validate_python(yaml.safe_load(text))


def load_rules(path: Path | None = None) -> RuleCatalogue:
    return parse_rules((path or CATALOGUE).read_text())


def with_window(catalogue: RuleCatalogue, rule_id: str, within: timedelta) -> RuleCatalogue:
    """The catalogue with one rule's window changed (the local run shortens the activation window)."""
    return RuleCatalogue(
        rules=[r.model_copy(update={"within": within}) if r.id == rule_id else r for r in catalogue.rules]
    )
