"""Campaigns as data, without I/O: the definition marketing staff write, what triggers it, whom it reaches,
when two campaigns overlap, and which status changes are allowed.

A campaign is *triggered* (by event types and/or friction rules, narrowed by filters) or a *broadcast* (to an
audience at `schedule.send_at`). Messages are given per medium and locale; `channels` is the order in which
media are tried for a member: the first one the member agreed to is used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from shared.events import FieldError, event_types
from shared.events.journey import FrictionDetected
from shared.events.types import AgeBand, Channel, IsoDateTime, LibraryCode, Medium, Name, Purpose, Slug
from shared.topics import FRICTIONS, MEMBERS, USAGE

Locale = Literal["nl", "en", "nl-plain"]
Status = Literal["draft", "active", "paused", "archived"]
Kind = Literal["triggered", "broadcast"]
FilterValue = str | int | bool

FALLBACK_LOCALE: Locale = "nl"
FRICTION_DETECTED = FrictionDetected.event_type
# Event types a campaign may react to: what happens to members. Not notifications' own events (a campaign
# triggered by a sent message would feed itself) and not the catalogue (it is about no member).
TRIGGER_TOPICS = frozenset({MEMBERS.name, USAGE.name, FRICTIONS.name})
ATTRIBUTE_FILTERS = frozenset({"library", "channel", "platform", "source"})
TITLED: frozenset[Medium] = frozenset({"push", "in_app"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MessageTemplate(_Strict):
    """One message in one locale: Jinja2 text with placeholders such as `{{ library.name }}`."""

    subject: str | None = Field(default=None, max_length=300, description="e-mail only")
    title: str | None = Field(default=None, max_length=200, description="push and in-app only")
    body: str = Field(min_length=1, max_length=5000)


class Trigger(_Strict):
    event_types: list[str] = Field(default_factory=list, max_length=20, description="full CloudEvents types")
    friction_rules: list[Slug] = Field(default_factory=list, max_length=20, description="journey's rule ids")
    filters: dict[str, list[FilterValue]] = Field(
        default_factory=dict,
        description="field → allowed values; fields: library, channel, platform, source, or data.<field>",
    )


class Audience(_Strict):
    """Who may be reached; an empty list does not narrow."""

    libraries: list[LibraryCode] = Field(default_factory=list)
    age_bands: list[AgeBand] = Field(default_factory=list)
    propositions: list[Slug] = Field(default_factory=list, description="signed up through or took part in")
    channels_of_origin: list[Channel] = Field(default_factory=list, description="online or offline sign-up")


class Schedule(_Strict):
    starts_at: IsoDateTime | None = None
    ends_at: IsoDateTime | None = None
    send_at: IsoDateTime | None = Field(default=None, description="when a broadcast goes out")


EXAMPLE: dict[str, Any] = {
    "name": "Welkom bij BoekStart",
    "kind": "triggered",
    "purpose": "marketing",
    "proposition": "boekstart",
    "trigger": {
        "event_types": ["nl.bibliotheek.member.signed_up.v1"],
        "filters": {"data.source": ["consultatiebureau"]},
    },
    "audience": {"age_bands": ["0-3"]},
    "channels": ["email", "in_app"],
    "messages": {
        "email": {
            "nl": {
                "subject": "Welkom bij {{ proposition.name }} in {{ library.name }}",
                "body": "Kom langs in {{ branch.name or library.name }}: {{ library.opening_hours }}. "
                "Meer: {{ links.proposition }}",
            }
        },
        "in_app": {"nl": {"title": "Welkom bij {{ proposition.name }}", "body": "Lees samen, elke dag."}},
    },
    "priority": 60,
    "holdout_percent": 10,
}


class CampaignDefinition(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"examples": [EXAMPLE]})

    name: Name = Field(min_length=1, max_length=120)
    library: LibraryCode | None = Field(default=None, description="none: a campaign of the whole network")
    kind: Kind = "triggered"
    purpose: Purpose = Field(
        default="marketing", description="marketing needs the member's consent; service is sent unless withdrawn"
    )
    proposition: Slug | None = Field(default=None, description="a campaign about a proposition")
    trigger: Trigger | None = None
    audience: Audience = Field(default_factory=Audience)
    channels: list[Medium] = Field(min_length=1, max_length=4, description="media in the order they are tried")
    messages: dict[Medium, dict[Locale, MessageTemplate]]
    schedule: Schedule = Field(default_factory=Schedule)
    priority: int = Field(default=50, ge=0, le=100, description="higher goes first when the cap is near")
    holdout_percent: float = Field(default=0, ge=0, le=50)
    renotify_after: timedelta | None = Field(
        default=None, description="message a member again for the same trigger after this; none: once"
    )

    @property
    def audience_libraries(self) -> list[str]:
        """A library's campaign reaches that library's members only."""
        return [self.library] if self.library else list(self.audience.libraries)

    def message(self, medium: Medium, locale: str) -> MessageTemplate:
        by_locale = self.messages[medium]
        return by_locale.get(cast(Locale, locale)) or by_locale[FALLBACK_LOCALE]


@dataclass(frozen=True)
class Campaign:
    """A campaign as stored: its current version and status."""

    id: str
    version: int
    status: Status
    definition: CampaignDefinition
    created_at: str = ""
    updated_at: str = ""
    overlaps: tuple[str, ...] = ()
    built_in: bool = False

    def live(self, now: datetime) -> bool:
        """Active and inside its schedule."""
        schedule = self.definition.schedule
        if self.status != "active":
            return False
        if schedule.starts_at is not None and now < schedule.starts_at:
            return False
        return schedule.ends_at is None or now < schedule.ends_at


# ------------------------------------------------------------------------------------------- checks


def problems(definition: CampaignDefinition) -> list[FieldError]:
    """What is wrong with a definition beyond its types, each naming the field (relative to the definition)."""
    found: list[FieldError] = []
    found += _trigger_problems(definition)
    found += _message_problems(definition)
    schedule = definition.schedule
    if definition.kind == "broadcast" and schedule.send_at is None:
        found.append(FieldError("schedule.send_at", "required: when the broadcast goes out"))
    if schedule.starts_at and schedule.ends_at and schedule.ends_at <= schedule.starts_at:
        found.append(FieldError("schedule.ends_at", "must be after starts_at"))
    if definition.library and any(lib != definition.library for lib in definition.audience.libraries):
        found.append(FieldError("audience.libraries", f"a campaign of {definition.library} reaches its own members"))
    if definition.renotify_after is not None and definition.renotify_after <= timedelta(0):
        found.append(FieldError("renotify_after", "must be positive"))
    return found


def _trigger_problems(definition: CampaignDefinition) -> list[FieldError]:
    trigger = definition.trigger
    if definition.kind == "broadcast":
        return [FieldError("trigger", "a broadcast has no trigger")] if trigger is not None else []
    if trigger is None:
        return [FieldError("trigger", "required for a triggered campaign")]
    if not trigger.event_types and not trigger.friction_rules:
        return [FieldError("trigger", "name at least one event type or friction rule")]
    found = []
    registered = event_types()
    for i, type_name in enumerate(trigger.event_types):
        model = registered.get(type_name)
        if model is None:
            found.append(FieldError(f"trigger.event_types.{i}", "unknown event type"))
        elif model.topic not in TRIGGER_TOPICS:
            found.append(FieldError(f"trigger.event_types.{i}", "not about a member: cannot trigger a campaign"))
    fields = _data_fields(trigger)
    for name, allowed in trigger.filters.items():
        path = f"trigger.filters.{name}"
        known = name in ATTRIBUTE_FILTERS or (name.startswith("data.") and name.removeprefix("data.") in fields)
        if not known:
            found.append(FieldError(path, "unknown field: library, channel, platform, source or data.<field>"))
        elif not allowed:
            found.append(FieldError(path, "list at least one value"))
    return found


def _data_fields(trigger: Trigger) -> set[str]:
    registered = event_types()
    models = [registered[t] for t in trigger.event_types if t in registered]
    if trigger.friction_rules:
        models.append(FrictionDetected)
    return {name for model in models for name in model.model_fields}


def _message_problems(definition: CampaignDefinition) -> list[FieldError]:
    found = []
    seen: set[str] = set()
    for i, medium in enumerate(definition.channels):
        if medium in seen:
            found.append(FieldError(f"channels.{i}", "listed twice"))
        seen.add(medium)
        if medium not in definition.messages:
            found.append(FieldError(f"messages.{medium}", f"missing: the campaign sends on {medium}"))
    for medium, by_locale in definition.messages.items():
        if medium not in seen:
            found.append(FieldError(f"messages.{medium}", "not among the campaign's channels"))
        if FALLBACK_LOCALE not in by_locale:
            found.append(FieldError(f"messages.{medium}.nl", "required: Dutch is every member's fallback"))
        for locale, template in by_locale.items():
            path = f"messages.{medium}.{locale}"
            if medium == "email" and not template.subject:
                found.append(FieldError(f"{path}.subject", "required for e-mail"))
            if medium != "email" and template.subject is not None:
                found.append(FieldError(f"{path}.subject", f"{medium} has no subject"))
            if medium in TITLED and not template.title:
                found.append(FieldError(f"{path}.title", f"required for {medium}"))
            if medium not in TITLED and template.title is not None:
                found.append(FieldError(f"{path}.title", f"{medium} has no title"))
    return found


# ------------------------------------------------------------------------------------- triggering


@dataclass(frozen=True)
class TriggerEvent:
    """What happened, as far as triggering and deciding need it."""

    event_id: str
    type: str
    member_id: str
    time: datetime
    attributes: Mapping[str, Any] = field(default_factory=dict)  # library, channel, platform, source
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def rule(self) -> str | None:
        return str(self.data["rule"]) if self.type == FRICTION_DETECTED and "rule" in self.data else None

    @property
    def friction_id(self) -> str | None:
        return str(self.data.get("friction_id")) if self.type == FRICTION_DETECTED else None

    @property
    def library(self) -> str | None:
        value = self.data.get("library") if self.type == FRICTION_DETECTED else None
        return str(value or self.attributes.get("library") or "") or None

    @property
    def branch(self) -> str | None:
        value = self.data.get("branch") or self.data.get("pickup_branch")
        return str(value) if value else None

    @property
    def key(self) -> str:
        """What "the same trigger" means: one friction rule, whichever start or library raised it; one event type;
        one broadcast. At most one message per (campaign, member, key)."""
        return trigger_key(self.type, self.rule)

    def value(self, name: str) -> Any:
        if name.startswith("data."):
            return self.data.get(name.removeprefix("data."))
        return self.library if name == "library" else self.attributes.get(name)


BROADCAST = "broadcast"


def trigger_key(trigger_type: str, rule: str | None) -> str:
    """`TriggerEvent.key` of a trigger of this type and friction rule."""
    if trigger_type == BROADCAST:
        return "broadcast"
    return f"rule:{rule}" if rule else f"type:{trigger_type}"


def triggered_by(definition: CampaignDefinition, trigger: TriggerEvent) -> bool:
    spec = definition.trigger
    if definition.kind != "triggered" or spec is None:
        return False
    hit = trigger.type in spec.event_types or (trigger.rule is not None and trigger.rule in spec.friction_rules)
    return hit and all(trigger.value(name) in allowed for name, allowed in spec.filters.items())


@dataclass(frozen=True)
class AudienceFacts:
    """What is known of a member for audiences: pseudonymous, from identity's and propositions' events."""

    library: str | None = None
    age_band: str | None = None
    origin: str | None = None  # online or offline sign-up
    propositions: frozenset[str] = frozenset()


def in_audience(definition: CampaignDefinition, member: AudienceFacts) -> bool:
    audience = definition.audience
    libraries = definition.audience_libraries
    if libraries and member.library not in libraries:
        return False
    if audience.age_bands and member.age_band not in audience.age_bands:
        return False
    if audience.channels_of_origin and member.origin not in audience.channels_of_origin:
        return False
    return not audience.propositions or bool(set(audience.propositions) & member.propositions)


# ---------------------------------------------------------------------------------------- overlaps


def _meet(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """Two narrowing lists leave someone in common (an empty one narrows nothing)."""
    return not a or not b or bool(set(a) & set(b))


def overlap(a: CampaignDefinition, b: CampaignDefinition) -> bool:
    """Would the two campaigns hit the same members for the same trigger?"""
    if a.kind != "triggered" or b.kind != "triggered" or a.trigger is None or b.trigger is None:
        return False
    same_trigger = bool(set(a.trigger.event_types) & set(b.trigger.event_types)) or bool(
        set(a.trigger.friction_rules) & set(b.trigger.friction_rules)
    )
    if not same_trigger:
        return False
    shared = set(a.trigger.filters) & set(b.trigger.filters)
    if any(not _meet(a.trigger.filters[name], b.trigger.filters[name]) for name in shared):
        return False
    audiences = (
        _meet(a.audience_libraries, b.audience_libraries)
        and _meet(a.audience.age_bands, b.audience.age_bands)
        and _meet(a.audience.propositions, b.audience.propositions)
        and _meet(a.audience.channels_of_origin, b.audience.channels_of_origin)
    )
    return audiences and _periods_meet(a.schedule, b.schedule)


def _periods_meet(a: Schedule, b: Schedule) -> bool:
    starts = [s for s in (a.starts_at, b.starts_at) if s is not None]
    ends = [e for e in (a.ends_at, b.ends_at) if e is not None]
    return not starts or not ends or max(starts) < min(ends)


# ------------------------------------------------------------------------------------------ status

Change = Literal["activate", "pause", "archive", "restore"]
TRANSITIONS: dict[Change, tuple[frozenset[Status], Status]] = {
    "activate": (frozenset({"draft", "paused"}), "active"),
    "pause": (frozenset({"active"}), "paused"),
    "archive": (frozenset({"draft", "active", "paused"}), "archived"),
    # Undoes an archive: paused, so that nothing is sent before marketing activates it again.
    "restore": (frozenset({"archived"}), "paused"),
}
EDITABLE: frozenset[Status] = frozenset({"draft", "active", "paused"})


def next_status(current: Status, change: Change) -> Status | None:
    """The status after `change`, or None when the change is not allowed from `current`."""
    allowed, target = TRANSITIONS[change]
    return target if current in allowed else None


# --------------------------------------------------------------------------------------- built in

# The walking skeleton's campaign: always there, active until marketing pauses or edits it (then the stored
# copy wins).
ACTIVATE_YOUR_CARD = Campaign(
    id="activate-your-card",
    version=1,
    status="active",
    built_in=True,
    definition=CampaignDefinition(
        name="Activeer je pas",
        purpose="service",
        trigger=Trigger(friction_rules=["online-signup-not-activated"]),
        channels=["in_app"],
        messages={
            "in_app": {
                "nl": MessageTemplate(
                    title="Je bibliotheekpas wacht op je",
                    body="Je hebt je online aangemeld, maar je pas is nog niet geactiveerd. Neem een "
                    "identiteitsbewijs mee naar een vestiging van {{ library.name }}; aan de balie of bij de "
                    "kiosk is het zo geregeld.",
                ),
                "nl-plain": MessageTemplate(
                    title="Je bibliotheekpas wacht op je",
                    body="Je pas werkt nog niet. Ga naar de bibliotheek. Neem je ID-kaart of paspoort mee.",
                ),
                "en": MessageTemplate(
                    title="Your library card is waiting for you",
                    body="You signed up online but have not activated your card yet. Bring an ID to any branch "
                    "of {{ library.name }}; it takes a minute at the desk or the kiosk.",
                ),
            }
        },
        priority=80,
    ),
)

BUILT_IN: tuple[Campaign, ...] = (ACTIVATE_YOUR_CARD,)
