"""journey while Redis and then Kafka are away under load: it waits, and afterwards the frictions are exactly the
planted ones, each published once, and nothing went to a dead-letter topic. Uses a broker and a redis-server of
its own (on free ports), never the shared ones."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy import runtime
from services.journey.offline.history import load
from services.journey.offline.simulator import simulate
from shared.kafka import EventPublisher
from shared.service import ServiceParts
from shared.settings import Settings
from shared.topics import ALL_TOPICS, ensure_topics
from tests.integration.test_journey import journey_settings
from tests.integration.test_journey_scaling import all_settled, check_exact, instance, published
from tests.support import eventually, read_to_end

pytestmark = pytest.mark.integration

NETWORK = simulate(600, seed=31)


@pytest.fixture
def own_servers(tmp_path: Path) -> Iterator[tuple[runtime.KafkaNode, runtime.RedisNode]]:
    runtime.ensure_kafka_jars()
    runtime.ensure_redis_server()
    kafka = runtime.KafkaNode(
        data_dir=tmp_path / "kafka", port=runtime.free_port(), controller_port=runtime.free_port()
    )
    redis = runtime.RedisNode(data_dir=tmp_path / "redis", port=runtime.free_port())
    redis.start(detach=False)
    kafka.start(detach=False)
    try:
        redis.wait_ready()
        kafka.wait_ready(timeout=90)
        yield kafka, redis
    finally:
        kafka.stop()
        redis.stop()


async def test_redis_away_15_s_and_kafka_away_30_s_under_load_lose_and_double_nothing(
    own_servers: tuple[runtime.KafkaNode, runtime.RedisNode], namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="services.journey.handlers")
    kafka, redis = own_servers
    base = Settings(kafka_bootstrap=kafka.bootstrap, redis_url=redis.url, topic_prefix=namespace,
                    group_prefix=namespace, key_prefix=namespace, partitions=2)  # fmt: skip
    settings = journey_settings(base, journey_idle_seconds=1.0)
    await ensure_topics(settings, ALL_TOPICS)
    chunks = [NETWORK.events[i : i + 400] for i in range(0, len(NETWORK.events), 400)]
    producer = ServiceParts.connect("test-load", settings)
    await producer.broker.start()
    try:
        async with instance(settings) as app:
            publisher: EventPublisher = producer.publisher
            await load(enumerate(chunks[0]), publisher)
            await asyncio.to_thread(redis.stop)
            await load(enumerate(chunks[1]), publisher)  # journey consumes these while Redis is away
            await asyncio.sleep(15)
            await asyncio.to_thread(redis.start, detach=False)
            await asyncio.to_thread(redis.wait_ready)
            await load(enumerate(chunks[2]), publisher)
            await asyncio.to_thread(kafka.stop)
            await asyncio.sleep(30)
            await asyncio.to_thread(kafka.start, detach=False)
            await asyncio.to_thread(kafka.wait_ready, 90)
            for chunk in chunks[3:]:
                await load(enumerate(chunk), publisher)
            await eventually(lambda: all_settled([app], partitions=2), within=240, every=0.5)
    finally:
        await producer.broker.stop()
        await producer.redis.aclose()
    waits = [r.getMessage() for r in caplog.records if r.name == "services.journey.handlers"]
    assert any(m.startswith("journey: waiting for Redis/Kafka") for m in waits), "the outage was waited out"
    assert any(m.startswith("journey: Redis/Kafka reachable again") for m in waits)
    check_exact(NETWORK, await published(settings))
    for topic in ("identity.members.v1.dlq", "propositions.usage.v1.dlq", "journey.forwards.v1.dlq"):
        assert await read_to_end(settings.kafka_bootstrap, settings.topic(topic)) == [], f"{topic} is empty"
