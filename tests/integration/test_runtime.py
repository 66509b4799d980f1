"""The session's Kafka and Redis are real and configured the way the platform relies on."""

from __future__ import annotations

import asyncio
import os

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

pytestmark = pytest.mark.integration


async def test_kafka_idempotent_produce_is_consumed_and_committed(kafka_bootstrap: str, namespace: str) -> None:
    topic = f"{namespace}runtime-check"
    group = f"{namespace}runtime-check"

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b'{"check": 1}', key=b"runtime")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        received = await asyncio.wait_for(consumer.getone(), timeout=30)
        await consumer.commit()
        committed = await consumer.committed(TopicPartition(topic, 0))
    finally:
        await consumer.stop()

    assert (received.topic, received.partition, received.offset) == (topic, sent.partition, sent.offset)
    assert (received.key, received.value) == (b"runtime", b'{"check": 1}')
    assert committed == sent.offset + 1


async def test_redis_round_trip_with_append_only_file(redis_url: str, namespace: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        key = f"{namespace}runtime-check"
        assert await client.set(key, "ok", ex=60)
        assert await client.get(key) == b"ok"
        config = await client.config_get("appendonly")
    finally:
        await client.aclose()

    if "KLANTREIS_TEST_REDIS_URL" not in os.environ:  # a server we started ourselves
        assert config == {"appendonly": "yes"}
