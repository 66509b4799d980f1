"""How fast the platform takes events in, next to raw aiokafka producing the same records to the same broker.

    .venv/bin/python bench/ingest.py [--events 5000] [--loans 10000] [--rounds 7]

Uses the Kafka and Redis named by KLANTREIS_KAFKA_BOOTSTRAP and KLANTREIS_REDIS_URL when both are set (under a
topic, group and key prefix of its own); otherwise starts a Kafka broker and a redis-server on free ports
(deploy/runtime.py) and stops them at the end.

Two figures, each against its baseline measured in the same run on the same broker:

- identity `POST /v1/events`: a CloudEvents batch (`application/cloudevents-batch+json`) of card activations,
  logins and consent changes of existing members, over HTTP to identity served by uvicorn in this process (JSON
  parsing, validation, the batch's id claims, the members' state read and written, one round of acks);
- propositions `POST /v1/loans/batch`: a batch of loan reports, the same way.

Each baseline is an AIOKafkaProducer with the platform's producer settings (`shared.kafka.PRODUCER_SETTINGS`:
acks=all, idempotent, linger 5 ms) sending, one `send` each, the very records the service published in that round
(read back from its topic: key, value and headers, in the order the service was given them) to a topic of its own
with as many partitions, then waiting for all acks. Each round times the service and then its baseline, so that
both see the same load of a shared machine, each after a garbage collection; the figures are medians of the
rounds, the ratios (raw time / service time) the medians of the rounds' ratios. A first round warms up
(connections, scripts, metadata) and is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer, ConsumerRecord

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import api_key, create_topics, namespaced
from bench.propositions_usage_batch import loans
from deploy import runtime
from services.identity.app import create_app as identity_app
from services.identity.records import MemberRecord
from services.identity.settings import IdentitySettings
from services.identity.store import MemberStore
from services.propositions.app import create_app as propositions_app
from shared.consumers import read_to_end
from shared.events import BATCH, CloudEvent
from shared.events.members import CardActivated, ConsentChanged, LoginFailed, LoginSucceeded
from shared.kafka import PRODUCER_SETTINGS
from shared.redis import make_redis
from shared.service import freeze_startup_heap
from shared.settings import Settings
from shared.topics import MEMBERS as MEMBERS_TOPIC
from shared.topics import USAGE

PARTITIONS = 3
MEMBERS = 2_000
PLATFORM = "kiosk"  # every member's last touch and every event: no channel switches, one record per event


def member_events(count: int) -> list[CloudEvent]:
    """A kiosk's batch: card activations, logins and consent changes of the seeded members, in turn."""
    now = datetime.now(UTC)
    kinds = (
        CardActivated(branch="oosterdok"),
        LoginFailed(login_platform=PLATFORM, reason="bad_credentials"),
        LoginSucceeded(login_platform=PLATFORM),
        ConsentChanged(medium="email", purpose="marketing", granted=True),
    )
    return [
        CloudEvent.create(
            kinds[i % len(kinds)],
            id=str(uuid.uuid4()),
            subject=member_id(i % MEMBERS),
            source=f"/libraries/oba/{PLATFORM}",
            library="oba",
            channel="offline",
            platform=PLATFORM,
            time=now,
        )
        for i in range(count)
    ]


def member_id(number: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"klantreis:bench:member:{number}"))


async def seed_members(settings: IdentitySettings) -> None:
    redis = make_redis(settings)
    store = MemberStore(redis, settings)
    for number in range(MEMBERS):
        record = MemberRecord(
            name="Bench Lezer",
            email=f"lezer{number}@example.nl",
            phone=None,
            birth_date=date(1991, 4, 12),
            postcode="1034 AB",
            home_library="oba",
            signed_up_at=datetime.now(UTC),
            channel="offline",
            platform=PLATFORM,
            last_channel="offline",
            last_platform=PLATFORM,
        )
        await store.create(member_id(number), record, [])
    await redis.aclose()


def body_of(events: list[CloudEvent]) -> bytes:
    return json.dumps([e.model_dump(mode="json", exclude_none=True) for e in events]).encode()


async def post_events(client: httpx.AsyncClient, count: int) -> tuple[float, list[str]]:
    posted = member_events(count)
    body = body_of(posted)
    gc.collect()
    started = time.perf_counter()
    response = await client.post("/v1/events", content=body, headers={"Content-Type": BATCH})
    elapsed = time.perf_counter() - started
    result = response.json()
    if response.status_code != 202 or result["rejected"] or len(result["accepted"]) != count:
        raise SystemExit(f"the events were not accepted whole: {response.status_code} {str(result)[:300]}")
    return elapsed, [event.id for event in posted]


async def post_loans(client: httpx.AsyncClient, count: int) -> tuple[float, list[str]]:
    reports = loans(count)
    body = json.dumps({"loans": reports}).encode()
    gc.collect()
    started = time.perf_counter()
    response = await client.post("/v1/loans/batch", content=body, headers={"Content-Type": "application/json"})
    elapsed = time.perf_counter() - started
    result = response.json()
    if response.status_code != 202 or result["rejected"] or len(result["accepted"]) != count:
        raise SystemExit(f"the loans were not accepted whole: {response.status_code} {str(result)[:300]}")
    return elapsed, [str(report["id"]) for report in reports]


async def produce_raw(producer: AIOKafkaProducer, topic: str, records: list[ConsumerRecord[bytes, bytes]]) -> float:
    gc.collect()
    started = time.perf_counter()
    pending = [await producer.send(topic, r.value, key=r.key, headers=list(r.headers)) for r in records]
    await asyncio.gather(*pending)
    return time.perf_counter() - started


class Published:
    """What a service published on a topic since the last look, in the order it was given the events."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._next: dict[int, int] = {}  # partition -> the first offset not returned yet

    async def since_last(self, posted_ids: list[str]) -> list[ConsumerRecord[bytes, bytes]]:
        records = [
            r for r in await read_to_end(self._bootstrap, self._topic) if r.offset >= self._next.get(r.partition, 0)
        ]
        for record in records:
            self._next[record.partition] = max(self._next.get(record.partition, 0), record.offset + 1)
        order = {event_id: index for index, event_id in enumerate(posted_ids)}
        return sorted(records, key=lambda r: order.get(dict(r.headers).get("ce_id", b"").decode(), len(order)))


async def bench(kafka: str, redis_url: str, events: int, loan_count: int, rounds: int) -> None:
    settings = namespaced(IdentitySettings, kafka_bootstrap=kafka, redis_url=redis_url, partitions=PARTITIONS)
    key = await api_key(settings, ["admin"])
    await seed_members(settings)
    raw_topic = settings.topic("baseline.raw")
    await create_topics(kafka, PARTITIONS, raw_topic)
    headers = {"Authorization": f"Bearer {key}"}

    library = {"name": "OBA", "postcode_areas": ["1000-1109"], "branches": [{"code": "oosterdok", "name": "Oosterdok"}]}
    identity_service, propositions_service = identity_app(settings), propositions_app(Settings(**settings.model_dump()))
    freeze_startup_heap()  # as `serve` does in a service process
    producer = AIOKafkaProducer(bootstrap_servers=kafka, **PRODUCER_SETTINGS)
    await producer.start()
    members = Published(kafka, settings.topic(MEMBERS_TOPIC.name))
    usage = Published(kafka, settings.topic(USAGE.name))
    async with (
        runtime.serving(identity_service) as identity_url,
        runtime.serving(propositions_service) as propositions_url,
        httpx.AsyncClient(base_url=identity_url, headers=headers, timeout=300) as identity,
        httpx.AsyncClient(base_url=propositions_url, headers=headers, timeout=300) as propositions,
    ):
        (await propositions.put("/v1/libraries/oba", json=library)).raise_for_status()
        try:
            # Each round times the service and then its baseline sending what the service just published, so
            # that both see the same load of a shared machine; the ratio is the median of the rounds' ratios.
            # The first round warms up.
            figures: dict[str, list[float]] = {"ingest": [], "raw events": [], "loans": [], "raw loans": []}
            for round_number in range(rounds + 1):
                timings = {}
                timings["ingest"], posted = await post_events(identity, events)
                timings["raw events"] = await produce_raw(producer, raw_topic, await members.since_last(posted))
                timings["loans"], posted = await post_loans(propositions, loan_count)
                timings["raw loans"] = await produce_raw(producer, raw_topic, await usage.since_last(posted))
                for name, seconds in timings.items():
                    if round_number > 0:
                        figures[name].append(seconds)
        finally:
            await producer.stop()
    ingest, raw_events, loaned, raw_loans = (figures[n] for n in ("ingest", "raw events", "loans", "raw loans"))

    def line(name: str, count: int, unit: str, times: list[float]) -> str:
        median = statistics.median(times)
        spread = ", ".join(f"{t * 1000:.0f}" for t in times)
        return f"{name:<46} {count / median:>9,.0f} {unit}/s   median {median * 1000:6.0f} ms   (rounds: {spread} ms)"

    print(f"{rounds} rounds, {PARTITIONS} partitions, broker {kafka}")
    print(line(f"identity POST /v1/events, {events:,} per batch", events, "events", ingest))
    print(line("  baseline: raw aiokafka, same records", events, "events", raw_events))
    print(line(f"propositions POST /v1/loans/batch, {loan_count:,}", loan_count, "loans", loaned))
    print(line("  baseline: raw aiokafka, same records", loan_count, "loans", raw_loans))
    print(f"ratio ingest/raw: {statistics.median(r / s for r, s in zip(raw_events, ingest, strict=True)):.2f}")
    print(f"ratio loans/raw: {statistics.median(r / s for r, s in zip(raw_loans, loaned, strict=True)):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=5_000, help="CloudEvents per POST /v1/events batch")
    parser.add_argument("--loans", type=int, default=10_000, help="loan reports per POST /v1/loans/batch")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with runtime.local_infrastructure() as (kafka, redis_url):
        asyncio.run(bench(kafka, redis_url, args.events, args.loans, args.rounds))


if __name__ == "__main__":
    main()
