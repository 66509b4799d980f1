"""`klantreis simulate`, `replay` and `backtest`: history into the platform, and rules tried out on it.

- simulate: a network with frictions planted at known rates (services/journey/offline/simulator.py), to Kafka, through
  identity's HTTP doors, or to files; `--check` scores the running journey service against the planted truth.
- replay: a JSON-lines file of CloudEvents into Kafka (or through the ingest endpoints), with a progress bar,
  the throughput, and the rejected lines grouped by reason.
- backtest: a new or changed rule catalogue over stored history in memory, next to the rules in force; nothing
  is published.

Long work shows progress on stderr; results go to stdout. Kafka or a service that does not answer is one line
on stderr saying what to start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from aiokafka.errors import KafkaConnectionError
from pydantic import ValidationError

from deploy import platform
from deploy.commands import command, say
from deploy.progress import Progress
from deploy.runtime import RuntimeProblem
from services.journey.app import rules_in_force
from services.journey.offline import backtest
from services.journey.offline.history import (
    IngestRefused,
    Loaded,
    count_lines,
    load,
    parse_lines,
    post,
    read_topics,
)
from services.journey.offline.simulator import Network, Planted, at_the_doors, simulate
from services.journey.rules import RuleCatalogue, load_rules
from services.journey.settings import JourneySettings
from shared.events import CloudEvent
from shared.events.journey import FrictionDetected
from shared.kafka import EventPublisher, make_broker
from shared.topics import FRICTIONS, MEMBERS, USAGE, ensure_topics

KEY_ENV = "KLANTREIS_KEY"
SIGN_UPS_IN_FLIGHT = 16


def note(message: str) -> None:
    """Progress and waiting, on stderr: stdout stays the result."""
    print(message, file=sys.stderr, flush=True)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _key(given: str | None) -> str:
    key = (
        given
        or os.environ.get(KEY_ENV)
        or (platform.DEV_KEY_FILE.read_text().strip() if platform.DEV_KEY_FILE.exists() else "")
    )
    if not key:
        raise RuntimeProblem(f"no API key: pass --key, set {KEY_ENV}, or run `klantreis run` once for the dev key")
    return key


@contextlib.contextmanager
def _quiet_kafka_logs() -> Iterator[None]:
    """aiokafka logs every failed connection attempt; the command says it once, in one line."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _run(work: Any, settings: JourneySettings) -> Any:
    """asyncio.run(work), with Kafka or a service that is not there said in one line."""
    with _quiet_kafka_logs():
        try:
            return asyncio.run(work)
        except KafkaConnectionError as exc:
            raise RuntimeProblem(
                f"Kafka at {settings.kafka_bootstrap} is not reachable ({type(exc).__name__}); start it with "
                "`klantreis up`"
            ) from None
        except httpx.TransportError as exc:
            raise RuntimeProblem(
                f"{_origin(exc)} does not answer ({type(exc).__name__}); start the services with `klantreis run`"
            ) from None
        except IngestRefused as exc:
            raise RuntimeProblem(str(exc)) from None


def _origin(exc: httpx.TransportError) -> str:
    try:
        url = exc.request.url
    except RuntimeError:  # an error raised before any request was made
        return "a service"
    return f"{url.scheme}://{url.netloc.decode()}"


@contextlib.asynccontextmanager
async def _publisher(settings: JourneySettings) -> AsyncIterator[EventPublisher]:
    """The platform's producer (acks=all, idempotent), after creating any missing topic."""
    await ensure_topics(settings)
    broker = make_broker(settings, service="cli")
    await broker.start()
    try:
        yield EventPublisher(broker, settings)
    finally:
        await broker.stop()


async def _to_kafka(settings: JourneySettings, numbered: Iterable[tuple[int, CloudEvent | str]], total: int) -> Loaded:
    progress = Progress(total)
    try:
        async with _publisher(settings) as publisher:
            return await load(numbered, publisher, progress.update)
    finally:
        progress.close()


def _ingest_urls(settings: JourneySettings) -> dict[str, str]:
    """Which service's `POST /v1/events` takes the events of each topic."""
    return {MEMBERS.name: settings.identity_url, USAGE.name: settings.propositions_url}


async def _to_http(
    settings: JourneySettings, key: str, numbered: Iterable[tuple[int, CloudEvent | str]], total: int, batch: int
) -> Loaded:
    progress = Progress(total)
    headers = {"Authorization": f"Bearer {key}"}
    try:
        async with httpx.AsyncClient(headers=headers, timeout=120) as client:
            return await post(numbered, client, _ingest_urls(settings), progress.update, batch)
    finally:
        progress.close()


# ------------------------------------------------------------------------------------------------ simulate


def _simulate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--members", type=_positive, default=10_000, help="members in the network (default 10,000)")
    parser.add_argument("--seed", type=int, default=7, help="the same seed gives the same network (default 7)")
    parser.add_argument("--out", type=Path, help="write history.jsonl and truth.json into this directory")
    parser.add_argument(
        "--to",
        choices=("kafka", "http", "file"),
        default="kafka",
        help="kafka: produce the history to the input topics (default); http: the start of each journey "
        "through identity's HTTP API; file: only write the files (needs --out)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="wait until the running journey service has caught up, then print precision and recall per rule "
        "against the planted truth (exit 1 unless exact)",
    )
    parser.add_argument("--key", help=f"API key (ingest for --to http, operator or analyst for --check); default "
                        f"${KEY_ENV}, else the development key of `klantreis run`")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=600, help="seconds --check waits at most (default 600)")


@command("simulate", "a simulated library network with frictions planted at known rates", _simulate_arguments)
def cmd_simulate(args: argparse.Namespace) -> int:
    settings = JourneySettings()
    if args.to == "file" and args.out is None:
        raise RuntimeProblem("--to file only writes files: give --out DIR")
    if args.check and args.to == "http":
        raise RuntimeProblem(
            "--check needs the history's own event times: use --to kafka (over HTTP identity stamps each sign-up "
            "with the time it arrives, so only the start of each journey is posted, and its windows close later)"
        )
    key = _key(args.key) if args.check or args.to == "http" else ""

    note(f"simulating {args.members:,} members (seed {args.seed}) …")
    network = simulate(args.members, seed=args.seed)
    say(
        f"simulated {args.members:,} members (seed {args.seed}): {len(network.events):,} events, "
        f"{len(network.truth):,} frictions planted"
    )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        history, truth = args.out / "history.jsonl", args.out / "truth.json"
        network.write(history, truth)
        say(f"wrote {history} and {truth}")

    if args.to == "kafka":
        loaded = _run(_to_kafka(settings, enumerate(network.events, start=1), len(network.events)), settings)
        say(
            f"{loaded.produced:,} events produced to Kafka in {loaded.seconds:.1f} s: {loaded.per_second:,.0f} events/s"
        )
    elif args.to == "http":
        _run(_through_the_doors(settings, key, network), settings)

    if not args.check:
        return 0
    diffs = _run(_check(settings, key, network, args.timeout), settings)
    say(backtest.score_table(diffs))
    if backtest.exact(diffs):
        say("detected exactly as planted: precision 1.000 and recall 1.000 for every rule")
        return 0
    note("klantreis: the frictions detected differ from the planted truth (see the table)")
    return 1


async def _through_the_doors(settings: JourneySettings, key: str, network: Network) -> None:
    """Registrations and desk card activations as CloudEvents through identity's `POST /v1/events`, the sign-ups
    completing them through `POST /v1/members`: identity keeps the member ids, stamps the times, and decides
    channel switches and duplicate suspicions itself. The rest of each journey lies in the future."""
    doors = at_the_doors(network, datetime.now(UTC).date())
    members_url = {MEMBERS.name: settings.identity_url}
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:
        now = datetime.now(UTC)
        registrations = [(n, d.registration.model_copy(update={"time": now})) for n, d in enumerate(doors, 1)]
        progress = Progress(len(registrations), unit="registrations")
        started = await post(registrations, client, members_url, progress.update)
        progress.close()
        _door_report("registrations", "identity POST /v1/events", started)

        people = [(n, d.person, d.duplicate) for n, d in enumerate(doors, 1) if d.person is not None]
        signed = await _sign_up(client, settings.identity_url, [(n, p) for n, p, dup in people if not dup])
        # One at a time and after the others: a duplicate posted while the member it shares an address with
        # is still being signed up would not be noticed.
        signed.extend(await _sign_up(client, settings.identity_url, [(n, p) for n, p, dup in people if dup], 1))
        _door_report("sign-ups", "identity POST /v1/members", signed)

        now = datetime.now(UTC)
        activations = [(n, d.card_activation.model_copy(update={"time": now}))
                       for n, d in enumerate(doors, 1) if d.card_activation is not None]  # fmt: skip
        with Progress(len(activations), unit="card activations") as progress:
            activated = await post(activations, client, members_url, progress.update)
        _door_report("card activations at the desk", "identity POST /v1/events", activated)
    say("the rest of each journey (logins, loans, courses) lies in the future; identity decided channel switches")
    say("and duplicate suspicions itself. The journey service sees the windows close as the wall clock passes them.")


async def _sign_up(
    client: httpx.AsyncClient,
    url: str,
    people: Sequence[tuple[int, dict[str, Any]]],
    in_flight: int = SIGN_UPS_IN_FLIGHT,
) -> Loaded:
    loaded = Loaded()
    progress = Progress(len(people), unit="sign-ups")
    started = time.perf_counter()
    slots = asyncio.Semaphore(in_flight)

    async def one(number: int, person: dict[str, Any]) -> None:
        async with slots:
            response = await client.post(url.rstrip("/") + "/v1/members", json=person)
        if response.status_code == 202:
            loaded.produced += 1
        elif response.status_code in (401, 403):
            raise IngestRefused(f"{url} answered {response.status_code}: the key needs the ingest role")
        else:
            problem = response.json() if "json" in response.headers.get("content-type", "") else {}
            fields = "; ".join(f"{e['field']}: {e['message']}" for e in problem.get("errors", []))
            loaded.rejected.append((number, f"{response.status_code} {fields or problem.get('detail', '')}"))
        progress.update(loaded.produced + len(loaded.rejected))

    try:
        await asyncio.gather(*(one(n, p) for n, p in people))
    finally:
        progress.close()
    loaded.seconds = time.perf_counter() - started
    return loaded


def _door_report(what: str, door: str, loaded: Loaded) -> None:
    say(
        f"{what}: {loaded.produced:,} accepted by {door} ({loaded.per_second:,.0f}/s), {len(loaded.rejected):,} refused"
    )
    for reason, count, numbers in loaded.reasons():
        say(f"  {count:>7,} x {reason}  (members {', '.join(str(n) for n in numbers)})")


async def _check(settings: JourneySettings, key: str, network: Network, within: float) -> list[backtest.RuleDiff]:
    await _wait_settled(settings, key, within)
    read = await read_topics(
        settings.kafka_bootstrap, [settings.topic(FRICTIONS.name)], security=settings.kafka_security()
    )
    members = {p.member_id for p in network.truth} | {e.subject for e in network.events if e.subject}
    detected = [
        (str(e.data["rule"]), e.subject, str(e.data["start_event_id"]))
        for e in read.events
        if e.type == FrictionDetected.event_type and e.subject in members
    ]
    rules = [r.id for r in rules_in_force(settings).rules]
    return backtest.compare(_truth_keys(network.truth), detected, rules)


def _truth_keys(truth: Iterable[Planted]) -> list[backtest.FrictionKey]:
    return [(p.rule, p.member_id, p.start_event_id) for p in truth]


async def _wait_settled(settings: JourneySettings, key: str, within: float) -> None:
    """Until the journey service says it is settled: every record applied, quiet, no timer due."""
    url = settings.journey_url.rstrip("/") + "/v1/status"
    started = time.monotonic()
    note(f"waiting for the journey service at {settings.journey_url} to catch up …")
    with Progress(None, unit="records applied", what="journey") as progress:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            while True:
                response = await client.get(url)
                if response.status_code in (401, 403):
                    raise RuntimeProblem(
                        f"{url} answered {response.status_code}: the key needs the operator or analyst role"
                    )
                if response.status_code != 200:
                    raise RuntimeProblem(f"{url} answered {response.status_code}: is it the journey service?")
                status = response.json()
                if status["settled"]:
                    break
                lag = sum(p["lag"] for p in status["partitions"])
                progress.update(status["applied_events"], what=f"journey: {lag:,} records to apply")
                if time.monotonic() - started > within:
                    raise RuntimeProblem(
                        f"the journey service did not settle within {within:.0f} s ({lag:,} records to go)"
                    )
                await asyncio.sleep(1)
    note(f"caught up in {time.monotonic() - started:.1f} s")


# -------------------------------------------------------------------------------------------------- replay


def _replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="CloudEvents in structured form, one JSON object per line")
    parser.add_argument(
        "--to",
        choices=("kafka", "http"),
        default="kafka",
        help="kafka: produce to the topics (default); http: post to the ingest endpoints of identity and "
        "propositions, which check each event",
    )
    parser.add_argument("--key", help=f"an ingest API key for --to http (default ${KEY_ENV}, else the dev key)")
    parser.add_argument("--batch", type=_positive, default=1000, help="events per HTTP request (default 1,000)")


@command(
    "replay",
    "load a history of CloudEvents (JSON lines) into Kafka; prints throughput and the rejected lines by reason",
    _replay_arguments,
)
def cmd_replay(args: argparse.Namespace) -> int:
    settings = JourneySettings()
    path: Path = args.file
    if not path.is_file():
        raise RuntimeProblem(f"no such file: {path}")
    key = _key(args.key) if args.to == "http" else ""
    total = count_lines(path)
    with path.open(encoding="utf-8", errors="replace") as lines:
        numbered = parse_lines(lines)
        if args.to == "kafka":
            loaded = _run(_to_kafka(settings, numbered, total), settings)
            say(loaded.summary("Kafka"))
        else:
            loaded = _run(_to_http(settings, key, numbered, total, args.batch), settings)
            say(loaded.summary("the ingest endpoints"))
    return 2 if loaded.rejected else 0


# ------------------------------------------------------------------------------------------------ backtest


def _backtest_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--history", type=Path, help="a JSON-lines file of CloudEvents (as replay reads)")
    source.add_argument(
        "--from-topics", action="store_true", help="read the platform's input topics from the start, as they are now"
    )
    parser.add_argument("--rules", type=Path, help="a candidate rule catalogue (YAML, as rules.yaml)")
    parser.add_argument(
        "--window",
        action="append",
        default=[],
        metavar="RULE=DURATION",
        help="change one rule's window, e.g. desk-signup-never-online=P14D (repeatable)",
    )
    parser.add_argument("--members", action="store_true", help="list the members flagged by one side only")
    parser.add_argument(
        "--until",
        type=datetime.fromisoformat,
        default=None,
        help="where the history ends: windows still open then are not counted (default: now)",
    )


@command(
    "backtest",
    "run a new or changed rule over stored history, next to the rules in force (publishes nothing)",
    _backtest_arguments,
)
def cmd_backtest(args: argparse.Namespace) -> int:
    settings = JourneySettings()
    if args.rules is None and not args.window:
        raise RuntimeProblem("nothing to compare: give --rules FILE and/or --window RULE=DURATION")
    in_force = rules_in_force(settings)
    try:
        candidate = backtest.candidate_catalogue(
            _load_candidate(args.rules) if args.rules else in_force, [backtest.parse_window(w) for w in args.window]
        )
    except backtest.BacktestError as exc:
        raise RuntimeProblem(str(exc)) from None
    until: datetime = args.until or datetime.now(UTC)
    if until.tzinfo is None:
        until = until.replace(tzinfo=UTC)

    if args.history is not None:
        if not args.history.is_file():
            raise RuntimeProblem(f"no such file: {args.history}")
        with args.history.open(encoding="utf-8", errors="replace") as lines:
            parsed = list(parse_lines(lines))
        events = [item for _, item in parsed if not isinstance(item, str)]
        skipped, source = len(parsed) - len(events), str(args.history)
    else:
        note("reading the input topics from the start …")
        topics = [settings.topic(MEMBERS.name), settings.topic(USAGE.name)]
        read = _run(read_topics(settings.kafka_bootstrap, topics, security=settings.kafka_security()), settings)
        events, skipped, source = read.events, read.undecodable, " and ".join(topics)
    # In event-time order, as the journey service decides them however they arrive (within the lateness).
    events.sort(key=lambda e: e.utc_time)

    note(f"running both catalogues over {len(events):,} events …")
    lateness = settings.journey_allowed_lateness
    in_force_run, candidate_run = backtest.run_both(events, in_force, candidate, lateness, until)
    diffs = backtest.compare_runs(in_force_run, candidate_run, in_force, candidate)

    members = len({e.subject for e in events if e.subject})
    say(f"back-test over {len(events):,} events of {members:,} members ({source}); nothing published")
    if skipped:
        say(f"{skipped:,} records skipped: not valid events")
    say("candidate, against the rules in force:")
    say("\n".join(backtest.describe_change(in_force, candidate)))
    say(f"windows still open at {until.isoformat(timespec='seconds')} are not counted")
    say("")
    say(backtest.backtest_table(diffs))
    say("* differs from the rule in force")
    if args.members:
        say("")
        say(backtest.member_lists(diffs))
    return 0


def _load_candidate(path: Path) -> RuleCatalogue:
    if not path.is_file():
        raise RuntimeProblem(f"no such file: {path}")
    try:
        return load_rules(path)
    except ValidationError as exc:
        errors = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_input=False)]
        raise RuntimeProblem(f"{path} is not a valid rule catalogue: {'; '.join(errors[:5])}") from None
    except yaml.YAMLError as exc:
        raise RuntimeProblem(f"{path}: not YAML: {exc}") from None
