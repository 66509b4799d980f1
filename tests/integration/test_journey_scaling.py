"""journey on more than one instance, on the real broker and Redis: partition p of every input topic belongs to one
instance, state moves with it on a rebalance, and the frictions are exactly the planted ones, each published once,
however many instances there are and however they come and go under load."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI

from services.journey.app import create_app
from services.journey.handlers import FrictionDetector
from services.journey.offline.history import load
from services.journey.offline.simulator import Network, simulate
from services.journey.settings import JourneySettings
from shared.settings import Settings
from shared.topics import ALL_TOPICS, ensure_topics
from tests.integration.test_journey import journey_settings
from tests.support import eventually, harness_publisher, header, read_to_end

pytestmark = pytest.mark.integration

PARTITIONS = 4
NETWORK = simulate(1200, seed=23)


@contextlib.asynccontextmanager
async def instance(settings: JourneySettings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


def detectors(apps: list[FastAPI]) -> list[FrictionDetector]:
    return [app.state.detector for app in apps]


async def all_settled(apps: list[FastAPI], partitions: int = PARTITIONS) -> bool:
    owned = {n for d in detectors(apps) for n in d.owned}
    return owned == set(range(partitions)) and all(d.settled() for d in detectors(apps) if d.owned)


async def published(settings: Settings) -> list[tuple[str, str, str, str]]:
    """(type, friction id, member, start event id) of every friction record on the topic, duplicates included
    (the start event id names the rule too: a start starts one window of each rule it matches)."""
    records = await read_to_end(settings.kafka_bootstrap, settings.topic("journey.frictions.v1"))
    out = []
    for r in records:
        data = json.loads(r.value)
        out.append((header(r, "ce_type") or "", data["friction_id"], header(r, "ce_subject") or "",
                    data.get("start_event_id", "")))  # fmt: skip
    return out


def check_exact(network: Network, records: list[tuple[str, str, str, str]]) -> None:
    detected = [(m, s) for t, _, m, s in records if t.endswith("detected.v1")]
    truth = {(p.member_id, p.start_event_id) for p in network.truth}
    rules = {(p.member_id, p.start_event_id): p.rule for p in network.truth}
    false = sorted(set(detected) - truth)
    assert not false, f"{len(false)} false frictions, e.g. {false[:3]} ({[rules.get(f) for f in false[:3]]})"
    assert set(detected) - truth == set(), "precision below 1.000"
    assert truth - set(detected) == set(), "recall below 1.000"
    doubled = [key for key, n in Counter((t, f) for t, f, _, _ in records).items() if n > 1]
    assert doubled == [], "friction records published twice"


@pytest.fixture
def scaled(settings: Settings) -> JourneySettings:
    # The history is fed in chunks: a pause longer than the idle time between two of them would look like the end of
    # traffic, and quiet topics follow the wall clock (docs/journey.md, live operation). The default idle time keeps
    # a loaded machine's pauses from looking like that.
    return journey_settings(settings.model_copy(update={"partitions": PARTITIONS}), journey_idle_seconds=5.0)


@pytest.mark.parametrize("count", [2, 3])
async def test_instances_share_the_partitions_and_detect_exactly_what_one_would(
    scaled: JourneySettings, count: int
) -> None:
    await ensure_topics(scaled, ALL_TOPICS)
    async with contextlib.AsyncExitStack() as stack:
        apps = [await stack.enter_async_context(instance(scaled)) for _ in range(count)]
        publisher = await stack.enter_async_context(harness_publisher(scaled))
        await load(enumerate(NETWORK.events), publisher)
        await eventually(lambda: all_settled(apps), within=180, every=0.5)
        owners = [set(d.owned) for d in detectors(apps)]
        consumers = [d.consumer.consumer for d in detectors(apps)]
        assignments = [{(tp.topic, tp.partition) for tp in c.assignment()} for c in consumers if c is not None]
    assert sorted(n for o in owners for n in o) == list(range(PARTITIONS)), "each partition has exactly one owner"
    for owned, assigned in zip(owners, assignments, strict=True):
        topics = {t for t, _ in assigned}
        assert assigned == {(t, n) for t in topics for n in owned}, "partition p of every input topic, together"
    check_exact(NETWORK, await published(scaled))


async def test_an_instance_coming_and_going_under_load_changes_no_friction(scaled: JourneySettings) -> None:
    await ensure_topics(scaled, ALL_TOPICS)
    chunks = [NETWORK.events[i : i + 1500] for i in range(0, len(NETWORK.events), 1500)]
    async with instance(scaled) as steady, harness_publisher(scaled) as publisher:

        async def feed() -> None:
            for chunk in chunks:
                await load(enumerate(chunk), publisher)
                await asyncio.sleep(0.3)

        async def come_and_go() -> None:
            for _ in range(4):
                async with instance(scaled):
                    await asyncio.sleep(3)
                await asyncio.sleep(1)

        await asyncio.gather(feed(), come_and_go())
        await eventually(lambda: all_settled([steady]), within=180, every=0.5)
    check_exact(NETWORK, await published(scaled))
