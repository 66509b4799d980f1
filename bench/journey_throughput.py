"""How fast the journey service takes a simulated history from its input topics to caught up, next to raw aiokafka
consuming the very same records from the same broker in the same run, and how much Redis a member's journey costs.

    .venv/bin/python bench/journey_throughput.py [--members 20000] [--partitions 3] [--batch 500]

Uses the Kafka and Redis named by KLANTREIS_KAFKA_BOOTSTRAP and KLANTREIS_REDIS_URL when both are set (under a
topic, group and key prefix of its own); otherwise starts a Kafka broker and a redis-server on free ports
(deploy/runtime.py, as the tests do) and stops them at the end.

A simulated network (services/journey/simulator.py) is produced to `identity.members.v1` and
`propositions.usage.v1` first. Then, each timed from its first fetch (start-up and group join left out):
- baseline: an AIOKafkaConsumer reading every record of both topics to their end offsets (no decoding);
- the same consumer decoding each record as the journey does (CloudEvents binding and the type's pydantic model);
- the journey service (its Kafka subscriber, engine and Redis store, in this process, no HTTP): until every record
  is applied (state, timers and offsets stored), and until settled (the timers due by the clocks fired as well,
  frictions published).
Redis per member: MEMORY USAGE of member journeys (a sample), and the growth of Redis' used_memory over all of the
journey's keys (timers, facts, offsets) divided by the members.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploy import runtime
from services.journey.app import create_app
from services.journey.handlers import FrictionDetector
from services.journey.history import load
from services.journey.settings import JourneySettings
from services.journey.simulator import simulate
from services.journey.store import JourneyStore
from shared.events import from_kafka, typed_data
from shared.redis import make_redis
from shared.service import ServiceParts
from shared.topics import ALL_TOPICS, MEMBERS, USAGE, ensure_topics


async def raw_consume(bootstrap: str, topics: list[str], partitions: int, decode: bool) -> tuple[int, float]:
    """Every record of `topics` up to their end offsets; (records, seconds from the first fetch)."""
    assigned = [TopicPartition(t, p) for t in topics for p in range(partitions)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        todo = {tp for tp, end in ends.items() if end > 0}
        count = 0
        started = time.perf_counter()
        while todo:
            for tp, records in (await consumer.getmany(*todo, timeout_ms=500, max_records=5000)).items():
                for record in records:
                    if decode:
                        typed_data(from_kafka(record.value, record.headers))
                count += len(records)
                if records and records[-1].offset + 1 >= ends[tp]:
                    todo.discard(tp)
        return count, time.perf_counter() - started
    finally:
        await consumer.stop()


async def journey_run(settings: JourneySettings, ends: dict[str, int]) -> tuple[float, float]:
    """The journey service from its first applied record to every record applied, and to settled."""
    app = create_app(settings)
    detector: FrictionDetector = app.state.detector
    store = JourneyStore(app.state.parts.redis, settings)
    async with app.router.lifespan_context(app):
        while detector.applied == 0:  # noqa: ASYNC110 (polling what the service exposes, as an operator would)
            await asyncio.sleep(0.01)
        started = time.perf_counter()
        while True:
            applied = await store.applied_offsets()
            if all(applied.get(position, -1) + 1 >= end for position, end in ends.items()):
                break
            await asyncio.sleep(0.05)
        caught_up = time.perf_counter() - started
        while not await detector.settled():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        settled = time.perf_counter() - started
    return caught_up, settled


async def bench(kafka: str, redis_url: str, members: int, partitions: int, batch: int) -> None:
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    settings = JourneySettings(
        kafka_bootstrap=kafka, redis_url=redis_url, topic_prefix=prefix, group_prefix=prefix, key_prefix=prefix,
        partitions=partitions, journey_batch_size=batch, journey_idle_seconds=0.5, journey_timer_tick_seconds=0.1,
    )  # fmt: skip
    print(f"simulating {members:,} members …", flush=True)
    network = simulate(members, seed=7)
    await ensure_topics(settings, ALL_TOPICS)

    parts = ServiceParts.connect("bench", settings)
    await parts.broker.start()
    try:
        loaded = await load(enumerate(network.events), parts.publisher)
    finally:
        await parts.broker.stop()
        await parts.redis.aclose()
    print(f"produced {loaded.produced:,} events in {loaded.seconds:.1f} s ({loaded.per_second:,.0f}/s)", flush=True)

    topics = [settings.topic(MEMBERS.name), settings.topic(USAGE.name)]
    raw_count, raw_seconds = await raw_consume(kafka, topics, partitions, decode=False)
    decoded_count, decoded_seconds = await raw_consume(kafka, topics, partitions, decode=True)
    assert raw_count == decoded_count == loaded.produced, (raw_count, decoded_count, loaded.produced)

    redis = make_redis(settings)
    memory_before = int((await redis.info("memory"))["used_memory"])
    ends = {f"{tp.topic}:{tp.partition}": end for tp, end in (await _ends(kafka, topics, partitions)).items()}
    caught_up, settled = await journey_run(settings, ends)
    memory_after = int((await redis.info("memory"))["used_memory"])
    store = JourneyStore(redis, settings)
    per_journey = await store.member_bytes(sample=1000)
    journeys = len(await store.all_journeys())
    facts = len(await store.friction_facts())
    await redis.aclose()

    events = loaded.produced
    print()
    print(f"{members:,} members, {events:,} events, {partitions} partitions, journey batches of {batch}")
    print(f"broker {kafka}, Redis {redis_url}")
    print(f"{'':<58} {'events/s':>10} {'seconds':>8}")
    rows = [
        ("baseline: raw aiokafka consumer, same records, same broker", raw_seconds),
        ("raw aiokafka + decoding each CloudEvent (binding, pydantic)", decoded_seconds),
        ("journey service: every record applied (state in Redis)", caught_up),
        ("journey service: settled (due timers fired, frictions out)", settled),
    ]
    for name, seconds in rows:
        print(f"{name:<58} {events / seconds:>10,.0f} {seconds:>8.2f}")
    print(f"the journey service takes {caught_up / raw_seconds:.0f}x the time of raw consuming to apply every record")
    print(f"frictions detected (facts in Redis): {facts:,}, planted by the simulator: {len(network.truth):,}")
    print(f"Redis per member journey: {per_journey:,.0f} bytes (MEMORY USAGE of the member key, 1,000 sampled)")
    print(
        f"Redis per member, all journey keys (journeys, timers, facts): "
        f"{(memory_after - memory_before) / max(journeys, 1):,.0f} bytes "
        f"(used_memory grew {(memory_after - memory_before) / 2**20:,.1f} MiB for {journeys:,} journeys)"
    )


async def _ends(bootstrap: str, topics: list[str], partitions: int) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        ends: dict[TopicPartition, int] = await consumer.end_offsets(
            [TopicPartition(t, p) for t in topics for p in range(partitions)]
        )
        return ends
    finally:
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500, help="journey consumer batch (KLANTREIS_JOURNEY_BATCH_SIZE)")
    args = parser.parse_args()
    with runtime.local_infrastructure() as (kafka, redis_url):
        asyncio.run(bench(kafka, redis_url, args.members, args.partitions, args.batch))


if __name__ == "__main__":
    main()
