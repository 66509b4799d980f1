"""Kafka or Redis away while members sign up and platforms post events: a quick 503, a retry with one effect.

Each test stops a server of its own (a Kafka broker or a redis-server on free ports), never the shared ones.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy import runtime
from services.identity.app import create_app
from services.identity.settings import IdentitySettings
from services.propositions.app import create_app as propositions_app
from shared.auth import Keyring
from shared.events import BATCH
from shared.publishing import Encoded, EventPublisher, PublishTimeout
from shared.redis import make_redis
from shared.settings import Settings
from tests.integration.test_propositions_catalogue import OBA
from tests.integration.test_propositions_usage import loan
from tests.support import eventually, header, posted_event, publish_seed_libraries, read_topic, running
from tests.support import own_redis as redis_of_its_own

pytestmark = pytest.mark.integration

PUBLISH_TIMEOUT = 1.0
# A 503 comes within the publish deadline and the few Redis calls around it: far sooner than this, however loaded
# the machine is, and far sooner than the outage lasts.
PROMPTLY = PUBLISH_TIMEOUT + 8.0
OUTAGE_LOG = "klantreis.availability"


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[runtime.KafkaNode]:
    runtime.ensure_kafka_jars()
    node = runtime.KafkaNode(data_dir=tmp_path / "kafka", port=runtime.free_port(), controller_port=runtime.free_port())
    node.start(detach=False)
    try:
        node.wait_ready(timeout=90)
        yield node
    finally:
        node.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[runtime.RedisNode]:
    with redis_of_its_own(tmp_path / "redis") as node:
        yield node


async def admin_key(settings: Settings) -> str:
    redis = make_redis(settings)
    try:
        return await Keyring(redis, settings).create("test", ["admin"])
    finally:
        await redis.aclose()


def person() -> dict[str, Any]:
    return {
        "name": "Sanne de Vries",
        "email": f"{uuid.uuid4().hex[:12]}@example.nl",
        "birth_date": "1991-04-12",
        "postcode": "1034 AB",
        "home_library": "oba",
        "platform": "website",
    }


def card_activation(member_id: str) -> dict[str, Any]:
    return posted_event("nl.bibliotheek.member.card_activated.v1", member_id, {"branch": "oosterdok"})


async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    # A request hanging while Kafka is away fails here, not when the test run times out.
    response = await asyncio.wait_for(request, PROMPTLY)
    return response, time.monotonic() - started


def assert_unavailable(response: httpx.Response, elapsed: float) -> None:
    assert response.status_code == 503, response.text
    assert elapsed < PROMPTLY, f"answered after {elapsed:.1f} s"
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) > 0
    assert response.json()["status"] == 503


def outage_lines(caplog: pytest.LogCaptureFixture, level: int, dependency: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == OUTAGE_LOG and r.levelno == level and r.getMessage().startswith(dependency)
    ]


def outage_seconds(line: str) -> float:
    """How long an outage lasted, from its 'reachable again after N s' line."""
    return float(line.split(" after ")[1].split(" s ")[0])


@pytest.fixture
async def identity_on_own_kafka(
    own_kafka: runtime.KafkaNode, settings: Settings
) -> AsyncIterator[tuple[httpx.AsyncClient, IdentitySettings]]:
    own = IdentitySettings(
        **{**settings.model_dump(), "kafka_bootstrap": own_kafka.bootstrap, "publish_timeout": PUBLISH_TIMEOUT}
    )
    await publish_seed_libraries(own)
    async with running(create_app(own), await admin_key(own)) as client:
        yield client, own


async def test_kafka_away_during_sign_ups_answers_503_promptly_and_each_retry_has_one_effect(
    own_kafka: runtime.KafkaNode,
    identity_on_own_kafka: tuple[httpx.AsyncClient, IdentitySettings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, settings = identity_on_own_kafka
    caplog.set_level(logging.INFO, logger=OUTAGE_LOG)
    members = []
    for _ in range(2):
        # A busy machine's broker may be slow to answer the first writes: a 503 then, and the client retries.
        once = {"Idempotency-Key": str(uuid.uuid4())}
        signed_up = await until_accepted(partial(client.post, "/v1/members", json=person(), headers=once))
        assert signed_up.status_code == 202, signed_up.text
        members.append(signed_up.json()["member_id"])
    await eventually(lambda: readiness(client), within=30)
    caplog.clear()  # the outage counted below is the one this test makes

    await asyncio.to_thread(own_kafka.stop)
    stopped = time.monotonic()

    keys = [str(uuid.uuid4()) for _ in range(3)]
    people = [person() for _ in keys]
    batch = [card_activation(member) for member in members]
    for key, body in zip(keys, people, strict=True):
        response, elapsed = await timed(client.post("/v1/members", json=body, headers={"Idempotency-Key": key}))
        assert_unavailable(response, elapsed)
    response, elapsed = await timed(
        client.post("/v1/events", content=json.dumps(batch), headers={"Content-Type": BATCH})
    )
    assert_unavailable(response, elapsed)
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"kafka": "unreachable", "redis": "ok"}
    # One line for the outage, not one per request.
    assert len(outage_lines(caplog, logging.ERROR, "kafka")) == 1

    down = time.monotonic() - stopped
    await asyncio.to_thread(own_kafka.start, detach=False)
    await asyncio.to_thread(own_kafka.wait_ready, 90)

    accepted = {}
    for key, body in zip(keys, people, strict=True):
        headers = {"Idempotency-Key": key}
        response = await until_accepted(partial(client.post, "/v1/members", json=body, headers=headers))
        assert response.status_code == 202, response.text
        accepted[key] = response.json()
    response = await until_accepted(
        lambda: client.post("/v1/events", content=json.dumps(batch), headers={"Content-Type": BATCH})
    )
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": [e["id"] for e in batch], "rejected": []}
    await eventually(lambda: readiness(client), within=30)
    # The outage made here is reported over once (a broker just started may refuse a call or two more on a busy
    # machine: a second, short outage of its own, reported apart).
    recovered = outage_lines(caplog, logging.WARNING, "kafka")
    assert len([line for line in recovered if outage_seconds(line) >= down / 2]) == 1, recovered

    # The same key again is the same answer, and nothing new.
    for key, body in zip(keys, people, strict=True):
        again = await client.post("/v1/members", json=body, headers={"Idempotency-Key": key})
        assert (again.status_code, again.json()) == (202, accepted[key])

    # On Kafka: every event at least once (an attempt answered 503 may have reached Kafka later), and once after
    # consumers drop the ids they have seen: one member signed up per key, one activation per posted event.
    signed_up_ids = {reply["event_id"] for reply in accepted.values()}
    wanted = signed_up_ids | {e["id"] for e in batch}
    topic = settings.topic("identity.members.v1")
    records = await read_topic(
        own_kafka.bootstrap, topic, until=lambda rs: wanted <= {header(r, "ce_id") for r in rs}, within=30
    )
    by_type: dict[str, set[tuple[str | None, str | None]]] = {}
    for record in records:
        kind = (header(record, "ce_type") or "").split(".")[-2]
        by_type.setdefault(kind, set()).add((header(record, "ce_subject"), header(record, "ce_id")))
    new_members = {reply["member_id"] for reply in accepted.values()}
    assert {(r["member_id"], r["event_id"]) for r in accepted.values()} == {
        pair for pair in by_type["signed_up"] if pair[0] in new_members
    }
    assert {(e["subject"], e["id"]) for e in batch} == by_type["card_activated"]
    # The switch from website to kiosk: one event per member, whichever attempt published it.
    assert sorted(str(subject) for subject, _ in by_type["channel_switched"]) == sorted(members)
    for member_id in new_members:
        assert (await client.get(f"/v1/members/{member_id}")).status_code == 200


async def until_accepted(send: Callable[[], Awaitable[httpx.Response]], within: float = 60) -> httpx.Response:
    """What a client does on 503: the same request again (sooner than Retry-After says, to keep the test short)."""
    deadline = time.monotonic() + within
    for _ in range(int(within / 0.2)):
        response = await send()
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.2)
    return await send()


async def readiness(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def test_redis_away_makes_the_service_not_ready_and_writes_a_503_with_one_log_line(
    own_redis: runtime.RedisNode, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    own = IdentitySettings(**{**settings.model_dump(), "redis_url": own_redis.url})
    await publish_seed_libraries(own)
    caplog.set_level(logging.INFO, logger=OUTAGE_LOG)
    async with running(create_app(own), await admin_key(own)) as client:
        assert (await client.post("/v1/members", json=person())).status_code == 202

        await asyncio.to_thread(own_redis.stop)
        for _ in range(3):
            response, elapsed = await timed(client.post("/v1/members", json=person()))
            assert_unavailable(response, elapsed)
        ready = await client.get("/readyz")
        assert (ready.status_code, ready.json()["checks"]) == (503, {"kafka": "ok", "redis": "unreachable"})
        assert len(outage_lines(caplog, logging.ERROR, "redis")) == 1

        await asyncio.to_thread(own_redis.start, detach=False)
        await asyncio.to_thread(own_redis.wait_ready)
        await eventually(lambda: readiness(client), within=30)
        assert (await client.post("/v1/members", json=person())).status_code == 202
        assert len(outage_lines(caplog, logging.WARNING, "redis")) == 1
        assert len(outage_lines(caplog, logging.ERROR, "redis")) == 1


# ------------------------------------------------------------------- an attempt that never reached Kafka


class FirstPublishTimesOut:
    """Kafka not taking a request's events within the deadline, and that attempt never reaching Kafka."""

    def __init__(self, publisher: EventPublisher) -> None:
        # Every publish goes through publish_encoded (publish_many too): the one place to hold.
        self._publish_encoded = publisher.publish_encoded
        self.calls = 0

    async def __call__(self, records: Sequence[Encoded], **options: Any) -> None:
        self.calls += 1
        if self.calls == 1:
            raise PublishTimeout(f"Kafka did not acknowledge {len(records)} event(s) within {PUBLISH_TIMEOUT} s")
        await self._publish_encoded(records, **options)


async def copies_on(settings: Settings, topic: str, event_ids: set[str]) -> Counter[str]:
    records = await read_topic(
        settings.kafka_bootstrap, settings.topic(topic), until=lambda rs: event_ids <= {header(r, "ce_id") for r in rs}
    )
    return Counter(i for r in records if (i := header(r, "ce_id")) in event_ids)


async def test_posted_events_whose_first_attempt_timed_out_are_published_by_the_retry(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ids of a 503 attempt are claimed while it runs; the retry must publish them, not call them done."""
    own = IdentitySettings(**settings.model_dump())
    await publish_seed_libraries(own)
    app = create_app(own)
    async with running(app, await admin_key(own)) as client:
        member = (await client.post("/v1/members", json=person())).json()["member_id"]
        publisher = app.state.parts.publisher
        monkeypatch.setattr(publisher, "publish_encoded", FirstPublishTimesOut(publisher))
        batch = [card_activation(member)]

        first = await client.post("/v1/events", content=json.dumps(batch), headers={"Content-Type": BATCH})
        retry = await client.post("/v1/events", content=json.dumps(batch), headers={"Content-Type": BATCH})

    assert (first.status_code, retry.status_code) == (503, 202)
    assert await copies_on(own, "identity.members.v1", {batch[0]["id"]}) == {batch[0]["id"]: 1}


async def test_loans_whose_first_attempt_timed_out_are_published_by_the_retry(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = propositions_app(settings)
    async with running(app, await admin_key(settings)) as client:
        assert (await client.put("/v1/libraries/oba", json=OBA)).status_code in (200, 202)
        publisher = app.state.parts.publisher
        monkeypatch.setattr(publisher, "publish_encoded", FirstPublishTimesOut(publisher))
        loans = [loan(id=f"ils-{uuid.uuid4().hex[:8]}") for _ in range(3)]

        first = await client.post("/v1/loans/batch", json={"loans": loans})
        retry = await client.post("/v1/loans/batch", json={"loans": loans})

    assert (first.status_code, retry.status_code) == (503, 202)
    ids = {report["id"] for report in loans}
    assert retry.json() == {"accepted": [report["id"] for report in loans], "rejected": []}
    assert await copies_on(settings, "propositions.usage.v1", ids) == dict.fromkeys(ids, 1)
