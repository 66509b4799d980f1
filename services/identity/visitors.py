"""Linking a web visitor to a member, server-side only: after the member logged in on the library's site, the site's
server (with its ingest key, never the browser's publishable key) says which member the tracker's visitor id is.
From then on identity publishes that visitor's client events as the member's, so journey's rules and analytics see
them with the member's other events. The link is an alias of the member: a merge moves it, an erasure removes it.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel

from services.identity.routing import FrontOfficeKey
from services.identity.store import MemberStore
from shared.auth import AUTH_RESPONSES, forbid_other_library
from shared.events.client import VisitorId
from shared.events.types import MemberId
from shared.failed_items import item_route
from shared.problems import not_found
from shared.schemas import example_body


class VisitorLink(BaseModel):
    model_config = example_body(member_id="cc02c620-5a1b-4e0f-9d51-2f3b8f6f0e11")

    member_id: MemberId


def visitors_router(store: MemberStore) -> APIRouter:
    router = APIRouter(prefix="/v1/visitors", tags=["web tracker"], responses=AUTH_RESPONSES)

    @router.put(
        "/{visitor_id}/member",
        status_code=204,
        summary="Link the web tracker's visitor to the member who logged in (the library site's server)",
        description="`visitor_id` is the tracker's first-party id (`v-<uuid>`, in the site's localStorage as "
        "`klantreis.visitor`). Later client events of the visitor are published as the member's.",
        responses={404: {"description": "no such member"}},
        openapi_extra=item_route("ingest", "member-data"),
    )
    async def link(visitor_id: VisitorId, body: VisitorLink, caller: FrontOfficeKey) -> Response:
        standing = (await store.standings([body.member_id]))[body.member_id]
        if standing.home_library is None:
            raise not_found("member")
        forbid_other_library(caller, standing.home_library)
        await store.link_visitor(visitor_id, standing.member_id)
        return Response(status_code=204)

    return router
