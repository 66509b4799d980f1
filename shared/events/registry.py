"""Every event type of the platform (DESIGN §3), its payload model and its topic."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pydantic import ValidationError

from shared.events.envelope import CloudEvent, EventData, FieldError, InvalidEvent, field_errors
from shared.topics import Topic

TYPE_PREFIX = "nl.bibliotheek."

D = TypeVar("D", bound=type[EventData])

_REGISTRY: dict[str, type[EventData]] = {}


def event(type_name: str, topic: Topic) -> Callable[[D], D]:
    """Register a payload model under its CloudEvents type, e.g. `member.signed_up.v1`."""
    full = TYPE_PREFIX + type_name

    def register(model: D) -> D:
        if full in _REGISTRY:
            raise ValueError(f"event type {full} registered twice")
        model.event_type = full
        model.topic = topic.name
        _REGISTRY[full] = model
        return model

    return register


def event_types() -> dict[str, type[EventData]]:
    return dict(_REGISTRY)


def model_for(type_name: str) -> type[EventData]:
    try:
        return _REGISTRY[type_name]
    except KeyError:
        raise InvalidEvent([FieldError("type", f"unknown event type {type_name!r}")]) from None


def typed_data(event: CloudEvent) -> EventData:
    """The event's payload validated against the model of its type; InvalidEvent names the field."""
    model = model_for(event.type)
    try:
        return model.model_validate(event.data)
    except ValidationError as exc:
        raise InvalidEvent(field_errors(exc, prefix="data.")) from None


def validated(event: CloudEvent, *, topic: Topic | None = None) -> CloudEvent:
    """Check type, payload and (optionally) that the type belongs on `topic`; returns the event."""
    data = typed_data(event)
    if topic is not None and data.topic != topic.name:
        raise InvalidEvent([FieldError("type", f"{event.type} does not belong on {topic.name}")])
    if event.subject is None:
        raise InvalidEvent([FieldError("subject", "required: the member or entity the event is about")])
    return event
