"""Wiring of the identity service: the only place its parts meet."""

from __future__ import annotations

from fastapi import FastAPI

from services.identity.api import contact_router, members_router
from services.identity.ingest import ingest_router
from services.identity.members import Members
from services.identity.settings import IdentitySettings
from services.identity.store import MemberStore
from shared.events import members as member_events
from shared.ingest import EventClaims
from shared.service import ServiceParts, build_app


def create_app(settings: IdentitySettings | None = None, *, parts: ServiceParts | None = None) -> FastAPI:
    settings = settings or IdentitySettings()
    parts = parts or ServiceParts.connect("identity", settings)
    store = MemberStore(parts.redis, settings)
    members = Members(store, parts.publisher, settings)
    return build_app(
        parts,
        title="klantreis identity",
        description="The network-wide member: registration, card activation, platform accounts and logins, consent, "
        "guardians, duplicates, merge and erasure. The only holder of personal data; its events are pseudonymous.",
        api=[
            members_router(members, store),
            ingest_router(store, parts.publisher, EventClaims(parts.redis, settings, "identity")),
            contact_router(members),
        ],
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
            member_events.DuplicateSuspected,
            member_events.MemberMerged,
            member_events.MemberErased,
        ],
    )
