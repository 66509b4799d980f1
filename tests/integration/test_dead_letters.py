"""Dead letters on the real broker and Redis: counted per topic and reason, shown with their origin, and replayed
after the fix to their original topic, where a consumer handles them once however often they are replayed."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaRouter

from services.notifications.app import create_app as notifications_app
from shared.events import CloudEvent, EventData, to_kafka
from shared.events.journey import FrictionDetected
from shared.kafka import subscribe
from shared.service import ServiceParts, build_app
from shared.settings import Settings
from shared.topics import FRICTIONS, ensure_topics
from tests.support import eventually, header, klantreis, read_to_end, read_topic, running

pytestmark = pytest.mark.integration

RULE = "online-signup-not-activated"


def friction(member: str) -> CloudEvent:
    now = datetime.now(UTC)
    data: EventData = FrictionDetected(
        friction_id=str(uuid.uuid4()), rule=RULE, start_event_id=str(uuid.uuid4()), started_at=now - timedelta(days=14),
        due_at=now, library="oba", age_band="18-64",
    )  # fmt: skip
    return CloudEvent.create(data, id=str(data.model_dump()["friction_id"]), subject=member, source="/journey",
                             library="oba", time=now)  # fmt: skip


async def publish(settings: Settings, event: CloudEvent, *, extra_headers: dict[str, str] | None = None) -> None:
    record = to_kafka(event)
    headers = [(k, v.encode()) for k, v in {**record.headers, **(extra_headers or {})}.items()]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        topic = settings.topic(FRICTIONS.name) + (".dlq" if extra_headers else "")
        await producer.send_and_wait(topic, record.value, key=record.key, headers=headers)
    finally:
        await producer.stop()


@pytest.fixture
def operator_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command reads the platform's settings from the environment, as in a shell."""
    monkeypatch.setenv("KLANTREIS_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
    monkeypatch.setenv("KLANTREIS_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("KLANTREIS_TOPIC_PREFIX", settings.topic_prefix)


@dataclass
class Ledger:
    """A consumer whose effect is idempotent by event id, like every handler of the platform, with a bug that
    makes it fail on frictions until it is fixed."""

    parts: ServiceParts
    broken: bool = True

    def key(self, *parts: str) -> str:
        return self.parts.settings.key("ledger", *parts)

    async def handle(self, event: CloudEvent, data: EventData) -> None:
        if self.broken:
            raise ValueError("this version cannot handle the friction")
        if await self.parts.redis.set(self.key("handled", event.id), "1", nx=True):
            await self.parts.redis.incr(self.key("effects"))

    async def effects(self) -> int:
        return int(await self.parts.redis.get(self.key("effects")) or 0)

    async def handled(self, event_id: str) -> bool:
        return bool(await self.parts.redis.exists(self.key("handled", event_id)))


@pytest.fixture
async def ledger(settings: Settings) -> AsyncIterator[tuple[Ledger, httpx.AsyncClient]]:
    parts = ServiceParts.connect("ledger", settings)
    ledger = Ledger(parts)
    router = KafkaRouter()
    subscribe(router, settings, parts.publisher, topic=FRICTIONS, group="ledger", handler=ledger.handle)
    app = build_app(parts, title="ledger", description="a consumer under test", kafka=router)
    async with running(app) as client:
        yield ledger, client


async def test_a_dead_letter_replayed_after_the_fix_is_handled_once_even_when_replayed_twice(
    settings: Settings, ledger: tuple[Ledger, httpx.AsyncClient], operator_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    consumer, client = ledger
    member = str(uuid.uuid4())
    failed = friction(member)
    await publish(settings, failed)
    dlq = settings.topic(FRICTIONS.dead_letters)
    [dead] = await read_topic(settings.kafka_bootstrap, dlq, until=lambda rs: len(rs) >= 1)
    assert header(dead, "dlq_reason") == "handler_error"
    assert header(dead, "ce_id") == failed.id

    listed = await klantreis(capsys, "dead-letters", "list")
    [row] = [line for line in listed.splitlines() if line.startswith(dlq)]
    assert row.split() == [dlq, "handler_error", "1"]

    shown = await klantreis(capsys, "dead-letters", "show", "--topic", FRICTIONS.name)
    assert f"{dlq} {dead.partition}:{dead.offset}  handler_error  from {settings.topic(FRICTIONS.name)}[" in shown
    assert "ValueError: this version cannot handle the friction" in shown
    assert failed.id in shown  # the ce_id header
    assert '"friction_id"' in shown  # the payload
    assert "1 of 1 dead letters shown" in shown

    # The fix is deployed; the dead letter goes back to its topic, and (by mistake) a second time.
    consumer.broken = False
    replayed = await klantreis(capsys, "dead-letters", "replay", "--reason", "handler_error")
    assert f"replayed 1 to {settings.topic(FRICTIONS.name)}" in replayed
    await klantreis(capsys, "dead-letters", "replay", "--offset", f"{dead.partition}:{dead.offset}")

    # A later friction is handled too: the consumer went past both replays.
    later = friction(str(uuid.uuid4()))
    await publish(settings, later)
    await eventually(lambda: consumer.handled(later.id))
    assert await consumer.handled(failed.id)
    assert await consumer.effects() == 2  # the replayed friction once, the later one once

    copies = [
        r for r in await read_to_end(settings.kafka_bootstrap, settings.topic(FRICTIONS.name)) if r.key == dead.key
    ]
    assert len(copies) == 3  # the original and two replays, each with where it was replayed from
    assert [header(r, "replayed_from") for r in copies[1:]] == [f"{dlq}:{dead.partition}:{dead.offset}"] * 2
    assert all(header(r, "dlq_reason") is None for r in copies)
    # Still one dead letter: the replays were handled.
    assert len(await read_to_end(settings.kafka_bootstrap, dlq)) == 1
    metrics = (await client.get("/metrics")).text
    assert f'klantreis_dead_letters_total{{reason="handler_error",topic="{dlq}"}} 1.0' in metrics


async def test_replaying_a_friction_twice_into_notifications_gives_the_member_one_message(
    settings: Settings, admin_key: str, operator_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    await ensure_topics(settings)
    member = str(uuid.uuid4())
    event = friction(member)
    # As the notifications consumer would have left it when it could not handle it (Redis away, say).
    await publish(settings, event, extra_headers={
        "dlq_reason": "retries_exhausted", "dlq_error": "ConnectionError: Redis away",
        "dlq_topic": settings.topic(FRICTIONS.name), "dlq_partition": "0", "dlq_offset": "0",
        "dlq_group": settings.group("notifications"), "dlq_at": datetime.now(UTC).isoformat(),
    })  # fmt: skip

    async with running(notifications_app(settings), admin_key) as notifications:
        for _ in range(2):
            assert "replayed 1" in await klantreis(capsys, "dead-letters", "replay", "--all", "--topic", FRICTIONS.name)

        async def inbox(who: str) -> list[object]:
            return list((await notifications.get(f"/v1/members/{who}/inbox")).json()["messages"])

        other = str(uuid.uuid4())
        await publish(settings, friction(other))
        await eventually(lambda: inbox(other))
        assert len(await inbox(member)) == 1

    deliveries = await read_to_end(settings.kafka_bootstrap, settings.topic("notifications.deliveries.v1"))
    sent = [json.loads(r.value) for r in deliveries if header(r, "ce_subject") == member]
    assert len({m["message_id"] for m in sent}) == 1
