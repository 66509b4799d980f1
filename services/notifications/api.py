"""notifications' HTTP API: the in-app inbox the apps read."""

from __future__ import annotations

from fastapi import APIRouter, Query
from pydantic import BaseModel

from services.notifications.store import InboxStore


class InboxMessage(BaseModel):
    message_id: str
    campaign_id: str
    title: str
    body: str
    locale: str
    created_at: str
    read: bool


class Inbox(BaseModel):
    member_id: str
    messages: list[InboxMessage]


def inbox_router(store: InboxStore) -> APIRouter:
    router = APIRouter(prefix="/v1/members", tags=["inbox"])

    @router.get("/{member_id}/inbox", summary="The member's in-app messages, newest first")
    async def inbox(member_id: str, limit: int = Query(default=50, ge=1, le=200)) -> Inbox:
        messages = await store.inbox(member_id, limit)
        return Inbox(member_id=member_id, messages=[InboxMessage.model_validate(m) for m in messages])

    return router
