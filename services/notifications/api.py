"""notifications' HTTP API: the in-app inbox the apps read."""

from __future__ import annotations

from fastapi import APIRouter, Query
from pydantic import BaseModel

from services.notifications.store import InboxStore
from shared.auth import AUTH_RESPONSES, MemberDataKey


class InboxMessage(BaseModel):
    message_id: str
    campaign_id: str
    title: str
    body: str
    locale: str
    library: str | None = None
    created_at: str
    read: bool


class Inbox(BaseModel):
    member_id: str
    messages: list[InboxMessage]


def inbox_router(store: InboxStore) -> APIRouter:
    router = APIRouter(prefix="/v1/members", tags=["inbox"], responses=AUTH_RESPONSES)

    @router.get(
        "/{member_id}/inbox",
        summary="The member's in-app messages, newest first",
        description="A key scoped to one library sees the messages sent on behalf of that library.",
    )
    async def inbox(member_id: str, caller: MemberDataKey, limit: int = Query(default=50, ge=1, le=200)) -> Inbox:
        messages = [m for m in await store.inbox(member_id, limit) if caller.covers(m.get("library") or None)]
        return Inbox(member_id=member_id, messages=[InboxMessage.model_validate(m) for m in messages])

    return router
