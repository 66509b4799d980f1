"""Least privilege in the test session (docs/security.md, "How the tests run").

The session's Kafka (started by tests/conftest.py) has two listeners: SASL/SCRAM, where every service signs in as
its own principal and the standard authorizer allows it only what deploy/access.py grants, and a plaintext
*harness* listener whose clients (``User:ANONYMOUS``) are super users. Its Redis has an ACL user per service,
limited to that service's key patterns, beside the default user (no password: the harness).

The tests' own clients (raw producers and consumers, the admin client, Redis reads and scans, the ``settings``
fixture) use the harness addresses and see everything. A service app a test builds from settings on the harness
address (``create_app(settings)``) signs in as its own principal instead: on the SASL listener, with its own
password, and, on first use of those settings' prefixes, with the topics created and every principal's rights
given for them. A service that writes a topic or key not its own is then refused by Kafka and Redis themselves.

Workers of pytest-xdist find the session through environment variables the controller sets. Without them (the
suite pointed at a plaintext development broker with ``KLANTREIS_TEST_KAFKA_BOOTSTRAP``) nothing changes: the
services run without a principal.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

from pydantic import SecretStr

from deploy import access, runtime
from shared.settings import Settings

# A file (0600) saying where the services sign in and with which passwords: set by the process that started the
# session's servers, read by every worker.
SESSION_ENV: Final = "KLANTREIS_TEST_PRINCIPALS"


@dataclass(frozen=True)
class SessionPrincipals:
    """Where the session's services sign in and with which passwords (read from the environment)."""

    harness_bootstrap: str
    services_bootstrap: str
    redis_url: str
    credentials: Mapping[str, str]

    def signed_in(self, service: str, settings: Settings) -> Settings:
        """``settings`` of ``service`` signed in as itself: on this session's broker (named through the harness)
        on the SASL listener as its principal, on this session's Redis as its user, after its topics are there and
        every principal's rights are given for the prefixes of ``settings``. Settings naming other servers (an
        outage test's own, a port where nothing listens) or a principal already stay as they are there."""
        if settings.kafka_username or settings.redis_username:
            return settings
        kafka = settings.kafka_bootstrap == self.harness_bootstrap
        redis = settings.redis_url == self.redis_url
        _grant_once(settings, kafka=kafka, redis=redis)
        password = SecretStr(self.credentials[service])
        update: dict[str, Any] = {}
        if kafka:
            update |= {
                "kafka_bootstrap": self.services_bootstrap,
                "kafka_username": service,
                "kafka_password": password,
            }
        if redis:
            update |= {"redis_username": service, "redis_password": password}
        return settings.model_copy(update=update)


def session() -> SessionPrincipals | None:
    """The least-privilege session this process runs in, if any."""
    path = os.environ.get(SESSION_ENV, "")
    return _read_session(path) if path else None


@functools.cache
def _read_session(path: str) -> SessionPrincipals:
    stored = json.loads(Path(path).read_text())
    credentials = {str(name): str(password) for name, password in stored["credentials"].items()}
    return SessionPrincipals(
        stored["harness_bootstrap"], stored["services_bootstrap"], stored["redis_url"], credentials
    )


def session_kafka(base: Path, credentials: Mapping[str, str]) -> runtime.KafkaNode:
    """The session's broker (not started): SCRAM users for every principal, the authorizer, a harness listener."""
    return runtime.KafkaNode(
        data_dir=base / "kafka",
        port=runtime.free_port(),
        controller_port=runtime.free_port(),
        scram_users=credentials,
        harness_port=runtime.free_port(),
    )


def export(kafka: runtime.KafkaNode, redis_url: str, credentials: Mapping[str, str], base: Path) -> dict[str, str]:
    """Make the services' users on Redis (no keys yet: each test's prefix adds its own) and write where the
    services sign in, with their passwords, into ``base`` (0600); returns the environment through which this
    process and the workers find the session."""
    asyncio.run(_redis_users(redis_url, credentials))
    path = base / "principals.json"
    stored = {
        "harness_bootstrap": kafka.harness_bootstrap,
        "services_bootstrap": kafka.bootstrap,
        "redis_url": redis_url,
        "credentials": dict(credentials),
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(stored, handle)
    return {SESSION_ENV: str(path)}


async def _redis_users(redis_url: str, credentials: Mapping[str, str]) -> None:
    from shared.redis import make_redis

    redis = make_redis(Settings(redis_url=redis_url))
    try:
        for service in access.SERVICES:
            # No key patterns yet: each test's prefix adds its own (_grant).
            rules = access.redis_user_rules(credentials[service])
            await cast(Any, redis.execute_command)("ACL", "SETUSER", service, *rules)
    finally:
        await redis.aclose()


_granted: set[tuple[str, ...]] = set()
_granting = threading.Lock()


def _grant_once(settings: Settings, *, kafka: bool, redis: bool) -> None:
    """``_grant`` what was not given yet in this process (again in another worker: giving it twice changes
    nothing)."""
    kafka_key = ("kafka", settings.kafka_bootstrap, settings.topic_prefix, settings.group_prefix)
    redis_key = ("redis", settings.redis_url, settings.key_prefix)
    with _granting:
        kafka, redis = kafka and kafka_key not in _granted, redis and redis_key not in _granted
        if not (kafka or redis):
            return
        # create_app is called from the tests' event loop: the grant runs on a loop of its own, in a thread.
        errors: list[BaseException] = []

        def grant() -> None:
            try:
                asyncio.run(_grant(settings, kafka=kafka, redis=redis))
            except BaseException as exc:
                errors.append(exc)

        worker = threading.Thread(target=grant, name="grant-rights")
        worker.start()
        worker.join()
        if errors:
            raise errors[0]
        _granted.update([kafka_key] if kafka else [], [redis_key] if redis else [])


async def _grant(settings: Settings, *, kafka: bool, redis: bool) -> None:
    """As the harness: the platform's topics (services signed in create none), every principal's ACLs, and every
    service's key patterns."""
    from shared.redis import make_redis
    from shared.topics import ensure_topics

    if kafka:
        await ensure_topics(settings)
        acls = [acl for name in access.KAFKA_ACCESS for acl in access.kafka_acls(name, settings)]
        await access.grant_kafka(settings, acls)
    if redis:
        client = make_redis(settings)
        try:
            for service in access.SERVICES:
                # Added to the user's patterns (no reset): tests running side by side each keep theirs.
                patterns = access.redis_key_patterns(service, settings)
                await cast(Any, client.execute_command)("ACL", "SETUSER", service, *patterns)
        finally:
            await client.aclose()


def sign_in_services() -> None:
    """Make every service's ``create_app`` sign the service in as itself when the session is least privileged
    (imported by the test modules after this runs, so they get the wrapped function)."""
    import importlib

    for service in access.SERVICES:
        module: Any = importlib.import_module(f"services.{service}.app")
        original = module.create_app
        if getattr(original, "signs_in", False):
            continue
        module.create_app = _signing_in(service, original)


def _signing_in(service: str, create_app: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(create_app)
    def signed_in_create_app(settings: Settings | None = None, *args: Any, **kwargs: Any) -> Any:
        current = session()
        if settings is not None and current is not None:
            settings = current.signed_in(service, settings)
        return create_app(settings, *args, **kwargs)

    signed_in_create_app.signs_in = True  # type: ignore[attr-defined]
    return signed_in_create_app
