"""Wiring of the journey service."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from services.journey import ENGINE
from services.journey.handlers import FrictionDetector
from services.journey.moved import moved_router
from services.journey.rules import RuleCatalogue, load_rules, with_window
from services.journey.settings import JourneySettings
from services.journey.status_api import status_router
from services.journey.store import JourneyStore
from shared.events.journey import FrictionDetected, FrictionResolved, WindowClosed
from shared.redis import make_redis
from shared.service import ServiceParts, build_app

log = logging.getLogger(__name__)


def rules_in_force(settings: JourneySettings) -> RuleCatalogue:
    catalogue = load_rules(settings.journey_rules_file)
    if settings.journey_activation_window is not None:
        catalogue = with_window(catalogue, "online-signup-not-activated", settings.journey_activation_window)
    return catalogue


def create_app(settings: JourneySettings | None = None, *, parts: ServiceParts | None = None) -> FastAPI:
    settings = settings or JourneySettings()
    parts = parts or ServiceParts.connect("journey", settings)
    state_redis = make_redis(settings, binary=True)
    store = JourneyStore(state_redis, settings)
    detector = FrictionDetector(rules_in_force(settings), store, parts.publisher, settings)
    parts.metrics.watch(detector.group_id, detector.consumer, settings.kafka_bootstrap, settings.kafka_security())

    async def consume() -> None:
        log.info("journey: the engine runs %s", ENGINE)
        try:
            await detector.run()
        finally:
            await state_redis.aclose()

    app = build_app(
        parts,
        title="klantreis journey",
        description="Stitches each member's journey across channels and platforms and detects friction in event "
        "time: consumes identity.members.v1, propositions.usage.v1 and its own journey.forwards.v1 (co-partitioned "
        "by member), publishes frictions and closed windows. Reports are served by the analytics service.",
        api=[status_router(detector), moved_router(settings)],
        background=[consume],
        stop=[detector.consumer.stop],
        publishes=[FrictionDetected, FrictionResolved, WindowClosed],
    )
    app.state.detector = detector
    return app
