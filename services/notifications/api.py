"""notifications' HTTP API: thin routes over campaign management and the inbox. Every write takes an
Idempotency-Key."""

from __future__ import annotations

import hmac
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.notifications.bounces import Bounces
from services.notifications.campaigns import Campaign, CampaignDefinition, Change, Status
from services.notifications.inbox import Inbox
from services.notifications.management import CampaignManagement, PreviewSample
from services.notifications.schemas import (
    BounceOutcome,
    BounceReport,
    CampaignEdit,
    CampaignList,
    CampaignVersions,
    CampaignView,
    Effect,
    InboxMessage,
    InboxView,
    Preview,
    PreviewRequest,
    ReadMark,
    ReadState,
    Results,
)
from shared.auth import AUTH_RESPONSES, MarketingKey, MemberDataKey
from shared.idempotency import Ids, Write
from shared.problems import Problem

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such campaign"}}


def campaigns_router(management: CampaignManagement) -> APIRouter:
    router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"], responses=AUTH_RESPONSES)

    async def view(campaign: Campaign) -> dict[str, Any]:
        return CampaignView(
            **campaign.definition.model_dump(),
            id=campaign.id,
            version=campaign.version,
            status=campaign.status,
            created_at=campaign.created_at,
            updated_at=campaign.updated_at,
            built_in=campaign.built_in,
            overlaps=list(campaign.overlaps),
            warnings=await management.warnings(campaign),
        ).model_dump(mode="json")

    @router.post(
        "",
        status_code=201,
        response_model=CampaignView,
        summary="Create a campaign (a draft); publishes campaign.changed",
        description="Templates are checked now: a syntax error or an unknown placeholder is a 422 naming the field, "
        "e.g. `body.messages.email.nl.body`. A library key creates campaigns of its library only.",
    )
    async def create(body: CampaignDefinition, caller: MarketingKey, write: Write) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            return 201, await view(await management.create(body, caller, ids))

        return await write(caller, body, run)

    @router.get("", response_model=CampaignList, summary="The campaigns this key may see, oldest first")
    async def list_campaigns(
        caller: MarketingKey,
        status: Status | None = None,
        cursor: str | None = Query(default=None, pattern=r"^[0-9]{1,9}$"),
        limit: int = Query(default=50, ge=1, le=200),
    ) -> dict[str, Any]:
        found = [c for c in await management.campaigns(caller) if status is None or c.status == status]
        start = int(cursor or 0)
        page = found[start : start + limit]
        more = start + limit < len(found)
        return {"campaigns": [await view(c) for c in page], "next_cursor": str(start + limit) if more else None}

    @router.get("/{campaign_id}", response_model=CampaignView, summary="One campaign", responses=NOT_FOUND)
    async def get_campaign(campaign_id: str, caller: MarketingKey) -> dict[str, Any]:
        return await view(await management.campaign(campaign_id, caller))

    @router.put(
        "/{campaign_id}",
        response_model=CampaignView,
        summary="Edit a campaign: a new version; publishes campaign.changed",
        responses={**NOT_FOUND, 409: {"description": "archived, or another edit came first (stale version)"}},
    )
    async def edit(
        campaign_id: str,
        body: CampaignEdit,
        caller: MarketingKey,
        write: Write,
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            definition = CampaignDefinition.model_validate(body.model_dump(exclude={"version"}))
            return 200, await view(await management.edit(campaign_id, body.version, definition, caller, ids))

        return await write(caller, body, run)

    @router.get(
        "/{campaign_id}/versions",
        response_model=CampaignVersions,
        summary="Every version of a campaign, oldest first",
        responses=NOT_FOUND,
    )
    async def versions(campaign_id: str, caller: MarketingKey) -> dict[str, Any]:
        found = await management.versions(campaign_id, caller)
        return {
            "campaign_id": campaign_id,
            "versions": [{"version": v, "definition": d.model_dump(mode="json")} for v, d in found],
        }

    @router.post(
        "/{campaign_id}/preview",
        response_model=Preview,
        summary="Render the campaign's messages for a sample member",
        description="Placeholders are filled from the catalogue for the sample's library; nothing is sent or stored.",
        responses=NOT_FOUND,
    )
    async def preview(campaign_id: str, body: PreviewRequest, caller: MarketingKey) -> dict[str, Any]:
        sample = PreviewSample(**body.model_dump())
        return await management.preview(campaign_id, sample, caller)

    def status_change(change: Change, summary: str, description: str) -> None:
        @router.post(
            f"/{{campaign_id}}/{change}",
            response_model=CampaignView,
            summary=summary,
            description=description,
            responses={**NOT_FOUND, 409: {"description": f"the campaign's status does not allow to {change}"}},
            name=f"{change}_campaign",
        )
        async def changed(campaign_id: str, caller: MarketingKey, write: Write) -> JSONResponse:
            async def run(ids: Ids) -> tuple[int, Any]:
                return 200, await view(await management.change(campaign_id, change, caller, ids))

            return await write(caller, None, run)

    status_change(
        "activate",
        "Activate a draft or paused campaign; publishes campaign.changed",
        "Other active campaigns that would hit the same members for the same trigger are listed in `overlaps`.",
    )
    status_change("pause", "Pause an active campaign; publishes campaign.changed", "Waiting messages are not sent.")
    status_change(
        "archive",
        "Archive a campaign; publishes campaign.changed",
        "It sends nothing and can no longer be edited, until it is restored. Recorded on the audit topic.",
    )
    status_change(
        "restore",
        "Restore an archived campaign (paused); publishes campaign.changed",
        "Undoes an archive: the campaign is paused, so nothing is sent until it is activated again. Recorded on the "
        "audit topic.",
    )

    @router.get(
        "/{campaign_id}/results",
        response_model=Results,
        summary="Triggered, sent, suppressed by reason, failed, and the measured effect against the holdout",
        responses=NOT_FOUND,
    )
    async def campaign_results(
        campaign_id: str,
        caller: MarketingKey,
        within_days: int | None = Query(default=None, ge=1, le=365, description="N; default from settings"),
    ) -> Results:
        found = await management.results(campaign_id, within_days, caller)
        counted, effect = found.counts, Effect.model_validate(found.effect, from_attributes=True)
        figures = {**asdict(counted), "waiting": counted.waiting, "effect": effect, "warnings": found.warnings}
        return Results(campaign_id=found.campaign_id, **figures)

    return router


def inbox_router(inbox: Inbox) -> APIRouter:
    router = APIRouter(prefix="/v1/members", tags=["inbox"], responses=AUTH_RESPONSES)

    @router.get(
        "/{member_id}/inbox",
        response_model=InboxView,
        summary="The member's in-app messages, newest first",
        description="A key scoped to one library sees the messages sent on behalf of that library.",
    )
    async def get_inbox(
        member_id: str,
        caller: MemberDataKey,
        limit: int = Query(default=50, ge=1, le=200),
        unread_only: bool = False,
    ) -> dict[str, Any]:
        _, messages = await inbox.messages(member_id, caller, limit, unread_only)
        shown = [
            InboxMessage.model_validate({**asdict(m), "created_at": m.created_at.isoformat()}).model_dump()
            for m in messages
        ]
        return {"member_id": member_id, "messages": shown, "unread": sum(not m["read"] for m in shown)}

    @router.put(
        "/{member_id}/inbox/{message_id}",
        response_model=ReadState,
        summary="Mark an inbox message read or unread",
        responses={404: {"description": "no such message in the member's inbox"}},
    )
    async def mark(
        member_id: str,
        message_id: str,
        body: ReadMark,
        caller: MemberDataKey,
        write: Write,
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            return 200, await inbox.mark(member_id, message_id, body.read, caller)

        return await write(caller, body, run)

    return router


# Declares the provider's token in the OpenAPI (its own scheme: it is not an API key); the route checks it.
PROVIDER_TOKEN = HTTPBearer(
    scheme_name="bounceWebhookToken",
    description="The e-mail provider's token (`KLANTREIS_NOTIFICATIONS_BOUNCE_WEBHOOK_TOKEN`).",
    auto_error=False,
)


def bounces_router(bounces: Bounces, token: str) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["bounces"])

    @router.post(
        "/bounces",
        status_code=202,
        response_model=BounceOutcome,
        summary="The e-mail provider's bounce webhook: a hard bounce marks the address undeliverable",
        description="Authenticated with the provider's bearer token (`KLANTREIS_NOTIFICATIONS_BOUNCE_WEBHOOK_TOKEN`), "
        "not an API key. Later messages to that address are suppressed with the reason `undeliverable`; a soft "
        "bounce, or a message not sent within the bounce window, changes nothing. Posting the same report again "
        "changes nothing more.",
        responses={401: {"description": "no or a wrong provider token"}},
    )
    async def bounced(
        body: BounceReport,
        authorization: str = Header(default=""),
        _: Annotated[HTTPAuthorizationCredentials | None, Depends(PROVIDER_TOKEN)] = None,
    ) -> BounceOutcome:
        given = authorization.removeprefix("Bearer ").strip()
        if not token or not hmac.compare_digest(given.encode(), token.encode()):
            raise Problem(401, "Unauthorized", "the provider's bounce token is missing or wrong",
                          headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        sent_to = await bounces.sent_to(body.message_id) if body.kind == "hard" else None
        if sent_to is not None:
            await bounces.mark(sent_to)
        return BounceOutcome(message_id=body.message_id, marked_undeliverable=sent_to is not None)

    return router
