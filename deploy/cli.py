"""The ``klantreis`` command: prepare, start and stop the local runtime (Kafka, Redis and Zipkin on 127.0.0.1).

Subcommands are registered with ``deploy.commands.command`` where they are written: the runtime's here, the
tools' in their own modules (``deploy.deadletters``, ``deploy.journey_cli``), which this module imports when it
builds the parser.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Sequence

from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from deploy import access, platform, runtime
from deploy.audit_cli import record_command_line
from deploy.commands import COMMANDS, Handler, command, say
from deploy.runtime import KafkaNode, LocalServer, RedisNode, RuntimeProblem, ZipkinNode
from services.journey import compiled
from shared.auth import NETWORK, ROLES, Keyring, UnknownRole
from shared.libraries import LibraryDirectory
from shared.redis import make_redis
from shared.settings import Settings
from shared.telemetry import member_traces_url

PROG = "klantreis"
KAFKA = KafkaNode.name
REDIS = RedisNode.name
ZIPKIN = ZipkinNode.name


def _relative(path: object) -> str:
    text = str(path)
    root = str(runtime.PROJECT_ROOT) + "/"
    return text[len(root) :] if text.startswith(root) else text


# ------------------------------------------------------------------------------- local runtime


def local_kafka(port: int = 9092, controller_port: int | None = None) -> KafkaNode:
    """The Kafka node of the local runtime (data and log under ``.klantreis/``), with SCRAM users and ACLs
    unless its data was made before them."""
    data_dir = runtime.STATE_DIR / KAFKA
    return KafkaNode(
        data_dir=data_dir,
        port=port,
        controller_port=controller_port if controller_port is not None else port + 1,
        log_file=runtime.LOG_DIR / "kafka.log",
        scram_users={} if KafkaNode.plaintext_data(data_dir) else access.local_credentials(),
    )


def local_redis(port: int = 6379) -> RedisNode:
    """The Redis node of the local runtime (data and log under ``.klantreis/``), with ACL users."""
    admin_password = access.local_credentials()[access.ADMIN]
    return RedisNode(
        data_dir=runtime.STATE_DIR / REDIS,
        port=port,
        log_file=runtime.LOG_DIR / "redis.log",
        admin_password=admin_password,
    )


def local_zipkin(port: int = 9411) -> ZipkinNode:
    """The trace viewer of the local run (log under ``.klantreis/``)."""
    return ZipkinNode(port=port, log_file=runtime.LOG_DIR / "zipkin.log")


def _port_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kafka-port", type=int, default=9092, help="Kafka client port (default 9092)")
    parser.add_argument(
        "--kafka-controller-port",
        type=int,
        default=None,
        help="Kafka controller port (default: kafka port + 1)",
    )
    parser.add_argument("--redis-port", type=int, default=6379, help="Redis port (default 6379)")
    parser.add_argument("--zipkin-port", type=int, default=9411, help="Zipkin port (default 9411)")
    parser.add_argument(
        "--no-traces",
        dest="traces",
        action="store_const",
        const=False,
        default=None,
        help="no Zipkin, services export no traces (default: KLANTREIS_LOCAL_TRACES, true)",
    )


def _prepare() -> None:
    runtime.require_tool("java", runtime.JAVA_HINT)
    runtime.ensure_kafka_jars(quiet=False)
    runtime.ensure_zipkin_jar(quiet=False)
    runtime.ensure_redis_server()
    if not compiled.build():
        print("journey's engine runs as Python (slower): mypyc or a C compiler is missing", file=sys.stderr)


def start_local_runtime(
    kafka_port: int = 9092,
    kafka_controller_port: int | None = None,
    redis_port: int = 6379,
    zipkin_port: int | None = 9411,
) -> tuple[KafkaNode, RedisNode, ZipkinNode | None]:
    """Start (detached) whatever of Kafka, Redis and Zipkin (unless ``zipkin_port`` is None) is not running yet;
    wait until each answers."""
    _prepare()
    kafka = local_kafka(kafka_port, kafka_controller_port)
    redis = local_redis(redis_port)
    zipkin = local_zipkin(zipkin_port) if zipkin_port is not None else None
    # Redis first: it is ready by the time Kafka has started, and Kafka by the time Zipkin has.
    nodes: list[LocalServer] = [redis, kafka, *([zipkin] if zipkin is not None else [])]
    started: dict[str, float] = {}  # name -> when we started it
    try:
        for node in nodes:
            if not node.adopt():
                say(f"starting {node.name} on {node.address} …")
                started[node.name] = time.monotonic()
                node.start_detached()
        if REDIS not in started and not runtime.redis_signs_in(redis.port, access.ADMIN, redis.admin_password):
            redis.admin_password = ""  # a Redis started before its ACL users: used as it is
            say("redis runs without ACL users (started before them): `klantreis down` and `up` to add them")
        shown = {KAFKA: kafka.bootstrap, REDIS: redis.url, ZIPKIN: zipkin.ui_url if zipkin is not None else ""}
        for node in nodes:
            node.wait_ready()
            where = f"pid {node.pid}, {shown[node.name]}"
            if node.name in started:
                say(f"{node.name} ready in {time.monotonic() - started[node.name]:.1f} s ({where})")
            else:
                say(f"{node.name} already running ({where})")
    except (RuntimeProblem, KeyboardInterrupt):
        # Do not leave half a runtime behind that `up` would then take for a healthy one.
        for node in nodes:
            if node.name in started:
                node.stop()
                runtime.clear_pid(node.name)
        raise
    if started:
        logs = [kafka.log_path, redis.log_path, *([zipkin.log_path] if zipkin is not None else [])]
        say(f"logs: {', '.join(_relative(path) for path in logs)}")
    access.secure_local_runtime(kafka, redis)
    return kafka, redis, zipkin


def traces_wanted(args: argparse.Namespace) -> bool:
    """Zipkin in the local run: unless `--no-traces`, or KLANTREIS_LOCAL_TRACES=false."""
    return bool(args.traces if args.traces is not None else _settings().local_traces)


def _runtime_from(args: argparse.Namespace) -> tuple[KafkaNode, RedisNode, ZipkinNode | None]:
    return start_local_runtime(
        args.kafka_port, args.kafka_controller_port, args.redis_port, args.zipkin_port if traces_wanted(args) else None
    )


# ---------------------------------------------------------------------------------- subcommands


@command("prepare", "fetch the Kafka jars and install redis-server if missing (silent when all is there)")
def cmd_prepare(args: argparse.Namespace) -> int:
    _prepare()
    return 0


@command("up", "start Kafka, Redis and Zipkin in the background (idempotent)", _port_arguments)
def cmd_up(args: argparse.Namespace) -> int:
    _runtime_from(args)
    return 0


@command("down", "stop the services, Kafka, Redis and Zipkin that `up` or `run` started (idempotent)")
def cmd_down(args: argparse.Namespace) -> int:
    platform.stop_services(_settings(), say)
    for name in (ZIPKIN, KAFKA, REDIS):
        pid = runtime.read_pid(name)
        if pid is None:
            say(f"{name} not running")
        else:
            say(f"stopping {name} (pid {pid}) …")
            t0 = time.monotonic()
            runtime.stop_pid(pid, timeout=30)
            say(f"{name} stopped in {time.monotonic() - t0:.1f} s")
        runtime.clear_pid(name)
    return 0


@command("status", "show whether Kafka, Redis, Zipkin and the services are running")
def cmd_status(args: argparse.Namespace) -> int:
    defaults = {
        KAFKA: local_kafka().bootstrap,
        REDIS: f"{runtime.HOST}:{local_redis().port}",
        ZIPKIN: f"{runtime.HOST}:{local_zipkin().port}",
    }
    admin = (access.ADMIN, local_redis().admin_password)
    answer: dict[str, Callable[[int], bool]] = {
        REDIS: lambda port: runtime.redis_ping(port, auth=admin),
        ZIPKIN: runtime.zipkin_answers,
    }
    for name in (KAFKA, REDIS, ZIPKIN):
        record = runtime.read_record(name)
        if record is None:
            say(f"{name:<6} stopped")
            continue
        address = record.address or defaults[name]
        port = int(address.rpartition(":")[2])
        answers = answer.get(name, runtime.port_open)(port)
        state = "running" if answers else "starting"
        rss = runtime.rss_bytes(record.pid)
        memory = f"  rss {rss / 2**20:.0f} MiB" if rss is not None else ""
        say(f"{name:<6} {state:<8} pid {record.pid:<8} {address}{memory}")
    for line in platform.service_status(_settings()):
        say(line)
    return 0


@command(
    "run",
    "start Kafka, Redis, Zipkin and the four services, play the demo and say where to look",
    _port_arguments,
)
def cmd_run(args: argparse.Namespace) -> int:
    kafka, redis, zipkin = _runtime_from(args)
    settings = _settings(kafka.bootstrap, redis.url)
    created = platform.create_topics(settings)
    say(f"topics: {len(created)} created" if created else "topics: all present")
    key = platform.development_key(settings)
    from deploy.vault_cli import upgrade_and_say

    upgrade_and_say(settings, platform.identity_master_keys())  # members stored in the clear are sealed first
    platform.start_services(settings, say, zipkin, access.service_environments(kafka, redis), service_key=key)
    seed_catalogue(settings.propositions_url, key)
    member = platform.play_demo(settings, key, say)
    say("")
    say("where to look:")
    for service in platform.services(settings):
        say(f"  {service.name:<13} {service.url}/docs   (events: {service.url}/asyncapi)")
    if zipkin is not None:
        say(f"  traces        {zipkin.ui_url}/")
        say(f"  the member    {member_traces_url(zipkin.ui_url, member)}")
    say(f"  logs          {_relative(runtime.LOG_DIR)}/")
    say(f"  API key       {key}   (admin, whole network; kept in {_relative(platform.DEV_KEY_FILE)})")
    say("  stop          klantreis down   ·   status: klantreis status")
    return 0


@command("topics", "create the platform's topics that are missing (idempotent)")
def cmd_topics(args: argparse.Namespace) -> int:
    created = platform.create_topics(_settings())
    say("\n".join(created) if created else "all topics present")
    return 0


def _keys_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = sub.add_parser("create", help="create a key; its secret is printed once")
    create.add_argument("--name", required=True, help="who or what uses the key, e.g. 'oba website'")
    create.add_argument("--role", action="append", required=True, choices=ROLES, help="repeat for more roles")
    create.add_argument("--library", default=NETWORK, help="library code the key is limited to (default: all, '*')")
    sub.add_parser("list", help="list keys (never their secrets)")
    revoke = sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")


@command("keys", "create, list and revoke API keys", _keys_arguments)
def cmd_keys(args: argparse.Namespace) -> int:
    settings = _settings()

    async def act() -> int:
        redis = make_redis(settings)
        keyring = Keyring(redis, settings)
        try:
            if args.action == "create":
                await _known_library(settings, args.library)
                key = await keyring.create(args.name, args.role, args.library)
                key_id = key.removeprefix("kr_").partition("_")[0]
                try:
                    await record_command_line(settings, "key.create", f"key:{key_id}")
                except KafkaError as exc:
                    await keyring.revoke(key_id)  # no admin change without its audit record
                    raise RuntimeProblem(f"the audit record could not be written ({type(exc).__name__}): "
                                         "the key is revoked again") from None  # fmt: skip
                say(key)
            elif args.action == "list":
                for info in await keyring.list():
                    state = f"revoked {info.revoked_at}" if info.revoked_at else "active"
                    say(f"{info.key_id}  {info.name:<24} {','.join(info.roles):<30} library {info.library:<12} {state}")
            elif args.key_id not in {info.key_id for info in await keyring.list()}:
                raise RuntimeProblem(f"no key with id {args.key_id}")
            else:
                await record_command_line(settings, "key.revoke", f"key:{args.key_id}")
                await keyring.revoke(args.key_id)
                say(f"revoked {args.key_id}")
            return 0
        except (UnknownRole, ValueError) as exc:
            raise RuntimeProblem(str(exc)) from None
        except KafkaError as exc:
            raise RuntimeProblem(
                f"Kafka did not take the audit record ({type(exc).__name__}): nothing changed"
            ) from None
        except RedisError as exc:
            raise RuntimeProblem(
                f"Redis at {settings.redis_url} is not reachable ({type(exc).__name__}); start it with `klantreis up`"
            ) from None
        finally:
            await redis.aclose()

    return asyncio.run(act())


async def _known_library(settings: Settings, library: str) -> None:
    """A key's library must be a library of the catalogue (read from its topic), or the whole network."""
    if library == NETWORK:
        return
    directory = LibraryDirectory(settings)
    try:
        if await directory.unknown([library]):
            raise RuntimeProblem(f"no library {library!r} in the catalogue (klantreis seed loads the network's)")
    except KafkaError as exc:
        raise RuntimeProblem(f"the catalogue could not be read from Kafka ({type(exc).__name__})") from None
    finally:
        await directory.close()


def _seed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help="the propositions service (default KLANTREIS_PROPOSITIONS_URL)")
    parser.add_argument("--key", default=None, help="an admin API key (default: the development key of `run`)")


@command(
    "seed",
    "load the network catalogue (propositions, libraries, offerings) into the propositions service (idempotent)",
    _seed_arguments,
)
def cmd_seed(args: argparse.Namespace) -> int:
    url = args.url or _settings().propositions_url
    key = args.key or (platform.DEV_KEY_FILE.read_text().strip() if platform.DEV_KEY_FILE.exists() else "")
    if not key:
        raise RuntimeProblem("no API key: pass --key, or run `klantreis run` once to make the development key")
    seed_catalogue(url, key)
    say(f"browse it: {url}/v1/offerings?proposition=boekstart&postcode_area=1034")
    return 0


def seed_catalogue(url: str, key: str) -> None:
    import httpx

    from services.propositions.seed import SeedFailed, SeedReport, load_seed

    async def load() -> SeedReport:
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
            return await load_seed(client, progress=say)

    try:
        asyncio.run(load())
    except httpx.TransportError as exc:
        raise RuntimeProblem(
            f"the propositions service at {url} does not answer ({type(exc).__name__}); start it with `klantreis run`"
        ) from None
    except SeedFailed as exc:
        raise RuntimeProblem(str(exc)) from None


def _settings(kafka_bootstrap: str | None = None, redis_url: str | None = None) -> Settings:
    overrides = {k: v for k, v in (("kafka_bootstrap", kafka_bootstrap), ("redis_url", redis_url)) if v}
    return Settings(**overrides)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    # Imported here, not at start: they register their subcommands (dead-letters; simulate, replay, backtest),
    # and the runtime's commands need neither Kafka clients nor the journey's modules.
    import deploy.deadletters
    import deploy.journey_cli
    import deploy.population_cli
    import deploy.vault_cli  # noqa: F401

    parser = argparse.ArgumentParser(prog=PROG, description="klantreis local runtime and tools")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, spec in COMMANDS.items():
        sub = subparsers.add_parser(name, help=spec.help, description=spec.help)
        if spec.arguments is not None:
            spec.arguments(sub)
        sub.set_defaults(handler=spec.handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    handler: Handler = args.handler
    access.sign_in_as_admin(os.environ)
    try:
        return handler(args)
    except RuntimeProblem as problem:
        print(f"{PROG}: {problem}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr, flush=True)
        return 130
    except BrokenPipeError:
        # stdout was closed early (`klantreis status | head -1`): no traceback, no flush error at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
