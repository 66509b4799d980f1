"""How long journey's retired Redis-scan reports took over 10,000 and 100,000 member journeys, next to a bare
SCAN + MGET of the same keys measured in the same run: the baseline of bench/analytics.py.

    .venv/bin/python bench/journey_reports.py [--members 10000,100000] [--rounds 3]

Uses the Redis named by KLANTREIS_REDIS_URL when set (under a key prefix of its own, removed at the end);
otherwise starts a redis-server on a free port (deploy/runtime.py, as the tests do) and stops it at the end. Kafka
is not needed.

The journeys are realistic: a simulated network (services/journey/simulator.py, 10,000 members) is run through the
friction engine in memory, and its journeys, friction facts and closed windows are written in the store's format;
larger sizes repeat them under other member ids. Each report is what journey's report endpoints did until they
moved to the analytics service (bench/redis_scan_reports.py, their arithmetic): read every journey with the
store's pipelined SCAN + MGET, parse, count. The baselines read the same keys with the same batch size: bare
SCAN + MGET (no parsing), the same with json.loads, and the store's reading without counting. Medians of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import redis_scan_reports as old
from deploy import runtime
from services.analytics.reports import Report, months_before
from services.journey.memory import InMemoryJourneys
from services.journey.rules import load_rules
from services.journey.settings import JourneySettings
from services.journey.simulator import simulate
from services.journey.store import Changes, JourneyStore
from shared.redis import make_redis

BASE_MEMBERS = 10_000
BATCH = 1000  # the store's batch: keys per SCAN and MGET
FUNNEL = "member.signed_up.v1,member.card_activated.v1,usage.loan_borrowed.v1"
REACH_BANDS = ("0-3", "4-11", "12-17")


async def reach(store: JourneyStore, clock: int) -> Report:
    counter = old.ReachCounter(REACH_BANDS, months_before(clock, 12))
    async for batch in store.journey_batches(BATCH):
        counter.add(batch)
    return counter.report(5)


async def funnel(store: JourneyStore, clock: int) -> Report:
    query = old.FunnelQuery(steps=tuple(FUNNEL.split(",")), by="channel", within=timedelta(days=30))
    counter = old.FunnelCounter(query, clock)
    async for batch in store.journey_batches(BATCH):
        counter.add(batch)
    return counter.report(5)


async def frictions_by_library(store: JourneyStore, clock: int) -> Report:
    members = old.MemberCounter()
    async for batch in store.journey_batches(BATCH):
        members.add(batch)
    facts, starts = await store.friction_facts(), await store.closed_starts()
    query = old.FrictionQuery(by=("rule", "library"), period="week")
    return old.friction_report(facts, starts, query, min_cell=5, members_by_library=members.counts)


async def frictions_by_rule(store: JourneyStore, clock: int) -> Report:
    facts, starts = await store.friction_facts(), await store.closed_starts()
    return old.friction_report(facts, starts, old.FrictionQuery(by=("rule",)), min_cell=5)


REPORTS: list[tuple[str, Callable[[JourneyStore, int], Awaitable[Report]]]] = [
    ("reach, per library and band", reach),
    ("funnel, 3 steps by channel", funnel),
    ("frictions by rule, library, week", frictions_by_library),
    ("frictions by rule (facts only)", frictions_by_rule),
]


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    url = os.environ.get("KLANTREIS_REDIS_URL")
    if url:
        print(f"using Redis {url} from the environment")
        yield url
        return
    runtime.ensure_redis_server()
    with tempfile.TemporaryDirectory(prefix="klantreis-bench-") as base:
        redis = runtime.RedisNode(data_dir=Path(base) / "redis", port=runtime.free_port())
        try:
            print("starting Redis on a free port …", flush=True)
            redis.start(detach=False)
            redis.wait_ready()
            yield redis.url
        finally:
            redis.stop()


def simulated_network() -> tuple[list[dict[str, Any]], Changes]:
    """The journeys and report facts of a simulated network of BASE_MEMBERS, as the service would store them."""
    started = time.perf_counter()
    network = simulate(BASE_MEMBERS, seed=7)
    replay = InMemoryJourneys(load_rules())
    replay.feed(sorted(network.events, key=lambda e: e.time))
    result = replay.finish()
    facts = Changes()
    for friction in result.detected:
        facts.detected(friction)
    for resolution in result.resolved:
        facts.resolved(resolution)
    for closed in result.closed:
        facts.closed(closed)
    print(
        f"simulated {BASE_MEMBERS:,} members, {len(network.events):,} events, {len(facts.frictions):,} frictions "
        f"in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return list(replay.journeys.values()), facts


async def load(
    redis: Redis, settings: JourneySettings, members: int, journeys: list[dict[str, Any]], facts: Changes
) -> int:
    """Write `members` journeys (copies of the simulated ones under new ids) and as many copies of the facts."""
    copies = -(-members // len(journeys))
    written = 0
    for copy in range(copies):
        for start in range(0, len(journeys), BATCH):
            async with redis.pipeline(transaction=False) as pipe:
                for journey in journeys[start : start + BATCH]:
                    if written >= members:
                        break
                    member = f"{journey['id']}~{copy}"
                    key = settings.key("journey", "m", "{" + member + "}")
                    pipe.set(key, json.dumps({**journey, "id": member}, separators=(",", ":")))
                    written += 1
                await pipe.execute()
        share = min(1.0, (members - copy * len(journeys)) / len(journeys))
        frictions = list(facts.frictions.items())[: int(len(facts.frictions) * share)]
        for start in range(0, len(frictions), BATCH):
            chunk = {f"{k}~{copy}": json.dumps(v, separators=(",", ":")) for k, v in frictions[start : start + BATCH]}
            await redis.hset(settings.key("journey", "facts", "frictions"), mapping=cast(Any, chunk))
        async with redis.pipeline(transaction=False) as pipe:
            for key, count in facts.starts.items():
                pipe.hincrby(settings.key("journey", "facts", "starts"), key, round(count * share))
            await pipe.execute()
    return written


async def bare_scan_mget(redis: Redis, settings: JourneySettings, parse: bool) -> int:
    """The floor: every journey key found with SCAN and read with MGET, batch by batch (optionally parsed)."""
    found = 0
    keys: list[str] = []
    async for key in redis.scan_iter(match=settings.key("journey", "m", "*"), count=BATCH):
        keys.append(key)
        if len(keys) >= BATCH:
            found += _count(await redis.mget(keys), parse)
            keys = []
    if keys:
        found += _count(await redis.mget(keys), parse)
    return found


async def read_all(store: JourneyStore) -> int:
    """What every member report does before counting: the store's pipelined SCAN + MGET, parsed."""
    return sum([len(batch) async for batch in store.journey_batches(BATCH)])


def _count(values: list[Any], parse: bool) -> int:
    return len([json.loads(v) for v in values if v]) if parse else sum(1 for v in values if v)


async def timed(rounds: int, run: Callable[[], Awaitable[Any]]) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def measure(url: str, members: int, rounds: int, journeys: list[dict[str, Any]], facts: Changes) -> None:
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    settings = JourneySettings(redis_url=url, key_prefix=prefix, topic_prefix=prefix, journey_report_cache_seconds=0)
    redis = make_redis(settings)
    try:
        started = time.perf_counter()
        written = await load(redis, settings, members, journeys, facts)
        memory = int((await redis.info("memory"))["used_memory"])
        took = time.perf_counter() - started
        print(f"\n{written:,} journeys written in {took:.1f} s; Redis uses {memory / 1e6:.0f} MB")
        results: list[tuple[str, float]] = []
        for name, parse in (("baseline: bare SCAN + MGET", False), ("baseline: SCAN + MGET + json.loads", True)):
            results.append((name, await timed(rounds, functools.partial(bare_scan_mget, redis, settings, parse))))
        store = JourneyStore(redis, settings)
        results.append(
            ("store.journey_batches (read, parsed)", await timed(rounds, functools.partial(read_all, store)))
        )
        clock = int(time.time() * 1000)
        for name, report in REPORTS:
            results.append((name, await timed(rounds, functools.partial(report, store, clock))))
        floor = results[0][1]
        print(f"{'':38} {'seconds':>8} {'journeys/s':>11} {'/ bare scan':>12}")
        for name, seconds in results:
            print(f"{name:38} {seconds:8.3f} {written / seconds:11,.0f} {seconds / floor:12.2f}")
    finally:
        keys = [k async for k in redis.scan_iter(match=prefix + "*", count=BATCH)]
        for start in range(0, len(keys), BATCH):
            await redis.delete(*keys[start : start + BATCH])
        await redis.aclose()


async def report_seconds(url: str, members: int, rounds: int) -> dict[str, float]:
    """Median seconds of each report over `members` journeys (the cache off); for bench/analytics.py's ratio."""
    journeys, facts = simulated_network()
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    settings = JourneySettings(redis_url=url, key_prefix=prefix, topic_prefix=prefix, journey_report_cache_seconds=0)
    redis = make_redis(settings)
    try:
        await load(redis, settings, members, journeys, facts)
        store = JourneyStore(redis, settings)
        clock = int(time.time() * 1000)
        seconds: dict[str, float] = {}
        for name, report in REPORTS:
            seconds[name] = await timed(rounds, functools.partial(report, store, clock))
        return seconds
    finally:
        keys = [k async for k in redis.scan_iter(match=prefix + "*", count=BATCH)]
        for start in range(0, len(keys), BATCH):
            await redis.delete(*keys[start : start + BATCH])
        await redis.aclose()


async def main(sizes: list[int], rounds: int) -> None:
    journeys, facts = simulated_network()
    with redis_server() as url:
        for members in sizes:
            await measure(url, members, rounds, journeys, facts)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", default="10000,100000", help="comma-separated numbers of journeys")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main([int(n) for n in args.members.split(",")], args.rounds))
