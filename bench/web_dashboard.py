"""What the dashboard's first load costs, section by section, at scale: each report a section asks (the network's
page, no filters) timed on its own, then the whole page, over bench/analytics.py's synthetic facts.

    .venv/bin/python bench/web_dashboard.py [--members 1000000] [--events-per-member 5.25] [--rounds 1]

Needs Redis for the API key and the session: KLANTREIS_REDIS_URL when set (keys under a prefix of its own), else
a redis-server on a free port. The store is embedded (chDB) in a temporary folder, removed at the end. Each
timing is cold (the store's caches dropped before it, as bench/analytics.py does) and the median of `--rounds`.
The section timings add up to about the page: the page asks them one after the other.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import api_key, remove_keys, reports_app
from bench.analytics import generate_sql, median, redis_server, signed_in
from services.analytics.dashboard import SECTIONS, dashboard_filters, with_period
from services.analytics.queries import derived, fingerprint
from services.analytics.store import AnalyticsStore


async def measure(redis_url: str, data: Path, members: int, events: int, rounds: int) -> dict[str, float]:
    settings, app = reports_app(redis_url, data, "benchweb")
    store: AnalyticsStore = app.state.store
    timings: dict[str, float] = {}
    try:
        started = time.perf_counter()
        await store.insert_select(generate_sql(members, events))
        windows = app.state.reports.windows
        await store.windows_for(fingerprint(windows), derived(windows))
        await store.command("OPTIMIZE TABLE {db}.members FINAL")
        for _ in range(600):  # measured in the steady state, the background merges of the load done
            [merging] = await store.rows("SELECT count() AS n FROM system.merges")
            if not int(merging["n"]):
                break
            await asyncio.sleep(1)
        print(f"{members:,} members, {events:,} events loaded in {time.perf_counter() - started:.0f} s", flush=True)
        key = await api_key(settings, ["analyst"])
        headers = {"Authorization": f"Bearer {key}"}
        filters = dashboard_filters({}, [], None)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b", timeout=600) as c:
            for section in (s for s in SECTIONS if s.shown(filters)):
                # The time series' first question: by month (a long history is answered at once).
                query = section.query(with_period(filters, "month") if section.name == "over-time" else filters)

                async def report(path: str = section.path, params: dict[str, str] = query) -> None:
                    (await c.get(path, params=params, headers=headers)).raise_for_status()

                timings[section.name] = await median(rounds, store, report)
                print(f"  {section.name:14} {timings[section.name]:7.2f} s", flush=True)
            await signed_in(c, key)

            async def page() -> None:
                answer = await c.get("/pages/dashboard")
                assert answer.status_code == 200, answer.text[:300]

            timings["page"] = await median(rounds, store, page)
    finally:
        await store.close()
        await remove_keys(settings)
    return timings


async def main(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="klantreis-web-dashboard-bench-"))
    try:
        with redis_server() as redis_url:
            events = int(args.members * args.events_per_member)
            timings = await measure(redis_url, base / "data", args.members, events, args.rounds)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    sections = sum(v for k, v in timings.items() if k != "page")
    added = timings["retention"] + timings["paths"]
    print(f"sections together s: {sections:.2f} (retention and paths: {added:.2f})")
    print(f"dashboard first load at {args.members} members s: {timings['page']:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--events-per-member", type=float, default=5.25)
    parser.add_argument("--rounds", type=int, default=1)
    asyncio.run(main(parser.parse_args()))
