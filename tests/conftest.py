"""Shared pytest fixtures: real Kafka and Redis for the whole test session.

Where they come from, in this order:

1. ``KLANTREIS_TEST_KAFKA_BOOTSTRAP`` and ``KLANTREIS_TEST_REDIS_URL`` both set: those servers; nothing is
   started (setting only one of them is an error).
2. A Docker engine answers ``docker info``: testcontainers (Kafka in KRaft mode, Redis with an AOF).
3. Otherwise: a local Kafka broker and redis-server (``deploy/runtime.py``) on free ports, with fresh data
   directories under pytest's temporary directory, stopped when the session ends. Their logs stay there. They run
   with least privilege (``tests/principals.py``): every service app a test builds signs in as its own principal
   under the ACLs of ``deploy/access.py``, while the tests' own clients use a harness listener and Redis's
   default user, which may do anything.

With pytest-xdist (``make test`` runs ``-n``) the controller starts them once and the workers share them.

Kafka and Redis start in parallel. Tests share them, so every test names its topics, consumer groups and
Redis keys with the ``namespace`` fixture's prefix.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from deploy import access, runtime
from tests import principals

KAFKA_ENV = "KLANTREIS_TEST_KAFKA_BOOTSTRAP"
REDIS_ENV = "KLANTREIS_TEST_REDIS_URL"
DOCKER_KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.0"
DOCKER_REDIS_IMAGE = "redis:7"


@dataclass
class _Infrastructure:
    kafka_bootstrap: str
    redis_url: str
    source: str  # "env", "docker" or "local"
    stops: list[Callable[[], None]] = field(default_factory=list)
    # What tells this process and the workers where the services sign in (tests/principals.py); none: plaintext.
    environment: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        errors: list[BaseException] = []
        for stop in reversed(self.stops):
            try:
                stop()
            except Exception as exc:
                errors.append(exc)
        self.stops.clear()
        if errors:
            raise errors[0]


def _docker_answers() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        result = subprocess.run([docker, "info"], capture_output=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _start_in_parallel(infra: _Infrastructure, start_kafka: Callable[[], str], start_redis: Callable[[], str]) -> None:
    """Run both starters in threads; on any failure stop whatever did start, then raise."""
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="infra") as pool:
        kafka_future = pool.submit(start_kafka)
        redis_future = pool.submit(start_redis)
        try:
            infra.kafka_bootstrap = kafka_future.result()
            infra.redis_url = redis_future.result()
        except BaseException:
            redis_future.exception()  # wait for the other one before stopping it
            kafka_future.exception()
            infra.stop()
            raise


def _start_local(infra: _Infrastructure, base: Path) -> None:
    runtime.ensure_kafka_jars()
    runtime.ensure_redis_server()
    credentials = access.new_credentials()
    kafka = principals.session_kafka(base, credentials)
    redis = runtime.RedisNode(data_dir=base / "redis", port=runtime.free_port())

    def start_kafka() -> str:
        infra.stops.append(kafka.stop)
        kafka.start(detach=False)
        kafka.wait_ready(timeout=90)
        return kafka.harness_bootstrap

    def start_redis() -> str:
        infra.stops.append(redis.stop)
        redis.start(detach=False)
        redis.wait_ready()
        return redis.url

    _start_in_parallel(infra, start_kafka, start_redis)
    infra.environment = principals.export(kafka, redis.url, credentials, base)


def _start_docker(infra: _Infrastructure) -> None:
    from testcontainers.community.kafka import KafkaContainer
    from testcontainers.community.redis import RedisContainer

    kafka = KafkaContainer(DOCKER_KAFKA_IMAGE).with_kraft().with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
    redis = RedisContainer(DOCKER_REDIS_IMAGE).with_command(
        "redis-server --appendonly yes --appendfsync everysec --save ''"
    )

    def start_kafka() -> str:
        infra.stops.append(kafka.stop)
        kafka.start(timeout=120)
        return str(kafka.get_bootstrap_server())

    def start_redis() -> str:
        infra.stops.append(redis.stop)
        redis.start()
        return f"redis://{redis.get_container_host_ip()}:{redis.get_exposed_port(redis.port)}/0"

    _start_in_parallel(infra, start_kafka, start_redis)


def _start(base: Path) -> _Infrastructure:
    """Start Kafka and Redis (Docker when it answers, else local processes with data under `base`)."""
    infra = _Infrastructure(kafka_bootstrap="", redis_url="", source="")
    try:
        if _docker_answers():
            infra.source = "docker"
            _start_docker(infra)
        else:
            infra.source = "local"
            _start_local(infra, base)
    except runtime.RuntimeProblem as problem:
        raise pytest.UsageError(f"test infrastructure ({infra.source}) did not start: {problem}") from problem
    return infra


def _given_by_environment() -> _Infrastructure | None:
    kafka_env, redis_env = os.environ.get(KAFKA_ENV), os.environ.get(REDIS_ENV)
    if kafka_env and redis_env:
        return _Infrastructure(kafka_bootstrap=kafka_env, redis_url=redis_env, source="env")
    if kafka_env or redis_env:
        raise pytest.UsageError(f"set both {KAFKA_ENV} and {REDIS_ENV}, or neither")
    return None


_SHARED = pytest.StashKey[_Infrastructure]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reverse-order", action="store_true",
        help="run the tests last to first: a test that passes only after (or before) another one fails",
    )  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--reverse-order"):
        items.reverse()


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n N``) the controller starts Kafka and Redis once for all workers.

    Workers inherit the controller's environment, so they find the servers through the two variables above: one
    broker for the run instead of one per worker (each would cost a JVM and its start-up).
    """
    is_worker = hasattr(config, "workerinput")
    if is_worker or not getattr(config.option, "numprocesses", None) or _given_by_environment() is not None:
        return
    infra = _start(Path(tempfile.mkdtemp(prefix="klantreis-tests-")))
    config.stash[_SHARED] = infra
    os.environ.update({KAFKA_ENV: infra.kafka_bootstrap, REDIS_ENV: infra.redis_url, **infra.environment})


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Before the test modules are imported: the services they build sign in as themselves (tests/principals.py).
    Not in the xdist controller, which runs no test."""
    config = session.config
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        principals.sign_in_services()


def pytest_unconfigure(config: pytest.Config) -> None:
    infra = config.stash.get(_SHARED, None)
    if infra is not None:
        infra.stop()


@pytest.fixture(scope="session")
def _infrastructure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Infrastructure]:
    given = _given_by_environment()
    if given is not None:
        yield given
        return
    infra = _start(tmp_path_factory.mktemp("infrastructure"))
    os.environ.update(infra.environment)
    try:
        yield infra
    finally:
        for name in infra.environment:
            os.environ.pop(name, None)
        infra.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(_infrastructure: _Infrastructure) -> str:
    """``host:port`` of a Kafka broker (auto-create of topics is off: create them with the admin client)."""
    return _infrastructure.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_url(_infrastructure: _Infrastructure) -> str:
    """``redis://host:port/0`` of a Redis server."""
    return _infrastructure.redis_url


@pytest.fixture
def namespace() -> str:
    """A prefix unique to this test, like ``t3f9a1c2.``, for topic names, group ids and Redis keys."""
    return f"t{uuid.uuid4().hex[:8]}."
