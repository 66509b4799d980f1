"""What journey publishes is built without validation on the hot path: each kind must still be what its model
accepts, and what a validated event would be."""

from __future__ import annotations

from services.journey import engine
from services.journey.handlers import friction_detected, friction_resolved, window_closed
from shared.events import CloudEvent, from_kafka, to_kafka, typed_data
from shared.events.journey import FrictionDetected, FrictionResolved, WindowClosed

DAY = 86_400_000
T0 = 1_750_000_000_123
FRICTION = engine.Friction("f-1", "online-signup-not-activated", "m-1", "e-1", T0, T0 + 14 * DAY, "oba",
                           "online→offline", "website", "18-64")  # fmt: skip


def round_trip(event: CloudEvent) -> CloudEvent:
    record = to_kafka(event)
    return from_kafka(record.value, list(record.headers.items()))


def test_a_detected_friction_is_a_valid_event_with_its_times_in_utc() -> None:
    event = round_trip(friction_detected(FRICTION))
    data = typed_data(event)
    assert isinstance(data, FrictionDetected)
    assert (event.id, event.subject, event.library, event.type) == ("f-1", "m-1", "oba", FrictionDetected.event_type)
    assert int(data.due_at.timestamp() * 1000) == FRICTION.due_ms == int(event.time.timestamp() * 1000)
    assert int(data.started_at.timestamp() * 1000) == FRICTION.started_ms


def test_a_resolution_names_the_event_that_resolved_it_and_the_time_it_took() -> None:
    resolution = engine.Resolution("f-1", FRICTION.rule, "m-1", "oba", FRICTION.due_ms, "activation-1",
                                   FRICTION.due_ms + 6 * DAY)  # fmt: skip
    data = typed_data(round_trip(friction_resolved(resolution)))
    assert isinstance(data, FrictionResolved)
    assert (data.resolved_by_event_id, data.seconds_to_resolve) == ("activation-1", 6 * 86_400.0)


def test_a_closed_window_without_a_library_leaves_the_field_out() -> None:
    window = engine.ClosedWindow("reservation-not-collected", "m-1", "e-2", 1_750_000_000_000, True, None,
                                 "online→offline", None, None)  # fmt: skip
    event = round_trip(window_closed(window))
    data = typed_data(event)
    assert isinstance(data, WindowClosed)
    assert data.met is True and data.library is None and event.library is None
