"""The journey service on the real broker and Redis: a simulated network detected exactly, replays that agree,
late resolution, erasure, merges and dead letters."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI

from services.journey.app import create_app
from services.journey.handlers import FrictionDetector
from services.journey.offline.history import load
from services.journey.offline.memory import InMemoryJourneys
from services.journey.offline.simulator import simulate
from services.journey.rules import load_rules
from services.journey.settings import JourneySettings
from services.journey.state import MemberState, decode, ref
from shared.events import CloudEvent
from shared.events.registry import TYPE_PREFIX
from shared.kafka import EventPublisher
from shared.redis import make_redis
from shared.settings import Settings
from tests.support import eventually, harness_publisher, header, read_to_end, running

pytestmark = pytest.mark.integration


@dataclass
class Live:
    app: FastAPI
    settings: JourneySettings
    publisher: EventPublisher  # the tests' own: journey may not write the topics it consumes

    @property
    def detector(self) -> FrictionDetector:
        detector: FrictionDetector = self.app.state.detector
        return detector

    async def frictions(self) -> list[dict[str, Any]]:
        records = await read_to_end(self.settings.kafka_bootstrap, self.settings.topic("journey.frictions.v1"))
        return [
            {"type": header(r, "ce_type"), "id": header(r, "ce_id"), "member": header(r, "ce_subject"),
             **json.loads(r.value)}
            for r in records
        ]  # fmt: skip

    async def settle(self, within: float = 240) -> None:
        async def settled() -> bool:
            return self.detector.settled()

        await eventually(settled, within=within, every=0.5)

    async def stored(self, member: str) -> MemberState | None:
        """The member's state as Redis holds it (whichever partition it is on)."""
        redis = make_redis(self.settings, binary=True)
        try:
            async for key in redis.scan_iter(match=self.settings.key("journey", "state", "*")):
                raw = await redis.hget(key, ref(member))
                if isinstance(raw, bytes):
                    return decode(raw)
            return None
        finally:
            await redis.aclose()


def journey_settings(settings: Settings, **overrides: Any) -> JourneySettings:
    values: dict[str, Any] = {
        **settings.model_dump(), "journey_allowed_lateness": timedelta(minutes=1),
        **overrides,
    }  # fmt: skip
    return JourneySettings(**values)


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[Live]:
    live_settings = journey_settings(settings)
    app = create_app(live_settings)
    async with running(app), harness_publisher(live_settings) as publisher:
        yield Live(app, live_settings, publisher)


def event(kind: str, member: str, at: datetime, **attributes: Any) -> CloudEvent:
    data = attributes.pop("data", {})
    return CloudEvent(
        id=attributes.pop("id", None) or f"{kind}-{member}-{at.timestamp()}",
        source="/test",
        type=TYPE_PREFIX + kind,
        time=at,
        subject=member,
        library="oba",
        data=data,
        **attributes,
    )


def signed_up(member: str, at: datetime, **data: Any) -> CloudEvent:
    profile = {"age_band": "18-64", "home_library": "oba", "postcode_area": "1034", **data}
    return event("member.signed_up.v1", member, at, channel="online", platform="website", data=profile)


def detected(frictions: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(f["rule"], f["member"], f["start_event_id"]) for f in frictions if f["type"].endswith("detected.v1")}


async def test_a_simulated_network_of_ten_thousand_members_is_detected_exactly(live: Live) -> None:
    network = simulate(10_000, seed=11)
    loaded = await load(enumerate(network.events), live.publisher)
    assert loaded.produced == len(network.events) and not loaded.rejected

    await live.settle()
    found = detected(await live.frictions())
    truth = {(p.rule, p.member_id, p.start_event_id) for p in network.truth}
    assert len(truth) > 3000 and len(network.planted_by_rule()) == 10
    assert found - truth == set(), "precision below 1.0"
    assert truth - found == set(), "recall below 1.0"


async def replay(
    settings: Settings, prefix: str, partitions: int, batch_size: int, events: list[CloudEvent]
) -> set[str]:
    isolated = settings.model_copy(
        update={"topic_prefix": prefix, "group_prefix": prefix, "key_prefix": prefix, "partitions": partitions}
    )
    live_settings = journey_settings(isolated, journey_batch_size=batch_size)
    app = create_app(live_settings)
    async with running(app), harness_publisher(live_settings) as publisher:
        live = Live(app, live_settings, publisher)
        await load(enumerate(events), live.publisher)
        await live.settle()
        return {f["id"] for f in await live.frictions()}


async def test_replaying_a_history_with_other_batch_sizes_and_partition_counts_gives_the_same_frictions(
    settings: Settings, namespace: str
) -> None:
    events = simulate(1500, seed=5).events
    # Side by side: the one-partition replay in batches of 7 spends its time waiting on round trips.
    one, four = await asyncio.gather(
        replay(settings, namespace + "p1.", partitions=1, batch_size=7, events=events),
        replay(settings, namespace + "p4.", partitions=4, batch_size=400, events=events),
    )
    assert len(one) > 300
    assert one == four  # detected and resolved, by their deterministic ids


async def test_a_late_card_activation_resolves_the_friction_with_the_time_it_took(live: Live) -> None:
    start = datetime.now(UTC) - timedelta(days=20)
    await live.publisher.publish(signed_up("late-member", start))
    friction = await eventually(lambda: _friction_of(live, "late-member", "detected"))
    assert friction["rule"] == "online-signup-not-activated"

    await live.publisher.publish(event("member.card_activated.v1", "late-member", datetime.now(UTC),
                                       channel="offline", platform="desk"))  # fmt: skip
    resolved = await eventually(lambda: _friction_of(live, "late-member", "resolved"))
    assert resolved["friction_id"] == friction["friction_id"]
    assert 5.9 * 86400 < resolved["seconds_to_resolve"] < 6.1 * 86400


async def test_closed_windows_are_published_only_when_asked_for(settings: Settings) -> None:
    """window.closed is off by default (the read side derives the windows from the events); a setting turns it on."""
    start = datetime.now(UTC) - timedelta(days=20)
    for member, publish_windows in (("uncounted-member", False), ("counted-member", True)):
        live_settings = journey_settings(settings, journey_publish_windows=publish_windows)
        app = create_app(live_settings)
        async with running(app), harness_publisher(live_settings) as publisher:
            live = Live(app, live_settings, publisher)
            await publisher.publish(signed_up(member, start))
            friction = await eventually(partial(_friction_of, live, member, "detected"))
            assert friction["rule"] == "online-signup-not-activated"
            await live.settle()

    closed = await read_to_end(settings.kafka_bootstrap, settings.topic("journey.windows.v1"))
    windows = [(header(r, "ce_subject"), json.loads(r.value)) for r in closed]
    assert [(m, w["rule"], w["met"]) for m, w in windows] == [("counted-member", "online-signup-not-activated", False)]


async def _friction_of(live: Live, member: str, kind: str) -> dict[str, Any] | None:
    return next((f for f in await live.frictions() if f["member"] == member and f["type"].endswith(f"{kind}.v1")),
                None)  # fmt: skip


async def test_an_erased_member_s_journey_is_gone(live: Live) -> None:
    now = datetime.now(UTC)
    await live.publisher.publish_many([signed_up("erased-member", now - timedelta(hours=1), age_band="4-11")])
    state = await eventually(lambda: live.stored("erased-member"))
    assert state.starts and state.activity, "a pending activation window and an armed inactivity wait"
    await live.publisher.publish(event("member.erased.v1", "erased-member", now))

    async def gone() -> bool:
        return await live.stored("erased-member") is None

    await eventually(gone)
    assert not [t for o in live.detector.owned.values() for t in o.partition.timers_of("erased-member")]


async def test_events_for_a_merged_member_continue_the_survivor_s_journey(live: Live) -> None:
    now = datetime.now(UTC) - timedelta(days=50)  # the 60-day BoekStart windows are still open
    await live.publisher.publish_many([
        signed_up("old-record", now, age_band="0-3", source="consultatiebureau"),
        signed_up("survivor", now + timedelta(minutes=1), age_band="0-3", source="consultatiebureau"),
        event("member.card_activated.v1", "survivor", now + timedelta(days=1), channel="offline", platform="desk"),
        event("member.card_activated.v1", "old-record", now + timedelta(days=1), channel="offline", platform="desk"),
        event("member.merged.v1", "old-record", now + timedelta(days=2), data={"survivor_id": "survivor"}),
    ])  # fmt: skip

    async def merged() -> bool:
        old = await live.stored("old-record")
        return old is not None and old.merged_into == "survivor" and not old.starts

    await eventually(merged)
    # A loan reported later under the old record's id is the survivor's first loan (it reaches the survivor's
    # partition through journey.forwards.v1, wherever that partition is owned).
    await live.publisher.publish(
        event(
            "usage.loan_borrowed.v1",
            "old-record",
            now + timedelta(days=3),
            channel="offline",
            platform="desk",
            data={"item_id": "b1", "loan_id": "l1"},
        )
    )

    first_loan_rule = next(r.code for r in load_rules().rules if r.id == "boekstart-no-first-loan")

    async def first_loan_seen() -> bool:
        survivor = await live.stored("survivor")
        return survivor is not None and any(s.rule == first_loan_rule for s in survivor.seen)

    await eventually(first_loan_seen)
    await live.settle()
    frictions = await live.frictions()
    assert {f["member"] for f in frictions if f["type"].endswith("detected.v1")} & {"old-record", "survivor"} == set()


async def test_a_bad_usage_message_goes_to_the_dead_letter_topic_and_the_journey_goes_on(live: Live) -> None:
    usage = live.settings.topic("propositions.usage.v1")
    producer = AIOKafkaProducer(bootstrap_servers=live.settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(usage, b'{"item_id": 5}', key=b"m", headers=[
            ("ce_type", b"nl.bibliotheek.usage.loan_borrowed.v1"), ("ce_id", b"x"), ("ce_source", b"/t"),
            ("ce_specversion", b"1.0"), ("ce_time", b"2026-01-01T00:00:00Z"), ("ce_subject", b"m")])  # fmt: skip
    finally:
        await producer.stop()
    await live.publisher.publish(signed_up("after-poison", datetime.now(UTC) - timedelta(days=15)))
    await eventually(lambda: _friction_of(live, "after-poison", "detected"))
    [dead] = await read_to_end(live.settings.kafka_bootstrap, usage + ".dlq")
    assert header(dead, "dlq_reason") == "invalid_event"
    assert "data.item_id" in (header(dead, "dlq_error") or "")


async def test_an_older_history_loaded_into_a_running_service_gives_the_frictions_of_a_fresh_replay(
    settings: Settings,
) -> None:
    live_settings = journey_settings(settings, journey_idle_seconds=1.0)
    now = datetime.now(UTC)
    history = simulate(800, seed=13, end=now - timedelta(days=40)).events
    fresh = InMemoryJourneys(load_rules(), timedelta(minutes=1))
    fresh.feed(history)
    expected = {(f.member_id, f.start_event_id) for f in fresh.finish(now).detected}
    app = create_app(live_settings)
    async with running(app), harness_publisher(live_settings) as publisher:
        live = Live(app, live_settings, publisher)
        # The platform is live: today's sign-ups, one of them activated.
        await live.publisher.publish_many([
            signed_up("today-1", now - timedelta(minutes=5)), signed_up("today-2", now - timedelta(minutes=4)),
            event("member.card_activated.v1", "today-1", now - timedelta(minutes=3), channel="offline",
                  platform="desk"),
        ])  # fmt: skip
        await live.settle()
        await load(enumerate(history), live.publisher)
        await live.settle()
        found = {
            (f["member"], f["start_event_id"]) for f in await live.frictions() if f["type"].endswith("detected.v1")
        }
    assert len(expected) > 200
    assert found == expected, f"{len(found - expected)} false, {len(expected - found)} missed"
