"""Records to what the rules see, fast: the type is read from its header first, and a record of a type no rule
looks at is never decoded. The payload of the rest is validated against its type's model in one call of
pydantic's compiled validator (no intermediate dict, no CloudEvent model); anything unusual (a missing header, a
payload that does not validate) goes the reference way (`shared.events.from_kafka`), which either accepts it or
raises InvalidEvent naming the field, exactly as every other consumer does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from services.journey.rules import JourneyEvent
from shared.events import FieldError, InvalidEvent, from_kafka, typed_data
from shared.events.registry import TYPE_PREFIX, event_types

_VALIDATORS = {t.removeprefix(TYPE_PREFIX): m.__pydantic_validator__ for t, m in event_types().items()}


def decode(value: bytes | None, headers: Sequence[tuple[str, bytes]], kinds: frozenset[str]) -> JourneyEvent | None:
    """The event, or None when no rule looks at its type. Raises InvalidEvent for a record no one could use."""
    found: dict[str, bytes] = dict(headers)
    raw_type = found.get("ce_type")
    if (
        raw_type is None
        or "ce_id" not in found
        or "ce_source" not in found
        or "ce_time" not in found
        or "ce_specversion" not in found
        or "ce_subject" not in found
    ):
        return _reference(value, headers, kinds)
    try:
        kind = raw_type.decode().removeprefix(TYPE_PREFIX)
    except UnicodeDecodeError:
        return _reference(value, headers, kinds)
    if kind not in kinds:
        return None
    validator = _VALIDATORS.get(kind)
    try:
        if validator is None or found["ce_specversion"] != b"1.0" or not found["ce_id"] or not found["ce_source"]:
            raise ValueError
        at = datetime.fromisoformat(found["ce_time"].decode())
        if at.tzinfo is None:
            raise ValueError
        data: dict[str, Any] = validator.validate_json(value or b"{}").__dict__
        return JourneyEvent(
            found["ce_id"].decode(),
            kind,
            int(at.timestamp() * 1000),
            found["ce_subject"].decode(),
            _text(found.get("ce_channel")),
            _text(found.get("ce_platform")),
            _text(found.get("ce_library")),
            data,
        )
    except (ValueError, ValidationError, UnicodeDecodeError):
        return _reference(value, headers, kinds)


def _text(raw: bytes | None) -> str | None:
    return raw.decode() if raw else None


def _reference(value: bytes | None, headers: Sequence[tuple[str, bytes]], kinds: frozenset[str]) -> JourneyEvent | None:
    cloud_event = from_kafka(value, headers)
    kind = cloud_event.type.removeprefix(TYPE_PREFIX)
    if kind not in kinds:
        return None
    data = typed_data(cloud_event)
    if cloud_event.subject is None:
        raise InvalidEvent([FieldError("ce_subject", "missing: journey follows members")])
    return JourneyEvent.of(cloud_event)._replace(data=data.__dict__)
