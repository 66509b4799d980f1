"""Records to what the rules see, fast and in batches: the attributes are read the fast way (`shared.events.fast_read`,
as analytics reads them), and a record of a type no rule looks at is never decoded. The payloads of the rest are
validated against their type's model with pydantic's compiled validator, all records of one type in one call (no
intermediate dict, no CloudEvent model); anything unusual (another layout, a missing header, a payload that does not
validate) goes the reference way (`shared.events.from_kafka`), which either accepts it or raises InvalidEvent naming
the field, exactly as every other consumer does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import msgspec
from pydantic import TypeAdapter, ValidationError

from services.journey.rules import JourneyEvent
from shared.events import FieldError, InvalidEvent, from_kafka, typed_data
from shared.events.fast_read import Attributes, attributes
from shared.events.registry import TYPE_PREFIX, event_types
from shared.telemetry import sampled_traceparent

# Per event type (without the prefix), a validator of a JSON array of its payloads.
_BATCHES: dict[str, TypeAdapter[list[Any]]] = {
    t.removeprefix(TYPE_PREFIX): TypeAdapter(list[m])  # type: ignore[valid-type]
    for t, m in event_types().items()
}


_ELEMENTS = msgspec.json.Decoder(list[msgspec.Raw])


class KafkaRecord(Protocol):
    """What the decoder needs of a Kafka record (aiokafka's, or a `Record`)."""

    @property
    def value(self) -> bytes | None: ...

    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


class Record(NamedTuple):
    """A record's value and headers, for a caller that has no aiokafka record (tests)."""

    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


Decoded = JourneyEvent | InvalidEvent | None  # None: no rule looks at its type


class Batch(NamedTuple):
    events: list[Decoded]  # in the batch's order
    traceparents: dict[int, str]  # a record's position → the sampled trace context it was sent in, if any


def decode_batch(records: Sequence[KafkaRecord], kinds: frozenset[str]) -> Batch:
    """Each record as the rules see it, an InvalidEvent (for the dead-letter topic) or None; and the sampled trace
    contexts of those whose type a rule looks at."""
    results: list[Decoded] = [None] * len(records)
    traceparents: dict[int, str] = {}
    by_kind: dict[str, list[tuple[int, Attributes]]] = {}  # (the record's position in the batch, its attributes)
    for at, record in enumerate(records):
        found = attributes(record.headers)
        if found is None:  # not the platform's layout, or a value it refuses: the reference decoder decides
            results[at] = _reference_or_invalid(record, kinds)
            if isinstance(results[at], JourneyEvent):
                _trace(traceparents, at, record.headers)
            continue
        kind = found.type.removeprefix(TYPE_PREFIX)
        if kind in kinds:
            by_kind.setdefault(kind, []).append((at, found))
            if found.read < len(record.headers):  # a trace context can only follow the attributes (most have none)
                _trace(traceparents, at, record.headers[found.read :])
    for kind, found_of_kind in by_kind.items():
        values = [records[at].value or b"{}" for at, _ in found_of_kind]
        joined = b"[" + b",".join(values) + b"]"
        try:
            # Each element of the joined array must be exactly one record's value: malformed values could otherwise
            # join into well-formed elements that belong to other records.
            elements = _ELEMENTS.decode(joined)
            if len(elements) != len(values) or any(bytes(e) != v for e, v in zip(elements, values, strict=True)):
                raise ValueError
            payloads = _BATCHES[kind].validate_json(joined)
        except (ValidationError, ValueError):
            # One of them is bad: each on its own, so the good ones go on and the bad one is named.
            for at, found in found_of_kind:
                results[at] = _one(kind, found, records[at], kinds)
            continue
        for (at, found), payload in zip(found_of_kind, payloads, strict=True):
            results[at] = _event(kind, found, payload.__dict__)
    return Batch(results, traceparents)


def _trace(traceparents: dict[int, str], at: int, headers: Sequence[tuple[str, bytes]]) -> None:
    traceparent = sampled_traceparent(headers)
    if traceparent is not None:
        traceparents[at] = traceparent


def _event(kind: str, found: Attributes, data: dict[str, Any]) -> JourneyEvent:
    return JourneyEvent(found.id, kind, int(found.time.timestamp() * 1000), found.subject, found.channel,
                        found.platform, found.library, data)  # fmt: skip


def _one(kind: str, found: Attributes, record: KafkaRecord, kinds: frozenset[str]) -> Decoded:
    try:
        [payload] = _BATCHES[kind].validate_json(b"[" + (record.value or b"{}") + b"]")
    except (ValidationError, ValueError):
        return _reference_or_invalid(record, kinds)
    return _event(kind, found, payload.__dict__)


def _reference_or_invalid(record: KafkaRecord, kinds: frozenset[str]) -> Decoded:
    try:
        return _reference(record.value, record.headers, kinds)
    except InvalidEvent as exc:
        return exc


def _reference(value: bytes | None, headers: Sequence[tuple[str, bytes]], kinds: frozenset[str]) -> JourneyEvent | None:
    cloud_event = from_kafka(value, headers)
    kind = cloud_event.type.removeprefix(TYPE_PREFIX)
    if kind not in kinds:
        return None
    data = typed_data(cloud_event)
    if cloud_event.subject is None:
        raise InvalidEvent([FieldError("ce_subject", "missing: journey follows members")])
    return JourneyEvent.of(cloud_event)._replace(data=data.__dict__)
