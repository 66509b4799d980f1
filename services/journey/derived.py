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

from services.journey import engine
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
_DETECTED, _RESOLVED, _CLOSED = (t.event_type.encode() for t in (FrictionDetected, FrictionResolved, WindowClosed))


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


def _record(
    topic: str, event_type: bytes, event_id: str, rule: str, subject: str, library: str | None, at: str, data: Any
) -> Encoded:
    """`at`: the event time, as `iso` writes it (the data's own time field, usually: formatted once)."""
    source = _SOURCES.get(rule)
    if source is None:
        source = _SOURCES[rule] = f"{SOURCE}/rules/{rule}".encode()
    headers = [
        *_CONSTANT,
        ("ce_id", event_id.encode()),
        ("ce_source", source),
        ("ce_type", event_type),
        ("ce_time", at.encode()),
        ("ce_subject", subject.encode()),
    ]
    if library is not None:
        headers.append(("ce_library", library.encode()))
    value = _JSON.encode({k: v for k, v in data.items() if v is not None})
    return Encoded(topic, event_id, event_type.decode(), subject.encode(), value, headers)


def friction_detected(friction: engine.Friction) -> Encoded:
    # event time, not processing time: a replay gives the same event
    due = iso(friction.due_ms)
    return _record(
        FRICTIONS.name, _DETECTED, friction.friction_id, friction.rule, friction.member_id, friction.library, due,
        {
            "friction_id": friction.friction_id, "rule": friction.rule, "start_event_id": friction.start_event_id,
            "started_at": iso(friction.started_ms), "due_at": due, "library": friction.library,
            "channel_pair": friction.channel_pair, "platform": friction.platform, "age_band": friction.age_band,
        },
    )  # fmt: skip


def friction_resolved(resolution: engine.Resolution) -> Encoded:
    at = iso(resolution.at_ms)
    return _record(
        FRICTIONS.name, _RESOLVED, deterministic_id("resolved", resolution.friction_id), resolution.rule,
        resolution.member_id, resolution.library, at,
        {
            "friction_id": resolution.friction_id, "rule": resolution.rule,
            "resolved_by_event_id": resolution.event_id, "resolved_at": at,
            "seconds_to_resolve": max(0.0, (resolution.at_ms - resolution.due_ms) / 1000),
        },
    )  # fmt: skip


def window_closed(window: engine.ClosedWindow) -> Encoded:
    due = iso(window.due_ms)
    return _record(
        WINDOWS.name, _CLOSED, deterministic_id("closed", window.rule, window.member_id, window.start_event_id),
        window.rule, window.member_id, window.library, due,
        {
            "rule": window.rule, "start_event_id": window.start_event_id, "due_at": due,
            "met": window.met, "library": window.library, "channel_pair": window.channel_pair,
            "platform": window.platform, "age_band": window.age_band,
        },
    )  # fmt: skip


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
