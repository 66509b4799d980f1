"""Local processes for a single-node Kafka broker (KRaft), a Redis server and a Zipkin server on 127.0.0.1.

Used by the ``klantreis`` CLI (``up``/``down``/``status``, detached, state in ``.klantreis/``) and by the
test fixtures (child processes on free ports, fresh data directories). No Docker involved: Kafka runs from
the jars Maven fetches into ``.kafka/lib``, Zipkin from the jar it fetches into ``.zipkin`` (both named in
``deploy/kafka/pom.xml``), Redis from ``redis-server``.

Tests and benchmarks also take from here an app served in-process (:func:`serving`) and, for the benchmarks,
Kafka and Redis for one run (:func:`local_infrastructure`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Final, Literal

if TYPE_CHECKING:
    from starlette.types import ASGIApp

PROJECT_ROOT: Final = Path(__file__).resolve().parent.parent
KAFKA_POM: Final = PROJECT_ROOT / "deploy" / "kafka" / "pom.xml"
KAFKA_LIB: Final = PROJECT_ROOT / ".kafka" / "lib"
ZIPKIN_LIB: Final = PROJECT_ROOT / ".zipkin"
STATE_DIR: Final = PROJECT_ROOT / ".klantreis"
RUN_DIR: Final = STATE_DIR / "run"
LOG_DIR: Final = STATE_DIR / "logs"

HOST: Final = "127.0.0.1"

JAVA_HINT: Final = "Java 17 is needed to run Kafka: install it with `apt-get install openjdk-17-jre-headless`"
MAVEN_HINT: Final = "Maven is needed to fetch the Kafka and Zipkin jars: install it with `apt-get install maven`"
REDIS_HINT: Final = "redis-server is needed to run Redis: install it with `apt-get install redis-server`"

# The broker's JVM: small heap, fast start (C1 only), exit instead of limping on after an OOM.
KAFKA_JVM_OPTS: Final = (
    "-Xms128m",
    "-Xmx1g",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
# slf4j-simple (the binding in the pom) is configured with system properties; it writes to stderr,
# which goes to the log file. KafkaRaftServer at info prints the "Kafka Server started" line.
KAFKA_LOG_OPTS: Final = (
    "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
    "-Dorg.slf4j.simpleLogger.log.kafka.server.KafkaRaftServer=info",
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSS",
    "-Dorg.slf4j.simpleLogger.showThreadName=false",
)


class RuntimeProblem(Exception):
    """A problem with the local runtime; ``str()`` is a one-line message meant for a human."""


def _version_from_pom(artifact_id: str) -> str:
    text = KAFKA_POM.read_text(encoding="utf-8")
    match = re.search(rf"<artifactId>{re.escape(artifact_id)}</artifactId>\s*<version>([^<\s]+)</version>", text)
    if match is None:
        raise RuntimeProblem(f"no <version> for {artifact_id} in {KAFKA_POM}")
    return match.group(1)


# deploy/kafka/pom.xml is the one place that names the versions.
KAFKA_VERSION: Final = _version_from_pom("kafka_2.13")
SLF4J_SIMPLE_VERSION: Final = _version_from_pom("slf4j-simple")
ZIPKIN_VERSION: Final = _version_from_pom("zipkin-server")
ZIPKIN_JAR: Final = f"zipkin-server-{ZIPKIN_VERSION}-exec.jar"


# --------------------------------------------------------------------------------------------- tools


def require_tool(name: str, install_hint: str) -> str:
    """Path of the executable ``name``; raise RuntimeProblem(install_hint) when it is not on PATH.

    ``install_hint`` is the whole one-line message, e.g. :data:`JAVA_HINT`.
    """
    path = shutil.which(name)
    if path is None:
        raise RuntimeProblem(install_hint)
    return path


def _kafka_jars_present(lib: Path = KAFKA_LIB) -> bool:
    return (lib / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file() and (
        lib / f"slf4j-simple-{SLF4J_SIMPLE_VERSION}.jar"
    ).is_file()


def _last_lines(text: str, count: int = 5) -> str:
    """Condense tool or log output into one line: the first error lines if any, else the last lines."""
    lines = [
        line.strip()[:300]
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith(("at ", "... "))
    ]
    errors = [line for line in lines if re.search(r"\bERROR\b|Exception\b|Error:", line)]
    return " | ".join(errors[:count] if errors else lines[-count:])


def _zipkin_jar_present(lib: Path = ZIPKIN_LIB) -> bool:
    return (lib / ZIPKIN_JAR).is_file()


def _fetch_jars(what: str, lib: Path, present: Callable[[Path], bool], selection: str, quiet: bool) -> Path:
    """Run Maven (``copy-dependencies`` of the pom, the artifacts ``selection`` picks) into a fresh folder and
    swap it in for ``lib``, so an interrupted download or a version bump never leaves a mixed folder. Maven keeps
    what it downloads in its local repository: fetching the other artifacts of the pom later downloads nothing
    twice."""
    require_tool("java", JAVA_HINT)
    mvn = require_tool("mvn", MAVEN_HINT)
    staging = lib.with_name(lib.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    if not quiet:
        print(f"fetching {what} with Maven into {lib} …", flush=True)
    command = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(KAFKA_POM),
        "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
        "-DincludeScope=runtime",
        selection,
        f"-DoutputDirectory={staging}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not present(staging):
        shutil.rmtree(staging, ignore_errors=True)
        detail = _last_lines(result.stdout + "\n" + result.stderr, 3) or f"exit code {result.returncode}"
        raise RuntimeProblem(f"fetching {what} with Maven failed: {detail}")
    shutil.rmtree(lib, ignore_errors=True)
    staging.rename(lib)
    return lib


def ensure_kafka_jars(quiet: bool = True) -> Path:
    """Make sure ``.kafka/lib`` holds the broker jars named in ``deploy/kafka/pom.xml``; return the folder.
    A no-op when they are there."""
    if _kafka_jars_present():
        return KAFKA_LIB
    return _fetch_jars(
        f"the Kafka {KAFKA_VERSION} jars", KAFKA_LIB, _kafka_jars_present, "-DexcludeArtifactIds=zipkin-server", quiet
    )


def ensure_zipkin_jar(quiet: bool = True) -> Path:
    """Make sure ``.zipkin`` holds the Zipkin server jar named in ``deploy/kafka/pom.xml``; return the jar.
    A no-op when it is there."""
    if not _zipkin_jar_present():
        only_zipkin = "-DincludeArtifactIds=zipkin-server"
        _fetch_jars(f"the Zipkin {ZIPKIN_VERSION} server", ZIPKIN_LIB, _zipkin_jar_present, only_zipkin, quiet)
    return ZIPKIN_LIB / ZIPKIN_JAR


def ensure_redis_server() -> str:
    """Path of ``redis-server``; installs it with apt-get when missing and running as root."""
    path = shutil.which("redis-server")
    if path is not None:
        return path
    apt_get = shutil.which("apt-get")
    if apt_get is not None and hasattr(os, "geteuid") and os.geteuid() == 0:
        print("installing redis-server with apt-get …", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in ([apt_get, "update", "-qq"], [apt_get, "install", "-y", "-qq", "redis-server"]):
            result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                detail = _last_lines(result.stderr or result.stdout, 2)
                raise RuntimeProblem(f"`{' '.join(command[1:])}` failed ({detail}); {REDIS_HINT}")
        path = shutil.which("redis-server")
    if path is None:
        raise RuntimeProblem(REDIS_HINT)
    return path


# ----------------------------------------------------------------------------------------- processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 is the state), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def _start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot), to tell a pid from a reused one."""
    stat = _proc_stat(pid)
    return int(stat[19]) if stat is not None and len(stat) > 19 else None


def pid_alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _proc_stat(pid)
    return stat is None or stat[0] not in ("Z", "X")


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a live process (Linux), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def stop_pid(pid: int, timeout: float = 30.0) -> bool:
    """SIGTERM ``pid``, wait up to ``timeout`` s, then SIGKILL. False when it was not running."""
    if not pid_alive(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            kill_deadline = time.monotonic() + 10
            while pid_alive(pid) and time.monotonic() < kill_deadline:
                time.sleep(0.05)
            break
        time.sleep(0.05)
    return True


def _stop_process(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _log_tail(path: Path, offset: int = 0, count: int = 5) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read()[-16384:].decode("utf-8", "replace")
    except OSError:
        return ""
    return _last_lines(text, count)


@dataclass
class _Launch:
    """What a node keeps about the process it started (or was told about)."""

    pid: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    log_offset: int = 0


def launch(
    command: list[str], log_file: Path, *, detach: bool, cwd: Path, env: dict[str, str] | None = None
) -> _Launch:
    """Start a process with its output appended to `log_file` (a new session when detached)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        offset = log.tell()
        try:
            proc = subprocess.Popen(
                command,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=detach,
                env=env,
            )
        except OSError as exc:
            raise RuntimeProblem(f"could not start {command[0]}: {exc.strerror or exc}") from exc
    return _Launch(pid=proc.pid, proc=proc, log_offset=offset)


def _check_ports_free(component: str, *ports: int) -> None:
    for port in ports:
        if port_open(port):
            raise RuntimeProblem(f"cannot start {component}: {HOST}:{port} is already in use by another process")


# ------------------------------------------------------------------------------------ pid registry


@dataclass(frozen=True)
class PidRecord:
    """What ``up`` remembers about a detached process in ``.klantreis/run/<name>.pid``."""

    pid: int
    address: str = ""
    start_ticks: int | None = None


def _pid_path(name: str) -> Path:
    return RUN_DIR / f"{name}.pid"


def write_pid(name: str, pid: int, address: str = "") -> None:
    """Remember a detached process (and where it listens) under ``name``."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    record = {"pid": pid, "address": address, "start_ticks": _start_ticks(pid)}
    path = _pid_path(name)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record) + "\n")
    tmp.replace(path)


def read_record(name: str) -> PidRecord | None:
    """The record for ``name`` if its process is still alive (and is the same process), else None."""
    try:
        raw = json.loads(_pid_path(name).read_text())
        record = PidRecord(pid=int(raw["pid"]), address=str(raw.get("address", "")), start_ticks=raw.get("start_ticks"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not pid_alive(record.pid):
        return None
    if record.start_ticks is not None and _start_ticks(record.pid) not in (None, record.start_ticks):
        return None  # the pid was reused by another process
    return record


def read_pid(name: str) -> int | None:
    """The pid remembered under ``name`` if that process is alive, else None."""
    record = read_record(name)
    return record.pid if record is not None else None


def clear_pid(name: str) -> None:
    """Forget ``name``."""
    _pid_path(name).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------ the servers


@dataclass(kw_only=True)
class LocalServer:
    """What the local servers (Kafka, Redis, Zipkin) share: a process started as a child (tests, benchmarks) or
    detached (``klantreis up``, remembered in the pid registry), waited for until it answers, and stopped.

    ``pid`` may be set to a running server's pid (from the pid registry) so that :meth:`wait_ready` and
    :meth:`stop` work from another process than the one that started it. A subclass says how to start the
    server (:meth:`start`, through :meth:`_launch`) and how to tell that it answers (:meth:`_answers`)."""

    name: ClassVar[str]
    ready_timeout: ClassVar[float]
    ready_poll: ClassVar[float]

    port: int
    log_file: Path | None = None
    pid: int | None = None
    _run: _Launch = field(default_factory=_Launch, init=False, repr=False, compare=False)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.log_file if self.log_file is not None else self._default_log

    @property
    def _default_log(self) -> Path:
        return LOG_DIR / f"{self.name}.log"

    def start(self, *, detach: bool) -> int:
        """Start the server; returns its pid. ``detach`` puts it in its own session (outlives us)."""
        raise NotImplementedError

    def _answers(self, timeout: float) -> bool:
        """Whether the server answers (within ``timeout`` s)."""
        raise NotImplementedError

    def _launch(self, command: list[str], *, detach: bool, cwd: Path, env: dict[str, str] | None = None) -> int:
        self._run = launch(command, self.log_path, detach=detach, cwd=cwd, env=env)
        assert self._run.pid is not None
        self.pid = self._run.pid
        return self.pid

    def adopt(self) -> bool:
        """Take over the server ``up`` started before (its pid and port, from the pid registry) if it still runs;
        False when there is none."""
        record = read_record(self.name)
        if record is None:
            return False
        self.pid = record.pid
        self.port = int(record.address.rpartition(":")[2] or self.port)
        return True

    def start_detached(self) -> int:
        """Start the server in a session of its own (it outlives us) and remember it in the pid registry."""
        pid = self.start(detach=True)
        write_pid(self.name, pid, self.address)
        return pid

    def running(self) -> bool:
        proc = self._run.proc
        if proc is not None:
            return proc.poll() is None
        return self.pid is not None and pid_alive(self.pid)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the server answers; RuntimeProblem if it dies or does not answer within ``timeout`` s
        (default: its own ``ready_timeout``)."""
        limit = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            if not self.running():
                tail = _log_tail(self.log_path, self._run.log_offset)
                raise RuntimeProblem(f"{self.name} exited during start-up (log {self.log_path}): {tail}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                tail = _log_tail(self.log_path, self._run.log_offset, 3)
                raise RuntimeProblem(f"{self.name} did not answer on {self.address} within {limit:.0f} s: {tail}")
            if self._answers(min(5.0, max(remaining, 0.5))):
                return
            time.sleep(self.ready_poll)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM the server, SIGKILL after ``timeout`` s. Works for a child or for a ``pid`` set by hand."""
        proc = self._run.proc
        if proc is not None:
            _stop_process(proc, timeout)
        elif self.pid is not None:
            stop_pid(self.pid, timeout)
        self._run = _Launch()
        self.pid = None


# --------------------------------------------------------------------------------------------- Kafka


SCRAM: Final = "SCRAM-SHA-512"
_SCRAM_LOGIN: Final = "org.apache.kafka.common.security.scram.ScramLoginModule"
_PLAIN_LOGIN: Final = "org.apache.kafka.common.security.plain.PlainLoginModule"


def _kafka_properties(
    data_dir: Path,
    port: int,
    controller_port: int,
    super_user: tuple[str, str] | None = None,
    harness_port: int | None = None,
    initial_rebalance_delay_ms: int = 0,
) -> str:
    # Single-node KRaft as in the team note kafka-without-docker.md. Java .properties: no comment on a value line.
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir / "log"),
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        "default.replication.factor": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": str(initial_rebalance_delay_ms),
        "group.min.session.timeout.ms": "1000",
        "num.network.threads": "2",
        "num.io.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
        "log.cleaner.dedupe.buffer.size": "16777216",
        # A restarted broker is refused (DUPLICATE_BROKER_REGISTRATION) until the controller lets the
        # previous incarnation's session expire: 9 s by default, so keep it short on this one loopback node; not
        # shorter than 6 s, or a busy machine (the test suite's workers) misses heartbeats and the broker is fenced.
        "broker.heartbeat.interval.ms": "500",
        "broker.session.timeout.ms": "6000",
    }
    if super_user is not None:
        settings.update(_sasl_properties(port, controller_port, *super_user))
        if harness_port is not None:
            settings.update(_harness_properties(settings, harness_port))
    lines = ["# Written by deploy/runtime.py on every start; edit the code, not this file."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def _sasl_properties(port: int, controller_port: int, super_user: str, password: str) -> dict[str, str]:
    """Clients sign in with SASL/SCRAM-SHA-512 and may do only what an ACL allows them (docs/security.md); the
    broker talks to itself as ``super_user``. The controller listener takes only ``super_user`` too, with PLAIN
    (KRaft keeps SCRAM users in its metadata, which a controller cannot use for its own listener)."""
    client_login = f'{_SCRAM_LOGIN} required username="{super_user}" password="{password}";'
    controller_login = (
        f'{_PLAIN_LOGIN} required username="{super_user}" password="{password}" user_{super_user}="{password}";'
    )
    return {
        "listeners": f"SASL_PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"SASL_PLAINTEXT://{HOST}:{port}",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": SCRAM,
        "sasl.mechanism.inter.broker.protocol": SCRAM,
        f"listener.name.sasl_plaintext.{SCRAM.lower()}.sasl.jaas.config": client_login,
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": controller_login,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{super_user}",
        "allow.everyone.if.no.acl.found": "false",
    }


def _harness_properties(settings: Mapping[str, str], harness_port: int) -> dict[str, str]:
    """A second listener, plaintext, whose clients (``User:ANONYMOUS``) are super users: for a test session's own
    clients (producers feeding input, readers checking output, topic admin) beside services signed in as
    themselves on the SASL listener. Never for a real deployment: anyone reaching the port may do anything."""
    return {
        "listeners": f"{settings['listeners']},HARNESS://{HOST}:{harness_port}",
        "advertised.listeners": f"{settings['advertised.listeners']},HARNESS://{HOST}:{harness_port}",
        "listener.security.protocol.map": f"{settings['listener.security.protocol.map']},HARNESS:PLAINTEXT",
        "super.users": f"{settings['super.users']};User:ANONYMOUS",
    }


def _new_cluster_id() -> str:
    """A Kafka cluster id (URL-safe base64 of a UUID). Like Kafka's own Uuid.randomUuid, never one starting
    with '-': the storage tool would read it as an option."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


async def _kafka_answers(bootstrap: str, limit_s: float, security: Mapping[str, str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(limit_s * 1000), client_id="klantreis-probe", **security
    )
    try:
        await asyncio.wait_for(admin.start(), limit_s)
        await asyncio.wait_for(admin.describe_cluster(), limit_s)
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def kafka_answers(bootstrap: str, timeout: float = 5.0, security: Mapping[str, str] | None = None) -> bool:
    """Whether a Kafka broker at ``bootstrap`` answers a metadata request (runs its own event loop: in a thread of
    its own when called from async code). ``security``: the client's SASL arguments (`Settings.kafka_security()`),
    for a broker with SCRAM users."""
    host, _, port = bootstrap.rpartition(":")
    if not port_open(int(port), host or HOST):
        return False
    probe = _kafka_answers(bootstrap, timeout, security or {})
    try:
        if _loop_running():
            with ThreadPoolExecutor(1, thread_name_prefix="kafka-probe") as thread:
                thread.submit(asyncio.run, probe).result()
        else:
            asyncio.run(probe)
    except Exception:
        return False
    return True


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@dataclass(kw_only=True)
class KafkaNode(LocalServer):
    """A single-node KRaft broker+controller keeping its data in ``data_dir``.

    ``data_dir`` gets ``server.properties`` (rewritten on each start), ``cluster.id`` (made once) and the
    log directory ``log/`` (formatted once).

    With ``scram_users`` (name → password) clients sign in with SASL/SCRAM-SHA-512 and the standard authorizer
    allows them only what ACLs say (``deploy.access``); ``super_user``, one of them, may do anything. The users are
    created when the storage is formatted, so they are fixed for the life of ``data_dir``.
    """

    name: ClassVar[str] = "kafka"
    ready_timeout: ClassVar[float] = 60
    ready_poll: ClassVar[float] = 0.2

    data_dir: Path
    port: int = 9092
    controller_port: int = 9093
    scram_users: Mapping[str, str] = field(default_factory=dict, repr=False)
    super_user: str = "admin"
    # With scram_users: a plaintext listener on this port whose clients may do anything (a test session's harness).
    harness_port: int | None = None
    # How long a new consumer group waits for more members before its first assignment: none for tests (a group
    # of one joins at once); Kafka's default, 3 s, for benchmarks (`local_infrastructure`).
    initial_rebalance_delay_ms: int = 0

    @property
    def harness_bootstrap(self) -> str:
        """``host:port`` of the harness listener (anonymous super users); the SASL one without it."""
        return f"{HOST}:{self.harness_port}" if self.harness_port is not None and self.scram_users else self.bootstrap

    @property
    def bootstrap(self) -> str:
        return self.address

    @property
    def admin_security(self) -> dict[str, str]:
        """The super user's client arguments (aiokafka's names); none for a plaintext broker."""
        if not self.scram_users:
            return {}
        return {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": SCRAM,
            "sasl_plain_username": self.super_user,
            "sasl_plain_password": self.scram_users[self.super_user],
        }

    @property
    def _users_path(self) -> Path:
        return self.data_dir / "scram-users"

    @staticmethod
    def plaintext_data(data_dir: Path) -> bool:
        """Whether ``data_dir`` holds a broker's data formatted before SCRAM users (it keeps running as it was)."""
        return (data_dir / "log" / "meta.properties").is_file() and not (data_dir / "scram-users").is_file()

    @property
    def _default_log(self) -> Path:
        return self.data_dir / "kafka.log"

    @property
    def properties_path(self) -> Path:
        return self.data_dir / "server.properties"

    def _cluster_id(self) -> str:
        path = self.data_dir / "cluster.id"
        if path.is_file():
            cluster_id = path.read_text().strip()
            if cluster_id:
                return cluster_id
        cluster_id = _new_cluster_id()
        path.write_text(cluster_id + "\n")
        return cluster_id

    def _format_storage(self, java: str, classpath: str) -> None:
        wanted = "\n".join(sorted(self.scram_users)) + "\n" if self.scram_users else ""
        if (self.data_dir / "log" / "meta.properties").is_file():
            made = self._users_path.read_text() if self._users_path.is_file() else ""
            if made != wanted:
                raise RuntimeProblem(
                    f"the Kafka data in {self.data_dir} was formatted with other SCRAM users than this start needs; "
                    f"stop Kafka and remove that folder (its topics go with it) to start afresh"
                )
            return
        command = [
            java,
            "-Xmx256m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            *KAFKA_LOG_OPTS[:1],
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            self._cluster_id(),
            "-c",
            str(self.properties_path),
            "--ignore-formatted",
        ]
        for name, password in self.scram_users.items():
            command += ["--add-scram", f"{SCRAM}=[name={name},password={password}]"]
        result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=self.data_dir)
        if result.returncode != 0:
            # The command line holds passwords: say only what the tool printed.
            detail = _last_lines(result.stdout + "\n" + result.stderr, 3)
            raise RuntimeProblem(f"formatting the Kafka storage in {self.data_dir} failed: {detail}")
        if self.scram_users:
            self._users_path.write_text(wanted)

    def start(self, *, detach: bool) -> int:
        """Start the broker; returns its pid. ``detach`` puts it in its own session (outlives us)."""
        java = require_tool("java", JAVA_HINT)
        if not _kafka_jars_present():
            raise RuntimeProblem(f"the Kafka jars are missing in {KAFKA_LIB}: run `klantreis prepare`")
        harness_port = self.harness_port if self.scram_users else None
        _check_ports_free("kafka", self.port, self.controller_port, *([harness_port] if harness_port else []))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        super_user = (self.super_user, self.scram_users[self.super_user]) if self.scram_users else None
        # The file holds the super user's password when there is one: readable by its owner only.
        self.properties_path.touch(mode=0o600)
        self.properties_path.chmod(0o600)
        self.properties_path.write_text(
            _kafka_properties(
                self.data_dir,
                self.port,
                self.controller_port,
                super_user,
                harness_port,
                self.initial_rebalance_delay_ms,
            )
        )
        classpath = str(KAFKA_LIB / "*")
        self._format_storage(java, classpath)
        command = [
            java,
            *KAFKA_JVM_OPTS,
            *KAFKA_LOG_OPTS,
            "-cp",
            classpath,
            "kafka.Kafka",
            str(self.properties_path),
        ]
        return self._launch(command, detach=detach, cwd=self.data_dir)

    def _answers(self, timeout: float) -> bool:
        return kafka_answers(self.bootstrap, timeout=timeout, security=self.admin_security)


# --------------------------------------------------------------------------------------------- Redis


def _resp(*parts: str) -> bytes:
    encoded = [part.encode() for part in parts]
    return f"*{len(encoded)}\r\n".encode() + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in encoded)


def redis_ping(port: int, host: str = HOST, timeout: float = 1.0, auth: tuple[str, str] | None = None) -> bool:
    """Whether a Redis server on host:port answers PING with PONG (signed in as ``auth``, user and password)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall((_resp("AUTH", *auth) if auth else b"") + _resp("PING"))
            reply = b""
            while reply.count(b"\r\n") < (2 if auth else 1):
                chunk = sock.recv(64)
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return False
    return reply.endswith(b"+PONG\r\n")


def redis_signs_in(port: int, user: str, password: str, timeout: float = 1.0) -> bool:
    """Whether the Redis server on 127.0.0.1:port lets ``user`` sign in with ``password``."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(_resp("AUTH", user, password))
            return sock.recv(64).startswith(b"+OK")
    except OSError:
        return False


@dataclass(kw_only=True)
class RedisNode(LocalServer):
    """A Redis server with an append-only file (fsync every second) in ``data_dir``, no RDB snapshots.

    With ``admin_password`` the default user is off and only the ACL user ``admin`` may sign in at start; it adds
    the services' users (``deploy.access.grant_redis``), each limited to its own keys.
    """

    name: ClassVar[str] = "redis"
    ready_timeout: ClassVar[float] = 30
    ready_poll: ClassVar[float] = 0.05

    data_dir: Path
    port: int = 6379
    admin_password: str = field(default="", repr=False)

    @property
    def url(self) -> str:
        return f"redis://{self.address}/0"

    @property
    def _acl_file(self) -> Path:
        return self.data_dir / "users.acl"

    def _write_acl_file(self) -> list[str]:
        if not self.admin_password:
            return []
        self._acl_file.touch(mode=0o600)
        self._acl_file.chmod(0o600)
        self._acl_file.write_text(f"user default off\nuser admin on >{self.admin_password} ~* &* +@all\n")
        return ["--aclfile", str(self._acl_file)]

    @property
    def _default_log(self) -> Path:
        return self.data_dir / "redis.log"

    def start(self, *, detach: bool) -> int:
        """Start redis-server; returns its pid."""
        server = ensure_redis_server()
        _check_ports_free("redis", self.port)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            server,
            "--bind",
            HOST,
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            *self._write_acl_file(),
        ]
        return self._launch(command, detach=detach, cwd=self.data_dir)

    def _answers(self, timeout: float) -> bool:
        auth = ("admin", self.admin_password) if self.admin_password else None
        return redis_ping(self.port, timeout=min(timeout, 1.0), auth=auth)


# -------------------------------------------------------------------------------------------- Zipkin

# The viewer's JVM: in-memory storage, a bounded number of spans (the oldest go first), fast start.
ZIPKIN_JVM_OPTS: Final = (
    "-Xms64m",
    "-Xmx384m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
ZIPKIN_MAX_SPANS: Final = 200_000


def zipkin_answers(port: int, timeout: float = 1.0) -> bool:
    """Whether a Zipkin server on 127.0.0.1:port says it is up (``GET /health``)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=timeout) as response:
            return int(response.status) == 200
    except (OSError, urllib.error.URLError):
        return False


@dataclass(kw_only=True)
class ZipkinNode(LocalServer):
    """A Zipkin server (in-memory storage: traces last until it stops) on 127.0.0.1:``port``.

    It takes spans at ``<url>/api/v2/spans`` and shows them at ``<url>/zipkin/``.
    """

    name: ClassVar[str] = "zipkin"
    ready_timeout: ClassVar[float] = 90
    ready_poll: ClassVar[float] = 0.2

    port: int = 9411

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def spans_endpoint(self) -> str:
        """Where exporters send spans (``OTEL_EXPORTER_ZIPKIN_ENDPOINT``)."""
        return f"{self.url}/api/v2/spans"

    @property
    def ui_url(self) -> str:
        return f"{self.url}/zipkin"

    def start(self, *, detach: bool) -> int:
        """Start the server; returns its pid."""
        java = require_tool("java", JAVA_HINT)
        jar = ensure_zipkin_jar()
        _check_ports_free("zipkin", self.port)
        # Only loopback, only HTTP: the listening address is Armeria's (Spring Boot properties).
        command = [
            java,
            *ZIPKIN_JVM_OPTS,
            "-jar",
            str(jar),
            f"--armeria.ports[0].ip={HOST}",
            f"--armeria.ports[0].port={self.port}",
            "--armeria.ports[0].protocols[0]=http",
        ]
        env = {**os.environ, "STORAGE_TYPE": "mem", "MEM_MAX_SPANS": str(ZIPKIN_MAX_SPANS)}
        return self._launch(command, detach=detach, cwd=jar.parent, env=env)

    def _answers(self, timeout: float) -> bool:
        return zipkin_answers(self.port, timeout=min(timeout, 1.0))


# ---------------------------------------------------------------------------------- tests and benchmarks


@contextlib.asynccontextmanager
async def serving(
    app: ASGIApp, *, port: int | None = None, lifespan: Literal["auto", "on", "off"] = "auto"
) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn in this event loop on 127.0.0.1 (a free port unless ``port`` is given).

    Yields the base URL (``http://127.0.0.1:<port>``) once the server accepts connections; on exit stops it,
    lifespan shutdown included. Raises why it did not start, or RuntimeProblem after 60 s.
    """
    import uvicorn  # here, not at the top: the CLI's process commands do without it

    port = free_port() if port is None else port
    config = uvicorn.Config(app, host=HOST, port=port, lifespan=lifespan, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 60
    try:
        while not server.started:
            if task.done():
                task.result()  # raises why it did not start
                raise RuntimeProblem(f"the server on {HOST}:{port} stopped before it started")
            if time.monotonic() > deadline:
                raise RuntimeProblem(f"the server on {HOST}:{port} did not start within 60 s")
            await asyncio.sleep(0.05)
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        await task


KAFKA_DEFAULT_INITIAL_REBALANCE_DELAY_MS = 3000


@contextlib.contextmanager
def local_infrastructure() -> Iterator[tuple[str, str]]:
    """Kafka and Redis for a benchmark run: ``(bootstrap, redis_url)``.

    The ones named by KLANTREIS_KAFKA_BOOTSTRAP and KLANTREIS_REDIS_URL when both are set; otherwise a broker and
    a redis-server on free ports with data in a temporary directory, stopped (and the data removed) on exit. The
    broker waits 3 s for a new group's members before its first assignment, as Kafka does by default: instances
    started together share the partitions from their first record, rather than a first one taking every partition
    and handing half back at once (a scale-out figure otherwise measures that race).
    """
    kafka_env, redis_env = os.environ.get("KLANTREIS_KAFKA_BOOTSTRAP"), os.environ.get("KLANTREIS_REDIS_URL")
    if kafka_env and redis_env:
        print(f"using Kafka {kafka_env} and Redis {redis_env} from the environment")
        yield kafka_env, redis_env
        return
    ensure_kafka_jars()
    ensure_redis_server()
    with tempfile.TemporaryDirectory(prefix="klantreis-bench-") as base:
        kafka = KafkaNode(
            data_dir=Path(base) / "kafka", port=free_port(), controller_port=free_port(),
            initial_rebalance_delay_ms=KAFKA_DEFAULT_INITIAL_REBALANCE_DELAY_MS,
        )  # fmt: skip
        redis = RedisNode(data_dir=Path(base) / "redis", port=free_port())
        try:
            print("starting Kafka and Redis on free ports …", flush=True)
            redis.start(detach=False)
            kafka.start(detach=False)
            redis.wait_ready()
            kafka.wait_ready(timeout=90)
            yield kafka.bootstrap, redis.url
        finally:
            kafka.stop()
            redis.stop()
