"""How long the friction dashboard page takes, next to the seven report requests it makes, measured in the same run.

    .venv/bin/python bench/web_dashboard.py [--members 10000] [--rounds 5]

Uses the Redis named by KLANTREIS_REDIS_URL when set (under a key prefix of its own, removed at the end);
otherwise starts a redis-server on a free port and stops it at the end. Kafka is not needed: the page and the
reports only read Redis.

The journeys are those of bench/journey_reports.py (a simulated network run through the friction engine, written in
the store's format). The baseline is the reports API asked, one after the other, exactly the queries the dashboard
asks with its default filters (services/journey/pages.py `SECTIONS`), over ASGI in this process with the report
cache off. The page is `GET /pages/dashboard` over ASGI, signed in through the sign-in form: the same seven
requests (in-process) plus the session, charts and HTML. A last line shows a reload within the report cache time.
Baseline and page alternate round by round; figures are medians of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import re
import statistics
import sys
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.journey.pages import SECTIONS, dashboard_filters

from bench.journey_reports import BATCH, load, redis_server, simulated_network, timed
from services.journey.app import create_app
from services.journey.rules import load_rules
from services.journey.settings import JourneySettings
from shared.auth import Keyring
from shared.redis import make_redis


async def signed_in(client: httpx.AsyncClient, key: str) -> None:
    form = await client.get("/pages/sign-in")
    found = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert found is not None, "the sign-in form has a CSRF token"
    answer = await client.post("/pages/sign-in", data={"csrf": found.group(1), "api_key": key, "next": ""})
    assert answer.status_code == 303, answer.text


async def measure(url: str, members: int, rounds: int) -> None:
    journeys, facts = simulated_network()
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    settings = JourneySettings(redis_url=url, key_prefix=prefix, topic_prefix=prefix, journey_report_cache_seconds=0)
    redis = make_redis(settings)
    try:
        written = await load(redis, settings, members, journeys, facts)
        print(f"{written:,} journeys written")
        key = await Keyring(redis, settings).create("bench", ["analyst"])
        filters = dashboard_filters({}, [rule.id for rule in load_rules().rules], scope=None)
        results: list[tuple[str, float]] = []
        app = create_app(settings)  # the routes need no Kafka: the lifespan (consumers) is not started
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600) as client:

            async def reports() -> None:
                for section in SECTIONS:
                    answer = await client.get(
                        section.path, params=section.query(filters), headers={"Authorization": f"Bearer {key}"}
                    )
                    answer.raise_for_status()

            async def page() -> None:
                answer = await client.get("/pages/dashboard")
                assert answer.status_code == 200, answer.text[:500]

            await signed_in(client, key)
            await page()  # warm up (templates compiled, connections open)
            # Interleaved, so that whatever else the machine is doing weighs on both alike.
            baseline_times, page_times = [], []
            for _ in range(rounds):
                baseline_times.append(await timed(1, reports))
                page_times.append(await timed(1, page))
            results.append(("baseline: the 7 report requests", statistics.median(baseline_times)))
            results.append(("GET /pages/dashboard", statistics.median(page_times)))
        cached = create_app(settings.model_copy(update={"journey_report_cache_seconds": 600.0}))
        transport = httpx.ASGITransport(app=cached)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600) as client:
            await signed_in(client, key)
            await client.get("/pages/dashboard")
            refresh = await timed(rounds, functools.partial(client.get, "/pages/dashboard"))
            results.append(("GET /pages/dashboard within cache time", refresh))
        floor = results[0][1]
        print(f"{'':40} {'seconds':>8} {'/ baseline':>11}")
        for name, seconds in results:
            print(f"{name:40} {seconds:8.3f} {seconds / floor:11.2f}")
        print(f"page overhead (session, charts, HTML): {(results[1][1] - floor) * 1000:.1f} ms")
    finally:
        keys = [k async for k in redis.scan_iter(match=prefix + "*", count=BATCH)]
        for start in range(0, len(keys), BATCH):
            await redis.delete(*keys[start : start + BATCH])
        await redis.aclose()


async def main(members: int, rounds: int) -> None:
    with redis_server() as url:
        await measure(url, members, rounds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.members, args.rounds))
