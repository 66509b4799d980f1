"""Wiring of the notifications service: the only place its parts meet."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import FastAPI

from services.notifications.api import campaigns_router, inbox_router
from services.notifications.broadcasting import Broadcaster
from services.notifications.campaign_store import CampaignStore
from services.notifications.catalogue_store import CatalogueStore
from services.notifications.contacts import ContactDirectory, IdentityContacts
from services.notifications.deciding import Clock, Decider
from services.notifications.decision_log import DecisionLog
from services.notifications.delivering import Deliverer
from services.notifications.delivery_queue import DeliveryQueue
from services.notifications.handlers import notifications_router
from services.notifications.inbox import Inbox
from services.notifications.inbox_store import InboxStore
from services.notifications.management import CampaignManagement
from services.notifications.pages import pages_router
from services.notifications.projecting import MembersCaughtUp, Projector
from services.notifications.projection_store import ProjectionStore
from services.notifications.senders import EmailSender, WebhookSender
from services.notifications.settings import NotificationsSettings
from shared.events import notifications as notification_events
from shared.libraries import LibraryDirectory
from shared.service import ServiceParts, build_app
from shared.settings import Settings
from shared.topics import MEMBERS


@dataclass(frozen=True)
class Stores:
    """notifications' Redis, by section; each collaborator takes only the ones it needs."""

    campaigns: CampaignStore
    catalogue: CatalogueStore
    projections: ProjectionStore
    queue: DeliveryQueue
    inbox: InboxStore


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
    redis = parts.redis
    stores = Stores(
        campaigns=CampaignStore(redis, settings),
        catalogue=CatalogueStore(redis, settings),
        projections=ProjectionStore(redis, settings),
        queue=DeliveryQueue(redis, settings),
        inbox=InboxStore(redis, settings),
    )
    decisions = DecisionLog(redis, settings, stores.campaigns, stores.queue, stores.inbox)
    deliverer = Deliverer(
        stores.queue, stores.campaigns, stores.projections, stores.catalogue, stores.inbox, decisions,
        parts.publisher, settings, clock, contacts or IdentityContacts(settings.identity_url, settings.service_key),
        EmailSender(settings), WebhookSender(settings),
    )  # fmt: skip
    decider = Decider(
        stores.campaigns, stores.projections, stores.catalogue, decisions, parts.publisher, settings, clock,
        wake=deliverer.wake,
    )  # fmt: skip
    caught_up = MembersCaughtUp(stores.projections, settings, settings.topic(MEMBERS.name))
    projector = Projector(stores.projections, stores.catalogue, decisions, decider, settings.topic(MEMBERS.name))
    projector.caught_up = caught_up
    broadcaster = Broadcaster(decider, stores.campaigns, stores.projections, settings, clock)
    libraries = LibraryDirectory(settings)
    management = CampaignManagement(stores.campaigns, stores.catalogue, parts.publisher, settings, clock, libraries)
    app = build_app(
        parts,
        title="klantreis notifications",
        description="Unified campaigns: marketing configures a campaign once for the whole network; every member "
        "who meets its trigger gets one consistent message, from the right library, on a channel they agreed to, "
        "at a decent hour, once. E-mail, SMS, push and the in-app inbox; results against a holdout.",
        api=[
            campaigns_router(management),
            inbox_router(Inbox(stores.projections, stores.inbox)),
            pages_router(parts, settings, management),
        ],
        kafka=notifications_router(projector, settings, parts.publisher),
        background=[deliverer.run, broadcaster.run, caught_up.run],
        close=[libraries.close],
        publishes=[
            notification_events.MessageSent,
            notification_events.MessageSuppressed,
            notification_events.MessageDeferred,
            notification_events.MessageFailed,
            notification_events.CampaignChanged,
        ],
    )
    app.state.stores = stores
    app.state.decider = decider
    app.state.broadcaster = broadcaster
    app.state.deliverer = deliverer
    return app
