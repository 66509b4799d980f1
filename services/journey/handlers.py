"""journey's Kafka side: member events in, frictions out."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from faststream.kafka import KafkaRouter

from services.journey.rules import AbsenceRule, evaluate
from services.journey.settings import JourneySettings
from services.journey.store import DueTimer, JourneyStore, Resolution
from shared.events import CloudEvent, EventData, deterministic_id
from shared.events.journey import FrictionDetected, FrictionResolved
from shared.kafka import EventPublisher, subscribe
from shared.topics import MEMBERS

SOURCE = "/journey"
CLAIM_LIMIT = 500


def friction_detected(timer: DueTimer) -> CloudEvent:
    return CloudEvent.create(
        FrictionDetected(
            friction_id=timer.friction_id,
            rule=timer.rule,
            start_event_id=timer.start_event_id,
            started_at=timer.started_at,
            due_at=timer.due_at,
            library=timer.library,
            channel_pair=timer.channel_pair,
            platform=timer.platform,
            age_band=timer.age_band,
        ),
        id=timer.friction_id,
        subject=timer.member_id,
        source=f"{SOURCE}/rules/{timer.rule}",
        library=timer.library,
        time=timer.due_at,  # event time, not processing time: a replay gives the same event
    )


def friction_resolved(resolution: Resolution) -> CloudEvent:
    friction = resolution.friction
    return CloudEvent.create(
        FrictionResolved(
            friction_id=friction.friction_id,
            rule=friction.rule,
            resolved_by_event_id=resolution.event_id,
            resolved_at=resolution.at,
            seconds_to_resolve=max(0.0, (resolution.at - friction.due_at).total_seconds()),
        ),
        id=deterministic_id("resolved", friction.friction_id),
        subject=friction.member_id,
        source=f"{SOURCE}/rules/{friction.rule}",
        library=friction.library,
        time=resolution.at,
    )


class FrictionDetector:
    def __init__(
        self,
        rules: list[AbsenceRule],
        store: JourneyStore,
        publisher: EventPublisher,
        settings: JourneySettings,
    ) -> None:
        self._rules = rules
        self._store = store
        self._publisher = publisher
        self._settings = settings

    async def on_member_event(self, event: CloudEvent, data: EventData) -> None:
        resolutions = await self._store.apply(event, evaluate(self._rules, event))
        if resolutions:
            await self._publisher.publish_many([friction_resolved(r) for r in resolutions])

    async def clock(self) -> datetime:
        if self._settings.journey_clock == "event":
            return await self._store.event_clock() or datetime.fromtimestamp(0, UTC)
        return datetime.now(UTC)

    async def fire_due_timers(self) -> int:
        """One pass: raise the frictions whose timers expired; returns how many."""
        now = await self.clock()
        fired = await self._store.claim_due(
            now - self._settings.journey_allowed_lateness,
            datetime.now(UTC),
            self._settings.journey_timer_lease_seconds,
            CLAIM_LIMIT,
        )
        if not fired:
            return 0
        # Publish first, then mark them open: a crash in between re-claims after the lease and publishes the
        # same (deterministic) events again, which consumers recognise.
        await self._publisher.publish_many([friction_detected(t) for t in fired])
        resolved = await self._store.complete(fired)
        if resolved:
            await self._publisher.publish_many([friction_resolved(r) for r in resolved])
        return len(fired)

    async def run_timers(self) -> None:
        while True:
            if await self.fire_due_timers() < CLAIM_LIMIT:
                await asyncio.sleep(self._settings.journey_timer_tick_seconds)


def journey_router(detector: FrictionDetector, settings: JourneySettings, publisher: EventPublisher) -> KafkaRouter:
    router = KafkaRouter()
    subscribe(
        router,
        settings,
        publisher,
        topic=MEMBERS,
        group="journey",
        handler=detector.on_member_event,
        description="Every member event: evaluates the friction rules and resolves open frictions.",
    )
    return router
