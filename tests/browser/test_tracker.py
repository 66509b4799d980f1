"""The web tracker (clients/web, served by identity at /tracker.js) in headless Chromium, on a library's website
served on a loopback port and posting to the real ingest: nothing leaves the page before consent, what it sends
meets the published schemas and lands on Kafka, a page hidden or left sends the rest with a beacon, and the same
snippet on a foreign origin is refused by CORS and publishes nothing."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import jsonschema
import pytest
from playwright.async_api import Page, Request
from starlette.applications import Starlette
from starlette.requests import Request as SiteRequest
from starlette.responses import HTMLResponse
from starlette.routing import Route

from deploy.runtime import serving
from tests.browser.conftest import Platform
from tests.support import header, read_topic

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PAGE = """<!doctype html>
<html lang="nl"><head><meta charset="utf-8"><title>BoekStart</title>
<meta name="klantreis:proposition" content="boekstart">
<script async src="{tracker}" data-key="{key}" data-flush-ms="{flush_ms}"></script></head>
<body><h1>BoekStart</h1>
<button onclick="klantreis.consent(true)">Cookies accepteren</button>
<a href="/e-books?wait={flush_ms}" data-klantreis-handoff="ebook"
   data-klantreis-proposition="e-books">Naar de e-books</a>
</body></html>"""


def library_site(tracker: str, key: str) -> Starlette:
    """The library's pages; `?wait=<ms>` sets how long the tracker lets events wait for a batch (default 1 s)."""

    async def page(request: SiteRequest) -> HTMLResponse:
        return HTMLResponse(PAGE.format(tracker=tracker, key=key, flush_ms=request.query_params.get("wait", "1000")))

    return Starlette(routes=[Route("/boekstart", page), Route("/e-books", page)])


@dataclass
class Site:
    url: str
    key: str
    library: str


@pytest.fixture
async def library(platform: Platform) -> str:
    """A library of its own whose website is on a loopback port, and whose publishable key the site carries."""
    code = f"trk-{secrets.token_hex(3)}"
    async with platform.client("propositions", await platform.key("admin")) as propositions:
        response = await propositions.put(
            f"/v1/libraries/{code}",
            json={"name": "Bibliotheek Tracker", "website_origins": [], "postcode_areas": []},
        )
        assert response.status_code in (200, 202), response.text
    return code


@pytest.fixture
async def site(platform: Platform, library: str) -> AsyncIterator[Site]:
    async with platform.client("identity", await platform.key("admin")) as identity:
        made = await identity.post("/v1/publishable-keys", json={"library": library})
        assert made.status_code == 201, made.text
    key = made.json()["key"]
    async with serving(library_site(f"{platform.urls['identity']}/tracker.js", key)) as url:
        async with platform.client("propositions", await platform.key("admin")) as propositions:
            response = await propositions.put(
                f"/v1/libraries/{library}", json={"name": "Bibliotheek Tracker", "website_origins": [url]}
            )
            assert response.status_code in (200, 202), response.text
        yield Site(url, key, library)


def posts_to_ingest(page: Page) -> list[Request]:
    """Every request the page makes to the ingest, as it makes them."""
    seen: list[Request] = []
    page.on("request", lambda request: seen.append(request) if "/v1/events" in request.url else None)
    return seen


async def tracker_ready(page: Page) -> None:
    await page.wait_for_function("() => window.klantreis !== undefined")


async def landed(platform: Platform, subject: str, count: int) -> list[Any]:
    """The records of `subject` on identity's topic, once there are `count` of them."""
    topic = platform.settings.topic("identity.members.v1")

    def mine(records: list[Any]) -> list[Any]:
        return [r for r in records if header(r, "ce_subject") == subject]

    return mine(
        await read_topic(platform.settings.kafka_bootstrap, topic, until=lambda records: len(mine(records)) >= count)
    )


# Notes each beacon's address in the site's sessionStorage (kept across the navigation), then sends it as it would.
SPY_ON_BEACONS = """
const send = navigator.sendBeacon.bind(navigator);
navigator.sendBeacon = (url, body) => {
  const sent = send(url, body);
  const log = JSON.parse(sessionStorage.getItem("beacons") || "[]");
  sessionStorage.setItem("beacons", JSON.stringify([...log, {url: String(url), type: body.type, sent}]));
  return sent;
};
"""


async def test_nothing_leaves_the_page_before_consent_then_what_it_sends_meets_the_schemas_and_lands_on_kafka(
    platform: Platform, site: Site, page: Page
) -> None:
    requests = posts_to_ingest(page)
    await page.add_init_script(SPY_ON_BEACONS)
    await page.goto(f"{site.url}/boekstart?email=sanne@example.nl")
    await tracker_ready(page)
    await page.evaluate("() => window.klantreis.flush()")  # asked to send: without consent it does not
    await page.evaluate("() => window.klantreis.pageHide()")  # nor a beacon when the page is hidden
    assert requests == []
    assert await page.evaluate("() => sessionStorage.getItem('beacons')") is None
    assert await page.evaluate("() => Object.keys(localStorage)") == []  # no id stored either

    async with page.expect_response(lambda r: "/v1/events" in r.url and r.request.method == "POST") as answer:
        await page.get_by_role("button", name="Cookies accepteren").click()
    response = await answer.value
    assert response.status == 202
    sent = json.loads(response.request.post_data or "[]")
    assert [e["type"].removeprefix("nl.bibliotheek.client.") for e in sent] == [
        "page_viewed.v1",
        "proposition_viewed.v1",
    ]
    visitor = await page.evaluate("() => localStorage.getItem('klantreis.visitor')")
    assert {e["subject"] for e in sent} == {visitor}
    assert sent[0]["data"] == {"path": "/boekstart"}  # the query (an e-mail address here) never leaves the page
    assert await page.evaluate("() => document.cookie") == ""

    async with httpx.AsyncClient(base_url=platform.urls["identity"]) as identity:
        for event in sent:
            schema = (await identity.get(f"/schemas/{event['type']}")).json()
            jsonschema.validate(event, schema)

    records = await landed(platform, visitor, 2)
    assert {header(r, "ce_id") for r in records} == {e["id"] for e in sent}
    assert {header(r, "ce_library") for r in records} == {site.library}


async def test_a_hand_off_clicked_as_the_page_is_left_goes_with_a_beacon(
    platform: Platform, site: Site, page: Page
) -> None:
    requests = posts_to_ingest(page)
    await page.add_init_script(SPY_ON_BEACONS)
    await page.goto(f"{site.url}/boekstart?wait=600000")  # nothing goes by a timer: only leaving sends
    await tracker_ready(page)
    await page.get_by_role("button", name="Cookies accepteren").click()
    visitor = await page.evaluate("() => localStorage.getItem('klantreis.visitor')")

    await page.get_by_role("link", name="Naar de e-books").click()  # tracked, then the page unloads at once
    await page.wait_for_url(f"{site.url}/e-books?wait=600000")
    records = await landed(platform, visitor, 4)  # the first page's three events and the next page's view
    handoff = next(r for r in records if header(r, "ce_type") == "nl.bibliotheek.client.platform_handoff.v1")
    assert json.loads(handoff.value) == {"to_platform": "ebook", "proposition": "e-books"}
    beacons = await page.evaluate("() => JSON.parse(sessionStorage.getItem('beacons'))")
    assert beacons == [{"url": f"{platform.urls['identity']}/v1/events?key={site.key}", "type": "text/plain",
                        "sent": True}]  # fmt: skip
    # The next page posts its own view at once; what the first page had left went by the beacon alone.
    first_page = [r for r in records if json.loads(r.value).get("path", "/boekstart") == "/boekstart"]
    assert len(first_page) == 3  # its page view, proposition view and the hand-off
    fetched = {e["id"] for r in requests for e in json.loads(r.post_data or "[]")}
    assert not fetched & {header(r, "ce_id") for r in first_page}


async def test_the_snippet_on_a_foreign_origin_is_refused_by_cors_and_publishes_nothing(
    platform: Platform, site: Site, page: Page
) -> None:
    async with serving(library_site(f"{platform.urls['identity']}/tracker.js", site.key)) as foreign:
        await page.goto(f"{foreign}/boekstart")
        await tracker_ready(page)
        async with page.expect_event("requestfailed", lambda request: "/v1/events" in request.url) as failure:
            await page.evaluate("() => { window.klantreis.consent(true); return window.klantreis.flush(); }")
        assert (await failure.value).method == "POST"  # the preflight was refused: the post never went
        assert await page.evaluate("() => window.klantreis.pending().length") == 2  # kept for a retry
        await page.evaluate("() => window.klantreis.pageHide()")  # a beacon needs no preflight: the ingest refuses
        visitor = await page.evaluate("() => localStorage.getItem('klantreis.visitor')")

    # A marker posted after them: once it is read, anything the foreign page got through would be read too.
    marker = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": f"/libraries/{site.library}/website",
        "type": "nl.bibliotheek.client.page_viewed.v1",
        "time": datetime.now(UTC).isoformat(),
        "subject": visitor,
        "library": site.library,
        "data": {"path": "/marker"},
    }
    async with platform.client("identity", await platform.key("ingest")) as identity:
        assert (await identity.post("/v1/events", json=marker)).status_code == 202
    [only] = await landed(platform, visitor, 1)
    assert header(only, "ce_id") == marker["id"]
