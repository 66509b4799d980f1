"""`POST /v1/events`: CloudEvents of the types a service owns, one (structured) or a batch, the same everywhere.

Each item is checked on its own (envelope, type, payload, subject, the caller's library scope); a batch accepts the
valid items and lists the rejected ones with their index, id and reasons. Event ids are claimed in Redis before
handling, all in one round trip: an id posted again is accepted and not handled again, and one still being handled
by another request is rejected with 409 so that the poster retries it. The service's handler gets all claimed items
of a request at once, so it can publish them in one batch.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, cast

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from msgspec import msgpack
from redis.asyncio import Redis

from shared.auth import AUTH_RESPONSES, Principal, require
from shared.events import (
    BATCH,
    STRUCTURED,
    CloudEvent,
    EventData,
    FieldError,
    InvalidEvent,
    from_batch,
    from_structured,
    typed_batch,
    whole_batch,
)
from shared.failed_items import FailedItems, Refused, posted_item
from shared.problems import Problem
from shared.schemas import BatchAnswer, example_of
from shared.settings import Settings

CLAIM_SECONDS = 60
DONE_SECONDS = 7 * 24 * 3600
MAX_BATCH = 20_000


@dataclass(frozen=True)
class Item:
    index: int
    event: CloudEvent
    data: EventData


# Handles the claimed items; returns a Problem for each item it refused (by index), None for those it accepted.
Handler = Callable[[Sequence[Item], Principal], Awaitable[dict[int, Problem]]]


# One script call per batch (10,000 claims: 290 ms pipelined, 70 ms as one script), the ids packed in one argument
# (msgpack) and the answer one letter per id: redis-py packing 10,000 key arguments and parsing as many answers took
# 28 ms of the service's CPU per claim and finish, packed 2 ms. The keys are built in the script from the prefix,
# which a single Redis allows (a cluster would want them declared).
_CLAIM = """
local ids = cmsgpack.unpack(ARGV[3])
local states = {}
for i, id in ipairs(ids) do
  -- SET NX GET: claims the id, or tells who has it (false: claimed now)
  local was = redis.call('SET', ARGV[2] .. id, 'pending', 'NX', 'GET', 'EX', ARGV[1])
  states[i] = (not was and 'n') or (was == 'pending' and 'p') or 'd'
end
return table.concat(states)
"""
_FINISH = """
local ids = cmsgpack.unpack(ARGV[4])
local done = tonumber(ARGV[3])
for i, id in ipairs(ids) do
  if i <= done then redis.call('SET', ARGV[2] .. id, 'done', 'EX', ARGV[1]) else redis.call('DEL', ARGV[2] .. id) end
end
return done
"""
_STATES = {"n": None, "p": "pending", "d": "done"}


class EventClaims:
    """Which posted CloudEvent ids are being handled or were handled (per service namespace).

    A claim is released when handling fails (a 503 included), so that the retry publishes again rather than being
    told "done": a claim never makes a retry skip publishing."""

    def __init__(self, redis: Redis, settings: Settings, service: str) -> None:
        self._prefix = settings.key(service, "ingested", "")
        self._claim = redis.register_script(_CLAIM)
        self._finish = redis.register_script(_FINISH)

    async def claim(self, event_ids: Sequence[str]) -> list[str | None]:
        """None for each id claimed now; else "pending" (another request has it) or "done"."""
        if not event_ids:
            return []
        states = await self._claim(args=[CLAIM_SECONDS, self._prefix, msgpack.encode(event_ids)])
        return [_STATES[state] for state in cast(str, states)]

    async def finish(self, done: Sequence[str], failed: Sequence[str]) -> None:
        """Mark `done` as handled for `DONE_SECONDS`; release the claims of `failed`."""
        if done or failed:
            await self._finish(args=[DONE_SECONDS, self._prefix, len(done), msgpack.encode([*done, *failed])])


def _reason(problem: Problem) -> dict[str, Any]:
    field = {404: "subject", 403: "library", 409: "id"}.get(problem.status, "data")
    errors = [e.as_dict() for e in problem.errors] or [{"field": field, "message": problem.detail or problem.title}]
    return {"status": problem.status, "errors": errors}


def ingest_router(
    *,
    service: str,
    topic_name: str,
    types: Collection[str],
    handle: Handler,
    claims: EventClaims,
    example: dict[str, Any],
    tag: str = "ingest",
    caller_from: Any = None,
    failed: FailedItems | None = None,
) -> APIRouter:
    """The route behind `POST /v1/events`; `example` is one structured CloudEvent of the service, for the docs.
    `caller_from`: the dependency that says who posts (default: an API key with the ingest role). `failed` keeps
    every refused item on the failed-events topic (`shared.failed_items`)."""
    caller_from = caller_from or Depends(require("ingest"))
    router = APIRouter(prefix="/v1", tags=[tag], responses=AUTH_RESPONSES)
    accepted_types = frozenset(types)

    def check(event: CloudEvent, data: EventData | InvalidEvent, caller: Principal) -> EventData:
        if isinstance(data, InvalidEvent):
            raise data
        if data.topic != topic_name:
            raise InvalidEvent([FieldError("type", f"{event.type} is not an event of {service}")])
        if event.type not in accepted_types:
            raise InvalidEvent([FieldError("type", f"{event.type} is published by {service} itself")])
        if event.subject is None:
            raise InvalidEvent([FieldError("subject", "required: what the event is about")])
        if not caller.covers(event.library):
            raise Problem(
                403,
                "Forbidden",
                f"this key is scoped to library {caller.library!r}",
                errors=[FieldError("library", f"this key is scoped to library {caller.library!r}")],
            )
        return data

    @router.post(
        "/events",
        status_code=202,
        summary=f"Post CloudEvents of the types {service} owns: one, or a batch",
        description="`application/cloudevents+json` for one event, `application/cloudevents-batch+json` (a JSON "
        f"array, at most {MAX_BATCH:,} events) for a batch. Accepted types: {', '.join(sorted(accepted_types))}. "
        "A batch accepts the valid events and lists the rejected ones with their index, id and reasons (202; 422 "
        "when none was accepted). An event id posted again within 7 days is accepted and not published again; "
        "one still being handled by another request is rejected with status 409: post it again.",
        responses={202: {"description": "`{accepted: [ids], rejected: [{index, id, errors}]}`",
                         "content": {"application/json": {"schema": BatchAnswer.model_json_schema(),
                                                          "example": example_of(BatchAnswer)}}},
                   422: {"description": "not JSON, or nothing acceptable (a batch: each rejected item listed)",
                         "content": {"application/json": {"schema": BatchAnswer.model_json_schema()}}}},
        openapi_extra={"requestBody": {"required": True, "content": {
            STRUCTURED: {"schema": {"type": "object"}, "example": example},
            BATCH: {"schema": {"type": "array", "items": {"type": "object"}},
                                                   "example": [example]}}}},
    )  # fmt: skip
    async def ingest(request: Request, caller: Principal = caller_from) -> JSONResponse:
        raw = await request.body()
        content_type = request.headers.get("content-type", "")
        try:
            answer = await answered(raw, caller)
        except (Problem, InvalidEvent) as refusal:  # a single event (or the body) refused
            status = refusal.status if isinstance(refusal, Problem) else 422
            if failed is not None and 400 <= status < 500 and status != 413:  # not "try again" (503)
                errors = refusal.errors if isinstance(refusal, InvalidEvent) else refusal.errors or [
                    FieldError("body", refusal.detail or refusal.title)]  # fmt: skip
                await failed.keep(caller, content_type, [(posted_item(raw), Refused(0, status, errors))])
            raise
        if failed is not None and answer.rejected:
            await failed.keep(caller, content_type, answer.rejected)
        return answer.response

    async def answered(raw: bytes, caller: Principal) -> _Answer:
        whole = whole_batch(raw) if raw.lstrip()[:1] == b"[" else None
        body: Any = None  # the posted JSON, parsed when not all of it is valid: it names the rejected items' ids
        if whole is not None:
            single, parsed = False, list[CloudEvent | InvalidEvent](whole)
        else:
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise Problem(422, "Unprocessable Content", "body: not JSON",
                              errors=[FieldError("body", "not JSON")]) from None  # fmt: skip
            single = not isinstance(body, list)
            # A bad single event is a 422; a batch is checked item by item.
            parsed = [from_structured(body)] if single else from_batch(body[: MAX_BATCH + 1])
        if len(parsed) > MAX_BATCH:
            raise Problem(413, "Content Too Large", f"at most {MAX_BATCH:,} events in one batch")

        rejected: dict[int, dict[str, Any]] = {}
        valid: list[Item] = []
        payloads = iter(typed_batch([candidate for candidate in parsed if isinstance(candidate, CloudEvent)]))
        for index, candidate in enumerate(parsed):
            try:
                if isinstance(candidate, InvalidEvent):
                    raise candidate
                valid.append(Item(index, candidate, check(candidate, next(payloads), caller)))
            except InvalidEvent as exc:
                if single:
                    raise
                rejected[index] = {"errors": [e.as_dict() for e in exc.errors]}
            except Problem as exc:
                if single:
                    raise
                rejected[index] = _reason(exc)

        states = await claims.claim([item.event.id for item in valid]) if valid else []
        todo: list[Item] = []
        seen: set[str] = set()
        for item, state in zip(valid, states, strict=True):
            if state == "pending" or (state is None and item.event.id in seen):
                rejected[item.index] = _reason(
                    Problem(409, "Conflict", "this event id is being handled; post it again")
                )
            elif state is None:
                todo.append(item)
            seen.add(item.event.id)
        try:
            refused = await handle(todo, caller) if todo else {}
        except BaseException:
            await claims.finish([], [t.event.id for t in todo])
            raise
        for index, problem in refused.items():
            rejected[index] = _reason(problem)
        await claims.finish(
            [i.event.id for i in todo if i.index not in refused], [i.event.id for i in todo if i.index in refused]
        )

        if single and rejected:
            only = rejected[0]
            status = only.get("status", 422)
            raise Problem(status, {403: "Forbidden", 404: "Not Found", 409: "Conflict"}.get(status, "Unprocessable "
                          "Content"), "; ".join(f"{e['field']}: {e['message']}" for e in only["errors"]),
                          errors=[FieldError(e["field"], e["message"]) for e in only["errors"]],
                          headers={"Retry-After": "1"} if status == 409 else None)  # fmt: skip
        accepted = [v.event.id for v in valid if v.index not in rejected]
        listed = [
            {"index": index, "id": _id_of(body if single else body[index] if body is not None else parsed[index]),
             **reason}
            for index, reason in sorted(rejected.items())
        ]  # fmt: skip
        status = 202 if accepted or not listed else 422
        posted = (body if body is not None else json.loads(raw)) if listed else []  # the items as posted
        kept = [(posted[r["index"]], Refused(r["index"], r.get("status", 422), [FieldError(**e) for e in r["errors"]]))
                for r in listed]  # fmt: skip
        return _Answer(JSONResponse({"accepted": accepted, "rejected": listed}, status_code=status), kept)

    return router


@dataclass(frozen=True)
class _Answer:
    response: JSONResponse
    rejected: list[tuple[Any, Refused]]  # each refused item as posted, with why


def _id_of(item: Any) -> str | None:
    if isinstance(item, CloudEvent):
        return item.id
    return str(item["id"]) if isinstance(item, dict) and "id" in item else None
