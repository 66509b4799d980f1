"""Bad rows kept: every item an ingest endpoint refuses goes to `ingest.failed.v1` with why, as it was posted.

A refused item (one event of a batch, a single posted event, a body that is not JSON; a loan report of
propositions' `POST /v1/loans` or `/v1/loans/batch`; a request to a route marked `item_route`: identity's logins,
card activations, consents…, propositions' activity registrations) is answered with its reason and also kept as
one record on the failed-events topic, so that it can be listed, shown and replayed after a fix with `klantreis
dead-letters` (`deploy/deadletters.py`), like a Kafka dead letter. The batch routes keep their refused items
themselves (`FailedItems.keep`); every other refusal of a marked route, a body refused by its schema before the
route runs included, is kept in one place, the service's problem handlers (`FailedItems.keep_request`).

The replay posts an item again through the same validation: events and loan reports to the service's batch
endpoint for their kind (`ENDPOINTS`), any other item to the route that refused it, with the same method. It does
so under a key with the original caller's library scope and role (`failed_role`: a publishable key's items are
replayed under a key with a publishable key's limits, client events of visitors only). Each kept item has an id
(`kept_id`: its event or report id, else one given when kept): event and report ids are claimed by the service, and
a command is replayed with its id as the Idempotency-Key under a key id that stays the same from one replay to the
next (`replay_key_id`), so an item replayed twice has its effect once.

A record's value is the item's JSON (at most `MAX_BODY` bytes; a longer one is cut and marked truncated, and is
not replayed); its headers say why and where it came from:

- `dlq_reason`: `invalid` (422), `forbidden` (403), `not_found` (404), `conflict` (409), else `http_<status>`;
- `dlq_error`: the field errors as JSON (field and message, never a value); `dlq_at`: when;
- `failed_service`, `failed_endpoint` (where a replay posts it) and `failed_method`, `failed_library` (the
  caller's scope), `failed_role` (`ingest`, or `publishable`), `failed_index` (in its batch),
  `failed_content_type`, `failed_truncated` when cut, `failed_redacted` when personal data was removed.

Personal data: posted events are pseudonymous, but a bad item may carry anything (a member's sign-up carries
little else). Values of fields known to be personal (`PERSONAL_FIELDS`, at any depth) are replaced by `REDACTED`
before the item is kept, and the topic keeps records for 7 days only (`shared.topics.FAILED_INGEST`); it is read
by operators only. An item kept without its personal data (a sign-up; a login or account link: `external_id`) is
not replayed: it would post the placeholder as data.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from fastapi import Request

from shared.auth import PUBLISHABLE, Principal, Role, require
from shared.events import BATCH, FieldError
from shared.problems import Problem
from shared.publishing import Encoded, EventPublisher
from shared.topics import FAILED_INGEST

MAX_BODY = 64 * 1024
REDACTED = "[removed: personal data]"
# external_id: a member's account on a platform, which identity keeps only as a reference.
PERSONAL_FIELDS = frozenset(
    {"name", "first_name", "last_name", "email", "phone", "birth_date", "date_of_birth", "postcode", "address",
     "street", "house_number", "ip", "ip_address", "iban", "bsn", "external_id"}
)  # fmt: skip
_NAMES_PERSONAL_FIELD = re.compile(rb'"(?:' + b"|".join(f.encode() for f in sorted(PERSONAL_FIELDS)) + rb')"\s*:')
_MENTIONS_PERSONAL_DATA = re.compile(rb"(?i)@|\b(?:" + b"|".join(f.encode() for f in sorted(PERSONAL_FIELDS)) + rb")\b")
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
# Marks a route whose requests are items a platform posts (`item_route`), in its OpenAPI operation.
ITEM_ROUTE = "x-refused-kept"
# Refusals that are not about the item: the key (401), the method (405), the size (413), the rate (429).
NOT_ABOUT_THE_ITEM = frozenset({401, 405, 413, 429})
REPLAY_PREFIX = "failed:"  # an Idempotency-Key of a replay: `failed:<kept id>`


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


@dataclass(frozen=True)
class KeptBody:
    value: bytes
    truncated: bool  # cut at `MAX_BODY`
    redacted: bool  # personal data removed


def kept_body(item: Any) -> KeptBody:
    """The bytes kept for a refused item: its JSON, redacted; the raw bytes when it was not JSON, unless they may
    hold personal data (they name a personal field, or hold an @): then only a note of that."""
    if isinstance(item, bytes):
        if _MENTIONS_PERSONAL_DATA.search(item):
            return KeptBody(REDACTED.encode(), False, True)
        return KeptBody(item[:MAX_BODY], len(item) > MAX_BODY, False)
    body, removed = msgspec.json.encode(item), False
    if _NAMES_PERSONAL_FIELD.search(body):  # rare: rebuilt only then (a refused batch can be 20,000 items)
        cleaned = msgspec.json.encode(redacted(item))
        body, removed = cleaned, cleaned != body
    return KeptBody(body[:MAX_BODY], len(body) > MAX_BODY, removed)


def posted_item(raw: bytes) -> Any:
    """A posted body as kept: its JSON, or the bytes when it is not JSON."""
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return raw


def replay_role(caller: Principal) -> str:
    """The role a replay of `caller`'s items posts with: no more than the caller had. A publishable key's items
    keep a publishable key's limits (client events, visitors' ids: services/identity/publishable.py)."""
    return PUBLISHABLE if caller.roles == frozenset({PUBLISHABLE}) else "ingest"


def replay_key_id(role: str, library: str) -> str:
    """The key id replays of (`role`, `library`) post under, the same every time: a command's Idempotency-Key
    counts per key id, and its event ids derive from both, so a command replayed again has no second effect."""
    return "replay" + hashlib.sha256(f"{role}:{library}".encode()).hexdigest()[:12]


def command_id(caller: Principal, idempotency_key: str | None) -> str:
    """The kept id of a refused command: the same for a request posted again with its Idempotency-Key, and for a
    replay refused again (its key is `failed:<kept id>`); else new."""
    if idempotency_key is None:
        return str(uuid.uuid4())
    if idempotency_key.startswith(REPLAY_PREFIX):
        return idempotency_key.removeprefix(REPLAY_PREFIX)
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"klantreis:failed:{caller.key_id}:{idempotency_key}"))


@dataclass(frozen=True)
class Origin:
    """What every refused item of one request shares: who refused it, where to replay it, who posted it, when."""

    service: str
    endpoint: str
    library: str  # the posting key's scope
    content_type: str
    at: datetime
    role: str = "ingest"  # what a replay posts with (`replay_role`)
    method: str = "POST"

    def headers(self) -> list[tuple[str, bytes]]:
        return [("dlq_at", self.at.isoformat().encode()), ("failed_service", self.service.encode()),
                ("failed_endpoint", self.endpoint.encode()), ("failed_method", self.method.encode()),
                ("failed_library", self.library.encode()), ("failed_role", self.role.encode()),
                ("failed_content_type", self.content_type.encode())]  # fmt: skip


def record(item: Any, refused: Refused, shared: list[tuple[str, bytes]], kept_id: str | None = None) -> Encoded:
    """The failed-events record of one refused item (`item`: its parsed JSON, or the raw bytes); `shared`: the
    headers of its request (`Origin.headers`). Its key is `kept_id`, else the item's own id, else a new one."""
    body = kept_body(item)
    own = str(item["id"]) if isinstance(item, dict) and item.get("id") else None
    event_id = kept_id or own or str(uuid.uuid4())
    errors = msgspec.json.encode([{"field": e.field, "message": e.message} for e in refused.errors])[:2000]
    headers = [
        ("dlq_reason", REASONS.get(refused.status, f"http_{refused.status}").encode()),
        ("dlq_error", errors),
        ("failed_index", str(refused.index).encode()),
        *shared,
    ]
    if body.truncated:
        headers.append(("failed_truncated", b"true"))
    if body.redacted:
        headers.append(("failed_redacted", b"true"))
    return Encoded(FAILED_INGEST.name, event_id, EVENT_TYPE, event_id.encode(), body.value, headers)


def item_route(*roles: Role, replay: str | None = None) -> dict[str, Any]:
    """The `openapi_extra` of a route whose requests are items a platform posts (with a key holding one of
    `roles`): a refusal that is about the item is kept by the service's problem handlers (`keep_request`).
    `replay`: the batch endpoint a replay posts the item to (`ENDPOINTS`); default: this route again."""
    assert replay is None or replay in ENDPOINTS
    return {ITEM_ROUTE: {"roles": list(roles), "replay": replay}}


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
        origin = Origin(self._service, endpoint, caller.library, content_type, datetime.now(UTC), replay_role(caller))
        shared = origin.headers()
        records = [record(item, refused, shared) for item, refused in items]
        await self._publisher.publish_encoded(records)

    async def keep_request(
        self, request: Request, status: int, errors: Sequence[FieldError], headers: Mapping[str, str] | None
    ) -> None:
        """Keep a request refused with `status` if its route is an `item_route`, the refusal is about the item (not
        the key, the size, nor a "post it again": Retry-After) and the caller holds the route's role."""
        marked = (getattr(request.scope.get("route"), "openapi_extra", None) or {}).get(ITEM_ROUTE)
        again = "Retry-After" in (headers or {})
        if marked is None or not 400 <= status < 500 or status in NOT_ABOUT_THE_ITEM or again:
            return
        try:
            caller = await require(*marked["roles"])(request)
        except Problem:
            return  # no key, or not one that may post here: nothing to keep for it
        item = posted_item(await request.body())
        replay: str | None = marked["replay"]
        kept_id = None if replay else command_id(caller, request.headers.get("idempotency-key"))
        origin = Origin(self._service, replay or request.url.path, caller.library,
                        request.headers.get("content-type", ""), datetime.now(UTC), replay_role(caller),
                        "POST" if replay else request.method)  # fmt: skip
        await self._publisher.publish_encoded([record(item, Refused(0, status, errors), origin.headers(), kept_id)])
