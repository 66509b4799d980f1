"""How fast propositions takes a batch of loans, next to raw aiokafka producing the same records to the same broker.

    .venv/bin/python bench/propositions_usage_batch.py [--loans 10000] [--rounds 5]

Uses the Kafka and Redis named by KLANTREIS_KAFKA_BOOTSTRAP and KLANTREIS_REDIS_URL when both are set (under a
topic, group and key prefix of its own); otherwise starts a Kafka broker and a redis-server on free ports
(deploy/runtime.py, as the tests do) and stops them at the end.

Each round times one `POST /v1/loans/batch` over HTTP to the service running in this process (uvicorn): JSON
parsing, per-item validation, the batch's claims in Redis, and publishing with one round of acks. The baseline
times an AIOKafkaProducer with the platform's producer settings (`shared.kafka.PRODUCER_SETTINGS`) sending the very
records the service published, built beforehand, to a topic of its own on the same broker, then waiting for all
acks. The figures are the median of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import api_key, create_topics, namespaced
from deploy import runtime
from services.propositions.app import create_app
from services.propositions.usage import parse_loans
from shared.events import CloudEvent, KafkaRecord, to_kafka
from shared.ingest import EventClaims
from shared.kafka import PRODUCER_SETTINGS
from shared.service import ServiceParts
from shared.settings import Settings

PARTITIONS = 3


def loans(count: int, library: str = "oba") -> list[dict[str, Any]]:
    """Loan reports of 5,000 members, whose ids are UUIDs as identity gives them (the record key: its length is
    what Kafka's partitioner hashes)."""
    now = datetime.now(UTC).isoformat()
    run = uuid.uuid4().hex[:8]
    return [
        {
            "id": f"bench-{run}-{i}",
            "event": "borrowed",
            "member_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"klantreis:bench:member:{i % 5000}")),
            "library": library,
            "branch": "oosterdok",
            "channel": "offline",
            "platform": "kiosk",
            "item_id": f"978902141{i:04d}",
            "loan_id": f"L-{run}-{i}",
            "time": now,
        }
        for i in range(count)
    ]


def events(reports: list[dict[str, Any]]) -> list[CloudEvent]:
    """The events the service publishes for these reports."""
    built = []
    for _, report in parse_loans(reports)[0]:
        event = CloudEvent.create(
            report.data(),
            id=report.id,
            subject=report.member_id,
            source=f"/libraries/{report.library}/{report.platform}",
            library=report.library,
            channel=report.channel,
            platform=report.platform,
            time=report.time,
        )
        built.append(event)
    return built


def records(reports: list[dict[str, Any]]) -> list[KafkaRecord]:
    return [to_kafka(event) for event in events(reports)]


async def service_round(client: httpx.AsyncClient, count: int) -> float:
    body = {"loans": loans(count)}
    started = time.perf_counter()
    response = await client.post("/v1/loans/batch", json=body)
    elapsed = time.perf_counter() - started
    result = response.json()
    if response.status_code != 202 or result["rejected"] or len(result["accepted"]) != count:
        raise SystemExit(f"the batch was not accepted whole: {response.status_code} {str(result)[:300]}")
    return elapsed


async def baseline_round(producer: AIOKafkaProducer, topic: str, count: int) -> float:
    built = records(loans(count))
    started = time.perf_counter()
    pending = [
        await producer.send(topic, r.value, key=r.key, headers=[(k, v.encode()) for k, v in r.headers.items()])
        for r in built
    ]
    await asyncio.gather(*pending)
    return time.perf_counter() - started


async def parts_round(count: int) -> float:
    """Checking the reports and building their events: the service's own work per item."""
    reports = loans(count)
    started = time.perf_counter()
    events(reports)
    return time.perf_counter() - started


async def publish_round(parts: ServiceParts, count: int) -> float:
    """shared EventPublisher.publish_many of the same events (FastStream publish, telemetry, one round of acks)."""
    built = events(loans(count))
    started = time.perf_counter()
    await parts.publisher.publish_many(built)
    return time.perf_counter() - started


async def claims_round(claims: EventClaims, count: int) -> float:
    """shared EventClaims: claiming the reports' ids and marking them done, one script call each."""
    ids = [str(uuid.uuid4()) for _ in range(count)]
    started = time.perf_counter()
    await claims.claim(ids)
    await claims.finish(ids, [])
    return time.perf_counter() - started


async def bench(kafka: str, redis_url: str, count: int, rounds: int) -> None:
    settings = namespaced(Settings, kafka_bootstrap=kafka, redis_url=redis_url, partitions=PARTITIONS)
    key = await api_key(settings, ["admin"])
    baseline_topic = settings.topic("baseline.usage")
    await create_topics(kafka, PARTITIONS, baseline_topic)

    async with (
        runtime.serving(create_app(settings)) as url,
        httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300) as client,
    ):
        library = {
            "name": "OBA",
            "postcode_areas": ["1000-1109"],
            "branches": [{"code": "oosterdok", "name": "Oosterdok"}],
        }
        (await client.put("/v1/libraries/oba", json=library)).raise_for_status()
        await service_round(client, 500)  # warm up: connections, scripts, metadata
        service = [await service_round(client, count) for _ in range(rounds)]

    producer = AIOKafkaProducer(bootstrap_servers=kafka, **PRODUCER_SETTINGS)
    await producer.start()
    try:
        await baseline_round(producer, baseline_topic, 500)
        raw = [await baseline_round(producer, baseline_topic, count) for _ in range(rounds)]
    finally:
        await producer.stop()

    parts = ServiceParts.connect("bench", settings)
    await parts.broker.start()
    try:
        await publish_round(parts, 500)
        publishing = [await publish_round(parts, count) for _ in range(rounds)]
        claiming = [await claims_round(EventClaims(parts.redis, settings, "bench"), count) for _ in range(rounds)]
        checking = [await parts_round(count) for _ in range(rounds)]
    finally:
        await parts.broker.stop()
        await parts.redis.aclose()

    def line(name: str, times: list[float]) -> str:
        median = statistics.median(times)
        spread = ", ".join(f"{t * 1000:.0f}" for t in times)
        return f"{name:<44} {count / median:>10,.0f} loans/s   median {median * 1000:6.0f} ms   (rounds: {spread} ms)"

    print(f"{count:,} loans per batch, {rounds} rounds, {PARTITIONS} partitions, broker {kafka}")
    print(line("propositions POST /v1/loans/batch (HTTP)", service))
    print(line("baseline: raw aiokafka, same records", raw))
    print(f"the service takes {statistics.median(service) / statistics.median(raw):.1f}x the time of raw producing")
    print("where the service's time goes (each part on its own, same broker and Redis):")
    print(line("  check reports, build events (pydantic)", checking))
    print(line("  claim + finish ids (shared EventClaims)", claiming))
    print(line("  publish_many (shared EventPublisher)", publishing))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--loans", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with runtime.local_infrastructure() as (kafka, redis_url):
        asyncio.run(bench(kafka, redis_url, args.loans, args.rounds))


if __name__ == "__main__":
    main()
