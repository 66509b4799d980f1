"""Least privilege, enforced by Kafka and Redis themselves: a broker with SCRAM users and the standard authorizer,
a Redis with ACL users (deploy/runtime.py), the rights of deploy/access.py, and the services signed in as
themselves.

Most of these tests start their own Kafka and Redis, configured as the local run's are (no harness listener, Redis's
default user off); topics, groups and keys are still named by each test's prefix. The last one checks that the test
session's own servers (tests/principals.py) hold the services the other tests build to the same rights.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError
from redis.exceptions import NoPermissionError, RedisError

from deploy import access, runtime
from deploy.access import ADMIN, PLATFORM
from services.analytics.app import create_app as analytics_app
from services.analytics.settings import AnalyticsSettings
from services.identity.app import create_app as identity_app
from services.identity.settings import IdentitySettings
from services.journey.app import create_app as journey_app
from services.journey.settings import JourneySettings
from services.notifications.app import create_app as notifications_app
from services.propositions.app import create_app as propositions_app
from shared.auth import Keyring
from shared.events import CloudEvent
from shared.events.envelope import to_kafka
from shared.events.propositions import LoanBorrowed
from shared.redis import make_redis
from shared.settings import Settings
from shared.topics import CAMPAIGNS, CATALOG, DELIVERIES, FRICTIONS, MEMBERS, USAGE, ensure_topics
from tests import principals
from tests.integration.conftest import namespaced_settings
from tests.integration.test_walking_skeleton import SIGN_UP
from tests.support import eventually, publish_seed_libraries, running

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Secured:
    kafka: runtime.KafkaNode
    redis: runtime.RedisNode
    credentials: Mapping[str, str]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """A broker whose clients sign in with SCRAM and may do only what ACLs allow, and a Redis whose default user
    is off: for this module only."""
    credentials = access.new_credentials()
    base: Path = tmp_path_factory.mktemp("secured")
    kafka = runtime.KafkaNode(
        data_dir=base / "kafka",
        port=runtime.free_port(),
        controller_port=runtime.free_port(),
        scram_users=credentials,
    )
    redis = runtime.RedisNode(data_dir=base / "redis", port=runtime.free_port(), admin_password=credentials[ADMIN])
    try:
        redis.start(detach=False)
        kafka.start(detach=False)
        redis.wait_ready()
        kafka.wait_ready(timeout=90)
        yield Secured(kafka, redis, credentials)
    finally:
        kafka.stop()
        redis.stop()


@pytest.fixture
async def platform(secured: Secured, namespace: str) -> Settings:
    """This test's platform on the secured servers, its topics created and every principal's rights given, as
    admin; returned without credentials (`signed_in` adds a principal's)."""
    settings = namespaced_settings(secured.kafka.bootstrap, secured.redis.url, namespace)
    admin = access.signed_in(settings, ADMIN, secured.credentials)
    await ensure_topics(admin)
    await access.grant(admin, secured.credentials, settings)
    return settings


def _as(settings: Settings, principal: str, secured: Secured) -> Settings:
    return access.signed_in(settings, principal, secured.credentials)


@pytest.fixture
async def producer_of(platform: Settings, secured: Secured) -> AsyncIterator[dict[str, AIOKafkaProducer]]:
    """Producers signed in as each principal, started on first use."""
    producers: dict[str, AIOKafkaProducer] = {}
    yield producers
    for producer in producers.values():
        await producer.stop()


async def _produce(producers: dict[str, AIOKafkaProducer], settings: Settings, topic: str) -> None:
    principal = settings.kafka_username
    if principal not in producers:
        producers[principal] = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True, **settings.kafka_security()
        )
        await producers[principal].start()
    await producers[principal].send_and_wait(settings.topic(topic), b"{}", key=b"m1")


async def test_a_service_writes_its_own_topics_and_kafka_refuses_it_any_other(
    platform: Settings, secured: Secured, producer_of: dict[str, AIOKafkaProducer]
) -> None:
    identity = _as(platform, "identity", secured)
    await _produce(producer_of, identity, MEMBERS.name)
    for foreign in (DELIVERIES.name, CAMPAIGNS.name, FRICTIONS.name, CATALOG.name):
        with pytest.raises(TopicAuthorizationFailedError):
            await _produce(producer_of, identity, foreign)

    notifications = _as(platform, "notifications", secured)
    await _produce(producer_of, notifications, CAMPAIGNS.name)
    with pytest.raises(TopicAuthorizationFailedError):
        await _produce(producer_of, notifications, MEMBERS.name)


async def test_a_library_platform_produces_member_and_usage_events_only(
    platform: Settings, secured: Secured, producer_of: dict[str, AIOKafkaProducer]
) -> None:
    direct = _as(platform, PLATFORM, secured)
    await _produce(producer_of, direct, MEMBERS.name)
    await _produce(producer_of, direct, USAGE.name)
    for foreign in (CATALOG.name, FRICTIONS.name, DELIVERIES.name, CAMPAIGNS.name):
        with pytest.raises(TopicAuthorizationFailedError):
            await _produce(producer_of, direct, foreign)


@contextlib.asynccontextmanager
async def _consumer(settings: Settings, group: str) -> AsyncIterator[AIOKafkaConsumer]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.group(group),
        enable_auto_commit=False,
        **settings.kafka_security(),
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def _commit(consumer: AIOKafkaConsumer, topic: str) -> None:
    """Record a position on ``topic`` in the consumer's group: what a consumer does after reading."""
    partition = TopicPartition(topic, 0)
    consumer.assign([partition])
    await asyncio.wait_for(consumer.commit({partition: 0}), 30)


async def test_a_service_reads_what_it_consumes_in_its_own_groups_and_nothing_else(
    platform: Settings, secured: Secured
) -> None:
    journey = _as(platform, "journey", secured)
    async with _consumer(journey, "journey") as consumer:
        visible = await consumer.topics()
        assert platform.topic(MEMBERS.name) in visible
        # Kafka does not even say where another service's topics are, nor lets journey keep a position there.
        assert platform.topic(DELIVERIES.name) not in visible
        assert platform.topic(CAMPAIGNS.name) not in visible
        await _commit(consumer, platform.topic(MEMBERS.name))
        with pytest.raises(TopicAuthorizationFailedError):
            await _commit(consumer, platform.topic(DELIVERIES.name))
    # Another service's consumer group is not journey's to join, nor to move its offsets.
    async with _consumer(journey, "notifications") as consumer:
        with pytest.raises(GroupAuthorizationFailedError):
            await _commit(consumer, platform.topic(MEMBERS.name))


async def test_a_service_writes_only_keys_under_its_prefix_and_redis_refuses_it_others(
    platform: Settings, secured: Secured
) -> None:
    journey = make_redis(_as(platform, "journey", secured))
    try:
        await journey.set(platform.key("journey", "probe"), "1")
        assert await journey.get(platform.key("journey", "probe")) == "1"
        with pytest.raises(NoPermissionError):
            await journey.set(platform.key("notifications", "probe"), "1")
        with pytest.raises(NoPermissionError):
            await journey.get(platform.key("identity", "member", "m1"))
        # API keys: read by every service, written only by the operators' tools (admin).
        assert await journey.hgetall(platform.key("auth", "key", "k1")) == {}
        with pytest.raises(NoPermissionError):
            await journey.hset(platform.key("auth", "key", "k1"), "roles", "admin")
        with pytest.raises(NoPermissionError):
            await journey.flushdb()
    finally:
        await journey.aclose()
    # No one signs in without a user.
    anonymous = make_redis(platform)
    try:
        with pytest.raises(RedisError, match=r"(?i)authenticat"):
            await anonymous.get(platform.key("journey", "probe"))
    finally:
        await anonymous.aclose()


async def test_every_service_signed_in_as_itself_does_its_part_of_a_journey(
    platform: Settings, secured: Secured, tmp_path: Path
) -> None:
    """An online sign-up (identity) that is not activated becomes a friction (journey) and an inbox message
    (notifications); a loan a library system produced straight to Kafka (the platform principal) and all of it
    reach the member's timeline (analytics); propositions consumes the members topic in its group meanwhile."""
    admin = _as(platform, ADMIN, secured)
    # The operators' tools put the catalogue's libraries in place (every library code is checked against them).
    async with _producer(admin) as producer:
        await publish_seed_libraries(admin, producer)
    redis = make_redis(admin)
    try:
        key = await Keyring(redis, admin).create("test", ["admin"])
    finally:
        await redis.aclose()
    identity = IdentitySettings(**_as(platform, "identity", secured).model_dump())
    journey = JourneySettings(
        **_as(platform, "journey", secured).model_dump(),
        journey_activation_window=timedelta(seconds=3),
        journey_allowed_lateness=timedelta(0),
        journey_batch_size=50,
        journey_idle_seconds=0.5,
    )
    analytics = AnalyticsSettings(
        **_as(platform, "analytics", secured).model_dump(),
        analytics_path=tmp_path / "analytics",
        analytics_cache_seconds=0,
        analytics_allowed_lateness=timedelta(0),
    )
    async with (
        running(identity_app(identity), key) as identity_client,
        running(propositions_app(_as(platform, "propositions", secured))),
        running(journey_app(journey)),
        running(notifications_app(_as(platform, "notifications", secured)), key) as notifications_client,
        running(analytics_app(analytics), key) as analytics_client,
    ):
        response = await identity_client.post("/v1/members", json=SIGN_UP)
        assert response.status_code == 202, response.text
        member = response.json()["member_id"]
        async with _producer(_as(platform, PLATFORM, secured)) as library_system:
            loan = CloudEvent.create(
                LoanBorrowed(item_id="b1", loan_id="l1"), subject=member, source="/libraries/oba/ils", library="oba"
            )
            record = to_kafka(loan)
            headers = [(k, v.encode()) for k, v in record.headers.items()]
            await library_system.send_and_wait(
                platform.topic(USAGE.name), record.value, key=record.key, headers=headers
            )

        async def inbox() -> list[dict[str, object]]:
            answer = await notifications_client.get(f"/v1/members/{member}/inbox")
            assert answer.status_code == 200
            return list(answer.json()["messages"])

        messages = await eventually(inbox, within=60)
        assert [m["campaign_id"] for m in messages] == ["activate-your-card"]

        async def timeline() -> dict[str, Any] | None:
            answer = await analytics_client.get(f"/v1/members/{member}/timeline")
            view: dict[str, Any] = answer.json() if answer.status_code == 200 else {}
            return view if view.get("open_frictions") and len(view["timeline"]) == 2 else None

        view = await eventually(timeline, within=60)
        assert [e["type"] for e in view["timeline"]] == ["usage.loan_borrowed.v1", "member.signed_up.v1"]
        assert [f["rule"] for f in view["open_frictions"]] == ["online-signup-not-activated"]


@contextlib.asynccontextmanager
async def _producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", **settings.kafka_security())
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


# ------------------------------------------------------------------------------ the test session itself


@pytest.fixture(scope="module")
def session_servers(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """The test session's Kafka (harness address) and Redis when they run with least privilege (``make test``);
    pointed at a plaintext development broker (``KLANTREIS_TEST_KAFKA_BOOTSTRAP``), servers of this module's own
    started the way the session starts its own."""
    current = principals.session()
    if current is not None and current.harness_bootstrap == kafka_bootstrap:
        yield kafka_bootstrap, redis_url
        return
    from tests.conftest import _Infrastructure, _start_local

    infra = _Infrastructure(kafka_bootstrap="", redis_url="", source="local")
    _start_local(infra, tmp_path_factory.mktemp("session"))
    with pytest.MonkeyPatch.context() as environment:
        for name, value in infra.environment.items():
            environment.setenv(name, value)
        try:
            yield infra.kafka_bootstrap, infra.redis_url
        finally:
            infra.stop()


async def test_in_the_test_session_a_service_is_refused_what_is_not_its_own_while_the_harness_sees_all(
    session_servers: tuple[str, str], namespace: str
) -> None:
    """Services the tests build (``create_app(settings)``) sign in as themselves: journey may write its frictions
    and its keys; Kafka refuses it the usage topic (the library platforms' and propositions') and Redis the keys of
    notifications, while the tests' own clients on the harness address read and write everything."""
    kafka_bootstrap, redis_url = session_servers
    harness = JourneySettings(**namespaced_settings(kafka_bootstrap, redis_url, namespace).model_dump())
    app = journey_app(harness)
    async with running(app):
        signed_in: Settings = app.state.parts.settings
        assert (signed_in.kafka_username, signed_in.redis_username) == ("journey", "journey")
        assert signed_in.kafka_bootstrap != kafka_bootstrap  # the SASL listener, not the harness
        loan = CloudEvent.create(LoanBorrowed(item_id="b1", loan_id="l1"), subject="m1", source="/t", library="oba")
        with pytest.raises(TopicAuthorizationFailedError):
            await app.state.parts.publisher.publish(loan, deadline=30)
        async with _producer(signed_in) as journey_producer:
            await journey_producer.send_and_wait(harness.topic(FRICTIONS.name), b"{}", key=b"m1")
            with pytest.raises(TopicAuthorizationFailedError):
                await journey_producer.send_and_wait(harness.topic(CAMPAIGNS.name), b"{}", key=b"m1")

        journey_redis = app.state.parts.redis
        await journey_redis.set(harness.key("journey", "probe"), "1")
        with pytest.raises(NoPermissionError):
            await journey_redis.set(harness.key("notifications", "probe"), "1")
        with pytest.raises(NoPermissionError):
            await journey_redis.get(harness.key("identity", "member", "m1"))

    # The harness: what journey wrote and was refused, seen and done by the tests' own clients.
    async with _producer(harness) as producer:
        await producer.send_and_wait(harness.topic(CAMPAIGNS.name), b"{}", key=b"m1")
    redis = make_redis(harness)
    try:
        assert await redis.get(harness.key("journey", "probe")) == "1"
        await redis.set(harness.key("notifications", "probe"), "1")
    finally:
        await redis.aclose()
