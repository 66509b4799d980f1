"""The analytics store at network scale: every report and the dashboard over 4 million members and 21 million
events in the embedded store (chDB), and ingest from Kafka end to end.

    .venv/bin/python bench/analytics.py [--members 4000000] [--events-per-member 5.25] [--rounds 5]
        [--kafka-events 300000] [--ingest-rounds 3] [--ingest-timeout 1200] [--ingest-only]

Needs Redis (API keys and dashboard sessions): KLANTREIS_REDIS_URL when set, under key
prefixes of its own, else a redis-server started on a free port. Needs Kafka for the end-to-end part:
KLANTREIS_KAFKA_BOOTSTRAP, else the shared broker on 127.0.0.1:9092, else (when that does not answer) a broker
started on free ports; topics under a unique prefix, deleted at the end.

1. Bulk load: synthetic facts generated inside the store (`INSERT ... SELECT FROM numbers()`): each member signs
   up (home library of 40, age band, postcode area) and has on average 4.25 more events over the following 200
   days — activations, logins (some failed), reservations, loans and returns, courses, channel switches,
   frictions of the catalogue's rules (some resolved), messages. Ids are UUID-shaped, as in production.
2. Reports over HTTP (ASGI, in this process) from the analytics app with its report cache off; each the median of
   `--rounds` runs, each run cold: the store's mark and uncompressed caches dropped before it (the operating
   system's page cache is not: the machine is shared).
3. The dashboard's first load: `GET /pages/dashboard` signed in, every report it shows computed (cache off, cold).
4. Ingest: `--kafka-events` member and usage events published to the shared broker, then consumed
   `--ingest-rounds` times, each round by a raw aiokafka consumer (the baseline: records fetched, nothing decoded)
   and by the analytics service into a fresh store: events/s between its first and its last batch, the median of
   the rounds, and its ratio to the raw consumer's median.
The Redis-scan reports this replaced were the baseline of the first runs (docs/reports.md has those ratios);
they were retired with the move, together with the journey state they scanned.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from bench._common import raw_consume, remove_keys, reports_app
from deploy import runtime
from services.analytics.app import create_app
from services.analytics.handlers import FactWriter
from services.analytics.paths import next_steps_up_to_date
from services.analytics.queries import derived, fingerprint
from services.analytics.reading import Reports
from services.analytics.settings import AnalyticsSettings
from services.analytics.store import AnalyticsStore
from services.journey.offline.simulator import LIBRARIES
from services.journey.rules import load_rules
from shared.auth import Keyring
from shared.events import CloudEvent, to_kafka, typed_data
from shared.events.registry import TYPE_PREFIX
from shared.redis import make_redis
from shared.topics import ensure_topics

FUNNEL = "member.signed_up.v1,member.card_activated.v1,usage.loan_borrowed.v1"
REPORTS: list[tuple[str, str, dict[str, str]]] = [
    ("frictions by rule", "/v1/reports/frictions", {"by": "rule"}),
    ("frictions by rule, library, week", "/v1/reports/frictions", {"by": "rule,library", "period": "week"}),
    ("frictions by age band, month", "/v1/reports/frictions", {"by": "age_band", "period": "month"}),
    ("funnel, 3 steps by channel", "/v1/reports/funnel", {"steps": FUNNEL, "by": "channel", "within": "P30D"}),
    ("reach, per library and band", "/v1/reports/reach", {"age_bands": "0-3,4-11,12-17", "months": "12"}),
    ("retention, 12 months", "/v1/reports/retention", {"months": "12"}),
    ("paths after a failed login", "/v1/reports/paths", {"event": "member.login_failed.v1", "within": "P7D"}),
]
# The reports compared, before their retirement, with journey's Redis-scan reports (docs/reports.md).
COMPARED = {name: name for name in ("reach, per library and band", "funnel, 3 steps by channel",
                                     "frictions by rule, library, week")}  # fmt: skip
KINDS = [
    *["member.card_activated.v1"] * 2, *["member.login_succeeded.v1"] * 3, "member.login_failed.v1",
    *["usage.loan_reserved.v1"] * 2, *["usage.loan_borrowed.v1"] * 4, *["usage.loan_returned.v1"] * 2,
    "usage.activity_registered.v1", "usage.activity_attended.v1", "member.channel_switched.v1",
    "friction.detected.v1", "friction.resolved.v1", "message.sent.v1",
]  # fmt: skip
LIBRARY_CODES = [*LIBRARIES, *(f"bibliotheek-{n:02d}" for n in range(40 - len(LIBRARIES)))]


def _array(values: list[str]) -> str:
    return "[" + ",".join(f"'{v}'" for v in values) + "]"


def generate_sql(members: int, events: int) -> str:
    """Synthetic facts, made inside the store: event n belongs to member n mod `members`; a member's first event
    is the sign-up."""
    rules = [rule.id for rule in load_rules().rules]
    h = "cityHash64(number, 7)"
    return f"""
    INSERT INTO {{db}}.events (event_id, member_id, type, time, library, channel, platform, home_library, age_band,
        postcode_area, source, proposition, to_channel, rule, channel_pair, outcome, friction_id, started, due, seconds)
    SELECT
        UUIDNumToString(MD5(concat('e', toString(number)))) AS event_id,
        UUIDNumToString(MD5(concat('m', toString(m)))) AS member_id,
        type, time, home AS library,
        if(type IN ('member.login_succeeded.v1', 'member.login_failed.v1') OR {h} % 3 = 0, 'online', 'offline'),
        ['website', 'app', 'desk', 'ebook', 'kiosk'][1 + {h} % 5],
        if(k = 0, home, NULL), if(k = 0 OR type = 'friction.detected.v1', band, NULL),
        if(k = 0, toString(1000 + cityHash64(m, 4) % 8999), NULL),
        if(k = 0 AND band = '0-3' AND {h} % 3 = 0, 'consultatiebureau', NULL),
        if(type LIKE 'usage.activity%', ['klik-en-tik', 'taalcafe', 'voorlezen', 'digisterker'][1 + {h} % 4], NULL),
        if(type = 'member.channel_switched.v1', 'online', NULL),
        if(type LIKE 'friction.%', {_array(rules)}[1 + cityHash64(m, 5) % {len(rules)}], NULL),
        multiIf(type = 'friction.detected.v1', 'online→offline', type = 'member.channel_switched.v1',
                'offline→online', NULL),
        multiIf(type = 'friction.detected.v1', 'detected', type = 'friction.resolved.v1', 'resolved',
                type = 'message.sent.v1', 'sent', NULL),
        if(type LIKE 'friction.%', concat(UUIDNumToString(MD5(concat('m', toString(m)))), '-f'), NULL),
        if(type = 'friction.detected.v1', time - toIntervalDay(14), NULL),
        if(type = 'friction.detected.v1', time, NULL),
        if(type = 'friction.resolved.v1', toFloat64({h} % 2000000), NULL)
    FROM (
        SELECT number, number % {members} AS m, intDiv(number, {members}) AS k,
               {_array(LIBRARY_CODES)}[1 + cityHash64(m, 1) % {len(LIBRARY_CODES)}] AS home,
               ['0-3', '4-11', '12-17', '18-64', '65+'][1 + cityHash64(m, 2) % 5] AS band,
               if(k = 0, 'member.signed_up.v1', {_array(KINDS)}[1 + {h} % {len(KINDS)}]) AS type,
               toDateTime64('2024-12-01 00:00:00', 3, 'UTC') + toIntervalSecond(cityHash64(m, 3) % (700 * 86400))
                 + toIntervalSecond(if(k = 0, 0, {h} % (200 * 86400))) AS time
        FROM numbers({events})
    )
    """


async def signed_in(client: httpx.AsyncClient, key: str) -> None:
    """Through the sign-in form, as a browser would (the CSRF token from the form)."""
    form = await client.get("/pages/sign-in")
    found = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert found is not None, "the sign-in form has a CSRF token"
    answer = await client.post("/pages/sign-in", data={"csrf": found.group(1), "api_key": key, "next": ""})
    assert answer.status_code == 303, answer.text


async def cold(store: AnalyticsStore) -> None:
    for cache in ("MARK CACHE", "UNCOMPRESSED CACHE", "QUERY CACHE"):
        await store.command(f"SYSTEM DROP {cache}")


CPU: dict[str, float] = {}  # per timed thing, the median CPU seconds of this process (the store runs inside it)


def cpu_seconds() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


async def median(
    rounds: int, store: AnalyticsStore, run: Callable[[], Awaitable[Any]], name: str | None = None
) -> float:
    """The median wall-clock seconds of `rounds` cold runs; the median CPU seconds they took goes to `CPU[name]` (on a
    shared machine the wall clock says as much about the others' load as about this code)."""
    times, cpu = [], []
    for _ in range(rounds):
        await cold(store)
        started, used = time.perf_counter(), cpu_seconds()
        await run()
        times.append(time.perf_counter() - started)
        cpu.append(cpu_seconds() - used)
    if name is not None:
        CPU[name] = statistics.median(cpu)
    return statistics.median(times)


def timed(name: str, seconds: float) -> str:
    return f"  {name:38} {seconds:7.2f} s  (cpu {CPU[name]:5.2f} s, load {os.getloadavg()[0]:4.1f})"


async def at_scale(redis_url: str, data: Path, members: int, events: int, rounds: int) -> dict[str, Any]:
    settings, app = reports_app(redis_url, data)
    store: AnalyticsStore = app.state.store
    reading: Reports = app.state.reports
    results: dict[str, Any] = {}
    redis = make_redis(settings)
    try:
        started = time.perf_counter()
        await store.insert_select(generate_sql(members, events))
        results["bulk load s"] = time.perf_counter() - started
        started = time.perf_counter()
        windows = reading.windows
        await store.windows_for(fingerprint(windows), derived(windows))
        results["windows s"] = time.perf_counter() - started
        started = time.perf_counter()
        await next_steps_up_to_date(store)  # as the service does at start
        results["next steps s"] = time.perf_counter() - started
        # One row per member, as the engine's background merges leave the members table in the steady state.
        started = time.perf_counter()
        await store.command("OPTIMIZE TABLE {db}.members FINAL")
        results["members s"] = time.perf_counter() - started
        # Measured in the steady state: the engine's background merges of the freshly loaded parts are done.
        for _ in range(600):
            [merging] = await store.rows("SELECT count() AS n FROM system.merges")
            if not int(merging["n"]):
                break
            await asyncio.sleep(1)
        [stored] = await store.rows(
            "SELECT count() AS events, uniqExact(member_id) AS members FROM {db}.events WHERE type != ''"
        )
        [disk] = await store.rows(
            "SELECT sum(bytes_on_disk) AS bytes, countIf(table = 'events') AS parts FROM system.parts "
            "WHERE database = '{db}' AND active"
        )
        results |= {"events": int(stored["events"]), "members": int(stored["members"])}
        results |= {"bytes": int(disk["bytes"]), "parts": int(disk["parts"])}
        print(f"loaded {results['events']:,} events of {results['members']:,} members in "
              f"{results['bulk load s']:.1f} s (their absence windows and frictions derived in "
              f"{results['windows s']:.1f} s, each event's next steps in {results['next steps s']:.1f} s, the members "
              f"table compacted in {results['members s']:.1f} s); "
              f"{results['bytes'] / 1e6:.0f} MB in {results['parts']} parts "
              f"({results['bytes'] / results['events']:.1f} bytes per event, all tables)", flush=True)  # fmt: skip
        key = await Keyring(redis, settings).create("bench", ["analyst", "member-data"])
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b", timeout=600) as c:
            for name, path, params in REPORTS:

                async def report(path: str = path, params: dict[str, str] = params) -> None:
                    (await c.get(path, params=params, headers=headers)).raise_for_status()

                results[name] = await median(rounds, store, report, name)
                print(timed(name, results[name]), flush=True)
            [member] = await store.rows("SELECT any(member_id) AS m FROM {db}.events")

            async def timeline() -> None:
                (await c.get(f"/v1/members/{member['m']}/timeline", headers=headers)).raise_for_status()

            results["a member's timeline"] = await median(rounds, store, timeline, "a member's timeline")
            print(timed("a member's timeline", results["a member's timeline"]), flush=True)
            await signed_in(c, key)

            async def dashboard() -> None:
                answer = await c.get("/pages/dashboard")
                assert answer.status_code == 200, answer.text[:300]

            results["dashboard first load s"] = await median(rounds, store, dashboard, "dashboard first load")
            print(timed("dashboard first load", results["dashboard first load s"]), flush=True)
    finally:
        await store.close()
        await redis.aclose()
        await remove_keys(settings)
    return results


def synthetic_events(count: int) -> list[CloudEvent]:
    """Member and usage events of count / 5 members: a sign-up and four loans or logins each."""
    base = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    made = []
    for n in range(count):
        member, k = f"{uuid.UUID(int=n // 5 + 1)}", n % 5
        at = base + timedelta(seconds=n)
        if k == 0:
            kind, data = "member.signed_up.v1", {"age_band": "18-64", "home_library": "oba", "postcode_area": "1034"}
        elif k % 2:
            kind, data = "usage.loan_borrowed.v1", {"item_id": f"i{n}", "loan_id": f"l{n}"}
        else:
            kind, data = "member.login_succeeded.v1", {"login_platform": "app"}
        made.append(CloudEvent(id=str(uuid.UUID(int=n + 1)), source="/bench", type=TYPE_PREFIX + kind, time=at,
                               subject=member, library="oba", channel="online", platform="app", data=data))  # fmt: skip
    return made


async def publish(settings: AnalyticsSettings, events: list[CloudEvent]) -> None:
    """Straight to the broker with a plain producer (acks=all): the publishing is not what is measured."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        for topic in {settings.topic(typed_data(event).topic) for event in events[:10]}:
            for _ in range(120):  # topics just created: wait until the broker tells where their partitions are
                await producer.client.force_metadata_update()
                if producer.client.cluster.partitions_for_topic(topic):
                    break
                await asyncio.sleep(0.5)
        for start in range(0, len(events), 10_000):
            sent = []
            for event in events[start : start + 10_000]:
                record = to_kafka(event)
                topic = settings.topic(typed_data(event).topic)
                headers = [(name, value.encode()) for name, value in record.headers.items()]
                sent.append(await producer.send(topic, record.value, key=record.key, headers=headers))
            await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def waited(done: Callable[[], bool]) -> None:
    for _ in itertools.count():
        if done():
            return
        await asyncio.sleep(0.01)


async def ingest(bootstrap: str, redis_url: str, data: Path, count: int, rounds: int) -> float:
    """Events published once, then consumed `rounds` times, each round by a raw aiokafka consumer (the baseline) and
    by the analytics service into a fresh store (a consumer group and keys of its own): events/s from the first
    batch handled to the last (the group's joining is not counted). Returns the median of the rounds."""
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    settings = AnalyticsSettings(
        kafka_bootstrap=bootstrap, redis_url=redis_url, topic_prefix=prefix, group_prefix=prefix,
        key_prefix=prefix, analytics_path=data, partitions=3,
    )  # fmt: skip
    try:
        await ensure_topics(settings)
        started = time.perf_counter()
        events = synthetic_events(count)
        topics = sorted({settings.topic(typed_data(event).topic) for event in events})
        await publish(settings, events)
        print(f"published {count:,} events in {time.perf_counter() - started:.1f} s", flush=True)
        raw_rates, rates = [], []
        for round_ in range(1, rounds + 1):
            read, seconds = await raw_consume(bootstrap, topics, settings.partitions, decode=False)
            raw_rates.append(read / seconds)
            own = f"{prefix}r{round_}."
            fresh = settings.model_copy(
                update={"group_prefix": own, "key_prefix": own, "analytics_path": data / f"round{round_}"}
            )
            rates.append(await ingest_round(fresh, count))
            print(f"  round {round_}: raw aiokafka consumer {raw_rates[-1]:,.0f} events/s", flush=True)
            shutil.rmtree(data / f"round{round_}", ignore_errors=True)
        rate, raw = statistics.median(rates), statistics.median(raw_rates)
        print(f"ingest, the median of {rounds} rounds: {rate:,.0f} events/s; a raw aiokafka consumer of the same "
              f"records {raw:,.0f} events/s (ratio ingest/raw consume: {rate / raw:.2f})")  # fmt: skip
        return rate
    finally:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([t for t in await admin.list_topics() if t.startswith(prefix)])
        finally:
            await admin.close()


async def ingest_round(settings: AnalyticsSettings, count: int) -> float:
    """The analytics service consuming the published events into its store: events/s after its first batch."""
    app = create_app(settings)
    writer: FactWriter = app.state.writer
    async with app.router.lifespan_context(app):
        await waited(lambda: writer.handled > 0)
        first_at, first, used = time.perf_counter(), writer.handled, cpu_seconds()
        await waited(lambda: writer.handled >= count)
        rate = (writer.handled - first) / (time.perf_counter() - first_at)
        used = cpu_seconds() - used
        print(f"consumed {writer.handled:,} events in {writer.batches:,} batches, inserted {writer.inserted:,}: "
              f"{rate:,.0f} events/s; {writer.seconds:.1f} s of it in the handler (rows, look-ups, insert: "
              f"{writer.handled / writer.seconds:,.0f} events/s), the rest receiving and decoding; "
              f"cpu {used:.1f} s after the first batch ({(writer.handled - first) / used:,.0f} events per "
              f"cpu second), load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
        return rate


@contextlib.contextmanager
def kafka_broker() -> Iterator[str]:
    """KLANTREIS_KAFKA_BOOTSTRAP, else the shared broker on 127.0.0.1:9092 when it answers, else a single-node
    broker of this run's own on free ports (deploy/runtime.py, as the tests start one), stopped at the end."""
    bootstrap = os.environ.get("KLANTREIS_KAFKA_BOOTSTRAP")
    if bootstrap or runtime.port_open(9092):
        yield bootstrap or "127.0.0.1:9092"
        return
    runtime.ensure_kafka_jars()
    with tempfile.TemporaryDirectory(prefix="klantreis-bench-kafka-") as base:
        kafka = runtime.KafkaNode(data_dir=Path(base), port=runtime.free_port(), controller_port=runtime.free_port())
        print("the shared broker does not answer: starting one on a free port …", flush=True)
        try:
            kafka.start(detach=False)
            kafka.wait_ready(timeout=300)  # minutes on a loaded machine
            yield kafka.bootstrap
        finally:
            kafka.stop()


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """KLANTREIS_REDIS_URL when set (API keys and dashboard sessions), else a redis-server on a free port."""
    url = os.environ.get("KLANTREIS_REDIS_URL")
    if url:
        print(f"using Redis {url} from the environment")
        yield url
        return
    runtime.ensure_redis_server()
    with tempfile.TemporaryDirectory(prefix="klantreis-bench-") as folder:
        redis = runtime.RedisNode(data_dir=Path(folder) / "redis", port=runtime.free_port())
        try:
            redis.start(detach=False)
            redis.wait_ready()
            yield redis.url
        finally:
            redis.stop()


async def ingest_only(args: argparse.Namespace) -> None:
    """Only the end-to-end part (`--ingest-only`): its figure, without the store at scale."""
    base = Path(tempfile.mkdtemp(prefix="klantreis-analytics-bench-"))
    try:
        with redis_server() as redis_url, kafka_broker() as bootstrap:
            rate = await asyncio.wait_for(
                ingest(bootstrap, redis_url, base / "ingest", args.kafka_events, args.ingest_rounds),
                args.ingest_timeout,
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.1f}")
    print(f"store ingest events/s: {rate:.0f}")


async def main(args: argparse.Namespace) -> None:
    if args.ingest_only:
        await ingest_only(args)
        return
    events = int(args.members * args.events_per_member)
    base = Path(tempfile.mkdtemp(prefix="klantreis-analytics-bench-"))
    try:
        with redis_server() as redis_url:
            print(f"at scale: {args.members:,} members, {events:,} events …", flush=True)
            scale = await at_scale(redis_url, base / "scale", args.members, events, args.rounds)
            shutil.rmtree(base / "scale", ignore_errors=True)
            rate: float | str = "not measured (--kafka-events 0)"
            if args.kafka_events:
                try:
                    with kafka_broker() as bootstrap:
                        rate = await asyncio.wait_for(
                            ingest(bootstrap, redis_url, base / "ingest", args.kafka_events, args.ingest_rounds),
                            args.ingest_timeout,
                        )
                except Exception as failure:  # the figures at scale are still worth printing
                    rate = f"not measured ({type(failure).__name__}: {str(failure)[:200]})"
    finally:
        shutil.rmtree(base, ignore_errors=True)
    # journey's Redis-scan reports, the baseline of the first runs, were retired with the move (their figures and
    # the ratios against them are in docs/reports.md); each report here is timed against the store's cold cache.
    print(f"\n{'report':38} {'seconds':>9}")
    for name in COMPARED.values():
        print(f"{name:38} {scale[name]:9.2f}")
    print(f"disk per event bytes: {scale['bytes'] / scale['events']:.1f} ({scale['bytes'] / 1e6:.0f} MB)")
    reports = [name for name, _, _ in REPORTS] + ["a member's timeline"]
    print(f"slowest report at {args.members} members s: {max(scale[r] for r in reports):.2f}")
    print(f"dashboard first load s: {scale['dashboard first load s']:.2f}")
    print(f"store ingest events/s: {rate:.0f}" if isinstance(rate, float) else f"store ingest events/s: {rate}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=4_000_000)
    parser.add_argument("--events-per-member", type=float, default=5.25)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kafka-events", type=int, default=300_000, help="0: no ingest part")
    parser.add_argument("--ingest-timeout", type=float, default=1200, help="seconds the ingest part may take")
    parser.add_argument("--ingest-only", action="store_true", help="only the end-to-end part (ingest from Kafka)")
    parser.add_argument("--ingest-rounds", type=int, default=3, help="consumes of the published events; the median")
    asyncio.run(main(parser.parse_args()))
