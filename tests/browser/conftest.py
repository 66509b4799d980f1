"""Browser tests: the services on loopback ports (uvicorn, in-process; analytics in a process of its own, since its
embedded ClickHouse data folder belongs to one process and other tests open theirs) against the session's real Kafka
and Redis, driven by Debian's headless Chromium through Playwright (launched by its path: no browser is ever
downloaded). Starting the platform takes seconds, so one platform (and one browser) serves every browser test;
each test gets a fresh browser context (no cookies) and keys of its own, and checks what its own actions did.

Screenshots go to test-artefacts/screenshots/ (ignored by git).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, BrowserContext, Page, ViewportSize, async_playwright

from deploy.runtime import free_port, serving, stop_pid
from services.identity.app import create_app as identity_app
from services.identity.settings import IdentitySettings
from services.journey.app import create_app as journey_app
from services.journey.settings import JourneySettings
from services.notifications.app import create_app as notifications_app
from services.notifications.settings import NotificationsSettings
from services.propositions.app import create_app as propositions_app
from services.propositions.seed import load_seed
from shared.auth import NETWORK, Keyring
from shared.redis import make_redis
from shared.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artefacts" / "screenshots"
SERVICES = ("identity", "propositions", "journey", "notifications")
ROOT = Path(__file__).resolve().parents[2]
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 375, "height": 740}


@dataclass
class Platform:
    settings: Settings
    urls: dict[str, str]
    keyring: Keyring
    apps: dict[str, FastAPI]

    async def key(self, *roles: str, library: str = NETWORK, name: str = "browser test") -> str:
        return await self.keyring.create(name, list(roles), library)

    def client(self, service: str, key: str) -> httpx.AsyncClient:
        """The service's HTTP API, as any client would call it."""
        return httpx.AsyncClient(base_url=self.urls[service], headers={"Authorization": f"Bearer {key}"}, timeout=30)


@contextlib.contextmanager
def explained(step: str) -> Iterator[None]:
    """A failure of `step` named with where it happened, on the one line a test run's summary shows for each of the
    tests the session fixture serves (a bare `AssertionError` from a library says nothing there)."""
    try:
        yield
    except Exception as failure:
        where = traceback.extract_tb(failure.__traceback__)[-1]
        raise RuntimeError(f"{step}: {failure!r} at {where.filename}:{where.lineno} ({where.line})") from failure


@contextlib.contextmanager
def analytics_process(values: dict[str, Any], data: Path, module: str = "services.analytics") -> Iterator[None]:
    """`python -m services.analytics` (or a `module` that runs it) with the platform's settings, its data under
    `data`; stopped at the end."""
    env = {**os.environ, "KLANTREIS_ANALYTICS_CACHE_SECONDS": "0", "KLANTREIS_ANALYTICS_ALLOWED_LATENESS": "PT0S"}
    env |= {f"KLANTREIS_{k.upper()}": str(v) for k, v in values.items()}  # may set the two above
    env["KLANTREIS_ANALYTICS_PATH"] = str(data)
    with (data.parent / "analytics.log").open("ab") as log:
        process = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(values["analytics_url"] + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"analytics did not start; see {data.parent / 'analytics.log'}")
            time.sleep(0.2)
        yield
    finally:
        stop_pid(process.pid)
        process.wait()


@pytest.fixture(scope="session")
async def platform(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Platform]:
    namespace = f"t{uuid.uuid4().hex[:8]}."
    ports = {service: free_port() for service in (*SERVICES, "analytics")}
    urls = {service: f"http://127.0.0.1:{port}" for service, port in ports.items()}
    values: dict[str, Any] = {
        "kafka_bootstrap": kafka_bootstrap,
        "redis_url": redis_url,
        "topic_prefix": namespace,
        "group_prefix": namespace,
        "key_prefix": namespace,
        "partitions": 2,
        "handler_retry_backoff_seconds": 0.05,
        # notifications → identity (contacts; the preference centre's consent changes), stored in Redis below
        "service_key": f"kr_{uuid.uuid4().hex[:12]}_{uuid.uuid4().hex}",
        **{f"{service}_url": url for service, url in urls.items()},
    }
    settings = Settings(**values)
    apps = {
        "identity": identity_app(IdentitySettings(**values)),
        "propositions": propositions_app(settings),
        "journey": journey_app(
            JourneySettings(
                **values,
                journey_allowed_lateness=timedelta(0),
                journey_idle_seconds=0.5,
            )
        ),
        "notifications": notifications_app(NotificationsSettings(**values, notifications_delivery_tick_seconds=0.1)),
    }
    redis = make_redis(settings)
    async with contextlib.AsyncExitStack() as stack:
        with explained("the browser tests' platform did not start"):
            await Keyring(redis, settings).store(settings.service_key, "notifications", ["service", "ingest"])
            for service in SERVICES:
                await stack.enter_async_context(serving(apps[service], port=ports[service], lifespan="on"))
            stack.enter_context(analytics_process(values, tmp_path_factory.mktemp("analytics") / "data"))
        yield Platform(settings, urls, Keyring(redis, settings), apps)
    await redis.aclose()


@pytest.fixture(scope="module")
async def seeded(platform: Platform) -> Platform:
    """The catalogue loaded: notifications learns the libraries' names from the catalogue topic."""
    admin = await platform.key("admin")
    async with platform.client("propositions", admin) as client:
        await load_seed(client)
    return platform


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run deploy/bootstrap.sh (it installs Debian's chromium)", pytrace=False)
    return CHROMIUM


@pytest.fixture(scope="session")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with contextlib.AsyncExitStack() as stack:
        launched = await _launched(stack, chromium)
        yield launched
        await launched.close()


async def _launched(stack: contextlib.AsyncExitStack, chromium: Path) -> Browser:
    """Playwright's driver and the browser, started once more if the first start fails: every browser test of the
    worker depends on this one start (a busy machine's slow start is no reason to fail them all)."""
    try:
        return await _launch(stack, chromium)
    except RuntimeError:
        sys.stderr.write(f"chromium did not launch, trying once more:\n{traceback.format_exc()}")
    return await _launch(stack, chromium)


async def _launch(stack: contextlib.AsyncExitStack, chromium: Path) -> Browser:
    with explained("chromium did not launch"):
        playwright = await stack.enter_async_context(async_playwright())
        return await playwright.chromium.launch(executable_path=str(chromium), headless=True)


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    made = await browser.new_context(viewport=DESKTOP, locale="nl-NL", timezone_id="Europe/Amsterdam")
    made.set_default_timeout(15_000)
    yield made
    await made.close()


@pytest.fixture
async def page(context: BrowserContext) -> Page:
    return await context.new_page()


async def sign_in(page: Page, base_url: str, key: str, next_path: str = "") -> None:
    """Sign in through the form, as a person would: find the field by its label."""
    await page.goto(f"{base_url}/pages/sign-in" + (f"?next={next_path}" if next_path else ""))
    await page.get_by_label("API-sleutel").fill(key)
    await page.get_by_role("button", name="Aanmelden").click()
    await page.wait_for_load_state()


async def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^a-z0-9-]+', '-', name.lower())}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def horizontal_overflow(page: Page) -> int:
    """How many pixels the page is wider than the window (0: no horizontal scroll)."""
    width: int = await page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    return width


_UNLABELLED = """() => Array.from(document.querySelectorAll('input, select, textarea'))
  .filter(el => el.type !== 'hidden' && el.type !== 'submit' && el.type !== 'button')
  .filter(el => !(el.labels && el.labels.length))
  .filter(el => !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby'))
  .map(el => el.name || el.id || el.outerHTML)"""


async def unlabelled_fields(page: Page) -> list[str]:
    """The page's form fields that have no label (an empty list is what every page should give)."""
    names: list[str] = await page.evaluate(_UNLABELLED)
    return names
