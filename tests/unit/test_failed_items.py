"""What a refused item is kept as (shared/failed_items.py), without I/O: personal fields removed at any depth,
the body cut at 64 KiB and marked, the reason and the errors in headers, never a value."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from shared.events import FieldError
from shared.failed_items import MAX_BODY, REDACTED, Origin, Refused, kept_body, record


def test_personal_fields_are_removed_at_any_depth_and_nothing_else() -> None:
    item = {"id": "e-1", "data": {"email": "jan@example.nl", "reason": "bad", "children": [{"name": "Jan"}]},
            "emails_sent": 3}  # fmt: skip
    body, truncated = kept_body(item)
    data = {"email": REDACTED, "reason": "bad", "children": [{"name": REDACTED}]}
    assert json.loads(body) == {"id": "e-1", "data": data, "emails_sent": 3}
    assert not truncated and b"jan@" not in body


def test_a_body_over_64_kib_is_cut_and_marked_and_raw_bytes_are_kept_as_they_came() -> None:
    body, truncated = kept_body({"id": "e-2", "data": {"note": "x" * (MAX_BODY + 10)}})
    assert (len(body), truncated) == (MAX_BODY, True)
    assert kept_body(b"not json") == (b"not json", False)


def test_the_record_says_why_where_from_and_how_to_replay() -> None:
    origin = Origin("identity", "/v1/events", "oba", "application/cloudevents-batch+json", datetime.now(UTC))
    refused = Refused(3, 404, [FieldError("subject", "no such member")])
    kept = record({"id": "e-3", "subject": "m-1"}, refused, origin.headers())
    headers = {name: value.decode() for name, value in kept.headers}
    assert (kept.key, kept.event_id) == (b"e-3", "e-3")
    assert (headers["dlq_reason"], headers["failed_index"], headers["failed_library"]) == ("not_found", "3", "oba")
    assert json.loads(headers["dlq_error"]) == [{"field": "subject", "message": "no such member"}]
    assert (headers["failed_service"], headers["failed_endpoint"]) == ("identity", "/v1/events")
    assert "failed_truncated" not in headers
    assert record(b"{", Refused(0, 422, []), []).key is None  # no id: no key
