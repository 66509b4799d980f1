"""How fast the journey service applies a simulated history, next to raw aiokafka and a Quix Streams peer of the
online-sign-up rule, all in one run on one broker, and how much Redis a member costs.

    .venv/bin/python bench/journey_throughput.py [--members 20000] [--partitions 3] [--batch 20000] [--rounds 3]

Uses the Kafka and Redis named by KLANTREIS_KAFKA_BOOTSTRAP and KLANTREIS_REDIS_URL when both are set (under a
topic, group and key prefix of its own); otherwise starts a Kafka broker and a redis-server on free ports
(deploy/runtime.py, as the tests do) and stops them at the end.

Every run is repeated `--rounds` times, round after round, and each figure is the median of its rounds (each
round's seconds are printed beside it): the machine is shared, and a spell of load in one run would otherwise decide
a ratio.

A simulated network (services/journey/offline/simulator.py) is produced twice: its member events alone under one prefix
(the one-rule comparison: the peer and journey read the same topic, the same events), and the whole network under
another. The baselines run in the bench's own process, with what it holds before the runs (the simulated network)
frozen out of the garbage collector's passes, as `serve()` freezes a service's start-up heap in production
(`shared.service.freeze_startup_heap`). The peer and every journey run are each in a process of their own,
exactly as a service runs in production: the peer as `python -m bench.peers.quix_signup`, journey as `python -m
bench.peers.journey_instance` (the service built by `create_app` with the run's settings, its start-up heap frozen
as `serve()` does), one process for the one-rule and all-rules runs, one and then two of one group for the
scale-out. Each run is timed from its first record to its last applied (start-up and group join left out), by the
clock of the process that runs it; for journey, to its last record applied with its batch's effects stored in
Redis and published to Kafka (acknowledged), the point the peer's clock stops at (its last record processed,
before its state store's checkpoint). journey then waits until its topics are quiet (`journey_idle_seconds`, 0.5 s
here) to decide the windows still open at the end of the input, which the peer does after its clock stopped:
printed apart ("settled"), not in the ratios.
- baseline: an AIOKafkaConsumer reading every record of the network's input topics (no decoding);
- the same consumer decoding each record as other consumers do (CloudEvents binding and the type's pydantic model);
- the peer: bench/peers/quix_signup.py, the online-sign-up rule in Quix Streams (RocksDB state), member events;
- journey with that one rule over the same member events, and journey with all ten rules over the network.
Frictions are compared between journey, the peer and the simulator's truth. Redis per member: the growth of
used_memory over the all-rules run (every journey key its process wrote, read once it stopped), divided by the
members.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from statistics import median
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import raw_consume
from bench.peers.quix_signup import PeerRun
from deploy import runtime
from services.journey.offline.history import load
from services.journey.offline.simulator import simulate
from services.journey.settings import JourneySettings
from shared.consumers import end_offsets, read_to_end
from shared.events import CloudEvent, from_kafka, typed_data
from shared.redis import make_redis
from shared.service import ServiceParts, freeze_startup_heap
from shared.topics import ALL_TOPICS, FRICTIONS, MEMBERS, USAGE, ensure_topics

SIGNUP_RULE = "online-signup-not-activated"
ONE_RULE = f"""rules:
  - id: {SIGNUP_RULE}
    kind: absence
    channel_pair: online→offline
    start: {{type: member.signed_up.v1, where: {{channel: online}}}}
    expect: {{type: member.card_activated.v1}}
    within: P14D
"""


def settings_for(kafka: str, redis_url: str, prefix: str, partitions: int, batch: int, **extra: Any) -> JourneySettings:
    return JourneySettings(
        kafka_bootstrap=kafka, redis_url=redis_url, topic_prefix=prefix, group_prefix=prefix, key_prefix=prefix,
        partitions=partitions, journey_batch_size=batch, journey_idle_seconds=0.5, journey_clock="event", **extra,
    )  # fmt: skip


async def produce(settings: JourneySettings, events: list[CloudEvent]) -> None:
    await ensure_topics(settings, ALL_TOPICS)
    parts = ServiceParts.connect("bench", settings)
    await parts.broker.start()
    try:
        loaded = await load(enumerate(events), parts.publisher)
    finally:
        await parts.broker.stop()
        await parts.redis.aclose()
    print(f"produced {loaded.produced:,} events in {loaded.seconds:.1f} s under {settings.topic_prefix}", flush=True)


ROOT = str(Path(__file__).resolve().parent.parent)


async def run_peer(kafka: str, topic: str, group: str, state_dir: str, records: int, lateness_ms: int) -> PeerRun:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.peers.quix_signup", kafka, topic, group, state_dir, str(records),
        str(14 * 86_400_000), str(lateness_ms), stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )  # fmt: skip
    out, _ = await child.communicate()
    found = json.loads(out.decode().strip().splitlines()[-1])
    return PeerRun(found["seconds"], found["records"], {(m, s) for m, s in found["frictions"]})


class Timed(NamedTuple):
    seconds: float  # from the first record applied to the last applied, stored and published
    settled: float  # to every window the input left open decided, once the topics were quiet


def median_timed(timings: list[Timed]) -> Timed:
    return Timed(median(t.seconds for t in timings), median(t.settled for t in timings))


@dataclass
class Rounds:
    """Each run's figures, a round at a time."""

    raw: list[float]
    decoded: list[float]
    peer: list[float]
    one: list[Timed]
    all: list[Timed]
    scaled_one: list[Timed]
    scaled_two: list[Timed]
    redis: list[int]


async def journey_run(settings: JourneySettings, events: int) -> tuple[Timed, set[tuple[str, str, str]]]:
    """How long one journey process takes to apply every record (stored, published) and to settle; the frictions it
    published (an earlier round's, on the same topic, are left out)."""
    frictions = settings.topic(FRICTIONS.name)
    earlier = await topic_ends(settings.kafka_bootstrap, frictions, settings.partitions)
    timed = await journey_processes(settings, events, 1)
    records = await read_to_end(settings.kafka_bootstrap, frictions)
    found = set()
    for record in records:
        if record.offset < earlier[record.partition]:
            continue
        event = from_kafka(record.value, record.headers)
        if event.type.endswith("friction.detected.v1"):
            found.add((str(event.data["rule"]), event.subject or "", str(event.data["start_event_id"])))
    return timed, found


async def topic_ends(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """Each partition's end offset (the next record's) of `topic` now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        ends = await end_offsets(consumer, [TopicPartition(topic, p) for p in range(partitions)])
    finally:
        await consumer.stop()
    return {tp.partition: end for tp, end in ends.items()}


async def journey_processes(settings: JourneySettings, events: int, instances: int) -> Timed:
    """How long `instances` journey processes of one group (bench/peers/journey_instance.py, each the service as it
    runs in production) take to apply every record (stored, published) and to settle, from the first batch any of
    them took in; all started at once. Timed by the stamps the processes put on their progress (polled every 2 ms),
    not by when their reports arrive here. Returns once every process has stopped (its Redis writes done)."""
    # The secrets left out: model_dump_json masks them, and a command line is no place for them; the process reads
    # them from the environment it inherits, as these settings did.
    secrets = {name for name, value in settings if isinstance(value, SecretStr)}
    command = [sys.executable, "-m", "bench.peers.journey_instance", settings.model_dump_json(exclude=secrets)]
    pipe = asyncio.subprocess.PIPE
    children = [
        await asyncio.create_subprocess_exec(*command, cwd=ROOT, stdin=pipe, stdout=pipe) for _ in range(instances)
    ]
    status: list[dict[str, Any]] = [{"done": 0, "settled": False} for _ in children]
    followers: list[asyncio.Task[None]] = []

    async def follow(index: int, child: asyncio.subprocess.Process) -> None:
        assert child.stdout is not None
        async for line in child.stdout:
            status[index] = json.loads(line)

    def alive() -> bool:
        for follower in followers:
            if follower.done():
                follower.result()  # a report it could not read
                raise RuntimeError("a journey process stopped before its run was over")
        return True

    try:
        for child in children:  # built and waiting: now all join the group at once
            assert child.stdout is not None
            if not (ready := await child.stdout.readline()):
                raise RuntimeError("a journey process stopped before it was ready")
            json.loads(ready)
        for child in children:
            assert child.stdin is not None
            child.stdin.write(b"go\n")
        followers += [asyncio.create_task(follow(i, c)) for i, c in enumerate(children)]
        while alive() and sum(s["done"] for s in status) < events:  # noqa: ASYNC110 (polling what the children report)
            await asyncio.sleep(0.005)
        while alive() and not all(s["settled"] for s in status):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        started = min(s["first_batch_at"] for s in status if s["first_batch_at"] is not None)
        done = max(s["done_at"] for s in status if s["done_at"] is not None)
        settled = max(s["settled_at"] for s in status)
        return Timed(done - started, settled - started)
    finally:
        for child in children:
            if child.stdin is not None:
                child.stdin.close()
        for child in children:
            await child.wait()
        for follower in followers:
            follower.cancel()


def fresh(settings: JourneySettings, prefix: str) -> JourneySettings:
    """The same topics read by a group and into state of its own: a run from the start into an empty store."""
    return settings.model_copy(update={"group_prefix": prefix, "key_prefix": prefix})


async def redis_used(redis_url: str) -> int:
    redis = make_redis(JourneySettings(redis_url=redis_url))
    try:
        return int((await redis.info("memory"))["used_memory"])
    finally:
        await redis.aclose()


async def bench(kafka: str, redis_url: str, members: int, partitions: int, batch: int, rounds: int) -> None:
    print(f"simulating {members:,} members …", flush=True)
    network = simulate(members, seed=7)
    member_events = [e for e in network.events if typed_data(e).topic == MEMBERS.name]
    lateness = timedelta(minutes=1)
    run = uuid.uuid4().hex[:6]
    one = settings_for(kafka, redis_url, f"bench{run}a.", partitions, batch)
    everything = settings_for(kafka, redis_url, f"bench{run}b.", partitions, batch)
    await produce(one, member_events)
    await produce(everything, network.events)
    # The baselines below run here, with what this process holds by now (the network) out of the collector's full
    # passes, as serve() leaves a service's start-up heap out of them; the peer and journey in processes of their own.
    freeze_startup_heap()

    topics = [everything.topic(MEMBERS.name), everything.topic(USAGE.name)]
    four = settings_for(kafka, redis_url, f"bench{run}c.", 4, batch)
    await produce(four, network.events)
    truth = {(p.rule, p.member_id, p.start_event_id) for p in network.truth}
    signup_truth = {(m, s) for r, m, s in truth if r == SIGNUP_RULE}
    # Every run `rounds` times, the rounds one after another (each with all runs in turn), so a spell of load on
    # this shared machine slows a round, not one side of a ratio; each figure is the median of its rounds.
    found = Rounds(raw=[], decoded=[], peer=[], one=[], all=[], scaled_one=[], scaled_two=[], redis=[])
    equal = True
    for round_ in range(1, rounds + 1):
        print(f"round {round_} of {rounds} …", flush=True)
        raw_count, raw_seconds = await raw_consume(kafka, topics, partitions, decode=False)
        decoded_count, decoded_seconds = await raw_consume(kafka, topics, partitions, decode=True)
        assert raw_count == decoded_count == len(network.events), (raw_count, decoded_count)
        found.raw.append(raw_seconds)
        found.decoded.append(decoded_seconds)

        with tempfile.TemporaryDirectory() as state_dir:
            peer = await run_peer(kafka, one.topic(MEMBERS.name), f"bench{run}peer{round_}", state_dir,
                                  len(member_events), int(lateness.total_seconds() * 1000))  # fmt: skip
        found.peer.append(peer.seconds)

        with tempfile.TemporaryDirectory() as rules_dir:
            rules = Path(rules_dir) / "one-rule.yaml"
            await asyncio.to_thread(rules.write_text, ONE_RULE)
            one_rule = fresh(one, f"bench{run}a{round_}.").model_copy(update={"journey_rules_file": rules})
            one_timed, one_found = await journey_run(one_rule, len(member_events))
        found.one.append(one_timed)

        before = await redis_used(redis_url)
        all_timed, all_found = await journey_run(fresh(everything, f"bench{run}b{round_}."), len(network.events))
        after = await redis_used(redis_url)
        found.all.append(all_timed)
        found.redis.append(max(0, after - before) // members)

        # Scaling out: the network on 4 partitions, one process and then two of one group.
        found.scaled_one.append(await journey_processes(fresh(four, f"bench{run}c1{round_}."), len(network.events), 1))
        found.scaled_two.append(await journey_processes(fresh(four, f"bench{run}c2{round_}."), len(network.events), 2))

        signup_journey = {(m, s) for _, m, s in one_found}
        equal = equal and signup_journey == peer.frictions == signup_truth and all_found == truth

    events = len(network.events)
    raw_seconds, decoded_seconds, peer_seconds = map(median, (found.raw, found.decoded, found.peer))
    one_timed, all_timed, scaled_one, scaled_two = map(median_timed, (found.one, found.all, found.scaled_one,
                                                                      found.scaled_two))  # fmt: skip
    print()
    print(f"{members:,} members, {events:,} events ({len(member_events):,} member events), {partitions} partitions")
    print(f"broker {kafka}, Redis {redis_url}; each figure the median of {rounds} rounds")
    print(f"{'':<66} {'events/s':>10} {'seconds':>8} {'settled':>8}  rounds (s)")
    rows: list[tuple[str, int, list[float] | list[Timed]]] = [
        ("baseline: raw aiokafka consumer, the network's records", events, found.raw),
        ("raw aiokafka + decoding each CloudEvent (binding, pydantic)", events, found.decoded),
        ("peer: Quix Streams, online-sign-up rule, member events", len(member_events), found.peer),
        ("journey: online-sign-up rule only, the same member events", len(member_events), found.one),
        ("journey: all ten rules, the network (stored, published)", events, found.all),
        ("journey: all rules, 4 partitions, one process", events, found.scaled_one),
        ("journey: all rules, 4 partitions, two processes of one group", events, found.scaled_two),
    ]
    for name, count, timings in rows:
        each = [t.seconds if isinstance(t, Timed) else t for t in timings]
        seconds = median(each)
        settled = [t.settled for t in timings if isinstance(t, Timed)]
        shown = f"{median(settled):>8.2f}" if settled else f"{'':>8}"
        print(f"{name:<66} {count / seconds:>10,.0f} {seconds:>8.2f} {shown}  {' '.join(f'{x:.2f}' for x in each)}")
    peer_rate = len(member_events) / peer_seconds
    print(f"frictions: journey one rule {len(signup_journey):,}, peer {len(peer.frictions):,}, "
          f"truth {len(signup_truth):,}; all rules {len(all_found):,}, truth {len(truth):,} (the last round; "
          f"every round compared)")  # fmt: skip
    print(f"ratio two instances/one (4 partitions): {scaled_one.seconds / scaled_two.seconds:.2f}")
    print(f"ratio journey(one rule)/peer: {len(member_events) / one_timed.seconds / peer_rate:.2f}")
    print(f"ratio journey(all rules)/peer: {events / all_timed.seconds / peer_rate:.2f}")
    print(f"ratio journey/raw+decode: {decoded_seconds / all_timed.seconds:.2f}")
    print(f"redis bytes per member: {int(median(found.redis))}")
    print(f"frictions equal to peer and truth: {'yes' if equal else 'no'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=3)
    batch = JourneySettings.model_fields["journey_batch_size"].default
    parser.add_argument("--batch", type=int, default=batch, help="journey's batch (KLANTREIS_JOURNEY_BATCH_SIZE)")
    parser.add_argument("--rounds", type=int, default=3, help="each run this many times; the medians are shown")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    with runtime.local_infrastructure() as (kafka, redis_url):
        asyncio.run(bench(kafka, redis_url, args.members, args.partitions, args.batch, args.rounds))


if __name__ == "__main__":
    main()
