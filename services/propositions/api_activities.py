"""propositions' routes for activities: schedule, list, cancel, register, attend."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from services.propositions import domain
from services.propositions.activities import Activities, Plan, TakingPart, Touch, session_key
from services.propositions.domain import (
    ActivityQuery,
)
from services.propositions.schemas import (
    ActivityChange,
    ActivityPage,
    ActivityPath,
    ActivityView,
    Attended,
    Cursor,
    Limit,
    Participation,
    ReaderKey,
    Registered,
    ScheduleBody,
    activity_view,
)
from shared.auth import AUTH_RESPONSES, IngestKey, MarketingKey
from shared.events.types import IsoDateTime, LibraryCode, Slug
from shared.failed_items import item_route
from shared.idempotency import Ids, Write

# -------------------------------------------------------------------------------------------- activities


def activities_router(activities: Activities) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["activities"], responses=AUTH_RESPONSES)

    @router.post(
        "/activities",
        status_code=202,
        response_model=ActivityView,
        summary="Schedule a session of a proposition the library offers (admin or the library's marketing)",
        description="Publishes `activity_scheduled` on the catalogue topic (key = activity id).",
        responses={409: {"description": "the library does not offer the proposition (any more)"}},
    )
    async def schedule(body: ScheduleBody, caller: MarketingKey, write: Write) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            plan = Plan(
                body.proposition, body.library, body.branch, body.title, body.starts_at, body.ends_at, body.capacity
            )
            session = await activities.schedule(plan, caller, ids)
            return 202, activity_view(session).model_dump(mode="json")

        return await write(caller, body, run)

    @router.get("/activities", summary="Sessions by proposition, library, branch and start time, in start order")
    async def sessions(
        caller: ReaderKey,
        proposition: Slug | None = None,
        library: LibraryCode | None = None,
        branch: Slug | None = None,
        starts_from: Annotated[
            IsoDateTime | None, Query(alias="from", description="starting at or after; default now")
        ] = None,
        starts_before: Annotated[IsoDateTime | None, Query(alias="before", description="starting before")] = None,
        include_cancelled: bool = False,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> ActivityPage:
        query = ActivityQuery(
            proposition, library, branch, starts_from or datetime.now(UTC), starts_before, include_cancelled
        )
        items, next_cursor = domain.page(await activities.sessions(query), session_key, cursor, limit)
        return ActivityPage(items=[activity_view(s) for s in items], next_cursor=next_cursor)

    @router.get(
        "/activities/{activity_id}",
        summary="One session, with its places left",
        responses={404: {"description": "no such activity"}},
    )
    async def session(activity_id: ActivityPath, caller: ReaderKey) -> ActivityView:
        return activity_view(await activities.session(activity_id))

    @router.delete(
        "/activities/{activity_id}",
        status_code=202,
        response_model=ActivityChange,
        summary="Cancel a session (admin or the library's marketing)",
        responses={404: {"description": "no such activity"}, 409: {"description": "cancelled already"}},
    )
    async def cancel(activity_id: ActivityPath, caller: MarketingKey, write: Write) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            event_id = await activities.cancel(activity_id, caller, ids)
            return 202, {"activity_id": activity_id, "event_id": event_id, "changed": True}

        return await write(caller, None, run)

    @router.post(
        "/activities/{activity_id}/registrations",
        status_code=202,
        response_model=Registered,
        summary="Register a member for a session (ingest, the activity's library)",
        description="Publishes `activity_registered` (usage topic, subject = member_id) once a place is taken.",
        responses={
            404: {"description": "no such activity"},
            409: {"description": "full, registered already, cancelled or over"},
        },
        openapi_extra=item_route("ingest"),
    )
    async def register(
        activity_id: ActivityPath,
        body: Participation,
        caller: IngestKey,
        write: Write,
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            event_id = await activities.register(_taking_part(activity_id, body), caller, ids)
            return 202, {"activity_id": activity_id, "member_id": body.member_id, "event_id": event_id}

        return await write(caller, body, run)

    @router.post(
        "/activities/{activity_id}/attendance",
        status_code=202,
        response_model=Attended,
        summary="Record that a member attended a session, registered or walked in (ingest, the activity's library)",
        description="Publishes `activity_attended` with `walk_in` true when the member had not registered.",
        responses={404: {"description": "no such activity"}, 409: {"description": "recorded already, or cancelled"}},
        openapi_extra=item_route("ingest"),
    )
    async def attend(
        activity_id: ActivityPath,
        body: Participation,
        caller: IngestKey,
        write: Write,
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            event_id, walk_in = await activities.attend(_taking_part(activity_id, body), caller, ids)
            return 202, {
                "activity_id": activity_id,
                "member_id": body.member_id,
                "event_id": event_id,
                "walk_in": walk_in,
            }

        return await write(caller, body, run)

    return router


def _taking_part(activity_id: str, body: Participation) -> TakingPart:
    touch = Touch(body.platform, body.channel or domain.channel_of(body.platform), body.time or datetime.now(UTC))
    return TakingPart(activity_id, body.member_id, touch)
