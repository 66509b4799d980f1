"""The stored form of an inbox item: compact, and read back as the message it was."""

from __future__ import annotations

from datetime import UTC, datetime

from services.notifications import codec
from services.notifications.rules import message_id
from services.notifications.state import InboxMessage


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
