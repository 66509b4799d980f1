"""What the benches share: a namespace of the run's own on a shared broker and Redis, an API key, plain topics,
analytics' app without its consumers, and the raw consumer every consuming bench is measured against."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from fastapi import FastAPI

from services.analytics.app import create_app as analytics_app
from services.analytics.settings import AnalyticsSettings
from shared.auth import NETWORK, Keyring
from shared.events import from_kafka, typed_data
from shared.redis import make_redis
from shared.settings import Settings

S = TypeVar("S", bound=Settings)


def namespaced(kind: type[S], tag: str = "bench", **fields: Any) -> S:
    """Settings of `kind` whose topics, consumer groups and keys are the run's own (`<tag><6 hex>.`), so that runs
    on the same broker and Redis never meet."""
    prefix = f"{tag}{uuid.uuid4().hex[:6]}."
    return kind(topic_prefix=prefix, group_prefix=prefix, key_prefix=prefix, **fields)


async def api_key(settings: Settings, roles: list[str], library: str = NETWORK) -> str:
    """A new API key named `bench` with `roles`, in the settings' Redis."""
    redis = make_redis(settings)
    try:
        return await Keyring(redis, settings).create("bench", roles, library)
    finally:
        await redis.aclose()


async def create_topics(kafka: str, partitions: int, *names: str) -> None:
    """Plain topics (no dead-letter topic, unlike `shared.topics.ensure_topics`), e.g. for a raw producer's
    baseline."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    finally:
        await admin.close()


async def remove_keys(settings: Settings) -> None:
    """The run's Redis keys (under its prefix) removed from a Redis it may share."""
    redis = make_redis(settings)
    try:
        keys = [k async for k in redis.scan_iter(match=settings.key_prefix + "*", count=1000)]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


def reports_app(redis_url: str, data: Path, tag: str = "bench") -> tuple[AnalyticsSettings, FastAPI]:
    """analytics' app over the store in `data`, its report cache off. Its routes need no Kafka: the lifespan (the
    consumers) is not started."""
    settings = namespaced(AnalyticsSettings, tag, redis_url=redis_url, analytics_path=data, analytics_cache_seconds=0)
    return settings, analytics_app(settings)


async def raw_consume(bootstrap: str, topics: list[str], partitions: int, decode: bool) -> tuple[int, float]:
    """Every record of `topics` up to their end offsets; (records, seconds from the first fetch)."""
    assigned = [TopicPartition(t, p) for t in topics for p in range(partitions)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        todo = {tp for tp, end in ends.items() if end > 0}
        count, started = 0, 0.0
        while todo:
            fetched = await consumer.getmany(*todo, timeout_ms=500, max_records=5000)
            started = started or time.perf_counter()
            for tp, records in fetched.items():
                for record in records:
                    if decode:
                        typed_data(from_kafka(record.value, record.headers))
                count += len(records)
                if records and records[-1].offset + 1 >= ends[tp]:
                    todo.discard(tp)
        return count, time.perf_counter() - started
    finally:
        await consumer.stop()
