"""A soak: the four services as separate processes under a steady simulated load, sampled each minute.

    .venv/bin/python bench/soak.py                       # 10 minutes at 1,000 events/s
    .venv/bin/python bench/soak.py --minutes 60 --rate 2000   # the real soak
    .venv/bin/python bench/soak.py --minutes 2           # a quick look

The load: members of the simulated network (services/journey/offline/simulator.py) signing up, activating cards,
logging in, borrowing, produced to `identity.members.v1` and `propositions.usage.v1` at `--rate` events/s, each
event timed now. The activation window is shortened to 20 s (as in `klantreis run`), so sign-ups that are not
activated keep journey's timers firing and notifications deciding and delivering in-app messages all along.

Each minute, for each service: its resident memory (RSS, /proc), its consumer lag (the sum of
`klantreis_consumer_lag` over its groups and partitions, from its /metrics) and the 99th percentile of its handler
time in that minute (`klantreis_handler_duration_seconds`: per message, journey per batch; the upper bound of
the histogram bucket it falls in). The last lines: the fastest RSS growth of any service (least squares over the
samples after the first minute, MiB per hour) and the largest lag seen.

Uses the Kafka and Redis named by KLANTREIS_KAFKA_BOOTSTRAP and KLANTREIS_REDIS_URL when both are set (under a
prefix of its own), otherwise starts both on free ports. Traces are off (OTEL_TRACES_EXPORTER=none) unless the
environment says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import re
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import namespaced
from deploy import runtime
from deploy.platform import child_services
from services.journey.offline.simulator import simulate
from shared.events import CloudEvent
from shared.service import ServiceParts
from shared.settings import Settings
from shared.topics import ALL_TOPICS, ensure_topics

SERVICES = ("identity", "propositions", "journey", "notifications")
TICK = 0.1  # seconds between two rounds of publishing
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")
_LE = re.compile(r'le="([^"]+)"')


@dataclass
class Sample:
    minute: int
    rss_mib: float
    lag: int
    p99_ms: float | None


@dataclass
class Service:
    name: str
    url: str
    pid: int
    samples: list[Sample] = field(default_factory=list)
    _buckets: dict[float, float] = field(default_factory=dict)

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:  # noqa: S310 (loopback)
            return str(response.read().decode())

    def sample(self, minute: int) -> Sample:
        text = self.metrics()
        lag = 0
        buckets: dict[float, float] = {}
        for line in text.splitlines():
            match = _SAMPLE.match(line)
            if match is None:
                continue
            name, labels, value = match.groups()
            if name == "klantreis_consumer_lag":
                lag += int(float(value))
            elif name == "klantreis_handler_duration_seconds_bucket":
                le = _LE.search(labels or "")
                if le is not None:
                    bound = math.inf if le.group(1) == "+Inf" else float(le.group(1))
                    buckets[bound] = buckets.get(bound, 0.0) + float(value)
        minute_buckets = {b: n - self._buckets.get(b, 0.0) for b, n in buckets.items()}
        self._buckets = buckets
        rss = runtime.rss_bytes(self.pid) or 0
        taken = Sample(minute, rss / 2**20, lag, p99_ms(minute_buckets))
        self.samples.append(taken)
        return taken


def p99_ms(cumulative: dict[float, float]) -> float | None:
    """The upper bound (ms) of the bucket the 99th percentile falls in; None without observations."""
    total = cumulative.get(math.inf, 0.0)
    if total <= 0:
        return None
    for bound in sorted(cumulative):
        if cumulative[bound] >= 0.99 * total:
            return bound * 1000
    return None


def growth_mib_per_hour(samples: list[Sample]) -> float:
    """Least-squares slope of RSS over the samples after the first minute (start-up), MiB per hour."""
    points = [(s.minute, s.rss_mib) for s in samples if s.minute >= 1]
    if len(points) < 2:
        points = [(s.minute, s.rss_mib) for s in samples]
    if len(points) < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / len(points)
    mean_m = sum(m for _, m in points) / len(points)
    variance = sum((t - mean_t) ** 2 for t, _ in points)
    slope = sum((t - mean_t) * (m - mean_m) for t, m in points) / variance
    return slope * 60


def member_events(seed: int) -> Iterator[CloudEvent]:
    """An endless stream of simulated members' events, 500 members at a time (fresh ids each round)."""
    for round_ in itertools.count():
        yield from simulate(500, seed=seed + round_).events


async def produce(settings: Settings, rate: int, seconds: float, sent: list[int]) -> None:
    """`rate` events a second for `seconds`, each timed when it is sent; `sent[0]` counts them."""
    parts = ServiceParts.connect("soak", settings)
    await parts.broker.start()
    events = member_events(seed=int(time.time()))
    started = time.monotonic()
    try:
        while (elapsed := time.monotonic() - started) < seconds:
            due = min(int(elapsed * rate) - sent[0], rate)  # never more than a second's worth at once
            if due > 0:
                now = datetime.now(UTC)
                batch = [e.model_copy(update={"time": now}) for e in itertools.islice(events, due)]
                await parts.publisher.publish_many(batch)
                sent[0] += len(batch)
            await asyncio.sleep(TICK)
    finally:
        await parts.broker.stop()
        await parts.redis.aclose()


async def soak(kafka: str, redis_url: str, minutes: int, rate: int) -> None:
    settings = namespaced(Settings, "soak", kafka_bootstrap=kafka, redis_url=redis_url)
    await ensure_topics(settings, ALL_TOPICS)
    environment = {
        "OTEL_TRACES_EXPORTER": os.environ.get("OTEL_TRACES_EXPORTER", "none"),
        "KLANTREIS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "KLANTREIS_REDIS_URL": settings.redis_url,
        "KLANTREIS_TOPIC_PREFIX": settings.topic_prefix,
        "KLANTREIS_GROUP_PREFIX": settings.group_prefix,
        "KLANTREIS_KEY_PREFIX": settings.key_prefix,
        "KLANTREIS_JOURNEY_ACTIVATION_WINDOW": "PT20S",
        "KLANTREIS_JOURNEY_ALLOWED_LATENESS": "PT2S",
    }
    with (
        tempfile.TemporaryDirectory(prefix="klantreis-soak-") as logs,
        child_services(SERVICES, environment, Path(logs)) as children,
    ):
        services = [Service(c.name, c.url, c.pid) for c in children.values()]
        print(f"{minutes} min at {rate:,} events/s; broker {kafka}, Redis {redis_url}, prefix {settings.topic_prefix}")
        print(f"{'min':>3} {'service':<13} {'rss MiB':>8} {'lag':>8} {'p99 ms':>8} {'sent/s':>8}", flush=True)
        sent = [0]
        producing = asyncio.create_task(produce(settings, rate, minutes * 60, sent))
        started, before = time.monotonic(), 0
        for minute in range(minutes + 1):
            await asyncio.sleep(max(0.0, started + minute * 60 - time.monotonic()))
            per_second = (sent[0] - before) / 60 if minute else 0.0
            before = sent[0]
            for service in services:
                s = await asyncio.to_thread(service.sample, minute)
                p99 = f"{s.p99_ms:.0f}" if s.p99_ms is not None else "-"
                print(f"{minute:>3} {service.name:<13} {s.rss_mib:>8.1f} {s.lag:>8,} {p99:>8} {per_second:>8,.0f}")
            sys.stdout.flush()
        await producing
    print(f"sent {sent[0]:,} events in {minutes} min ({sent[0] / (minutes * 60):,.0f}/s)")
    for service in services:
        print(f"{service.name:<13} rss {service.samples[0].rss_mib:.0f} → {service.samples[-1].rss_mib:.0f} MiB, "
              f"{growth_mib_per_hour(service.samples):+.1f} MiB/h")  # fmt: skip
    print(f"rss growth MiB per hour: {max(growth_mib_per_hour(s.samples) for s in services):.1f}")
    print(f"max lag: {max(x.lag for s in services for x in s.samples)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=10, help="how long the load lasts (default 10)")
    parser.add_argument("--rate", type=int, default=1000, help="events per second (default 1000)")
    args = parser.parse_args()
    with runtime.local_infrastructure() as (kafka, redis_url), contextlib.suppress(KeyboardInterrupt):
        asyncio.run(soak(kafka, redis_url, args.minutes, args.rate))


if __name__ == "__main__":
    main()
