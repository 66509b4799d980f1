"""Wiring of the journey service."""

from __future__ import annotations

from fastapi import FastAPI

from services.journey.handlers import FrictionDetector, journey_router
from services.journey.moved import moved_router
from services.journey.rules import RuleCatalogue, load_rules, with_window
from services.journey.settings import JourneySettings
from services.journey.status_api import status_router
from services.journey.store import JourneyStore
from shared.events.journey import FrictionDetected, FrictionResolved
from shared.service import ServiceParts, build_app


def rules_in_force(settings: JourneySettings) -> RuleCatalogue:
    catalogue = load_rules(settings.journey_rules_file)
    if settings.journey_activation_window is not None:
        catalogue = with_window(catalogue, "online-signup-not-activated", settings.journey_activation_window)
    return catalogue


def create_app(settings: JourneySettings | None = None, *, parts: ServiceParts | None = None) -> FastAPI:
    settings = settings or JourneySettings()
    parts = parts or ServiceParts.connect("journey", settings)
    store = JourneyStore(parts.redis, settings)
    detector = FrictionDetector(rules_in_force(settings), store, parts.publisher, settings)
    app = build_app(
        parts,
        title="klantreis journey",
        description="Stitches each member's journey across channels and platforms, detects friction in event "
        "time and tracks resolution. Its former report URLs redirect to the analytics service.",
        api=[status_router(detector, store), moved_router(settings)],
        kafka=journey_router(detector, settings, parts.publisher),
        background=[detector.run_timers],
        publishes=[FrictionDetected, FrictionResolved],
    )
    app.state.detector = detector
    return app
