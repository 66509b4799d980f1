"""Wiring of the identity service: the only place its parts meet."""

from __future__ import annotations

from fastapi import FastAPI

from services.identity.accounts import Accounts
from services.identity.api import contact_router, front_office_router, members_router
from services.identity.api_accounts import accounts_router
from services.identity.api_duplicates import duplicates_router
from services.identity.api_families import families_router
from services.identity.families import Families
from services.identity.ingest import ingest_router
from services.identity.members import Members
from services.identity.pages import desk_router
from services.identity.publishable import (
    BrowserGate,
    PublishableKeys,
    TrackerCors,
    ingest_caller,
    publishable_keys_router,
    tracker_router,
)
from services.identity.settings import IdentitySettings
from services.identity.store import MemberStore
from services.identity.visitors import visitors_router
from shared.events import members as member_events
from shared.events.client import CLIENT_EVENTS
from shared.ingest import EventClaims
from shared.libraries import LibraryDirectory
from shared.service import ServiceParts, build_app


def create_app(settings: IdentitySettings | None = None, *, parts: ServiceParts | None = None) -> FastAPI:
    settings = settings or IdentitySettings()
    parts = parts or ServiceParts.connect("identity", settings)
    store = MemberStore(parts.redis, settings)
    libraries = LibraryDirectory(settings)
    members = Members(store, parts.publisher, settings, libraries)
    gate = BrowserGate(PublishableKeys(parts.redis, settings), libraries)
    app = build_app(
        parts,
        title="klantreis identity",
        description="The network-wide member: registration, card activation, platform accounts and logins, consent, "
        "guardians, duplicates, merge and erasure. The only holder of personal data; its events are pseudonymous.",
        api=[
            members_router(members, store),
            front_office_router(members),
            families_router(Families(members, store, parts.publisher, libraries)),
            accounts_router(Accounts(members, store, parts.publisher, settings)),
            duplicates_router(members.duplicates),
            ingest_router(
                store, parts.publisher, EventClaims(parts.redis, settings, "identity"), libraries, ingest_caller(gate)
            ),
            publishable_keys_router(gate.keys, libraries),
            tracker_router(),
            visitors_router(store),
            contact_router(members),
            desk_router(parts, members),
        ],
        close=[libraries.close],
        publishes=[
            member_events.RegistrationStarted,
            member_events.MemberSignedUp,
            member_events.CardActivated,
            member_events.AccountLinked,
            member_events.AccountUnlinked,
            member_events.LoginSucceeded,
            member_events.LoginFailed,
            member_events.ChannelSwitched,
            member_events.ConsentChanged,
            member_events.GuardianSet,
            member_events.Referred,
            member_events.DuplicateSuspected,
            member_events.MemberMerged,
            member_events.MemberErased,
            *CLIENT_EVENTS,
        ],
    )
    app.add_middleware(TrackerCors, gate=gate)
    return app
