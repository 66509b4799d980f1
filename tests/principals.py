"""A pytest plugin: integration tests with every service signed in as its own principal (docs/security.md).

    .venv/bin/python -m pytest -p tests.principals tests/integration/test_identity_api.py …

It starts a Kafka broker with SCRAM users and the standard authorizer and a Redis, on free ports, for the run
(one process: not with -n); every service app the tests create signs in as its own principal, with the rights of
deploy/access.py given for the prefixes of its settings; every other Kafka client of the tests signs in as admin.
A right missing from deploy/access.py shows as TopicAuthorizationFailedError, GroupAuthorizationFailedError or
NOPERM. Known failures that are no missing right: tests that feed input through a service's own publisher
(journey's and analytics' tests publish member events as the service, which least privilege refuses), and tests
running one service under two prefixes at once (a Redis user holds the key patterns of one prefix).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, cast

import aiokafka.client
import pytest

from deploy import access, runtime
from shared.settings import Settings

CREDS = access.new_credentials()
STATE: dict[str, Any] = {}


def _admin_kwargs() -> dict[str, str]:
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "admin",
        "sasl_plain_password": CREDS["admin"],
    }


def pytest_configure(config: pytest.Config) -> None:
    base = Path(tempfile.mkdtemp(prefix="acl-exp-"))
    kafka = runtime.KafkaNode(
        data_dir=base / "kafka", port=runtime.free_port(), controller_port=runtime.free_port(), scram_users=CREDS
    )
    redis = runtime.RedisNode(data_dir=base / "redis", port=runtime.free_port())
    redis.start(detach=False)
    kafka.start(detach=False)
    redis.wait_ready()
    kafka.wait_ready(timeout=90)
    STATE["nodes"] = (kafka, redis)
    os.environ["KLANTREIS_TEST_KAFKA_BOOTSTRAP"] = kafka.bootstrap
    os.environ["KLANTREIS_TEST_REDIS_URL"] = redis.url

    original_init = aiokafka.client.AIOKafkaClient.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("security_protocol", "PLAINTEXT") == "PLAINTEXT":
            kwargs.update(_admin_kwargs())
        original_init(self, *args, **kwargs)

    aiokafka.client.AIOKafkaClient.__init__ = init

    import services.analytics.app
    import services.identity.app
    import services.journey.app
    import services.notifications.app
    import services.propositions.app

    for name in access.SERVICES:
        module = getattr(services, name).app
        original = module.create_app

        def create_app(settings: Settings, *args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
            _grant(settings)
            return _original(access.signed_in(settings, _name, CREDS), *args, **kw)

        module.create_app = create_app


_granted: set[tuple[str, str, str]] = set()


def _grant(settings: Settings) -> None:
    key = (settings.topic_prefix, settings.group_prefix, settings.key_prefix)
    if key in _granted:
        return
    _granted.add(key)
    base = Settings(
        kafka_bootstrap=settings.kafka_bootstrap,
        redis_url=settings.redis_url,
        topic_prefix=settings.topic_prefix,
        group_prefix=settings.group_prefix,
        key_prefix=settings.key_prefix,
    )
    admin = access.signed_in(base, "admin", CREDS).model_copy(update={"redis_username": ""})

    async def run() -> None:
        from shared.redis import make_redis
        from shared.topics import ensure_topics

        await ensure_topics(admin)
        await access.grant_kafka(admin, [a for n in access.KAFKA_ACCESS for a in access.kafka_acls(n, base)])
        redis = make_redis(admin)
        try:
            for service in access.SERVICES:
                rules = access.redis_rules(service, CREDS[service], base)
                await cast(Any, redis.execute_command)("ACL", "SETUSER", service, *rules)
        finally:
            await redis.aclose()

    errors: list[BaseException] = []

    def thread() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=thread)
    worker.start()
    worker.join()
    if errors:
        # Settings naming servers that are not there (outage tests): nothing to give rights on.
        print(f"principals: no rights given for {key}: {type(errors[0]).__name__}")


def pytest_unconfigure(config: pytest.Config) -> None:
    nodes = STATE.get("nodes")
    if nodes:
        for node in nodes:
            node.stop()
