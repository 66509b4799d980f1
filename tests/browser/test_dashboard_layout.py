"""The dashboard with two years of history, as library staff read it in Chromium: the page stays a few screens
tall (each section at most one), the time series takes days, weeks or months as the range needs, rankings show
ten rows and the rest behind "show all", a library leads to its own page (rules, channels, age bands), and
retention and paths are charts whose numbers are the reports API's.

An analytics service of its own (a process that first fills its data folder: `dashboard_history`) serves
the history; the shared platform's scripted network stays as the other browser tests expect it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, expect

from deploy.runtime import free_port
from shared.auth import Keyring
from shared.redis import make_redis
from shared.settings import Settings
from shared.web.i18n import NO_NUMBER, Translator
from tests.browser.conftest import (
    DESKTOP,
    PHONE,
    analytics_process,
    horizontal_overflow,
    screenshot,
    sign_in,
    unlabelled_fields,
)

pytestmark = [pytest.mark.browser, pytest.mark.integration]

NL = Translator("nl")
SCREEN = DESKTOP["height"]
# The page before the redesign was 30,604 px with two years of history (34 screens); now a few screens at most.
MOST_SCREENS = 5


@dataclass
class History:
    url: str
    keyring: Keyring

    async def key(self, library: str = "*") -> str:
        return await self.keyring.create("dashboard layout test", ["analyst"], library)

    async def rows(self, key: str, path: str, **params: Any) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {key}"}) as api:
            response = await api.get(path, params=params, timeout=60)
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()["rows"]
        return rows

    async def csv(self, key: str, path: str, **params: Any) -> bytes:
        async with httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {key}"}) as api:
            response = await api.get(path, params={**params, "format": "csv"}, timeout=60)
        assert response.status_code == 200, response.text
        return response.content


@pytest.fixture(scope="module")
async def history(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[History]:
    namespace = f"t{uuid.uuid4().hex[:8]}."
    url = f"http://127.0.0.1:{free_port()}"
    values: dict[str, Any] = {
        "kafka_bootstrap": kafka_bootstrap,
        "redis_url": redis_url,
        "topic_prefix": namespace,
        "group_prefix": namespace,
        "key_prefix": namespace,
        "partitions": 1,
        "analytics_url": url,
        # The history never changes: its reports are computed once and served again, as within the cache time in
        # production (the API's answers the tests compare with come from the same cache).
        "analytics_cache_seconds": 600,
    }
    redis = make_redis(Settings(**values))
    try:
        data = tmp_path_factory.mktemp("dashboard-history") / "data"
        with analytics_process(values, data, module="tests.browser.dashboard_history"):
            yield History(url, Keyring(redis, Settings(**values)))
    finally:
        await redis.aclose()


async def page_height(page: Page) -> int:
    height: int = await page.evaluate("document.documentElement.scrollHeight")
    return height


async def section_heights(page: Page) -> dict[str, int]:
    heights: dict[str, int] = await page.evaluate(
        "Object.fromEntries(Array.from(document.querySelectorAll('section.dash-section'))"
        ".map(s => [s.querySelector('h2').innerText, Math.round(s.getBoundingClientRect().height)]))"
    )
    return heights


async def numbers_of_the_time_series(page: Page) -> list[list[str]]:
    """The time series' table, behind "De cijfers als tabel" (opened as a person would)."""
    section = page.get_by_role("region", name="Fricties in de tijd, per regel")
    await section.get_by_text("De cijfers als tabel").click()
    return await cells(page, "Fricties per periode en regel")


async def cells(page: Page, name: str) -> list[list[str]]:
    table = page.get_by_role("table", name=name, exact=True)
    rows: list[list[str]] = await table.locator("tbody tr").evaluate_all(
        "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText.trim()))"
    )
    return rows


async def texts(located: Locator) -> list[str]:
    """The text of SVG elements (which have no innerText)."""
    found: list[str] = await located.evaluate_all("elements => elements.map(e => e.textContent)")
    return found


def n(value: float | None, decimals: int = 0) -> str:
    return NO_NUMBER if value is None else NL.number(value, decimals)


def pct(value: float | None) -> str:
    return NO_NUMBER if value is None else NL.percent(value)


async def test_two_years_of_history_fit_a_few_screens_each_section_at_most_one(history: History, page: Page) -> None:
    await sign_in(page, history.url, await history.key())
    await expect(page.get_by_role("heading", level=1)).to_have_text("Frictiedashboard")

    height = await page_height(page)
    print(f"dashboard with two years of history: {height} px at {DESKTOP['width']}x{SCREEN}")  # docs/web.md
    assert height <= MOST_SCREENS * SCREEN
    sections = await section_heights(page)
    assert len(sections) == 9
    assert max(sections.values()) <= SCREEN, sections
    # The whole history (no dates) spans two years: months, one row each, not 733 rows of weeks and rules.
    over_time = page.get_by_role("region", name="Fricties in de tijd, per regel")
    await expect(over_time).to_contain_text("per maand, passend bij")
    await screenshot(page, "dashboard")
    assert 24 <= len(await numbers_of_the_time_series(page)) <= 26


async def test_the_time_series_takes_days_weeks_or_months_as_the_range_needs(history: History, page: Page) -> None:
    key = await history.key()
    start = date.today() - timedelta(days=200)
    month = {"from": start.isoformat(), "to": (start + timedelta(days=29)).isoformat()}
    await sign_in(page, history.url, key, next_path=quote("/pages/dashboard?" + urlencode(month), safe=""))
    await expect(page.get_by_role("region", name="Fricties in de tijd")).to_contain_text("per dag, passend bij")
    days = await numbers_of_the_time_series(page)
    assert [row[0] for row in days] == [(start + timedelta(days=d)).isoformat() for d in range(30)]
    # The same days' numbers as the API's, rule by rule (a day without a row had no frictions).
    api = await history.rows(key, "/v1/reports/frictions", by="rule", period="day", **month)
    assert api
    detected = {(r["period"], NL.get(f"rules.{r['rule']}", r["rule"])): n(r["detected"]) for r in api}
    numbers = page.get_by_role("table", name="Fricties per periode en regel", exact=True)
    headings = await numbers.locator("thead th").all_inner_texts()
    for row in days:
        for rule, shown in zip(headings[1:], row[1:], strict=True):
            assert shown == detected.get((row[0], rule), "0")

    half_year = {"from": start.isoformat(), "to": (start + timedelta(days=181)).isoformat()}
    await page.goto(f"{history.url}/pages/dashboard?" + urlencode(half_year))
    await expect(page.get_by_role("region", name="Fricties in de tijd")).to_contain_text("per week, passend bij")
    weeks = [row[0] for row in await numbers_of_the_time_series(page)]
    first, last = start.isocalendar(), (start + timedelta(days=181)).isocalendar()
    assert weeks[0] == f"{first.year}-W{first.week:02d}" and weeks[-1] == f"{last.year}-W{last.week:02d}"
    assert 26 <= len(weeks) <= 27

    # The section's CSV is the API's at the granularity shown.
    section = page.get_by_role("region", name="Fricties in de tijd")
    async with page.expect_download() as info:
        await section.get_by_role("link", name="CSV downloaden").click()
    saved = await (await info.value).path()
    expected = await history.csv(key, "/v1/reports/frictions", by="rule", period="week", **half_year)
    assert saved.read_bytes() == expected and b"W" in expected


async def test_rankings_show_ten_rows_and_the_rest_behind_show_all(history: History, page: Page) -> None:
    key = await history.key()
    await sign_in(page, history.url, key)
    api = await history.rows(key, "/v1/reports/frictions", by="library")
    rate = "frictions_per_1000_members"
    ranked = sorted(api, key=lambda r: (r[rate] is None, -(r[rate] or 0)))
    expected = [[r["library"], n(r["members"]), n(r["detected"]), n(r[rate], 1)] for r in ranked]
    name = "Bibliotheken met de meeste frictie per 1.000 leden"
    assert await cells(page, name) == expected[:10]
    section = page.get_by_role("region", name=name)
    everything = page.get_by_role("table", name=f"{name} (alle)")
    await expect(everything).to_be_hidden()
    await section.get_by_text(f"Alle {len(api)} tonen").click()
    await expect(everything).to_be_visible()
    assert await cells(page, f"{name} (alle)") == expected
    # The chart draws the same ten, highest first.
    bars = await texts(section.locator("svg .chart-label"))
    assert bars == [r["library"] for r in ranked[:10]]


async def test_a_library_leads_to_its_own_page_with_its_rules_channels_and_ages(history: History, page: Page) -> None:
    key = await history.key()
    await sign_in(page, history.url, key)
    table = page.get_by_role("table", name="Bibliotheken met de meeste frictie per 1.000 leden", exact=True)
    library = (await table.locator("tbody th").first.inner_text()).strip()
    await table.get_by_role("link", name=library, exact=True).click()

    await expect(page.get_by_role("heading", level=1)).to_have_text(f"Frictiedashboard van {library}")
    assert f"library={library}" in page.url
    await expect(page.get_by_role("region", name="Bibliotheken met de meeste frictie")).to_have_count(0)
    ages = await history.rows(key, "/v1/reports/frictions", by="age_band", library=library)
    ages.sort(key=lambda r: (r["detected"] is None, -(r["detected"] or 0)))
    assert await cells(page, "Per leeftijd") == [
        [NL.get(f"age_bands.{r['age_band']}", r["age_band"]), n(r["detected"]), n(r["resolved"]),
         pct(r["resolution_rate"])] for r in ages
    ]  # fmt: skip
    rules = await history.rows(key, "/v1/reports/frictions", by="rule", library=library)
    shown = await cells(page, f"Regels bij {library}: fricties en oplossingsgraad")
    assert [row[:4] for row in shown] == [
        [NL.get(f"rules.{r['rule']}", r["rule"]), n(r["detected"]), n(r["resolved"]), pct(r["resolution_rate"])]
        for r in rules
    ][:10]
    channels = await history.rows(key, "/v1/reports/frictions", by="channel_pair", library=library)
    assert sorted(row[0] for row in await cells(page, "Per kanaalwissel")) == sorted(
        r["channel_pair"] or "(geen)" for r in channels
    )
    reach = await cells(page, "Actief bereik, laatste 12 maanden")
    assert {row[0] for row in reach} <= {library, "heel het netwerk"} and len(reach) == 6  # five bands and all
    assert await page_height(page) <= MOST_SCREENS * SCREEN
    await screenshot(page, "dashboard-library")

    # Back to the network: the same filters without the library.
    back = page.get_by_role("link", name="Heel het netwerk")
    await expect(back).to_have_attribute("href", re.compile(r"^/pages/dashboard\?(?!.*library=)"))


async def test_retention_is_a_heat_map_and_paths_a_chart_with_the_api_numbers(history: History, page: Page) -> None:
    key = await history.key()
    await sign_in(page, history.url, key)

    retention = page.get_by_role("region", name="Behoud per aanmeldmaand")
    await expect(retention.get_by_role("img", name="Behoud per aanmeldmaand")).to_be_visible()
    hover = await texts(retention.locator("svg g.heat-cell title"))
    first = hover[0].split(",")[0]
    cohort = first.removeprefix("Aangemeld in ")
    api = await history.rows(key, "/v1/reports/retention", months=12, **{"from": f"{cohort}-01"})
    assert len(hover) == len(api) and len(api) > 12
    for text, row in zip(hover, api, strict=True):
        assert text == (f"Aangemeld in {row['cohort']}, maand {row['months_after']}: {pct(row['share'])} actief "
                        f"({n(row['active'])} van {n(row['members'])})")  # fmt: skip
    written = await texts(retention.locator("svg text.heat-value"))
    assert written == [n(None if r["share"] is None else r["share"] * 100) for r in api]

    paths = page.get_by_role("region", name="Wat leden daarna doen: Inloggen mislukt")
    rows = await history.rows(key, "/v1/reports/paths", event="member.login_failed.v1", depth=2, within="P7D")
    assert rows
    titles = await texts(paths.locator("svg g.path-row title"))
    assert [re.sub(r".*: ", "", title) for title in titles] == [
        f"{n(r['occurrences'])} keer ({pct(r['share'])})" for r in rows
    ]
    assert all(title.startswith("Inloggen mislukt → ") for title in titles)
    # Another start event: chosen in the paths section, the rest of the filters kept.
    await paths.get_by_label("Paden na").select_option(label="Geleend")
    await paths.get_by_role("button", name="Tonen").click()
    await expect(page.get_by_role("region", name="Wat leden daarna doen: Geleend")).to_be_visible()
    assert "after=usage.loan_borrowed.v1" in page.url


async def test_the_long_history_fits_a_phone(history: History, browser: Browser) -> None:
    context = await browser.new_context(viewport=PHONE, locale="nl-NL", timezone_id="Europe/Amsterdam")
    try:
        page = await context.new_page()
        await sign_in(page, history.url, await history.key())
        assert await horizontal_overflow(page) == 0
        assert await unlabelled_fields(page) == []
        await screenshot(page, "dashboard-phone")
    finally:
        await context.close()
