"""propositions' HTTP API for usage: loans reported one by one or in batches, and CloudEvents posted to
/v1/events. The catalogue's and the activities' routes are in api_catalogue.py and api_activities.py, the bodies
in schemas.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.propositions import domain
from services.propositions.activities import Activities, Taken, TakingPart, Touch
from services.propositions.schemas import (
    BatchReply,
    LoanAccepted,
    LoanBatch,
)
from services.propositions.usage import MAX_BATCH, BatchResult, LoanReport, Usage, parse_loans
from shared.auth import AUTH_RESPONSES, IngestKey, Principal
from shared.events import FieldError
from shared.events.propositions import (
    ActivityAttended,
    ActivityRegistered,
    LoanBorrowed,
    LoanReserved,
    LoanReturned,
)
from shared.failed_items import LOANS_ENDPOINT, FailedItems, Refused, item_route
from shared.idempotency import Ids, Write
from shared.ingest import EventClaims, Item
from shared.ingest import ingest_router as shared_ingest_router
from shared.problems import Problem
from shared.topics import USAGE

# ------------------------------------------------------------------------------------------------ usage


def usage_router(usage: Usage, failed: FailedItems) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["usage"], responses=AUTH_RESPONSES)

    @router.post(
        "/loans",
        status_code=202,
        response_model=LoanAccepted,
        summary="Report one loan event: reserved, borrowed or returned (ingest, the loan's library)",
        description="Publishes `loan_reserved`, `loan_borrowed` or `loan_returned` (usage topic, subject = "
        "member_id). A report with an `id` posted again is accepted and not published again.",
        responses={409: {"description": "a report with this id is being handled; post it again"}},
        # A refused report (its schema included) is kept, and replayed through the batch route.
        openapi_extra=item_route("ingest", replay=LOANS_ENDPOINT),
    )
    async def loan(body: LoanReport, caller: IngestKey, write: Write) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            result = await usage.report([(0, body)], caller, ids)
            if result.rejected:
                [rejection] = result.rejected
                errors = [FieldError(f"body.{e.field}", e.message) for e in rejection.errors]
                raise Problem(
                    rejection.status,
                    {403: "Forbidden", 409: "Conflict"}.get(rejection.status, "Unprocessable Content"),
                    "; ".join(f"{e.field}: {e.message}" for e in errors),
                    errors=errors,
                    headers={"Retry-After": "1"} if rejection.status == 409 else None,
                )
            return 202, {"event_id": result.accepted[0]}

        return await write(caller, body, run)

    @router.post(
        "/loans/batch",
        status_code=202,
        response_model=BatchReply,
        summary=f"Report up to {MAX_BATCH:,} loan events at once; each accepted or rejected with its reasons",
        description="Each report is checked on its own; the accepted ones are published together (202 once Kafka "
        "acknowledged them all). `rejected` lists the others with their index, id, status and the fields at fault "
        "(422 when none was accepted).",
        responses={422: {"model": BatchReply, "description": "none accepted: each rejected report listed"}},
    )
    async def loans(body: LoanBatch, caller: IngestKey, write: Write) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            valid, malformed = parse_loans(body.loans)
            result = await usage.report(valid, caller, ids) if valid else BatchResult([], [])
            rejected = [*malformed, *result.rejected]
            kept = [(body.loans[r.index], Refused(r.index, r.status, r.errors)) for r in rejected]
            await failed.keep(caller, "application/json", kept, LOANS_ENDPOINT)
            return BatchResult(result.accepted, rejected).reply()

        return await write(caller, body.loans, run)

    return router


# ------------------------------------------------------------------------------------------------ ingest

LOANS = (LoanReserved, LoanBorrowed, LoanReturned)
INGESTIBLE = {model.event_type for model in (*LOANS, ActivityRegistered, ActivityAttended)}

EXAMPLE_EVENT = {
    "specversion": "1.0",
    "id": "5b0e7f3c-2d7a-4d0c-9b1e-2f8a0c9d4e11",
    "source": "/libraries/oba/ebook",
    "type": LoanBorrowed.event_type,
    "time": "2026-11-23T10:15:00+01:00",
    "subject": "cc02c620-5a1b-4e0f-9d51-2f3b8f6f0e11",
    "library": "oba",
    "channel": "online",
    "platform": "ebook",
    "data": {"item_id": "9789044652144", "loan_id": "EB-88213", "format": "ebook"},
}


def ingest_router(usage: Usage, activities: Activities, claims: EventClaims, failed: FailedItems) -> APIRouter:
    async def handle(items: Sequence[Item], caller: Principal) -> dict[int, Problem]:
        loans = [item for item in items if isinstance(item.data, LOANS)]
        refused, loan_events = await usage.posted_loans(loans, caller) if loans else ({}, [])
        # A registration or attendance takes a place in its activity, one by one; then everything is published
        # together, and the places are given back if Kafka does not acknowledge.
        taken = []
        for item in items:
            if isinstance(item.data, ActivityRegistered | ActivityAttended):
                try:
                    taken.append(await take_part(item, item.data, caller))
                except Problem as exc:
                    refused[item.index] = _about_activity(exc)
        await activities.publish_taken(taken, along=loan_events)
        return refused

    async def take_part(item: Item, data: ActivityRegistered | ActivityAttended, caller: Principal) -> Taken:
        event = item.event
        assert event.subject is not None
        platform = event.platform or "desk"
        touch = Touch(platform, event.channel or domain.channel_of(platform), event.utc_time, event.source)
        ids = Ids(f"event:{event.id}")
        part = TakingPart(data.activity_id, event.subject, touch, data.proposition, event.id)
        return await activities.take(part, caller, ids, attending=isinstance(data, ActivityAttended))

    router = shared_ingest_router(
        service="propositions",
        topic_name=USAGE.name,
        types=INGESTIBLE,
        handle=handle,
        claims=claims,
        example=EXAMPLE_EVENT,
        failed=failed,
    )
    return router


def _about_activity(problem: Problem) -> Problem:
    """A refusal of a posted registration or attendance names the field it is about."""
    if problem.errors:
        return problem
    error = FieldError("data.activity_id", problem.detail or problem.title)
    return Problem(problem.status, problem.title, problem.detail, errors=[error])
