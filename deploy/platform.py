"""The services as local background processes, and the short demo the run command plays."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from deploy import runtime
from deploy.runtime import RuntimeProblem, ZipkinNode
from services.identity.vault import MasterKeys, new_master_keys
from shared.auth import Keyring
from shared.redis import make_redis
from shared.settings import Settings
from shared.topics import ensure_topics


@dataclass(frozen=True)
class ServiceProcess:
    name: str
    url: str

    @property
    def pid_name(self) -> str:
        return f"service-{self.name}"

    @property
    def log_path(self) -> Path:
        return runtime.LOG_DIR / f"{self.name}.log"


def services(settings: Settings) -> list[ServiceProcess]:
    return [
        ServiceProcess("identity", settings.identity_url),
        ServiceProcess("propositions", settings.propositions_url),
        ServiceProcess("journey", settings.journey_url),
        ServiceProcess("notifications", settings.notifications_url),
        ServiceProcess("analytics", settings.analytics_url),
    ]


# The local run shortens the activation window so the demo shows a friction within a minute; a variable the
# user set wins.
DEMO_ENVIRONMENT = {
    "KLANTREIS_JOURNEY_ACTIVATION_WINDOW": "PT20S",
    "KLANTREIS_JOURNEY_ALLOWED_LATENESS": "PT2S",
}


def demo_environment(zipkin: ZipkinNode | None = None) -> dict[str, str]:
    """The services' environment: the demo's settings, with a Zipkin server every trace (whole) goes to it and
    the pages link to it; what the user set wins."""
    traces = (
        {
            "OTEL_TRACES_EXPORTER": "zipkin",
            "OTEL_EXPORTER_ZIPKIN_ENDPOINT": zipkin.spans_endpoint,
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
            "KLANTREIS_TRACE_VIEWER_URL": zipkin.ui_url,
        }
        if zipkin is not None
        else {}
    )
    return {**DEMO_ENVIRONMENT, **traces, **os.environ}


def _get(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (our own loopback URL)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def start_services(
    settings: Settings,
    say: Callable[[str], None],
    zipkin: ZipkinNode | None = None,
    identities: Mapping[str, Mapping[str, str]] | None = None,
    service_key: str = "",
) -> None:
    """Start the services that are not running; wait until each is ready (Kafka and Redis reachable). With
    ``zipkin`` they send their traces there; ``identities`` (service → variables) say who each signs in as;
    ``service_key`` is what notifications calls identity with (contacts, the preference centre), unless
    KLANTREIS_SERVICE_KEY is set."""
    env = {"KLANTREIS_SERVICE_KEY": service_key, **demo_environment(zipkin)}
    # identity's master keys go to identity alone.
    others = {name: value for name, value in env.items() if name != MASTER_KEYS_ENV}
    env = {**others, MASTER_KEYS_ENV: identity_master_keys()}
    started = []
    for service in services(settings):
        if runtime.read_pid(service.pid_name) is not None and _get(service.url + "/healthz") == 200:
            say(f"{service.name:<13} already running ({service.url})")
            continue
        launched = runtime.launch(
            [sys.executable, "-m", f"services.{service.name}"],
            service.log_path,
            detach=True,
            cwd=runtime.PROJECT_ROOT,
            env={**(env if service.name == "identity" else others), **(identities or {}).get(service.name, {})},
        )
        assert launched.pid is not None
        runtime.write_pid(service.pid_name, launched.pid, service.url)
        started.append((service, launched.pid, time.monotonic()))
    for service, pid, t0 in started:
        deadline = t0 + 60
        while _get(service.url + "/readyz") != 200:
            if not runtime.pid_alive(pid):
                runtime.clear_pid(service.pid_name)
                raise RuntimeProblem(f"{service.name} stopped at start; see {service.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeProblem(f"{service.name} not ready after 60 s; see {service.log_path}")
            time.sleep(0.2)
        say(f"{service.name:<13} ready in {time.monotonic() - t0:.1f} s ({service.url}, pid {pid})")


@dataclass(frozen=True)
class ServiceChild:
    """A service running as a child process of this one (benchmarks, tests)."""

    name: str
    url: str
    pid: int
    log_path: Path


@contextlib.contextmanager
def child_services(
    names: Sequence[str], environment: Mapping[str, str], log_dir: Path, *, ready_within: float = 120
) -> Iterator[dict[str, ServiceChild]]:
    """The services `names` as child processes on free ports, configured by `environment` (over this process's
    environment; the KLANTREIS_<NAME>_URL of each is set here), ready; stopped on exit."""
    urls = {name: f"http://{runtime.HOST}:{runtime.free_port()}" for name in names}
    env = {**os.environ, **environment, **{f"KLANTREIS_{name.upper()}_URL": url for name, url in urls.items()}}
    children: dict[str, ServiceChild] = {}
    try:
        for name in names:
            log_path = log_dir / f"{name}.log"
            launched = runtime.launch(
                [sys.executable, "-m", f"services.{name}"], log_path, detach=False, cwd=runtime.PROJECT_ROOT, env=env
            )
            assert launched.pid is not None
            children[name] = ServiceChild(name, urls[name], launched.pid, log_path)
        deadline = time.monotonic() + ready_within
        for child in children.values():
            while _get(child.url + "/readyz") != 200:
                if not runtime.pid_alive(child.pid):
                    raise RuntimeProblem(f"{child.name} stopped at start; see {child.log_path}")
                if time.monotonic() > deadline:
                    raise RuntimeProblem(f"{child.name} not ready after {ready_within:.0f} s; see {child.log_path}")
                time.sleep(0.1)
        yield children
    finally:
        for child in children.values():
            runtime.stop_pid(child.pid, timeout=20)


def stop_services(settings: Settings, say: Callable[[str], None]) -> None:
    for service in reversed(services(settings)):
        pid = runtime.read_pid(service.pid_name)
        if pid is not None:
            runtime.stop_pid(pid, timeout=20)
            say(f"{service.name} stopped")
        runtime.clear_pid(service.pid_name)


def service_status(settings: Settings) -> list[str]:
    lines = []
    for service in services(settings):
        pid = runtime.read_pid(service.pid_name)
        if pid is None:
            lines.append(f"{service.name:<13} stopped")
        else:
            ready = _get(service.url + "/readyz") == 200
            lines.append(f"{service.name:<13} {'ready' if ready else 'not ready':<9} pid {pid:<8} {service.url}")
    return lines


def create_topics(settings: Settings) -> list[str]:
    return asyncio.run(ensure_topics(settings))


DEV_KEY_FILE = runtime.STATE_DIR / "dev-key"


def development_key(settings: Settings) -> str:
    """The local run's key with every role for the whole network, kept in .klantreis/dev-key."""

    async def register(key: str | None) -> str:
        redis = make_redis(settings)
        try:
            keyring = Keyring(redis, settings)
            if key is None:
                return await keyring.create("local development", ["admin"])
            # Registered again on every run: cheap, and it survives a wiped Redis.
            await keyring.store(key, "local development", ["admin"])
            return key
        finally:
            await redis.aclose()

    existing = DEV_KEY_FILE.read_text().strip() if DEV_KEY_FILE.exists() else None
    key = asyncio.run(register(existing))
    if existing is None:
        DEV_KEY_FILE.parent.mkdir(parents=True, exist_ok=True)
        DEV_KEY_FILE.write_text(key + "\n")
        DEV_KEY_FILE.chmod(0o600)
    return key


MASTER_KEYS_FILE = runtime.STATE_DIR / "identity-master-keys"
MASTER_KEYS_ENV = "KLANTREIS_IDENTITY_MASTER_KEYS"


def identity_master_keys() -> str:
    """The master keys identity gets in the local run: the environment's when set, else .klantreis/identity-master-keys,
    made with one random key on first use. Never printed or logged (docs/security.md)."""
    configured = os.environ.get(MASTER_KEYS_ENV)
    if configured:
        return configured
    if not MASTER_KEYS_FILE.exists():
        write_master_keys(new_master_keys(datetime.now(UTC).strftime("k%Y%m%dT%H%M%S")))
    return MASTER_KEYS_FILE.read_text().strip()


def write_master_keys(keys: MasterKeys) -> None:
    """Replace the local run's master keys at once (a new file, mode 0600 from the start, renamed over the old)."""
    MASTER_KEYS_FILE.parent.mkdir(parents=True, exist_ok=True)
    fresh = MASTER_KEYS_FILE.with_suffix(".new")
    fresh.unlink(missing_ok=True)
    descriptor = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(keys.text() + "\n")
    fresh.replace(MASTER_KEYS_FILE)


# ------------------------------------------------------------------------------------------------ demo

DEMO_MEMBERS = [
    {"name": "Sanne de Vries", "email": "sanne@example.nl", "birth_date": "1991-04-12", "postcode": "1034 AB",
     "home_library": "oba", "platform": "website"},
    {"name": "Daan Jansen", "email": "daan@example.nl", "birth_date": "2012-09-30", "postcode": "2011 KL",
     "home_library": "haarlem", "platform": "app"},
]  # fmt: skip


def play_demo(settings: Settings, key: str, say: Callable[[str], None], *, wait: float = 90.0) -> str:
    """Two online sign-ups; one member activates the card at the desk, the other does not and gets a message.
    Returns that member's id."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(headers=headers, timeout=10) as http:
        ids = []
        for person in DEMO_MEMBERS:
            response = http.post(settings.identity_url + "/v1/members", json=person)
            response.raise_for_status()
            ids.append(str(response.json()["member_id"]))
        sanne, daan = ids
        say(f"demo: two online sign-ups, at oba (member {sanne}) and at haarlem (member {daan})")
        http.post(
            f"{settings.identity_url}/v1/members/{daan}/card-activation", json={"library": "haarlem"}
        ).raise_for_status()
        say("demo: the haarlem member activates the card at the desk; the oba member does not")
        say("demo: waiting for the activation window to pass …")
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            messages = http.get(f"{settings.notifications_url}/v1/members/{sanne}/inbox").json()["messages"]
            if messages:
                say(f"demo: friction detected; the oba member's inbox now holds: “{messages[0]['title']}”")
                none = http.get(f"{settings.notifications_url}/v1/members/{daan}/inbox").json()["messages"]
                say(f"demo: the haarlem member's inbox holds {len(none)} messages (no friction)")
                say(f"      curl -H 'Authorization: Bearer $KEY' {settings.notifications_url}/v1/members/{sanne}/inbox")
                return sanne
            time.sleep(1)
        raise RuntimeProblem(f"demo: no message after {wait:.0f} s; see the logs in {runtime.LOG_DIR}")
