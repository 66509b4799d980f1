"""Settings for services under test: each test gets its own topics, consumer groups and Redis keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaProducer

from services.identity.settings import IdentitySettings
from services.journey.settings import JourneySettings
from shared.auth import NETWORK, Keyring
from shared.redis import make_redis
from shared.settings import Settings
from tests.support import publish_seed_libraries


def namespaced_settings(kafka_bootstrap: str, redis_url: str, namespace: str) -> Settings:
    """Settings on these servers, in this test's namespace (topics, consumer groups, Redis keys)."""
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        topic_prefix=namespace,
        group_prefix=namespace,
        key_prefix=namespace,
        partitions=2,
        handler_retry_backoff_seconds=0.05,
        # A shared broker under a whole test session's load can take seconds to acknowledge; only the outage tests
        # (test_ingest_outage.py) are about the deadline, and set their own.
        publish_timeout=60.0,
    )


@pytest.fixture
def settings(kafka_bootstrap: str, redis_url: str, namespace: str) -> Settings:
    return namespaced_settings(kafka_bootstrap, redis_url, namespace)


@pytest.fixture(scope="session")
async def catalogue_producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    """One producer for the whole session: starting one per test would cost a quarter of a second each."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    yield producer
    await producer.stop()


@pytest.fixture
async def seed_libraries(settings: Settings, catalogue_producer: AIOKafkaProducer) -> list[str]:
    """The seed's libraries in this test's catalogue (every library code entering the platform must be one)."""
    return await publish_seed_libraries(settings, catalogue_producer)


@pytest.fixture
def identity_settings(settings: Settings, seed_libraries: list[str]) -> IdentitySettings:
    return IdentitySettings(**settings.model_dump())


@pytest.fixture
def journey_settings(settings: Settings) -> JourneySettings:
    """A short activation window and a fast clock, so a test sees timers fire in seconds."""
    return JourneySettings(
        **settings.model_dump(),
        journey_activation_window=timedelta(seconds=3),
        journey_allowed_lateness=timedelta(0),
        journey_batch_size=50,
        journey_idle_seconds=0.5,
    )


MakeKey = Callable[..., Awaitable[str]]


@pytest.fixture
async def make_key(settings: Settings) -> AsyncIterator[MakeKey]:
    """Create API keys in this test's namespace: `await make_key("ingest", library="oba")`."""
    redis = make_redis(settings)
    keyring = Keyring(redis, settings)

    async def make(*roles: str, library: str = NETWORK) -> str:
        return await keyring.create("test", list(roles), library)

    yield make
    await redis.aclose()


@pytest.fixture
async def admin_key(make_key: MakeKey) -> str:
    return await make_key("admin")
