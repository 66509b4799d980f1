"""propositions' routes for the catalogue, a router for each of its parts: propositions, library organisations,
offerings. Every write takes an
Idempotency-Key; reads need any valid key."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from services.propositions import domain
from services.propositions.catalogue import Catalogue
from services.propositions.domain import (
    OfferingQuery,
    PropositionQuery,
)
from services.propositions.schemas import (
    Cursor,
    LibraryBody,
    LibraryChange,
    LibraryPage,
    LibraryView,
    Limit,
    OfferingBody,
    OfferingChange,
    OfferingPage,
    OfferingPath,
    OfferingView,
    PropositionBody,
    PropositionChanged,
    PropositionPage,
    PropositionView,
    ReaderKey,
    SlugPath,
    library_view,
    offering_view,
    proposition_view,
)
from shared.auth import AUTH_RESPONSES, AdminKey, MarketingKey
from shared.events.propositions import (
    LibraryChanged,
    PropositionState,
    TargetGroup,
    Theme,
)
from shared.events.types import Channel, LibraryCode, PostcodeArea, Slug
from shared.idempotency import Ids, Write

# --------------------------------------------------------------------------------------------- catalogue

WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "unchanged: the entry was like this already, nothing published"},
    202: {"description": "changed: the catalogue event is acknowledged by Kafka"},
}


def propositions_router(catalogue: Catalogue) -> APIRouter:
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
        caller: MarketingKey,
        write: Write,
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            state = PropositionState(slug=slug, **body.model_dump())
            return (await catalogue.put_proposition(state, caller, ids)).reply(slug=slug)

        return await write(caller, body, run)

    @router.delete(
        "/propositions/{slug}",
        status_code=202,
        response_model=PropositionChanged,
        summary="Retire a proposition: it stays readable with status retired, and its offerings stop being offered",
        responses={404: {"description": "no such proposition"}, 409: {"description": "retired already"}},
    )
    async def retire_proposition(slug: SlugPath, caller: MarketingKey, write: Write) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            return (await catalogue.retire_proposition(slug, caller, ids)).reply(slug=slug)

        return await write(caller, None, run)

    return router


def libraries_router(catalogue: Catalogue) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["catalogue"], responses=AUTH_RESPONSES)

    @router.get("/libraries", tags=["libraries"], summary="Library organisations, or the one serving a postcode area")
    async def libraries(
        caller: ReaderKey,
        postcode_area: Annotated[PostcodeArea | None, Query(description="4-digit area, e.g. 1034")] = None,
        status: Literal["active", "retired", "all"] = "active",
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> LibraryPage:
        found = sorted((await catalogue.libraries()).values(), key=lambda library: library.code)
        found = [library for library in found if status == "all" or (status == "retired") == library.retired]
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
        summary="Add or change a library organisation, or restore a retired one (admin)",
        description="Publishes `library_changed` and records the change on the audit topic. One library serves a "
        "postcode area: areas another library serves already are refused (409), as is dropping a branch an offering "
        "still names. A retired library put again is active again.",
        responses={**WRITE_RESPONSES, 409: {"description": "postcode areas of another library, or a branch in use"}},
    )
    async def put_library(
        library: LibraryCode,
        body: LibraryBody,
        caller: AdminKey,
        write: Write,
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            data = LibraryChanged(library=library, **body.model_dump())
            return (await catalogue.put_library(data, caller, ids)).reply(library=library)

        return await write(caller, body, run)

    @router.delete(
        "/libraries/{library}",
        status_code=202,
        tags=["libraries"],
        response_model=LibraryChange,
        summary="Retire a library organisation (network-wide admin)",
        description="Publishes `library_changed` with `retired: true` and records it on the audit topic. The record "
        "stays readable (`retired: true`); from then on no sign-up, posted event, campaign or API key may name the "
        "library (422 naming the field), its offerings are not offered and its postcode areas are free for another "
        "library. What named it before (members, journeys, reports) stays. Put the library again to restore it.",
        responses={404: {"description": "no such library"}, 409: {"description": "retired already"}},
    )
    async def retire_library(library: LibraryCode, caller: AdminKey, write: Write) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            return (await catalogue.retire_library(library, caller, ids)).reply(library=library)

        return await write(caller, None, run)

    return router


def offerings_router(catalogue: Catalogue) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["catalogue"], responses=AUTH_RESPONSES)

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
        caller: MarketingKey,
        write: Write,
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

        return await write(caller, body, run)

    @router.delete(
        "/offerings/{offering_id}",
        status_code=202,
        tags=["offerings"],
        response_model=OfferingChange,
        summary="The library withdraws an offering (it stays readable with active false)",
        responses={404: {"description": "no such offering"}, 409: {"description": "withdrawn already"}},
    )
    async def withdraw_offering(offering_id: OfferingPath, caller: MarketingKey, write: Write) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            return (await catalogue.withdraw_offering(offering_id, caller, ids)).reply(offering_id=offering_id)

        return await write(caller, None, run)

    return router
