"""What an operator sees of an outage: one line when it starts, one when it ends, and a cheap readiness probe."""

from __future__ import annotations

import asyncio
import logging

import pytest

from shared.availability import Availability
from shared.logging import BrokerAwayAtDebug

LOGGER = "klantreis.availability"


class Dependency:
    """A fake dependency whose probe answers `up`, counting the probes."""

    def __init__(self) -> None:
        self.up = True
        self.probes = 0

    async def probe(self) -> bool:
        self.probes += 1
        await asyncio.sleep(0.01)
        return self.up


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


async def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    kafka = Availability("kafka", Dependency().probe, probe_every=60)

    for _ in range(500):
        kafka.failed("no acknowledgement within 5 s")
    kafka.succeeded()
    kafka.succeeded()

    assert lines(caplog, logging.ERROR) == ["kafka unreachable (no acknowledgement within 5 s): writes are answered "
                                            "503 until it is back"]  # fmt: skip
    [ended] = lines(caplog, logging.WARNING)
    assert ended.startswith("kafka reachable again after") and "(500 failed call(s) meanwhile)" in ended
    kafka.failed("KafkaConnectionError")
    assert len(lines(caplog, logging.ERROR)) == 2
    await kafka.close()


async def test_the_end_of_an_outage_is_noticed_without_any_request(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    redis = Dependency()
    availability = Availability("redis", redis.probe, probe_every=0.02)
    redis.up = False
    availability.failed("ConnectionError")
    await asyncio.sleep(0.1)
    assert availability.down

    redis.up = True
    for _ in range(100):
        if not availability.down:
            break
        await asyncio.sleep(0.02)

    assert not availability.down
    assert len(lines(caplog, logging.WARNING)) == 1
    await availability.close()


async def test_readiness_asks_the_dependency_at_most_once_a_second_however_often_it_is_called() -> None:
    kafka = Dependency()
    availability = Availability("kafka", kafka.probe, fresh_for=1.0)

    answers = await asyncio.gather(*(availability.ready() for _ in range(50)))

    assert all(answers)
    assert kafka.probes == 1
    await availability.close()


async def test_a_failed_write_makes_the_service_not_ready_at_once() -> None:
    kafka = Dependency()
    availability = Availability("kafka", kafka.probe, probe_every=60)
    assert await availability.ready()

    kafka.up = False
    availability.failed("no acknowledgement within 5 s")

    assert not await availability.ready()
    await availability.close()


def record(name: str, level: int, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_aiokafka_s_lines_per_retry_while_the_broker_is_away_show_only_at_debug() -> None:
    away = record("aiokafka", logging.ERROR, "Unable connect to node with id %s: %s", 1, "refused")
    sender = record("aiokafka.producer.sender", logging.WARNING, "Got error produce response: %s", "NodeNotReady")
    other = record("aiokafka.consumer.fetcher", logging.ERROR, "Unexpected error in fetcher routine")
    ours = record("klantreis.availability", logging.ERROR, "kafka unreachable (%s)", "timeout")
    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.INFO)
        assert [BrokerAwayAtDebug().filter(r) for r in (away, sender, other, ours)] == [False, False, True, True]
        root.setLevel(logging.DEBUG)
        assert BrokerAwayAtDebug().filter(away)
    finally:
        root.setLevel(level)
