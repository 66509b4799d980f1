"""Every event type of the platform (DESIGN §3), its payload model and its topic."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec
from pydantic import TypeAdapter, ValidationError

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


def typed_batch(events: Sequence[CloudEvent]) -> list[EventData | InvalidEvent]:
    """`typed_data` of each event, in order, an InvalidEvent for those that fail: one pydantic call per type, not
    one per event (half the time), then one by one for a type with an invalid payload among its events."""
    typed: list[EventData | InvalidEvent] = [InvalidEvent([])] * len(events)
    by_type: dict[str, list[int]] = {}
    for index, event in enumerate(events):
        by_type.setdefault(event.type, []).append(index)
    for type_name, indexes in by_type.items():
        payloads = _all_valid(type_name, [events[index].data for index in indexes])
        for position, index in enumerate(indexes):
            if payloads is not None:
                typed[index] = payloads[position]
                continue
            try:
                typed[index] = typed_data(events[index])
            except InvalidEvent as invalid:
                typed[index] = invalid
    return typed


def _all_valid(type_name: str, payloads: list[dict[str, Any]]) -> list[EventData] | None:
    """The payloads of one type validated in one call; None when the type is unknown or one of them is invalid."""
    model = _REGISTRY.get(type_name)
    if model is None:
        return None
    try:
        return _list_of(model).validate_python(payloads)
    except ValidationError:
        return None


def payloads_of(type_name: str, values: Sequence[bytes]) -> list[EventData] | None:
    """Record bodies (JSON) of one type validated in one call, as one JSON array; None when the type is unknown or
    one of them is not exactly one valid payload (then each on its own, `typed_data`, says which and why)."""
    model = _REGISTRY.get(type_name)
    if model is None:
        return None
    joined = b"[" + b",".join(values) + b"]"
    try:
        # Each element of the array must be exactly one body: malformed bodies could otherwise join into
        # well-formed elements that belong to other records.
        elements = _ELEMENTS.decode(joined)
        if len(elements) != len(values) or any(bytes(e) != v for e, v in zip(elements, values, strict=True)):
            return None
        return _list_of(model).validate_json(joined)
    except (ValidationError, msgspec.DecodeError):
        return None


_ELEMENTS = msgspec.json.Decoder(list[msgspec.Raw])


@functools.cache
def _list_of(model: type[EventData]) -> TypeAdapter[list[EventData]]:
    return TypeAdapter(list[model])  # type: ignore[valid-type]


def validated(event: CloudEvent, *, topic: Topic | None = None) -> CloudEvent:
    """Check type, payload and (optionally) that the type belongs on `topic`; returns the event."""
    data = typed_data(event)
    if topic is not None and data.topic != topic.name:
        raise InvalidEvent([FieldError("type", f"{event.type} does not belong on {topic.name}")])
    if event.subject is None:
        raise InvalidEvent([FieldError("subject", "required: the member or entity the event is about")])
    return event
