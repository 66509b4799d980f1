"""propositions' HTTP API: thin routes over `Catalogue`, `Activities` and `Usage`. Every write takes an
Idempotency-Key; reads need any valid key."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, Field, ValidationInfo, field_validator

from services.propositions import domain
from services.propositions.activities import Activities, Plan, Session, Taken, Touch, session_key
from services.propositions.catalogue import Catalogue, OfferingDetail
from services.propositions.domain import (
    ActivityQuery,
    Library,
    OfferingQuery,
    Proposition,
    PropositionQuery,
    shown,
)
from services.propositions.usage import LOAN_EXAMPLE, MAX_BATCH, BatchResult, LoanReport, Usage, parse_loans
from shared.auth import AUTH_RESPONSES, AdminKey, IngestKey, MarketingKey, Principal, require
from shared.events import FieldError
from shared.events.propositions import (
    ActivityAttended,
    ActivityId,
    ActivityRegistered,
    Branch,
    LibraryChanged,
    LoanBorrowed,
    LoanReserved,
    LoanReturned,
    OfferChannel,
    OfferingId,
    PropositionState,
    TargetGroup,
    Theme,
)
from shared.events.types import Channel, LibraryCode, MemberId, Platform, PostcodeArea, Slug
from shared.idempotency import IdempotencyKey, Ids, Replies
from shared.ingest import EventClaims, Item
from shared.ingest import ingest_router as shared_ingest_router
from shared.problems import Problem
from shared.schemas import example_body
from shared.topics import USAGE

# Reading the catalogue needs a valid key of any role.
ReaderKey = Annotated[Principal, Depends(require())]
SlugPath = Annotated[Slug, Path(description="the proposition's slug, e.g. boekstart")]
OfferingPath = Annotated[OfferingId, Path(description="`<library>.<proposition>`, e.g. oba.boekstart")]
ActivityPath = Annotated[ActivityId, Path(description="e.g. oba.taalcafe.3f9a1c2e7d4b")]
Limit = Annotated[int, Query(ge=1, le=500, description="at most this many items")]
Cursor = Annotated[str | None, Query(max_length=300, description="`next_cursor` of the previous page")]


# ------------------------------------------------------------------------------------------------ models


class PropositionBody(BaseModel):
    model_config = example_body(
        name_nl="BoekStart",
        name_en="BookStart",
        description_nl="Voorlezen aan baby's en peuters: een gratis BoekStartkoffertje bij het lidmaatschap.",
        description_en="Reading to babies and toddlers: a free BookStart case with the membership.",
        theme="reading-and-language",
        target_groups=["babies-and-toddlers", "parents"],
        channels="both",
        programme="Kunst van Lezen",
    )

    name_nl: str = Field(min_length=1, max_length=120)
    name_en: str = Field(min_length=1, max_length=120)
    description_nl: str = Field(default="", max_length=2000)
    description_en: str = Field(default="", max_length=2000)
    theme: Theme
    target_groups: list[TargetGroup] = Field(min_length=1)
    channels: OfferChannel = Field(description="online, offline or both")
    programme: str | None = Field(default=None, max_length=120, description="the national programme it belongs to")


class PropositionView(BaseModel):
    slug: str
    name_nl: str
    name_en: str
    description_nl: str
    description_en: str
    theme: Theme
    target_groups: list[TargetGroup]
    channels: OfferChannel
    programme: str | None
    status: Literal["active", "retired"]
    updated_at: str


class PropositionPage(BaseModel):
    items: list[PropositionView]
    next_cursor: str | None


class LibraryBody(BaseModel):
    model_config = example_body(
        name="OBA Openbare Bibliotheek Amsterdam",
        website="https://www.oba.nl",
        postcode_areas=["1000-1109"],
        branches=[{"code": "oosterdok", "name": "OBA Oosterdok"}, {"code": "banne", "name": "OBA Banne"}],
    )

    name: str = Field(min_length=1, max_length=120)
    website: str | None = Field(default=None, max_length=300, pattern=r"^https?://")
    postcode_areas: list[str] = Field(
        default_factory=list, max_length=500, description="4-digit areas (1034) or ranges (1000-1109) it serves"
    )
    branches: list[Branch] = Field(default_factory=list, max_length=200)

    @field_validator("postcode_areas")
    @classmethod
    def _areas(cls, value: list[str]) -> list[str]:
        for text in value:
            domain.area_range(text)  # ValueError names what is wrong
        return value

    @field_validator("branches")
    @classmethod
    def _unique_branches(cls, value: list[Branch]) -> list[Branch]:
        codes = [b.code for b in value]
        repeated = sorted({c for c in codes if codes.count(c) > 1})
        if repeated:
            raise ValueError(f"branch codes appear twice: {', '.join(repeated)}")
        return value


class LibraryView(BaseModel):
    library: str
    name: str
    website: str | None
    postcode_areas: list[str]
    branches: list[Branch]
    updated_at: str


class LibraryPage(BaseModel):
    items: list[LibraryView]
    next_cursor: str | None


class OfferingBody(BaseModel):
    model_config = example_body(
        local_name="BoekStart in de OBA",
        branches=["banne", "waterlandplein"],
        channels=["offline", "online"],
        url="https://www.oba.nl/boekstart",
    )

    local_name: str | None = Field(default=None, min_length=1, max_length=120, description="none: the national name")
    branches: list[Slug] = Field(default_factory=list, max_length=200, description="branch codes of the library")
    channels: list[Channel] = Field(min_length=1, max_length=2)
    url: str | None = Field(default=None, max_length=300, pattern=r"^https?://")


class BranchView(BaseModel):
    code: str
    name: str


class OfferingView(BaseModel):
    offering_id: str
    library: str
    library_name: str | None
    proposition: str
    proposition_name_nl: str | None
    proposition_name_en: str | None
    name: str = Field(description="what the library calls it: the local name, else the national name")
    local_name: str | None
    branches: list[BranchView]
    channels: list[Channel]
    url: str | None
    active: bool = Field(description="false: the library withdrew it")
    available: bool = Field(description="active, and the proposition is not retired")
    updated_at: str


class OfferingPage(BaseModel):
    items: list[OfferingView]
    next_cursor: str | None


class Changed(BaseModel):
    event_id: str | None = Field(description="the catalogue event published; null when nothing changed")
    changed: bool


class PropositionChanged(Changed):
    slug: str


class LibraryChange(Changed):
    library: str


class OfferingChange(Changed):
    offering_id: str


class ActivityChange(Changed):
    activity_id: str


class ScheduleBody(BaseModel):
    model_config = example_body(
        proposition="taalcafe",
        library="oba",
        branch="banne",
        title="Taalcafé Noord",
        starts_at="2026-12-03T14:00:00+01:00",
        ends_at="2026-12-03T16:00:00+01:00",
        capacity=12,
    )

    proposition: Slug
    library: LibraryCode
    branch: Slug
    title: str | None = Field(default=None, max_length=160)
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    capacity: int = Field(ge=1, le=10_000)

    @field_validator("ends_at")
    @classmethod
    def _ends_after_start(cls, value: datetime, info: ValidationInfo) -> datetime:
        starts_at = info.data.get("starts_at")
        if starts_at is not None and value <= starts_at:
            raise ValueError("must lie after starts_at")
        return value


class ActivityView(BaseModel):
    activity_id: str
    proposition: str
    library: str
    branch: str
    title: str | None
    starts_at: str
    ends_at: str
    capacity: int
    registered: int
    places_left: int
    status: Literal["scheduled", "cancelled"]
    updated_at: str


class ActivityPage(BaseModel):
    items: list[ActivityView]
    next_cursor: str | None


class Participation(BaseModel):
    model_config = example_body(member_id="cc02c620-5a1b-4e0f-9d51-2f3b8f6f0e11", platform="website", channel="online")

    member_id: MemberId
    platform: Platform = Field(default="website", description="where the member did it: website, app, desk, kiosk…")
    channel: Channel | None = Field(default=None, description="default: online for website, app and ebook")
    time: AwareDatetime | None = Field(default=None, description="when; default now")


class Registered(BaseModel):
    activity_id: str
    member_id: str
    event_id: str


class Attended(Registered):
    walk_in: bool


class LoanAccepted(BaseModel):
    event_id: str


class LoanBatch(BaseModel):
    model_config = example_body(loans=[LOAN_EXAMPLE])

    loans: list[Any] = Field(
        min_length=1, max_length=MAX_BATCH, description=f"up to {MAX_BATCH:,} loan reports (see LoanReport)"
    )


class BatchReply(BaseModel):
    accepted: list[str] = Field(description="event ids of the accepted reports, in order")
    rejected: list[dict[str, Any]] = Field(description="`{index, id, status, errors: [{field, message}]}`")


# ------------------------------------------------------------------------------------------------- views


def proposition_view(proposition: Proposition) -> PropositionView:
    return PropositionView(
        **proposition.data.model_dump(),
        status="retired" if proposition.retired else "active",
        updated_at=shown(proposition.updated_at),
    )


def library_view(library: Library) -> LibraryView:
    data = library.data
    return LibraryView(
        library=data.library,
        name=data.name,
        website=data.website,
        postcode_areas=data.postcode_areas,
        branches=data.branches,
        updated_at=shown(library.updated_at),
    )


def offering_view(detail: OfferingDetail) -> OfferingView:
    data, library, proposition = detail.offering.data, detail.library, detail.proposition
    names = library.branch_names if library else {}
    national = proposition.data.name_nl if proposition else data.proposition
    return OfferingView(
        offering_id=data.offering_id,
        library=data.library,
        library_name=library.data.name if library else None,
        proposition=data.proposition,
        proposition_name_nl=proposition.data.name_nl if proposition else None,
        proposition_name_en=proposition.data.name_en if proposition else None,
        name=data.local_name or national,
        local_name=data.local_name,
        branches=[BranchView(code=b, name=names.get(b, b)) for b in data.branches],
        channels=data.channels,
        url=data.url,
        active=data.active,
        available=domain.offering_available(detail.offering, proposition),
        updated_at=shown(detail.offering.updated_at),
    )


def activity_view(session: Session) -> ActivityView:
    data = session.activity.data
    return ActivityView(
        activity_id=data.activity_id,
        proposition=data.proposition,
        library=data.library,
        branch=data.branch,
        title=data.title,
        starts_at=shown(data.starts_at),
        ends_at=shown(data.ends_at),
        capacity=data.capacity,
        registered=session.registered,
        places_left=session.places_left,
        status="cancelled" if session.activity.cancelled else "scheduled",
        updated_at=shown(session.activity.updated_at),
    )


# --------------------------------------------------------------------------------------------- catalogue

WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "unchanged: the entry was like this already, nothing published"},
    202: {"description": "changed: the catalogue event is acknowledged by Kafka"},
}


def catalogue_router(catalogue: Catalogue) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["catalogue"], responses=AUTH_RESPONSES)

    @router.get("/propositions", summary="The network's propositions, by theme, target group, channel or programme")
    async def propositions(
        caller: ReaderKey,
        theme: Theme | None = None,
        target_group: TargetGroup | None = None,
        channel: Channel | None = None,
        programme: Annotated[str | None, Query(max_length=120)] = None,
        status: Literal["active", "retired", "all"] = "active",
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> PropositionPage:
        query = PropositionQuery(theme, target_group, channel, programme, status)
        found = await catalogue.find_propositions(query)
        items, next_cursor = domain.page(found, lambda p: p.slug, cursor, limit)
        return PropositionPage(items=[proposition_view(p) for p in items], next_cursor=next_cursor)

    @router.get(
        "/propositions/{slug}",
        summary="One proposition (a retired one too, with status retired)",
        responses={404: {"description": "no such proposition"}},
    )
    async def proposition(slug: SlugPath, caller: ReaderKey) -> PropositionView:
        return proposition_view(await catalogue.proposition(slug))

    @router.put(
        "/propositions/{slug}",
        status_code=202,
        response_model=PropositionChanged,
        summary="Add or change a canonical proposition (admin, or marketing for the whole network)",
        description="Publishes `proposition_published` with the whole description. Putting what is there already "
        "publishes nothing (200). A retired proposition put again is published again.",
        responses=WRITE_RESPONSES,
    )
    async def put_proposition(
        slug: SlugPath,
        body: PropositionBody,
        request: Request,
        caller: MarketingKey,
        replies: Replies,
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            state = PropositionState(slug=slug, **body.model_dump())
            return (await catalogue.put_proposition(state, caller, ids)).reply(slug=slug)

        return await replies.once(request, caller, key, body.model_dump(mode="json"), run)

    @router.delete(
        "/propositions/{slug}",
        status_code=202,
        response_model=PropositionChanged,
        summary="Retire a proposition: it stays readable with status retired, and its offerings stop being offered",
        responses={404: {"description": "no such proposition"}, 409: {"description": "retired already"}},
    )
    async def retire_proposition(
        slug: SlugPath, request: Request, caller: MarketingKey, replies: Replies, key: IdempotencyKey = None
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            return (await catalogue.retire_proposition(slug, caller, ids)).reply(slug=slug)

        return await replies.once(request, caller, key, None, run)

    @router.get("/libraries", tags=["libraries"], summary="Library organisations, or the one serving a postcode area")
    async def libraries(
        caller: ReaderKey,
        postcode_area: Annotated[PostcodeArea | None, Query(description="4-digit area, e.g. 1034")] = None,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> LibraryPage:
        found = sorted((await catalogue.libraries()).values(), key=lambda library: library.code)
        if postcode_area is not None:
            found = [library for library in found if domain.serves(library, postcode_area)]
        items, next_cursor = domain.page(found, lambda library: library.code, cursor, limit)
        return LibraryPage(items=[library_view(library) for library in items], next_cursor=next_cursor)

    @router.get(
        "/libraries/{library}",
        tags=["libraries"],
        summary="One library organisation: branches and postcode areas",
        responses={404: {"description": "no such library"}},
    )
    async def library(library: LibraryCode, caller: ReaderKey) -> LibraryView:
        return library_view(await catalogue.library(library))

    @router.put(
        "/libraries/{library}",
        status_code=202,
        tags=["libraries"],
        response_model=LibraryChange,
        summary="Add or change a library organisation (admin)",
        description="Publishes `library_changed`. One library serves a postcode area: areas another library serves "
        "already are refused (409), as is dropping a branch an offering still names.",
        responses={**WRITE_RESPONSES, 409: {"description": "postcode areas of another library, or a branch in use"}},
    )
    async def put_library(
        library: LibraryCode,
        body: LibraryBody,
        request: Request,
        caller: AdminKey,
        replies: Replies,
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            data = LibraryChanged(library=library, **body.model_dump())
            return (await catalogue.put_library(data, caller, ids)).reply(library=library)

        return await replies.once(request, caller, key, body.model_dump(mode="json"), run)

    @router.get(
        "/offerings",
        tags=["offerings"],
        summary="Who offers what: by proposition, library, theme, target group, channel or postcode area",
        description="`?proposition=boekstart&postcode_area=1034` answers where a parent in 1034 gets BoekStart: the "
        "library serving that area, its local name, branches and channels. By default only what is offered now "
        "(`status=active`); `withdrawn` and `all` show the rest.",
    )
    async def offerings(
        caller: ReaderKey,
        proposition: Slug | None = None,
        library: LibraryCode | None = None,
        theme: Theme | None = None,
        target_group: TargetGroup | None = None,
        channel: Channel | None = None,
        postcode_area: Annotated[PostcodeArea | None, Query(description="4-digit area, e.g. 1034")] = None,
        status: Literal["active", "withdrawn", "all"] = "active",
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> OfferingPage:
        query = OfferingQuery(proposition, library, theme, target_group, channel, postcode_area, status)
        found = await catalogue.find_offerings(query)
        items, next_cursor = domain.page(found, lambda d: d.offering.id, cursor, limit)
        return OfferingPage(items=[offering_view(d) for d in items], next_cursor=next_cursor)

    @router.get(
        "/offerings/{offering_id}",
        tags=["offerings"],
        summary="One offering",
        responses={404: {"description": "no such offering"}},
    )
    async def offering(offering_id: OfferingPath, caller: ReaderKey) -> OfferingView:
        return offering_view(await catalogue.offering_detail(offering_id))

    @router.put(
        "/offerings/{offering_id}",
        status_code=202,
        tags=["offerings"],
        response_model=OfferingChange,
        summary="A library offers a proposition: local name, branches, channels (admin or the library's marketing)",
        description="Publishes `offering_changed`. Branches must be the library's; the channels those the proposition "
        "is offered through; an offline offering names its branches.",
        responses={
            **WRITE_RESPONSES,
            404: {"description": "no such library or proposition"},
            409: {"description": "the proposition is retired"},
        },
    )
    async def put_offering(
        offering_id: OfferingPath,
        body: OfferingBody,
        request: Request,
        caller: MarketingKey,
        replies: Replies,
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            change = await catalogue.put_offering(
                offering_id,
                local_name=body.local_name,
                branches=body.branches,
                channels=body.channels,
                url=body.url,
                caller=caller,
                ids=ids,
            )
            return change.reply(offering_id=offering_id)

        return await replies.once(request, caller, key, body.model_dump(mode="json"), run)

    @router.delete(
        "/offerings/{offering_id}",
        status_code=202,
        tags=["offerings"],
        response_model=OfferingChange,
        summary="The library withdraws an offering (it stays readable with active false)",
        responses={404: {"description": "no such offering"}, 409: {"description": "withdrawn already"}},
    )
    async def withdraw_offering(
        offering_id: OfferingPath, request: Request, caller: MarketingKey, replies: Replies, key: IdempotencyKey = None
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            return (await catalogue.withdraw_offering(offering_id, caller, ids)).reply(offering_id=offering_id)

        return await replies.once(request, caller, key, None, run)

    return router


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
    async def schedule(
        body: ScheduleBody, request: Request, caller: MarketingKey, replies: Replies, key: IdempotencyKey = None
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            plan = Plan(
                body.proposition, body.library, body.branch, body.title, body.starts_at, body.ends_at, body.capacity
            )
            session = await activities.schedule(plan, caller, ids)
            return 202, activity_view(session).model_dump(mode="json")

        return await replies.once(request, caller, key, body.model_dump(mode="json"), run)

    @router.get("/activities", summary="Sessions by proposition, library, branch and start time, in start order")
    async def sessions(
        caller: ReaderKey,
        proposition: Slug | None = None,
        library: LibraryCode | None = None,
        branch: Slug | None = None,
        starts_from: Annotated[
            AwareDatetime | None, Query(alias="from", description="starting at or after; default now")
        ] = None,
        starts_before: Annotated[AwareDatetime | None, Query(alias="before", description="starting before")] = None,
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
    async def cancel(
        activity_id: ActivityPath, request: Request, caller: MarketingKey, replies: Replies, key: IdempotencyKey = None
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            event_id = await activities.cancel(activity_id, caller, ids)
            return 202, {"activity_id": activity_id, "event_id": event_id, "changed": True}

        return await replies.once(request, caller, key, None, run)

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
    )
    async def register(
        activity_id: ActivityPath,
        body: Participation,
        request: Request,
        caller: IngestKey,
        replies: Replies,
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            event_id = await activities.register(activity_id, body.member_id, _touch(body), caller, ids)
            return 202, {"activity_id": activity_id, "member_id": body.member_id, "event_id": event_id}

        return await replies.once(request, caller, key, body.model_dump(mode="json"), run)

    @router.post(
        "/activities/{activity_id}/attendance",
        status_code=202,
        response_model=Attended,
        summary="Record that a member attended a session, registered or walked in (ingest, the activity's library)",
        description="Publishes `activity_attended` with `walk_in` true when the member had not registered.",
        responses={404: {"description": "no such activity"}, 409: {"description": "recorded already, or cancelled"}},
    )
    async def attend(
        activity_id: ActivityPath,
        body: Participation,
        request: Request,
        caller: IngestKey,
        replies: Replies,
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            event_id, walk_in = await activities.attend(activity_id, body.member_id, _touch(body), caller, ids)
            return 202, {
                "activity_id": activity_id,
                "member_id": body.member_id,
                "event_id": event_id,
                "walk_in": walk_in,
            }

        return await replies.once(request, caller, key, body.model_dump(mode="json"), run)

    return router


def _touch(body: Participation) -> Touch:
    return Touch(body.platform, body.channel or domain.channel_of(body.platform), body.time or datetime.now(UTC))


# ------------------------------------------------------------------------------------------------ usage


def usage_router(usage: Usage) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["usage"], responses=AUTH_RESPONSES)

    @router.post(
        "/loans",
        status_code=202,
        response_model=LoanAccepted,
        summary="Report one loan event: reserved, borrowed or returned (ingest, the loan's library)",
        description="Publishes `loan_reserved`, `loan_borrowed` or `loan_returned` (usage topic, subject = "
        "member_id). A report with an `id` posted again is accepted and not published again.",
        responses={409: {"description": "a report with this id is being handled; post it again"}},
    )
    async def loan(
        body: LoanReport, request: Request, caller: IngestKey, replies: Replies, key: IdempotencyKey = None
    ) -> JSONResponse:
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

        return await replies.once(request, caller, key, body.model_dump(mode="json"), run)

    @router.post(
        "/loans/batch",
        status_code=202,
        response_model=BatchReply,
        summary=f"Report up to {MAX_BATCH:,} loan events at once; each accepted or rejected with its reasons",
        description="Each report is checked on its own; the accepted ones are published together (202 once Kafka "
        "acknowledged them all). `rejected` lists the others with their index, id, status and the fields at fault "
        "(422 when none was accepted).",
    )
    async def loans(
        body: LoanBatch, request: Request, caller: IngestKey, replies: Replies, key: IdempotencyKey = None
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            valid, malformed = parse_loans(body.loans)
            result = await usage.report(valid, caller, ids) if valid else BatchResult([], [])
            return BatchResult(result.accepted, [*malformed, *result.rejected]).reply()

        return await replies.once(request, caller, key, body.loans, run)

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


def ingest_router(usage: Usage, activities: Activities, claims: EventClaims) -> APIRouter:
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
        if isinstance(data, ActivityRegistered):
            return await activities.take_registration(data.activity_id, event.subject, touch, caller, ids,
                                                      proposition=data.proposition, event_id=event.id)  # fmt: skip
        return await activities.take_attendance(data.activity_id, event.subject, touch, caller, ids,
                                                proposition=data.proposition, event_id=event.id)  # fmt: skip

    router = shared_ingest_router(
        service="propositions",
        topic_name=USAGE.name,
        types=INGESTIBLE,
        handle=handle,
        claims=claims,
        example=EXAMPLE_EVENT,
    )
    return router


def _about_activity(problem: Problem) -> Problem:
    """A refusal of a posted registration or attendance names the field it is about."""
    if problem.errors:
        return problem
    error = FieldError("data.activity_id", problem.detail or problem.title)
    return Problem(problem.status, problem.title, problem.detail, errors=[error])
