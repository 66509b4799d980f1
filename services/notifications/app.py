"""Wiring of the notifications service."""

from __future__ import annotations

from fastapi import FastAPI

from services.notifications.api import inbox_router
from services.notifications.campaigns import DEFAULT_CAMPAIGNS
from services.notifications.handlers import Notifier, notifications_router
from services.notifications.store import InboxStore
from shared.events.notifications import MessageSent
from shared.service import ServiceParts, build_app
from shared.settings import Settings


def create_app(settings: Settings | None = None, *, parts: ServiceParts | None = None) -> FastAPI:
    settings = settings or Settings()
    parts = parts or ServiceParts.connect("notifications", settings)
    inbox = InboxStore(parts.redis, settings)
    notifier = Notifier(DEFAULT_CAMPAIGNS, inbox, parts.publisher)
    return build_app(
        parts,
        title="klantreis notifications",
        description="Turns frictions into one consistent message per member: the in-app inbox.",
        api=[inbox_router(inbox)],
        kafka=notifications_router(notifier, settings, parts.publisher),
        publishes=[MessageSent],
    )
