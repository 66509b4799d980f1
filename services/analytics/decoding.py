"""Kafka records to rows, fast and in batches (`shared.kafka`'s decoder hook): only what a row keeps is read and
validated. The envelope attributes it keeps (id, time, subject, library, channel, platform) are validated with the
CloudEvent model's own constraints, all records of a batch in one call; the payloads with their type's model, all
records of one type in one call (`payloads_of`). Anything unusual — structured mode, a missing attribute, a value
that does not validate — goes the reference way (`shared.events.from_kafka`, `typed_data`), which either accepts it
or names the field, as every other consumer does; the consume loop dead-letters it with that reason.

An event about no member (no subject) has no row: it is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError

from services.analytics.facts import Envelope, Fact, envelope_of, epoch_ms, fact
from shared.events import CloudEvent, InvalidEvent, from_kafka, typed_data
from shared.events.registry import payloads_of

Decoded = Fact | InvalidEvent | None


def _checked(name: str, annotation: Any = None) -> Any:
    """The CloudEvent attribute's type with its constraints (one schema for both ways of decoding)."""
    field = CloudEvent.model_fields[name]
    kind = annotation or field.annotation
    return Annotated[(kind, *field.metadata)] if field.metadata else kind


# The attributes a row keeps, as (id, time, subject, library, channel, platform); the subject is required here.
_KEPT = (_checked("id"), _checked("time"), _checked("subject", str), *map(_checked, ("library", "channel", "platform")))
_ENVELOPES: TypeAdapter[list[tuple[Any, ...]]] = TypeAdapter(list[tuple[_KEPT]])  # type: ignore[valid-type]
_REQUIRED = ("ce_id", "ce_type", "ce_time", "ce_subject")
_OPTIONAL = ("ce_library", "ce_channel", "ce_platform")


def decode_facts(records: Sequence[Any]) -> list[Decoded]:
    """Each record's row, an InvalidEvent (for the dead-letter topic) or None (no member), in the batch's order."""
    results: list[Decoded] = [None] * len(records)
    usual: list[int] = []
    attributes: list[tuple[str | None, ...]] = []
    types: list[str] = []
    for at, record in enumerate(records):
        headers = dict(record.headers)
        if (
            not record.value
            or headers.get("content-type") != b"application/json"
            or headers.get("ce_specversion") != b"1.0"
        ):
            results[at] = _reference(record)
            continue
        try:
            raw_id, kind, raw_time, subject = (headers[name].decode() for name in _REQUIRED)
            attributes.append((raw_id, raw_time, subject, *(_text(headers.get(name)) for name in _OPTIONAL)))
        except (KeyError, UnicodeDecodeError):
            results[at] = _reference(record)
            continue
        usual.append(at)
        types.append(kind)
    envelopes = _envelopes(attributes)
    by_type: dict[str, list[tuple[int, Envelope]]] = {}
    for at, kind, checked in zip(usual, types, envelopes, strict=True):
        if checked is None:
            results[at] = _reference(records[at])
        else:
            by_type.setdefault(kind, []).append((at, Envelope(checked[0], checked[2], kind, epoch_ms(checked[1]),
                                                              checked[3], checked[4], checked[5])))  # fmt: skip
    for kind, members in by_type.items():
        payloads = payloads_of(kind, [records[at].value for at, _ in members])
        if payloads is None:  # one of them is bad: each the reference way, so the good ones go on
            for at, _ in members:
                results[at] = _reference(records[at])
            continue
        for (at, envelope), data in zip(members, payloads, strict=True):
            record = records[at]
            results[at] = fact(envelope, data, record.topic, record.partition, record.offset)
    return results


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode()


def _envelopes(attributes: list[tuple[str | None, ...]]) -> list[tuple[Any, ...] | None]:
    """The attributes validated, all in one call when all are valid (the usual case), else one by one."""
    try:
        return list(_ENVELOPES.validate_python(attributes))
    except ValidationError:
        pass
    checked: list[tuple[Any, ...] | None] = []
    for one in attributes:
        try:
            checked.append(_ENVELOPES.validate_python([one])[0])
        except ValidationError:
            checked.append(None)
    return checked


def _reference(record: Any) -> Decoded:
    try:
        event = from_kafka(record.value, record.headers)
        data = typed_data(event)
    except InvalidEvent as invalid:
        return invalid
    envelope = envelope_of(event)
    return None if envelope is None else fact(envelope, data, record.topic, record.partition, record.offset)
