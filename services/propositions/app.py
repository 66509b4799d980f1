"""Wiring of the propositions service: the only place its parts meet."""

from __future__ import annotations

from fastapi import FastAPI
from faststream.kafka import KafkaRouter

from services.propositions.activities import Activities
from services.propositions.api import ingest_router, usage_router
from services.propositions.api_activities import activities_router
from services.propositions.api_catalogue import libraries_router, offerings_router, propositions_router
from services.propositions.catalogue import Catalogue
from services.propositions.pages import pages_router
from services.propositions.store import PropositionsStore
from services.propositions.usage import Usage
from shared.events import propositions as events
from shared.events.admin import AdminActionRecorded
from shared.events.members import MemberErased
from shared.failed_items import FailedItems
from shared.ingest import EventClaims
from shared.kafka import subscribe
from shared.service import ServiceParts, build_app
from shared.settings import Settings
from shared.topics import MEMBERS


def create_app(settings: Settings | None = None, *, parts: ServiceParts | None = None) -> FastAPI:
    settings = settings or Settings()
    parts = parts or ServiceParts.connect("propositions", settings)
    store = PropositionsStore(parts.redis, settings)
    claims = EventClaims(parts.redis, settings, "propositions")
    catalogue = Catalogue(store, parts.publisher)
    activities = Activities(catalogue, store, parts.publisher)
    usage = Usage(catalogue, claims, parts.publisher)
    failed = FailedItems(parts.publisher, "propositions")  # refused items kept (shared/failed_items.py)

    kafka = KafkaRouter()
    subscribe(
        kafka,
        settings,
        parts.publisher,
        topic=MEMBERS,
        group="propositions",
        handler=activities.forget_member,
        types=[MemberErased.event_type],
        description="member.erased: the member leaves every activity they registered for or attended.",
    )
    return build_app(
        parts,
        title="klantreis propositions",
        description="The network's catalogue of propositions, which library offers what (the formula model), "
        "activities with registration and attendance, and loans reported by ILS, kiosks and the e-book platform.",
        api=[
            propositions_router(catalogue),
            libraries_router(catalogue),
            offerings_router(catalogue),
            activities_router(activities),
            usage_router(usage, failed),
            ingest_router(usage, activities, claims, failed),
            pages_router(parts, catalogue),
        ],
        kafka=kafka,
        publishes=[
            events.PropositionPublished,
            events.PropositionRetired,
            events.LibraryChanged,
            events.OfferingChanged,
            events.ActivityScheduled,
            events.ActivityCancelled,
            events.LoanReserved,
            events.LoanBorrowed,
            events.LoanReturned,
            events.ActivityRegistered,
            events.ActivityAttended,
            AdminActionRecorded,
        ],
    )
