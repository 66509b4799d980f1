"""analytics' fast decoder against the reference way (`from_kafka`, `typed_data`, then the row): for records valid
and invalid in every way the fast way checks, it gives the same row, or refuses with the same reason, or skips the
same records (about no member); a batch gives what each record gives alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord

from services.analytics.decoding import Decoded, _checked, decode_facts
from services.analytics.facts import COLUMNS, Fact, envelope_of, epoch_ms, fact
from shared.events import CloudEvent, InvalidEvent, from_kafka, to_kafka, typed_data

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PROFILE = {"age_band": "0-3", "home_library": "oba", "postcode_area": "1034", "source": "consultatiebureau"}
PAYLOADS: dict[str, dict[str, Any]] = {
    "member.signed_up.v1": {**PROFILE, "birth_year": 2025},
    "usage.loan_borrowed.v1": {"item_id": "i", "loan_id": "l"},
    "member.login_succeeded.v1": {"login_platform": "app"},
    "member.channel_switched.v1": {
        "from_channel": "offline",
        "from_platform": "desk",
        "to_channel": "online",
        "to_platform": "app",
    },
    "member.merged.v1": {"survivor_id": "m2"},
    "member.guardian_set.v1": {"guardian_id": "g1"},
    "friction.detected.v1": {
        "friction_id": "f",
        "rule": "r",
        "start_event_id": "s",
        "library": "haarlem",
        "platform": "kiosk",
        "channel_pair": "online→offline",
        "age_band": "4-11",
        "started_at": "2026-03-01T09:00:00+00:00",
        "due_at": "2026-03-02T09:00:00Z",
    },
    "friction.resolved.v1": {
        "friction_id": "f",
        "rule": "r",
        "resolved_by_event_id": "x",
        "resolved_at": "2026-03-02T09:00:00Z",
        "seconds_to_resolve": 60.5,
    },
    "message.suppressed.v1": {"campaign_id": "c", "trigger_event_id": "t", "reason": "holdout"},
    "message.sent.v1": {"message_id": "m", "campaign_id": "c", "medium": "email", "trigger_event_id": "t"},
}
LOAN = "usage.loan_borrowed.v1"


def event(kind: str = LOAN, **data: Any) -> CloudEvent:
    return CloudEvent(id="e1", source="/t", type=f"nl.bibliotheek.{kind}", time=T0, subject="m1", library="oba",
                      channel="online", platform="website", data=data or PAYLOADS[kind])  # fmt: skip


def record(event: CloudEvent, value: bytes | None = None, /, **headers: str | bytes | None) -> Any:
    """The record as the platform publishes the event; `headers` replace (None: drop, bytes: as they are)."""
    kafka = to_kafka(event)
    named: dict[str, str | bytes | None] = {**kafka.headers, **headers}
    pairs = tuple((name, v if isinstance(v, bytes) else v.encode()) for name, v in named.items() if v is not None)
    return raw(pairs, kafka.value if value is None else value)


def raw(headers: Any, value: bytes | None) -> Any:
    return ConsumerRecord("t.identity.members.v1", 1, 7, 0, 0, b"m1", value, None, 0, 0, headers)


def reference(record: Any) -> Decoded:
    try:
        event = from_kafka(record.value, record.headers)
        data = typed_data(event)
    except InvalidEvent as invalid:
        return invalid
    envelope = envelope_of(event)
    return None if envelope is None else fact(envelope, data, record.topic, record.partition, record.offset)


def same(decoded: Decoded, expected: Decoded) -> bool:
    if isinstance(expected, InvalidEvent):
        return isinstance(decoded, InvalidEvent) and str(decoded) == str(expected)
    return decoded == expected


TIMES = [
    "2026-03-02T09:00:00Z",
    "2026-03-02T11:00:00+02:00",
    "2026-03-02T09:00:00.5Z",
    "2026-03-02T09:00:00.123456-00:00",
    "2026-03-02T09:00:00.9999999Z",
    "2026-03-02T09:00:00+23:59",
    "2026-03-02T09:00:00+24:00",
    "2026-03-02t09:00:00z",
    "2026-03-02 09:00:00Z",
    "2026-03-02T09:00Z",
    "2026-03-02T09:00:00",
    "2026-02-30T09:00:00Z",
    "2026-03-02T24:00:00Z",
    "2026-03-02T09:00:60Z",
    "yesterday",
    "1772442000",
    "0000-03-02T09:00:00Z",
    "2026-03-02T09:00:00Z\n",
]


CASES: list[Any] = [
    *(record(event(kind)) for kind in PAYLOADS),
    *(record(event(), ce_time=time) for time in TIMES),
    record(event(), ce_library=None),
    record(event(), ce_channel=None, ce_platform=None),
    record(event(), ce_library=None, ce_channel=None, ce_platform=None),
    record(event(), ce_id=""),
    record(event(), ce_id="x" * 200),
    record(event(), ce_id="x" * 201),
    record(event(), ce_id=b"\xff\xfe"),
    record(event(), ce_id=None),
    record(event(), ce_subject=None),
    record(event(), ce_subject=""),
    record(event(), ce_subject="é" * 200),
    record(event(), ce_subject="m" * 201),
    record(event(), ce_subject=b"m\xc3"),
    record(event(), ce_library="Not A Code"),
    record(event(), ce_library="oba\n"),
    record(event(), ce_library="o"),
    record(event(), ce_library="a" * 40),
    record(event(), ce_library="a" * 41),
    record(event(), ce_library=b"ob\xe1"),
    record(event(), ce_channel="email"),
    record(event(), ce_channel="Online"),
    record(event(), ce_platform="APP"),
    record(event(), ce_platform="p" * 33),
    record(event(), ce_source=""),
    record(event(), ce_source=None),
    record(event(), ce_source="s" * 501),
    record(event(), ce_type="nl.bibliotheek.no.such.v1"),
    record(event(), ce_type=None),
    record(event(), ce_specversion="0.3"),
    record(event(), ce_specversion=None),
    record(event(), **{"content-type": "text/plain"}),
    record(event(), **{"content-type": None}),
    record(event(), **{"content-type": "application/json; charset=utf-8"}),
    record(event(), ce_datacontenttype="application/json"),
    record(event(), ce_extension="x"),
    record(event(), b""),
    record(event(), b"[]"),
    record(event(), b'"x"'),
    record(event(), b'{"item_id": "i"'),
    record(event(), b'{"item_id": "i", "loan_id": "\xff"}'),
    record(event(), b'{"item_id": "i", "loan_id": "l", "isbn": "x"}'),
    record(event(), b'{"item_id": "i", "loan_id": 7}'),
    record(event(), b'{"item_id": "i"}'),
    record(event("member.signed_up.v1"), b'{"age_band": "0-3", "home_library": "oba", "postcode_area": "0123"}'),
    record(event("member.signed_up.v1", **{**PROFILE, "birth_year": 1800})),
    record(event("member.signed_up.v1", **{**PROFILE, "age_band": "3-4"})),
    record(event("friction.detected.v1", **{**PAYLOADS["friction.detected.v1"], "due_at": "2026-03-02T09:00:00"})),
    record(event("message.suppressed.v1", **{**PAYLOADS["message.suppressed.v1"], "reason": "bored"})),
    record(event("member.login_succeeded.v1"), b"{}"),
    raw((), b"{}"),
    raw((("ce_id", b"e1"),), b"{}"),
]


@pytest.mark.parametrize("at", range(len(CASES)))
def test_each_record_decodes_as_the_reference_way_decodes_it(at: int) -> None:
    expected = reference(CASES[at])
    [decoded] = decode_facts([CASES[at]])
    assert same(decoded, expected), (decoded, expected)


def test_a_batch_of_them_decodes_each_as_alone_in_its_order() -> None:
    decoded = decode_facts(CASES)
    assert all(same(d, reference(r)) for d, r in zip(decoded, CASES, strict=True))
    assert sum(isinstance(d, Fact) for d in decoded) > 20 and sum(isinstance(d, InvalidEvent) for d in decoded) > 30


def test_unusual_but_valid_layouts_are_read_the_reference_way() -> None:
    good = record(event())
    headers = dict(good.headers)
    reordered = raw(tuple(sorted(good.headers)), good.value)
    twice = raw((*good.headers, ("ce_id", b"e2")), good.value)
    lowercase = raw((("Content-Type", b"application/json"), *good.headers[1:]), good.value)
    structured = record(event(), event().model_dump_json().encode(),
                        **{"content-type": "application/cloudevents+json"})  # fmt: skip
    for one in (reordered, twice, lowercase, structured):
        [decoded] = decode_facts([one])
        assert same(decoded, reference(one)) and isinstance(decoded, Fact)
    assert isinstance(later := decode_facts([twice])[0], Fact) and later.event_id == "e2" and headers["ce_id"] == b"e1"


def test_a_record_published_in_a_trace_is_read_the_fast_way_its_trace_headers_ignored() -> None:
    good = record(event())
    trace = (("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"), ("tracestate", b"k=v"))
    traced = raw((*good.headers, *trace), good.value)
    faststream = raw((*good.headers, ("correlation_id", b"c1"), *trace), good.value)
    for one in (traced, faststream):
        [decoded] = decode_facts([one])
        assert isinstance(decoded, Fact) and same(decoded, reference(one)) and decoded == decode_facts([good])[0]
        assert _checked(one) is not None  # the fast way (4 µs a record against the reference way's 17)
    # An attribute after the trace context is still one: an unknown one is refused, as the reference way does.
    unknown = raw((*good.headers, *trace, ("ce_colour", b"blue")), good.value)
    [refused] = decode_facts([unknown])
    assert isinstance(refused, InvalidEvent) and same(refused, reference(unknown))


def decoded_row(kind: str) -> Fact:
    [decoded] = decode_facts([record(event(kind))])
    assert isinstance(decoded, Fact), decoded
    return decoded


def test_each_payload_fills_its_own_columns_and_the_envelope_the_rest() -> None:
    rows = {kind: dict(zip(COLUMNS, decoded_row(kind), strict=False)) for kind in PAYLOADS}
    assert all(len(decoded_row(kind)) == len(Fact._fields) for kind in PAYLOADS)
    signed_up, guardian = decoded_row("member.signed_up.v1"), decoded_row("member.guardian_set.v1")
    assert (signed_up.home_library, signed_up.birth_year, signed_up.guardian_id) == ("oba", 2025, None)
    assert (guardian.guardian_id, guardian.birth_year, guardian.home_library) == ("g1", None, None)
    assert rows["message.suppressed.v1"]["outcome"] == "holdout" and rows["message.sent.v1"]["outcome"] == "sent"
    detected = rows["friction.detected.v1"]
    assert (detected["library"], detected["platform"], detected["channel"]) == ("haarlem", "kiosk", "online")
    assert (detected["started"], detected["due"]) == (epoch_ms(T0 - timedelta(days=1)), epoch_ms(T0))
    loan = rows[LOAN]
    assert (loan["library"], loan["platform"], loan["merged_from"], loan["outcome"]) == ("oba", "website", "", None)
    assert (loan["type"], loan["time"], loan["member_id"]) == (LOAN, epoch_ms(T0), "m1")
