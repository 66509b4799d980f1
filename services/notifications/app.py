"""Wiring of the notifications service: the only place its parts meet."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import FastAPI

from services.notifications.api import campaigns_router, inbox_router
from services.notifications.contacts import ContactDirectory, IdentityContacts
from services.notifications.deciding import Clock, Decider
from services.notifications.delivering import Deliverer
from services.notifications.handlers import notifications_router
from services.notifications.inbox import Inbox
from services.notifications.management import CampaignManagement
from services.notifications.pages import pages_router
from services.notifications.senders import EmailSender, WebhookSender
from services.notifications.settings import NotificationsSettings
from services.notifications.store import NotificationStore
from shared.events import notifications as notification_events
from shared.service import ServiceParts, build_app
from shared.settings import Settings


def _wall_clock() -> datetime:
    return datetime.now(UTC)


def create_app(
    settings: Settings | None = None,
    *,
    parts: ServiceParts | None = None,
    clock: Clock | None = None,
    contacts: ContactDirectory | None = None,
) -> FastAPI:
    """`clock` and `contacts` are for tests: a clock they move, and identity in-process."""
    if not isinstance(settings, NotificationsSettings):
        settings = NotificationsSettings(**(settings.model_dump() if settings is not None else {}))
    parts = parts or ServiceParts.connect("notifications", settings)
    clock = clock or _wall_clock
    store = NotificationStore(parts.redis, settings)
    deliverer = Deliverer(
        store,
        parts.publisher,
        settings,
        clock,
        contacts or IdentityContacts(settings.identity_url, settings.service_key),
        EmailSender(settings),
        WebhookSender(settings),
    )
    decider = Decider(store, parts.publisher, settings, clock, wake=deliverer.wake)
    management = CampaignManagement(store, parts.publisher, settings, clock)
    app = build_app(
        parts,
        title="klantreis notifications",
        description="Unified campaigns: marketing configures a campaign once for the whole network; every member "
        "who meets its trigger gets one consistent message, from the right library, on a channel they agreed to, "
        "at a decent hour, once. E-mail, SMS, push and the in-app inbox; results against a holdout.",
        api=[campaigns_router(management), inbox_router(Inbox(store)), pages_router(parts, settings, management)],
        kafka=notifications_router(decider, settings, parts.publisher),
        background=[deliverer.run, decider.run_broadcasts],
        publishes=[
            notification_events.MessageSent,
            notification_events.MessageSuppressed,
            notification_events.MessageDeferred,
            notification_events.MessageFailed,
            notification_events.CampaignChanged,
        ],
    )
    app.state.store = store
    app.state.decider = decider
    app.state.deliverer = deliverer
    return app
