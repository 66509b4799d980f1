"""The CloudEvents envelope, its Kafka binary binding, its HTTP forms and the event registry."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.events import (
    CloudEvent,
    InvalidEvent,
    deterministic_id,
    event_types,
    from_batch,
    from_kafka,
    from_structured,
    to_kafka,
    to_structured,
    typed_data,
    validated,
)
from shared.events.members import CardActivated, MemberSignedUp
from shared.topics import ALL_TOPICS, FRICTIONS, MEMBERS


def signed_up(**overrides: object) -> CloudEvent:
    data = MemberSignedUp(age_band="18-64", home_library="oba", postcode_area="1034", source="website")
    event = CloudEvent.create(
        data,
        subject="0b7c1f9e-8d39-4a4c-9a53-2f1e3b0f7a11",
        source="/libraries/oba/website",
        library="oba",
        channel="online",
        platform="website",
        time=datetime(2026, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=1))),
    )
    return event.model_copy(update=overrides)


def headers_as_kafka_gives_them(headers: dict[str, str]) -> list[tuple[str, bytes]]:
    return [(name, value.encode()) for name, value in headers.items()]


def test_an_event_survives_the_kafka_binding_unchanged() -> None:
    event = signed_up()
    record = to_kafka(event)
    back = from_kafka(record.value, headers_as_kafka_gives_them(record.headers))
    assert back == event
    assert typed_data(back) == MemberSignedUp(
        age_band="18-64", home_library="oba", postcode_area="1034", source="website"
    )


def test_the_kafka_binding_uses_ce_headers_a_json_body_and_the_subject_as_key() -> None:
    record = to_kafka(signed_up())
    assert record.key == b"0b7c1f9e-8d39-4a4c-9a53-2f1e3b0f7a11"
    assert record.headers["ce_type"] == "nl.bibliotheek.member.signed_up.v1"
    assert record.headers["ce_specversion"] == "1.0"
    assert record.headers["ce_library"] == "oba"
    assert record.headers["ce_channel"] == "online"
    assert record.headers["content-type"] == "application/json"
    # Event time is carried in UTC, whatever offset it was given in.
    assert record.headers["ce_time"] == "2026-03-01T08:30:00Z"
    assert json.loads(record.value)["postcode_area"] == "1034"


def test_a_record_without_cloudevents_headers_is_refused_naming_ce_type() -> None:
    with pytest.raises(InvalidEvent) as refused:
        from_kafka(b'{"hello": 1}', [])
    assert refused.value.errors[0].field == "ce_type"


def test_a_body_that_is_not_json_is_refused_naming_the_body() -> None:
    record = to_kafka(signed_up())
    with pytest.raises(InvalidEvent) as refused:
        from_kafka(b"\x00\xffnot json", headers_as_kafka_gives_them(record.headers))
    assert refused.value.errors[0].field == "body"


def test_a_bad_attribute_header_is_refused_naming_that_header() -> None:
    record = to_kafka(signed_up())
    headers = {**record.headers, "ce_channel": "sideways"}
    with pytest.raises(InvalidEvent) as refused:
        from_kafka(record.value, headers_as_kafka_gives_them(headers))
    assert [e.field for e in refused.value.errors] == ["ce_channel"]


def test_a_time_without_offset_is_refused() -> None:
    record = to_kafka(signed_up())
    headers = {**record.headers, "ce_time": "2026-03-01T09:30:00"}
    with pytest.raises(InvalidEvent) as refused:
        from_kafka(record.value, headers_as_kafka_gives_them(headers))
    assert refused.value.errors[0].field == "ce_time"


def test_the_structured_form_round_trips() -> None:
    event = signed_up()
    document = to_structured(event)
    assert document["specversion"] == "1.0"
    assert document["type"] == "nl.bibliotheek.member.signed_up.v1"
    assert from_structured(json.loads(json.dumps(document))) == event


def test_a_batch_keeps_the_good_items_and_says_why_each_bad_one_was_refused() -> None:
    good = to_structured(signed_up())
    no_id = {k: v for k, v in good.items() if k != "id"}
    results = from_batch([good, no_id, "not an object"])
    assert isinstance(results[0], CloudEvent)
    assert isinstance(results[1], InvalidEvent)
    assert results[1].errors[0].field == "id"
    assert isinstance(results[2], InvalidEvent)
    assert results[2].errors[0].field == "body"


def test_a_batch_must_be_an_array() -> None:
    with pytest.raises(InvalidEvent):
        from_batch({"type": "x"})


def test_payload_errors_name_the_data_field() -> None:
    event = signed_up(data={"age_band": "7-9", "home_library": "oba", "postcode_area": "1034"})
    with pytest.raises(InvalidEvent) as refused:
        typed_data(event)
    assert [e.field for e in refused.value.errors] == ["data.age_band"]


def test_an_unknown_type_is_refused_naming_type() -> None:
    with pytest.raises(InvalidEvent) as refused:
        typed_data(signed_up(type="nl.bibliotheek.member.teleported.v1"))
    assert refused.value.errors[0].field == "type"


def test_an_event_is_checked_against_the_topic_it_is_posted_for() -> None:
    assert validated(signed_up(), topic=MEMBERS).type.endswith("signed_up.v1")
    with pytest.raises(InvalidEvent):
        validated(signed_up(), topic=FRICTIONS)


def test_error_messages_never_echo_the_value_given() -> None:
    secret = "jan.jansen@example.nl"
    event = signed_up(data={"age_band": secret, "home_library": "oba", "postcode_area": "1034"})
    with pytest.raises(InvalidEvent) as refused:
        typed_data(event)
    assert secret not in str(refused.value)


def test_every_event_type_of_the_design_is_registered_on_a_known_topic() -> None:
    types = event_types()
    topics = {t.name for t in ALL_TOPICS}
    expected = {
        "member.registration_started", "member.signed_up", "member.card_activated", "member.account_linked",
        "member.login_succeeded", "member.login_failed", "member.channel_switched", "member.consent_changed",
        "member.guardian_set", "member.duplicate_suspected", "member.merged", "member.erased",
        "catalog.proposition_published", "catalog.proposition_retired", "catalog.offering_changed",
        "catalog.activity_scheduled", "usage.loan_reserved", "usage.loan_borrowed", "usage.loan_returned",
        "usage.activity_registered", "usage.activity_attended", "friction.detected", "friction.resolved",
        "message.sent", "message.suppressed", "message.failed", "campaign.changed",
    }  # fmt: skip
    assert {f"nl.bibliotheek.{name}.v1" for name in expected} <= set(types)
    for type_name, model in types.items():
        assert type_name.startswith("nl.bibliotheek.") and type_name.endswith(".v1")
        assert model.topic in topics


def test_payload_models_refuse_unknown_fields() -> None:
    event = signed_up(data={"age_band": "18-64", "home_library": "oba", "postcode_area": "1034", "email": "x"})
    with pytest.raises(InvalidEvent) as refused:
        typed_data(event)
    assert refused.value.errors[0].field == "data.email"


def test_derived_events_get_the_same_id_from_the_same_inputs() -> None:
    assert deterministic_id("friction", "r", "m", "e") == deterministic_id("friction", "r", "m", "e")
    assert deterministic_id("friction", "r", "m", "e") != deterministic_id("friction", "r", "m", "f")


@pytest.mark.parametrize("parts", [("friction", "r", "m", "e"), ("closed", "rule→x", "lid-é", ""), ("a/b",), ("",)])
def test_derived_ids_are_the_uuid5_they_always_were(parts: tuple[str, ...]) -> None:
    # Ids published before must be recognised again after an upgrade: the fast spelling is the same UUID 5.
    assert deterministic_id(*parts) == str(uuid.uuid5(uuid.NAMESPACE_URL, "klantreis:" + "/".join(parts)))
    # A known answer, so both spellings cannot drift together.
    assert deterministic_id("friction", "r", "m", "e") == "59ea6319-e6d8-511d-af77-54e789947297"


def test_create_takes_type_and_defaults_from_the_payload() -> None:
    event = CloudEvent.create(CardActivated(branch="oosterdok"), subject="m", source="/libraries/oba/desk")
    assert event.type == "nl.bibliotheek.member.card_activated.v1"
    assert event.time.tzinfo is not None and event.time <= datetime.now(UTC)
    assert event.id != CloudEvent.create(CardActivated(), subject="m", source="/x").id


def test_a_structured_mode_kafka_record_decodes_to_the_same_event_as_its_binary_form() -> None:
    event = signed_up()
    value = json.dumps(to_structured(event)).encode()

    decoded = from_kafka(value, [("content-type", b"application/cloudevents+json; charset=utf-8")])

    assert decoded == event == from_kafka(to_kafka(event).value, to_kafka(event).headers)


def test_a_structured_mode_record_without_a_type_is_refused_naming_the_field() -> None:
    document = to_structured(signed_up())
    del document["type"]

    with pytest.raises(InvalidEvent) as refused:
        from_kafka(json.dumps(document).encode(), {"content-type": "application/cloudevents+json"})

    assert [e.field for e in refused.value.errors] == ["type"]
