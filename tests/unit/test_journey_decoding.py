"""journey reads a batch of records the way every consumer would, only faster: the same events, and the same bad
records refused, whatever else is in the batch."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.journey.decoding import Record, decode_batch
from services.journey.engine import Engine
from services.journey.rules import JourneyEvent, load_rules
from shared.events import CloudEvent, InvalidEvent, to_kafka, typed_data

KINDS = Engine(load_rules().rules).kinds
T = datetime(2026, 3, 2, 9, 0, 0, 123000, tzinfo=UTC)


def event(kind: str, member: str, **data: Any) -> CloudEvent:
    return CloudEvent(id=f"e-{member}-{kind}", source="/test", type=f"nl.bibliotheek.{kind}", time=T, subject=member,
                      library="oba", channel="online", platform="website", data=data)  # fmt: skip


def record(cloud_event: CloudEvent, value: bytes | None = None) -> Record:
    kafka = to_kafka(cloud_event)
    headers = [(name, text.encode()) for name, text in kafka.headers.items()]
    return Record(kafka.value if value is None else value, headers)


def reference(cloud_event: CloudEvent) -> JourneyEvent:
    return JourneyEvent.of(cloud_event)._replace(data=typed_data(cloud_event).__dict__)


SIGNED_UP = event("member.signed_up.v1", "m1", age_band="18-64", home_library="oba", postcode_area="1034")
ACTIVATED = event("member.card_activated.v1", "m1", branch="oosterdok")
LOGIN = event("member.login_succeeded.v1", "m2", login_platform="ebook")


def test_a_batch_of_several_types_reads_as_each_record_read_on_its_own() -> None:
    batch = [SIGNED_UP, ACTIVATED, LOGIN, event("member.signed_up.v1", "m3", age_band="0-3", home_library="oba",
                                                 postcode_area="5038", source="consultatiebureau")]  # fmt: skip
    decoded = decode_batch([record(e) for e in batch], KINDS).events
    assert decoded == [reference(e) for e in batch]
    assert decoded[0] is not None and not isinstance(decoded[0], InvalidEvent)
    assert decoded[0].t == int(T.timestamp() * 1000)


def test_a_bad_payload_is_refused_naming_its_field_and_the_rest_of_its_type_goes_on() -> None:
    bad = event("member.signed_up.v1", "m9", age_band="18-64", home_library="oba", postcode_area="0000")
    decoded = decode_batch([record(SIGNED_UP), record(bad), record(ACTIVATED)], KINDS).events
    assert decoded[0] == reference(SIGNED_UP) and decoded[2] == reference(ACTIVATED)
    assert isinstance(decoded[1], InvalidEvent)
    assert decoded[1].errors[0].field == "data.postcode_area"


def test_broken_values_that_would_join_into_valid_ones_are_each_refused() -> None:
    # Alone none of these is JSON; joined into one array they would read as well-formed payloads, one short here
    # and one extra there, and hand the good record's payload to another member.
    first = record(ACTIVATED, b'{"branch":"a')
    second = record(event("member.card_activated.v1", "m2"), b'b"}')
    good = record(event("member.card_activated.v1", "m3", branch="noord"))
    splitter = record(event("member.card_activated.v1", "m4"), b"{},{}")
    decoded = decode_batch([first, second, good, splitter], KINDS).events
    assert [type(d) for d in decoded] == [InvalidEvent, InvalidEvent, JourneyEvent, InvalidEvent]
    assert isinstance(decoded[2], JourneyEvent) and decoded[2].subject == "m3" and decoded[2].data["branch"] == "noord"


def test_a_type_no_rule_looks_at_is_skipped_unread_and_a_record_without_a_member_is_refused() -> None:
    unread = record(event("member.consent_changed.v1", "m1"), b"not even json")
    no_subject = record(ACTIVATED.model_copy(update={"subject": None}))
    decoded = decode_batch([unread, no_subject], KINDS).events
    assert decoded[0] is None
    assert isinstance(decoded[1], InvalidEvent) and decoded[1].errors[0].field == "ce_subject"


def test_a_record_in_another_binding_is_read_the_reference_way() -> None:
    missing_time = record(LOGIN)
    missing_time = Record(missing_time.value, [(n, v) for n, v in missing_time.headers if n != "ce_time"])
    decoded = decode_batch([missing_time], KINDS).events
    assert isinstance(decoded[0], InvalidEvent) and decoded[0].errors[0].field == "ce_time"


SAMPLED = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"


def with_headers(cloud_event: CloudEvent, *extra: tuple[str, bytes]) -> Record:
    plain = record(cloud_event)
    return Record(plain.value, [*plain.headers, *extra])


def test_a_record_with_a_trace_context_reads_as_without_one_and_its_sampled_trace_is_told() -> None:
    traced = with_headers(LOGIN, ("traceparent", SAMPLED.encode()), ("correlation_id", b"c-1"))
    unsampled = with_headers(ACTIVATED, ("traceparent", SAMPLED.removesuffix("01").encode() + b"00"))
    batch = decode_batch([record(SIGNED_UP), traced, unsampled], KINDS)
    assert batch.events == [reference(SIGNED_UP), reference(LOGIN), reference(ACTIVATED)]
    assert batch.traceparents == {1: SAMPLED}  # the first has none, the last's trace is not sampled


def test_a_record_read_the_reference_way_has_its_trace_context_told_too() -> None:
    # A trace context before the attributes: not the platform's layout, so the reference way reads the record.
    plain = record(LOGIN)
    traced = Record(plain.value, [("traceparent", SAMPLED.encode()), *plain.headers])
    batch = decode_batch([traced], KINDS)
    assert batch.events == [reference(LOGIN)]
    assert batch.traceparents == {0: SAMPLED}


def test_an_attribute_the_reference_way_refuses_is_refused_the_fast_way_too() -> None:
    bad_library = record(LOGIN)
    bad_library = Record(
        bad_library.value, [(n, b"Not A Library" if n == "ce_library" else v) for n, v in bad_library.headers]
    )
    decoded = decode_batch([bad_library, record(ACTIVATED)], KINDS).events
    assert isinstance(decoded[0], InvalidEvent) and "library" in decoded[0].errors[0].field
    assert decoded[1] == reference(ACTIVATED)
