"""The stored form of an inbox item: compact, and read back as the message it was."""

from __future__ import annotations

from datetime import UTC, datetime

from services.notifications import codec
from services.notifications.rules import message_id
from services.notifications.state import DecisionMemory, InboxMessage


def test_an_inbox_field_names_its_message_in_22_characters_and_gives_back_the_same_id() -> None:
    mid = message_id("campaign", "member", "trigger")
    field = codec.inbox_field(mid)
    assert len(field) == 1 + 22
    assert codec.message_id_of(field) == mid


def test_an_id_that_is_no_canonical_uuid_is_stored_as_it_is() -> None:
    for mid in ("welcome-1", "A1B2C3D4-0000-4000-8000-000000000000"):
        assert codec.message_id_of(codec.inbox_field(mid)) == mid


def test_an_inbox_item_refers_to_its_text_and_reads_back_as_the_message() -> None:
    message = InboxMessage(
        message_id=message_id("c", "m", "t"), campaign_id="c", title="Je pas wacht", body="Kom langs.", locale="nl",
        library="oba", created_at=datetime(2026, 3, 10, 11, 0, tzinfo=UTC), about_member_id="child",
    )  # fmt: skip
    value = codec.inbox_value(message)
    assert codec.inbox_message(message.message_id, value, codec.text_value(message)) == message


def test_a_friction_record_is_the_trigger_s_marker_and_holds_its_effect_in_one_short_field() -> None:
    detected = 1_765_000_000_000
    memory = DecisionMemory(detected + 1_500, (("3f2b8c1e-7d4a-4e9b-a1c2-5d6e7f809a1b", 2, "inl"),))
    value = codec.friction_value(detected, memory, {"3f2b8c1e-7d4a-4e9b-a1c2-5d6e7f809a1b": "m"})
    field = codec.marker_field("event", "friction")

    assert len(field) + len(value) <= 40  # within a broadcast member's allocation class and a bit (docs: State)
    remembered = codec.member_state("m", {field: value}, False).decided[field]
    assert remembered == DecisionMemory(detected + 1_500, (("3f2b8c1e", 2, "inl"),), lasting=True)


def test_a_friction_only_suppressed_is_forgotten_after_the_ttl_one_that_may_still_be_messaged_is_not() -> None:
    suppressed = DecisionMemory(1_000, (("c", 1, "xno_consent"),))
    queued = DecisionMemory(1_000, (("c", 1, "s"),))
    for memory, lasting in ((suppressed, False), (queued, True)):
        field = codec.marker_field("event", "friction")
        state = codec.member_state("m", {field: codec.friction_value(0, memory, {})}, False)
        assert state.decided[field].lasting is lasting
