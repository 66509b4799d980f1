"""identity's routes for platform accounts and the logins platforms report."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.identity.accounts import Accounts
from services.identity.routing import FrontOfficeKey
from services.identity.schemas import (
    Accepted,
    AccountLink,
    AccountPlatform,
    LinkedAccount,
    Login,
)
from shared.auth import AUTH_RESPONSES, IngestKey
from shared.failed_items import item_route
from shared.idempotency import Ids, Write


def accounts_router(accounts: Accounts) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["accounts"], responses=AUTH_RESPONSES)

    @router.post(
        "/members/{member_id}/accounts",
        status_code=202,
        response_model=LinkedAccount,
        tags=["accounts"],
        summary="Link a platform account (website, app, e-book platform, ILS card) to the member",
        responses={
            404: {"description": "no such member"},
            409: {
                "description": "the account belongs to another "
                "member, or the member has another account on that platform"
            },
        },
        openapi_extra=item_route("ingest", "member-data"),
    )
    async def link_account(
        member_id: str,
        body: AccountLink,
        caller: FrontOfficeKey,
        write: Write,
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            resolved, ref = await accounts.link_account(member_id, body.platform, body.external_id, caller, ids)
            return 202, {"member_id": resolved, "platform": body.platform, "account_ref": ref}

        return await write(caller, body, run)

    @router.delete(
        "/members/{member_id}/accounts/{platform}",
        status_code=202,
        response_model=Accepted,
        tags=["accounts"],
        summary="Unlink the member's account on a platform",
        responses={404: {"description": "nothing linked"}},
    )
    async def unlink_account(
        member_id: str,
        platform: AccountPlatform,
        caller: FrontOfficeKey,
        write: Write,
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            return 202, {
                "member_id": member_id,
                "event_id": await accounts.unlink_account(member_id, platform, caller, ids),
            }

        return await write(caller, None, run)

    @router.post(
        "/logins",
        status_code=202,
        response_model=Accepted,
        tags=["accounts"],
        summary="A platform reports a login outcome by external account",
        description="Publishes `login_succeeded` or `login_failed` (with the reason), and `channel_switched` when "
        "the member's previous touch was on another channel or platform.",
        responses={404: {"description": "no member has this account linked"}},
        openapi_extra=item_route("ingest"),
    )
    async def login(body: Login, caller: IngestKey, write: Write) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            member_id, event_id = await accounts.record_login(
                body.platform, body.external_id, body.outcome, body.reason, body.time or datetime.now(UTC), caller, ids
            )
            return 202, {"member_id": member_id, "event_id": event_id}

        return await write(caller, body, run)

    return router
