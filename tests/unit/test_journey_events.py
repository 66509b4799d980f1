"""What journey publishes is built in its Kafka form without validation on the hot path: each kind must still be
what its model accepts when read back the way every consumer reads it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.journey import outcomes
from services.journey.derived import (
    forwarded,
    friction_detected,
    friction_resolved,
    from_outbox,
    iso,
    to_outbox,
    window_closed,
)
from services.journey.rules import JourneyEvent
from services.journey.state import full_id, ref
from shared.events import CloudEvent, from_kafka, typed_data
from shared.events.journey import FrictionDetected, FrictionResolved, WindowClosed
from shared.publishing import Encoded

DAY = 86_400_000
T0 = 1_750_000_000_123
FRICTION = outcomes.Friction("f-1", "online-signup-not-activated", "m-1", "e-1", T0, T0 + 14 * DAY, "oba",
                           "online→offline", "website", "18-64")  # fmt: skip


def round_trip(record: Encoded) -> CloudEvent:
    return from_kafka(record.value, record.headers)


def test_a_detected_friction_is_a_valid_event_with_its_times_in_utc() -> None:
    event = round_trip(friction_detected(FRICTION))
    data = typed_data(event)
    assert isinstance(data, FrictionDetected)
    assert (event.id, event.subject, event.library, event.type) == ("f-1", "m-1", "oba", FrictionDetected.event_type)
    assert int(data.due_at.timestamp() * 1000) == FRICTION.due_ms == int(event.time.timestamp() * 1000)
    assert int(data.started_at.timestamp() * 1000) == FRICTION.started_ms


def test_a_resolution_names_the_event_that_resolved_it_and_the_time_it_took() -> None:
    resolution = outcomes.Resolution("f-1", FRICTION.rule, "m-1", "oba", FRICTION.due_ms, "activation-1",
                                   FRICTION.due_ms + 6 * DAY)  # fmt: skip
    data = typed_data(round_trip(friction_resolved(resolution)))
    assert isinstance(data, FrictionResolved)
    assert (data.resolved_by_event_id, data.seconds_to_resolve) == ("activation-1", 6 * 86_400.0)


def test_a_closed_window_without_a_library_leaves_the_field_out() -> None:
    window = outcomes.ClosedWindow("reservation-not-collected", "m-1", "e-2", 1_750_000_000_000, True, None,
                                 "online→offline", None, None)  # fmt: skip
    event = round_trip(window_closed(window))
    data = typed_data(event)
    assert isinstance(data, WindowClosed)
    assert data.met is True and data.library is None and event.library is None


def test_a_friction_is_keyed_and_routed_by_its_member() -> None:
    record = friction_detected(FRICTION)
    # notifications keeps one member's frictions in order: the member id is the key
    assert (record.topic, record.key, record.event_id) == ("journey.frictions.v1", b"m-1", "f-1")


def test_derived_payloads_keep_their_bytes_field_order_and_unset_fields_left_out() -> None:
    # Downstream readers and stored outboxes see exactly these bytes (built without a model or a dict per event).
    bare = outcomes.Friction("f-2", "youth-inactive", "m-2", "e-2", T0, T0 + 1, None, None, None, None)
    resolution = outcomes.Resolution("f-3", "repeated-login-failures", "m-3", None, T0, "x", T0 - 5)
    window = outcomes.ClosedWindow("viewed-online-not-taken-up", "m-9", "e-3", T0, False, "oba", None, "app", "0-3")
    assert friction_detected(FRICTION).value == (
        b'{"friction_id":"f-1","rule":"online-signup-not-activated","start_event_id":"e-1",'
        b'"started_at":"2025-06-15T15:06:40.123000Z","due_at":"2025-06-29T15:06:40.123000Z","library":"oba",'
        b'"channel_pair":"online\xe2\x86\x92offline","platform":"website","age_band":"18-64"}'
    )
    assert friction_detected(bare).value == (
        b'{"friction_id":"f-2","rule":"youth-inactive","start_event_id":"e-2",'
        b'"started_at":"2025-06-15T15:06:40.123000Z","due_at":"2025-06-15T15:06:40.124000Z"}'
    )
    assert friction_resolved(resolution).value == (
        b'{"friction_id":"f-3","rule":"repeated-login-failures","resolved_by_event_id":"x",'
        b'"resolved_at":"2025-06-15T15:06:40.118000Z","seconds_to_resolve":0.0}'
    )
    assert window_closed(window).value == (
        b'{"rule":"viewed-online-not-taken-up","start_event_id":"e-3","due_at":"2025-06-15T15:06:40.123000Z",'
        b'"met":false,"library":"oba","platform":"app","age_band":"0-3"}'
    )
    assert (window_closed(window).event_type, dict(window_closed(window).headers)["ce_type"]) == (
        WindowClosed.event_type,
        WindowClosed.event_type.encode(),
    )


@pytest.mark.parametrize("ms", [0, 1, 999, T0, 1_750_000_000_000, 4_102_444_800_123])
def test_event_times_are_written_as_isoformat_writes_them(ms: int) -> None:
    assert iso(ms) == datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def test_a_batch_kept_in_the_outbox_comes_back_as_it_was_stored() -> None:
    records = [friction_detected(FRICTION), forwarded("m-2", JourneyEvent(
        "e-9", "member.card_activated.v1", T0, "m-1", "offline", None, "oba", {"branch": "oosterdok"}))]  # fmt: skip
    assert from_outbox(to_outbox(records)) == records
    moved = round_trip(records[1])
    assert (moved.subject, moved.id, records[1].topic) == ("m-2", "e-9", "journey.forwards.v1")


@pytest.mark.parametrize(
    ("member", "size"),
    [
        ("0f8fad5b-d9cb-469f-a165-70867728950e", 16),  # a UUID as identity gives it out: its 16 bytes
        ("0F8FAD5B-D9CB-469F-A165-70867728950E", 36),  # not as identity writes it: kept as written
        ("m-1", 3),
        ("sixteen-chars-id", 17),  # as long as a UUID's bytes: marked
        ("0f8fad5b-d9cb-469f-a165-7086772895 e", 36),  # almost a UUID
        (" f8fad5b-d9cb-469f-a165-70867728950e", 36),
    ],
)
def test_an_id_is_kept_compactly_and_comes_back_the_same(member: str, size: int) -> None:
    field = ref(member)
    assert (full_id(field), len(field)) == (member, size)
