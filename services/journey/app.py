"""Wiring of the journey service."""

from __future__ import annotations

from fastapi import FastAPI

from services.journey.handlers import FrictionDetector, journey_router
from services.journey.rules import online_signup_not_activated
from services.journey.settings import JourneySettings
from services.journey.store import JourneyStore
from shared.events.journey import FrictionDetected, FrictionResolved
from shared.service import ServiceParts, build_app


def create_app(settings: JourneySettings | None = None, *, parts: ServiceParts | None = None) -> FastAPI:
    settings = settings or JourneySettings()
    parts = parts or ServiceParts.connect("journey", settings)
    store = JourneyStore(parts.redis, settings)
    rules = [online_signup_not_activated(settings.journey_activation_window)]
    detector = FrictionDetector(rules, store, parts.publisher, settings)
    return build_app(
        parts,
        title="klantreis journey",
        description="Stitches each member's journey across channels and detects friction in event time.",
        kafka=journey_router(detector, settings, parts.publisher),
        background=[detector.run_timers],
        publishes=[FrictionDetected, FrictionResolved],
    )
