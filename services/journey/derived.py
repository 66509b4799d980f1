"""What journey publishes, built straight in its Kafka form (binary-mode CloudEvents) from the engine's typed values.

Tens of thousands of these a second: no CloudEvent model is built and nothing is validated again on the way out.
`tests/unit/test_journey_events.py` reads each kind back the way every consumer does (`from_kafka`, the type's
model) and checks what it says. Ids are derived from the inputs, so a batch decided again after a crash publishes
the same ids, which consumers recognise.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import msgspec
from pydantic import BaseModel

from services.journey import outcomes
from services.journey.rules import JourneyEvent
from shared.events import CloudEvent, deterministic_id
from shared.events.journey import FrictionDetected, FrictionResolved, WindowClosed
from shared.events.registry import TYPE_PREFIX, model_for
from shared.publishing import Encoded, encoded
from shared.topics import FORWARDS, FRICTIONS, WINDOWS

SOURCE = "/journey"
FORWARD_SOURCE = "/journey/forwards"
_JSON = msgspec.json.Encoder()
_CONSTANT = [("content-type", b"application/json"), ("ce_specversion", b"1.0")]
_DETECTED, _RESOLVED, _CLOSED = (t.event_type for t in (FrictionDetected, FrictionResolved, WindowClosed))
_TYPES = {t: t.encode() for t in (_DETECTED, _RESOLVED, _CLOSED)}


_DAYS: dict[int, str] = {}
_EPOCH = datetime(1970, 1, 1)


def iso(ms: int) -> str:
    """ISO 8601 in UTC, as `datetime.isoformat` writes it (microseconds when there are milliseconds), with `Z`. The
    date part is kept per day: two or three of these per derived event add up."""
    day, rest = divmod(ms, 86_400_000)
    date = _DAYS.get(day)
    if date is None:
        date = _DAYS[day] = (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%dT")
    seconds, millis = divmod(rest, 1000)
    fraction = ".%03d000Z" % millis if millis else "Z"  # noqa: UP031 (a third faster than an f-string here)
    return "%s%02d:%02d:%02d%s" % (date, seconds // 3600, seconds // 60 % 60, seconds % 60, fraction)  # noqa: UP031


_SOURCES: dict[str, bytes] = {}


def _payload(model: type[BaseModel]) -> type[msgspec.Struct]:
    """The model's payload as a struct with its fields in its order, encoded as the JSON object the model reads, the
    unset (None) fields left out, without a dict built and filtered per event (tests/unit/test_journey_events.py
    holds the bytes). Values are given already in their JSON form (times as `iso` writes them)."""
    fields = [(name, Any) if f.is_required() else (name, Any, None) for name, f in model.model_fields.items()]
    return msgspec.defstruct(f"_{model.__name__}", fields, omit_defaults=True)


_Detected, _Resolved, _Closed = (_payload(m) for m in (FrictionDetected, FrictionResolved, WindowClosed))


def _record(
    topic: str, event_type: str, event_id: str, rule: str, subject: str, library: str | None, at: str, value: bytes
) -> Encoded:
    """`at`: the event time, as `iso` writes it (the data's own time field, usually: formatted once)."""
    source = _SOURCES.get(rule)
    if source is None:
        source = _SOURCES[rule] = f"{SOURCE}/rules/{rule}".encode()
    key = subject.encode()
    headers = [
        *_CONSTANT,
        ("ce_id", event_id.encode()),
        ("ce_source", source),
        ("ce_type", _TYPES[event_type]),
        ("ce_time", at.encode()),
        ("ce_subject", key),
    ]
    if library is not None:
        headers.append(("ce_library", library.encode()))
    return Encoded(topic, event_id, event_type, key, value, headers)


def friction_detected(f: outcomes.Friction) -> Encoded:
    # event time, not processing time: a replay gives the same event
    due = iso(f.due_ms)
    data = _Detected(friction_id=f.friction_id, rule=f.rule, start_event_id=f.start_event_id,
                     started_at=iso(f.started_ms), due_at=due, library=f.library, channel_pair=f.channel_pair,
                     platform=f.platform, age_band=f.age_band)  # fmt: skip
    return _record(FRICTIONS.name, _DETECTED, f.friction_id, f.rule, f.member_id, f.library, due, _JSON.encode(data))


def friction_resolved(r: outcomes.Resolution) -> Encoded:
    at = iso(r.at_ms)
    data = _Resolved(friction_id=r.friction_id, rule=r.rule, resolved_by_event_id=r.event_id, resolved_at=at,
                     seconds_to_resolve=max(0.0, (r.at_ms - r.due_ms) / 1000))  # fmt: skip
    return _record(FRICTIONS.name, _RESOLVED, deterministic_id("resolved", r.friction_id), r.rule, r.member_id,
                   r.library, at, _JSON.encode(data))  # fmt: skip


def window_closed(w: outcomes.ClosedWindow) -> Encoded:
    due = iso(w.due_ms)
    data = _Closed(rule=w.rule, start_event_id=w.start_event_id, due_at=due, met=w.met, library=w.library,
                   channel_pair=w.channel_pair, platform=w.platform, age_band=w.age_band)  # fmt: skip
    return _record(WINDOWS.name, _CLOSED, deterministic_id("closed", w.rule, w.member_id, w.start_event_id), w.rule,
                   w.member_id, w.library, due, _JSON.encode(data))  # fmt: skip


def forwarded(survivor: str, event: JourneyEvent) -> Encoded:
    """An event of a merged-away record, now the survivor's, for the survivor's partition (journey.forwards.v1).
    Rare: built and validated the ordinary way."""
    data = model_for(TYPE_PREFIX + event.kind).model_validate(event.data).model_dump(mode="json")
    cloud_event = CloudEvent(
        id=event.id, source=FORWARD_SOURCE, type=TYPE_PREFIX + event.kind, time=iso(event.t), subject=survivor,
        library=event.library, channel=event.channel, platform=event.platform, data=data,
    )  # fmt: skip
    return encoded(cloud_event, FORWARDS.name)


_OUTBOX = msgspec.msgpack.Encoder()
_FROM_OUTBOX = msgspec.msgpack.Decoder(list[tuple[str, str, str, bytes | None, bytes, list[tuple[str, bytes]]]])


def to_outbox(records: list[Encoded]) -> bytes:
    """A batch's derived records as one MessagePack value, stored with the batch's state until Kafka has them."""
    return _OUTBOX.encode(records)


def from_outbox(raw: bytes) -> list[Encoded]:
    return [Encoded(*fields) for fields in _FROM_OUTBOX.decode(raw)]
