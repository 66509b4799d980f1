"""What a refused item is kept as (shared/failed_items.py), without I/O: personal fields removed at any depth,
the body cut at 64 KiB and marked, the reason and the errors in headers, never a value."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from shared.auth import PUBLISHABLE, Principal
from shared.events import FieldError
from shared.failed_items import (
    MAX_BODY,
    REDACTED,
    REPLAY_PREFIX,
    KeptBody,
    Origin,
    Refused,
    command_id,
    kept_body,
    record,
    replay_key_id,
    replay_role,
)


def test_personal_fields_are_removed_at_any_depth_and_nothing_else() -> None:
    item = {"id": "e-1", "data": {"email": "jan@example.nl", "reason": "bad", "children": [{"name": "Jan"}]},
            "emails_sent": 3}  # fmt: skip
    body = kept_body(item)
    data = {"email": REDACTED, "reason": "bad", "children": [{"name": REDACTED}]}
    assert json.loads(body.value) == {"id": "e-1", "data": data, "emails_sent": 3}
    assert (body.truncated, body.redacted) == (False, True) and b"jan@" not in body.value
    assert not kept_body({"id": "e-1", "data": {"reason": "bad"}}).redacted


def test_a_body_that_is_not_json_is_kept_as_it_came_unless_it_may_hold_personal_data() -> None:
    assert kept_body(b"borrowed;oba;9789021416011") == KeptBody(b"borrowed;oba;9789021416011", False, False)
    for raw in (b"name=Jan+Jansen&postcode=1011AB", b"jan@example.nl;oba"):
        assert kept_body(raw) == KeptBody(REDACTED.encode(), False, True)


def test_a_body_over_64_kib_is_cut_and_marked_and_raw_bytes_are_kept_as_they_came() -> None:
    body = kept_body({"id": "e-2", "data": {"note": "x" * (MAX_BODY + 10)}})
    assert (len(body.value), body.truncated) == (MAX_BODY, True)


def test_the_record_says_why_where_from_and_how_to_replay() -> None:
    origin = Origin("identity", "/v1/events", "oba", "application/cloudevents-batch+json", datetime.now(UTC))
    refused = Refused(3, 404, [FieldError("subject", "no such member")])
    kept = record({"id": "e-3", "subject": "m-1"}, refused, origin.headers())
    headers = {name: value.decode() for name, value in kept.headers}
    assert (kept.key, kept.event_id) == (b"e-3", "e-3")
    assert (headers["dlq_reason"], headers["failed_index"], headers["failed_library"]) == ("not_found", "3", "oba")
    assert json.loads(headers["dlq_error"]) == [{"field": "subject", "message": "no such member"}]
    assert (headers["failed_service"], headers["failed_endpoint"]) == ("identity", "/v1/events")
    assert "failed_truncated" not in headers and "failed_redacted" not in headers
    assert record(b"{", Refused(0, 422, []), []).key  # no id of its own: one given, the same in key and event id
    assert record({"id": "e-3"}, refused, [], kept_id="k-1").key == b"k-1"


def test_a_publishable_key_s_items_are_replayed_with_its_limits_under_a_key_id_stable_per_library() -> None:
    browser = Principal("pk_oba_abc", "www.oba.nl", frozenset({PUBLISHABLE}), "oba")
    relay = Principal("k1", "relay", frozenset({"ingest"}), "oba")
    assert (replay_role(browser), replay_role(relay)) == (PUBLISHABLE, "ingest")
    assert replay_key_id("ingest", "oba") == replay_key_id("ingest", "oba") != replay_key_id(PUBLISHABLE, "oba")
    assert "_" not in replay_key_id("ingest", "*")  # a key id never holds the separator of kr_<id>_<secret>


def test_a_command_is_the_same_item_when_posted_again_with_its_key_and_when_its_replay_is_refused_again() -> None:
    relay = Principal("k1", "relay", frozenset({"ingest"}), "oba")
    other = Principal("k2", "desk", frozenset({"ingest"}), "oba")
    first = command_id(relay, "login-7")
    assert first == command_id(relay, "login-7") != command_id(other, "login-7")
    assert command_id(other, f"{REPLAY_PREFIX}{first}") == first
    assert command_id(relay, None) != command_id(relay, None)
