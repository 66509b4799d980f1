"""Bad rows kept: every item an ingest endpoint refuses goes to `ingest.failed.v1` with why, as it was posted.

A refused item (one event of a batch, a single posted event, a body that is not JSON; a loan report of
propositions' `POST /v1/loans` or `/v1/loans/batch`) is answered with its reason and also kept as one record on the
failed-events topic, so that it can be listed, shown and replayed after a fix with `klantreis dead-letters`
(`deploy/deadletters.py`), like a Kafka dead letter. The replay posts the item again to the service's batch
endpoint for its kind (`ENDPOINTS`), through the same validation, under a key with the original caller's library
scope; ids are claimed there, so an item replayed twice has its effect once.

A record's value is the item's JSON (at most `MAX_BODY` bytes; a longer one is cut and marked truncated, and is
not replayed); its headers say why and where it came from:

- `dlq_reason`: `invalid` (422), `forbidden` (403), `not_found` (404), `conflict` (409), else `http_<status>`;
- `dlq_error`: the field errors as JSON (field and message, never a value); `dlq_at`: when;
- `failed_service`, `failed_endpoint` (where a replay posts it), `failed_library` (the caller's scope),
  `failed_index` (in its batch), `failed_content_type`, and `failed_truncated` when cut.

Personal data: posted events are pseudonymous, but a bad item may carry anything. Values of fields known to be
personal (`PERSONAL_FIELDS`, at any depth) are replaced by `REDACTED` before the item is kept, and the topic keeps
records for `RETENTION_DAYS` days only (`shared.topics.FAILED_INGEST`); it is read by operators only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from shared.auth import Principal
from shared.events import BATCH, FieldError
from shared.publishing import Encoded, EventPublisher
from shared.topics import FAILED_INGEST

MAX_BODY = 64 * 1024
REDACTED = "[removed: personal data]"
PERSONAL_FIELDS = frozenset(
    {"name", "first_name", "last_name", "email", "phone", "birth_date", "date_of_birth", "postcode", "address",
     "street", "house_number", "ip", "ip_address", "iban", "bsn"}
)  # fmt: skip
_NAMES_PERSONAL_FIELD = re.compile(rb'"(?:' + b"|".join(f.encode() for f in sorted(PERSONAL_FIELDS)) + rb')"\s*:')
REASONS = {422: "invalid", 403: "forbidden", 404: "not_found", 409: "conflict"}
EVENT_TYPE = "ingest.failed"  # what the producer's metrics count these records as
EVENTS_ENDPOINT = "/v1/events"
LOANS_ENDPOINT = "/v1/loans/batch"
# Where a refused item is posted again: the batch endpoint taking its kind, its content type, and the field of the
# body holding the items (None: the body is the array itself).
ENDPOINTS: dict[str, tuple[str, str | None]] = {
    EVENTS_ENDPOINT: (BATCH, None),
    LOANS_ENDPOINT: ("application/json", "loans"),
}


@dataclass(frozen=True)
class Refused:
    """One refused item: its position in the batch (0 for a single event), status and field errors."""

    index: int
    status: int
    errors: Sequence[FieldError]


def redacted(value: Any) -> Any:
    """`value` with the values of personal fields replaced, at any depth."""
    if isinstance(value, dict):
        return {k: REDACTED if k in PERSONAL_FIELDS else redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v) for v in value]
    return value


def kept_body(item: Any) -> tuple[bytes, bool]:
    """The bytes kept for a refused item (its JSON, redacted; raw bytes when it was not JSON) and whether they
    were cut at `MAX_BODY`."""
    if isinstance(item, bytes):
        body = item
    else:
        body = msgspec.json.encode(item)
        if _NAMES_PERSONAL_FIELD.search(body):  # rare: rebuilt only then (a refused batch can be 20,000 items)
            body = msgspec.json.encode(redacted(item))
    return body[:MAX_BODY], len(body) > MAX_BODY


@dataclass(frozen=True)
class Origin:
    """What every refused item of one request shares: who refused it, where to replay it, who posted it, when."""

    service: str
    endpoint: str
    library: str  # the posting key's scope
    content_type: str
    at: datetime

    def headers(self) -> list[tuple[str, bytes]]:
        return [("dlq_at", self.at.isoformat().encode()), ("failed_service", self.service.encode()),
                ("failed_endpoint", self.endpoint.encode()), ("failed_library", self.library.encode()),
                ("failed_content_type", self.content_type.encode())]  # fmt: skip


def record(item: Any, refused: Refused, shared: list[tuple[str, bytes]]) -> Encoded:
    """The failed-events record of one refused item (`item`: its parsed JSON, or the raw bytes); `shared`: the
    headers of its request (`Origin.headers`)."""
    value, truncated = kept_body(item)
    event_id = str(item.get("id", "")) if isinstance(item, dict) else ""
    errors = msgspec.json.encode([{"field": e.field, "message": e.message} for e in refused.errors])[:2000]
    headers = [
        ("dlq_reason", REASONS.get(refused.status, f"http_{refused.status}").encode()),
        ("dlq_error", errors),
        ("failed_index", str(refused.index).encode()),
        *shared,
    ]
    if truncated:
        headers.append(("failed_truncated", b"true"))
    return Encoded(FAILED_INGEST.name, event_id, EVENT_TYPE, event_id.encode() or None, value, headers)


class FailedItems:
    """Keeps a service's refused items on the failed-events topic (acknowledged by Kafka before the answer)."""

    def __init__(self, publisher: EventPublisher, service: str) -> None:
        self._publisher = publisher
        self._service = service

    async def keep(
        self,
        caller: Principal,
        content_type: str,
        items: Sequence[tuple[Any, Refused]],
        endpoint: str = EVENTS_ENDPOINT,
    ) -> None:
        """Keep `items` (each as posted, with why it was refused), to be replayed through `endpoint`."""
        assert endpoint in ENDPOINTS
        if not items:
            return
        shared = Origin(self._service, endpoint, caller.library, content_type, datetime.now(UTC)).headers()
        records = [record(item, refused, shared) for item, refused in items]
        await self._publisher.publish_encoded(records)
