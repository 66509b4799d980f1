"""Wiring of the identity service: the only place its parts meet."""

from __future__ import annotations

from fastapi import FastAPI

from services.identity.api import members_router
from services.identity.store import MemberStore
from shared.events.members import CardActivated, MemberSignedUp
from shared.service import ServiceParts, build_app
from shared.settings import Settings


def create_app(settings: Settings | None = None, *, parts: ServiceParts | None = None) -> FastAPI:
    settings = settings or Settings()
    parts = parts or ServiceParts.connect("identity", settings)
    store = MemberStore(parts.redis, settings)
    return build_app(
        parts,
        title="klantreis identity",
        description="The network-wide member: sign-up, card activation. The only holder of personal data.",
        api=[members_router(store, parts.publisher)],
        publishes=[MemberSignedUp, CardActivated],
    )
