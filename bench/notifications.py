"""notifications at network scale: decisions per second, friction → in-app message, sign-up → friction, a broadcast
to a segment of a million members, and the Redis bytes per messaged member.

    .venv/bin/python bench/notifications.py [--decisions 20000] [--rate 100] [--seconds 20] [--signups 200]
                                            [--broadcast 1000000]

Uses the Kafka and Redis named by KLANTREIS_KAFKA_BOOTSTRAP and KLANTREIS_REDIS_URL when both are set (under a
prefix of its own; the Redis keys are removed at the end), otherwise starts both on free ports. Everything runs in
this one process, over the real broker and Redis:

1. decisions per second: `--decisions` frictions for as many members wait on the topic; notifications starts and
   decides them (a service in-app campaign: deciding delivers them itself): from its first decision to its last,
   by the campaign's `triggered` counter; also per CPU-second of this process (the machine is shared);
2. friction → in-app message: frictions produced at `--rate` per second for `--seconds`, once a first friction's
   message has come through (the consumer has joined its group: the steady state); from each friction's send to
   its `message.sent` record (published after the inbox message is stored): p50 and p99;
3. sign-up → friction.detected: identity and journey in-process; a member signs up twice with one e-mail address
   (journey's immediate rule `duplicate-accounts`); from the second POST to the friction's record: p50 and p99;
4. a broadcast to `--broadcast` simulated members (profiles written straight into the projection, no contacts:
   in-app), holdout 10 %: from activation until every member is decided and every message delivered (and the
   process's CPU-seconds meanwhile);
5. bytes per messaged member: MEMORY USAGE of 1,000 members' keys, less their inbox text.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fastapi import FastAPI

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import api_key, namespaced
from deploy import runtime
from services.identity.app import create_app as identity_app
from services.identity.settings import IdentitySettings
from services.journey.app import create_app as journey_app
from services.journey.settings import JourneySettings
from services.notifications.app import Stores, create_app
from services.notifications.keys import Keys
from services.notifications.settings import NotificationsSettings
from services.notifications.state import Profile
from shared.events import CloudEvent, to_kafka
from shared.events.journey import FrictionDetected
from shared.events.propositions import LibraryChanged
from shared.redis import make_redis
from shared.settings import Settings
from shared.topics import ensure_topics

RULE = "desk-signup-never-online"
LIBRARY = "bench-oba"
SEGMENT = "bench-segment"


def campaign(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "Je pas wacht", "purpose": "service", "trigger": {"friction_rules": [RULE]}, "channels": ["in_app"],
        "messages": {"in_app": {"nl": {"title": "Je pas wacht", "body": "Kom langs bij {{ library.name }}."}}},
        **overrides,
    }  # fmt: skip


def friction(member_id: str) -> CloudEvent:
    now = datetime.now(UTC)
    data = FrictionDetected(
        friction_id=str(uuid.uuid4()), rule=RULE, start_event_id=str(uuid.uuid4()),
        started_at=now - timedelta(days=14), due_at=now, library=LIBRARY, age_band="18-64",
    )  # fmt: skip
    return CloudEvent.create(
        data, id=data.friction_id, subject=member_id, source=f"/journey/rules/{RULE}", library=LIBRARY, time=now
    )


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@asynccontextmanager
async def serving(app: FastAPI, key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", headers=headers, timeout=60) as c:
            yield c


async def send(producer: AIOKafkaProducer, settings: Settings, event: CloudEvent, topic: str) -> Any:
    record = to_kafka(event)
    headers = [(k, v.encode()) for k, v in record.headers.items()]
    return await producer.send(settings.topic(topic), record.value, key=record.key, headers=headers)


async def project(stores: Stores, members: list[str], profile: Profile, chunk: int = 5000) -> None:
    """Simulated members, written straight into notifications' projection (as the members consumer would)."""
    projections = stores.projections
    for start in range(0, len(members), chunk):
        pipe = projections.batch()
        for member_id in members[start : start + chunk]:
            projections.signed_up(pipe, member_id, profile, None)
        await projections.apply(pipe)


async def create(client: httpx.AsyncClient, definition: dict[str, Any]) -> str:
    created = await client.post("/v1/campaigns", json=definition)
    assert created.status_code == 201, created.text
    campaign_id = str(created.json()["id"])
    assert (await client.post(f"/v1/campaigns/{campaign_id}/activate")).status_code == 200
    return campaign_id


async def results(client: httpx.AsyncClient, campaign_id: str) -> dict[str, Any]:
    answer = await client.get(f"/v1/campaigns/{campaign_id}/results")
    answer.raise_for_status()
    return dict(answer.json())


async def tail(bootstrap: str, topic: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="latest")
    await consumer.start()
    for _ in range(200):  # the assignment comes with the first metadata
        if consumer.assignment():
            break
        await asyncio.sleep(0.05)
    await consumer.seek_to_end()
    for tp in consumer.assignment():
        await consumer.position(tp)
    return consumer


def header(record: Any, name: str) -> str:
    return next((v.decode() for k, v in record.headers if k == name), "")


# ----------------------------------------------------------------------------------------------- parts


async def decisions_per_second(settings: NotificationsSettings, key: str, count: int) -> tuple[float, float]:
    """Decisions per second of wall time and per second of this process's CPU time (the machine is shared: the
    second says what one core would do)."""
    app = create_app(settings)
    stores: Stores = app.state.stores
    members = [str(uuid.uuid4()) for _ in range(count)]
    await project(stores, members, Profile("18-64", LIBRARY, "offline", "nl"))
    async with serving(app, key) as client:
        campaign_id = await create(client, campaign())
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        await asyncio.gather(*[await send(producer, settings, friction(m), "journey.frictions.v1") for m in members])
    finally:
        await producer.stop()
    app = create_app(settings)
    async with serving(app, key) as client:
        first = None
        while True:
            triggered = (await results(client, campaign_id))["triggered"]
            if triggered and first is None:
                first = (time.perf_counter(), time.process_time(), triggered)
            if triggered >= count:
                break
            await asyncio.sleep(0.02)
        assert first is not None
        rate = (count - first[2]) / (time.perf_counter() - first[0])
        per_cpu_second = (count - first[2]) / (time.process_time() - first[1])
        for _ in range(3000):  # and delivered, before the next part measures latencies
            if (await results(client, campaign_id))["sent"] >= count:
                break
            await asyncio.sleep(0.2)
    return rate, per_cpu_second


async def friction_to_inbox(settings: NotificationsSettings, key: str, rate: float, seconds: float) -> list[float]:
    app = create_app(settings)
    stores: Stores = app.state.stores
    members = [str(uuid.uuid4()) for _ in range(int(rate * seconds))]
    warm_up = str(uuid.uuid4())
    await project(stores, [warm_up, *members], Profile("18-64", LIBRARY, "offline", "nl"))
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    warmed = asyncio.Event()
    async with serving(app, key):
        deliveries = await tail(settings.kafka_bootstrap, settings.topic("notifications.deliveries.v1"))
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        await producer.start()

        async def collect() -> None:
            while len(latencies) < len(members):
                batch = await deliveries.getmany(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        if header(record, "ce_type").endswith("message.sent.v1"):
                            trigger = header(record, "ce_subject")
                            if trigger == warm_up:
                                warmed.set()
                            elif trigger in sent_at:
                                latencies.append(record.timestamp - sent_at.pop(trigger))

        collecting = asyncio.create_task(collect())
        try:
            # The steady state: notifications has joined its consumer group and messaged one member first.
            await send(producer, settings, friction(warm_up), "journey.frictions.v1")
            await asyncio.wait_for(warmed.wait(), 60)
            started = time.perf_counter()
            for i, member_id in enumerate(members):
                await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
                sent_at[member_id] = time.time() * 1000
                await send(producer, settings, friction(member_id), "journey.frictions.v1")
            await asyncio.wait_for(collecting, 120)
        finally:
            collecting.cancel()
            await producer.stop()
            await deliveries.stop()
    return latencies


async def signup_to_friction(base: Settings, key: str, count: int) -> list[float]:
    identity = identity_app(IdentitySettings(**base.model_dump()))
    journey = journey_app(JourneySettings(**base.model_dump()))
    latencies: list[float] = []
    async with serving(journey, key), serving(identity, key) as client:
        # Sign-ups name libraries of the catalogue: these two on the catalogue topic.
        await identity.state.parts.publisher.publish_many(
            [
                CloudEvent.create(LibraryChanged(library=code, name=code), subject=f"library:{code}", source="/bench")
                for code in ("oba", "haarlem")
            ]
        )
        frictions = await tail(base.kafka_bootstrap, base.topic("journey.frictions.v1"))
        waiting: dict[str, asyncio.Future[float]] = {}

        async def collect() -> None:
            while True:
                for records in (await frictions.getmany(timeout_ms=100)).values():
                    for record in records:
                        found = waiting.get(header(record, "ce_subject"))
                        if found is not None and not found.done() and b"duplicate-accounts" in record.value:
                            found.set_result(record.timestamp)

        collecting = asyncio.create_task(collect())
        try:
            for _ in range(count):
                person = {"name": "Sanne de Vries", "email": f"{uuid.uuid4().hex[:12]}@example.nl",
                          "birth_date": "1991-04-12", "postcode": "1034 AB", "platform": "website"}  # fmt: skip
                first = await client.post("/v1/members", json={**person, "home_library": "oba"})
                assert first.status_code == 202, first.text
                started = time.time() * 1000
                second = await client.post("/v1/members", json={**person, "home_library": "haarlem"})
                assert second.status_code == 202, second.text
                future = waiting.setdefault(second.json()["member_id"], asyncio.get_running_loop().create_future())
                latencies.append(await asyncio.wait_for(future, 30) - started)
        finally:
            collecting.cancel()
            await frictions.stop()
    return latencies


async def broadcast(settings: NotificationsSettings, key: str, count: int) -> tuple[float, float, float]:
    """Seconds until every member was decided, until every message was delivered, and CPU seconds of this process
    meanwhile."""
    app = create_app(settings)
    stores: Stores = app.state.stores
    members = [str(uuid.uuid4()) for _ in range(count)]
    started = time.perf_counter()
    await project(stores, members, Profile("0-3", SEGMENT, "online", "nl"))
    print(f"{count:,} simulated members projected in {time.perf_counter() - started:.0f} s")
    async with serving(app, key) as client:
        # A campaign names libraries of the catalogue: the segment's library on the catalogue topic.
        segment = LibraryChanged(library=SEGMENT, name="Bench segment", postcode_areas=["8100"])
        await app.state.parts.publisher.publish(
            CloudEvent.create(segment, subject=f"library:{SEGMENT}", source="/bench", library=SEGMENT)
        )
        started, cpu = time.perf_counter(), time.process_time()
        campaign_id = await create(
            client,
            campaign(
                name="BoekStart-week", kind="broadcast", trigger=None, holdout_percent=10,
                audience={"libraries": [SEGMENT], "age_bands": ["0-3"]},
                schedule={"send_at": (datetime.now(UTC) - timedelta(seconds=1)).isoformat()},
            ),
        )  # fmt: skip
        shown = time.perf_counter()
        decided_in = 0.0
        while True:
            progress = await stores.campaigns.broadcast_progress(campaign_id)
            counted = await results(client, campaign_id)
            ended = counted["sent"] + sum(counted["suppressed"].values()) + counted["failed"]
            if progress.status == "done" and not decided_in:
                decided_in = time.perf_counter() - started
            if decided_in and ended >= counted["triggered"]:
                break
            if time.perf_counter() - shown > 15:
                shown = time.perf_counter()
                print(
                    f"  broadcast: {progress.looked_at:,} members looked at, {counted['sent']:,} sent, "
                    f"{sum(counted['suppressed'].values()):,} suppressed ({time.perf_counter() - started:.0f} s)"
                )
            await asyncio.sleep(0.5)
        total, cpu = time.perf_counter() - started, time.process_time() - cpu
        print(f"  broadcast results: sent {counted['sent']:,}, suppressed {counted['suppressed']}")
    return decided_in, total, cpu


async def bytes_per_member(settings: Settings, library: str, sample: int = 1000) -> float:
    """MEMORY USAGE of messaged members' keys (their one hash; the inbox text is stored once for all, apart)."""
    redis = make_redis(settings)
    keys = Keys(settings)
    try:
        _, found = await redis.sscan(keys.library_members(library), 0, count=sample * 2)
        sizes = []
        for member_id in [str(m) for m in found][:sample]:
            key = keys.member(member_id)
            fields = [str(name) for name in await redis.hkeys(key)]
            if any(name.startswith("i") for name in fields):  # messaged (not held out or capped)
                sizes.append(int(await redis.memory_usage(key) or 0))
        return statistics.mean(sizes) if sizes else 0.0
    finally:
        await redis.aclose()


async def clean(settings: Settings) -> None:
    redis = make_redis(settings)
    try:
        batch = []
        async for key in redis.scan_iter(match=settings.key_prefix + "*", count=10_000):
            batch.append(key)
            if len(batch) >= 10_000:
                await redis.unlink(*batch)
                batch = []
        if batch:
            await redis.unlink(*batch)
    finally:
        await redis.aclose()


async def bench(kafka: str, redis_url: str, args: argparse.Namespace) -> None:
    base = namespaced(Settings, "bn", kafka_bootstrap=kafka, redis_url=redis_url)
    settings = NotificationsSettings(
        **base.model_dump(),
        notifications_delivery_batch=500,
        notifications_broadcast_tick_seconds=0.5,
    )
    await ensure_topics(settings)
    key = await api_key(settings, ["admin"])
    try:
        rate, per_cpu_second = await decisions_per_second(settings, key, args.decisions)
        print(
            f"{args.decisions:,} frictions decided (and delivered) through Kafka: {rate:,.0f} decisions/s "
            f"({per_cpu_second:,.0f} per CPU-second of this process)"
        )
        latencies = await friction_to_inbox(settings, key, args.rate, args.seconds)
        print(
            f"friction → in-app message at {args.rate}/s, {len(latencies)} frictions: "
            f"p50 {statistics.median(latencies):.0f} ms, p99 {percentile(latencies, 99):.0f} ms"
        )
        messaged = await bytes_per_member(settings, LIBRARY)
        signups = await signup_to_friction(base, key, args.signups)
        print(
            f"sign-up → friction.detected (duplicate-accounts), {len(signups)} samples: "
            f"p50 {statistics.median(signups):.0f} ms, p99 {percentile(signups, 99):.0f} ms"
        )
        if args.broadcast:
            decided_in, total, cpu = await broadcast(settings, key, args.broadcast)
            print(
                f"broadcast to {args.broadcast:,} members: decided in {decided_in:.0f} s, delivered in {total:.0f} s "
                f"({cpu:.0f} CPU-seconds of this process)"
            )
            broadcast_bytes = await bytes_per_member(settings, SEGMENT)
            print(f"bytes per messaged member (broadcast, besides the inbox text): {broadcast_bytes:.0f}")
        print(f"bytes per messaged member (friction, besides the inbox text): {messaged:.0f}")
        print(f"decisions per second: {rate:.0f}")
        print(f"friction to inbox p99 ms: {percentile(latencies, 99):.0f}")
        print(f"signup to friction p99 ms: {percentile(signups, 99):.0f}")
    finally:
        await clean(settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--signups", type=int, default=200)
    parser.add_argument("--broadcast", type=int, default=1_000_000)
    args = parser.parse_args()
    with runtime.local_infrastructure() as (kafka, redis_url):
        asyncio.run(bench(kafka, redis_url, args))


if __name__ == "__main__":
    main()
