"""Active reach 0-18 over HTTP: load the population (CBS), set a library's target, read the report, and its page
"Actief bereik 0-18" for library directors (a table and two charts, no map).

(No `from __future__ import annotations`: FastAPI reads the page route's `Annotated` dependency, defined locally.)
"""

from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from services.analytics.answers import json_example
from services.analytics.boekstart_funnel import boekstart_router
from services.analytics.population import (
    ALL,
    FIRST_CONTACTS,
    YOUTH_BANDS,
    PopulationFileError,
    parse_population,
    reach_rows,
    trend_rows,
)
from services.analytics.population_store import PopulationStore
from services.analytics.reading import Reports
from services.analytics.referrals import referrals_router
from services.analytics.reports import months_before
from services.analytics.settings import AnalyticsSettings
from services.analytics.store import AnalyticsStore
from shared.auth import AUTH_RESPONSES, NETWORK, AdminKey, AnalystKey, Principal
from shared.events import FieldError
from shared.events.types import LibraryCode
from shared.libraries import LibraryDirectory
from shared.problems import Problem
from shared.schemas import example_body
from shared.service import ServiceParts
from shared.web.charts import Bar, Series, bar_chart, line_chart
from shared.web.site import DASHBOARD, Site, Visitor

TEMPLATES = Path(__file__).parent / "templates"  # population_reach.html is this module's
QUARTERS = 8
MAX_FILE_BYTES = 20 * 1024 * 1024
AMSTERDAM = ZoneInfo("Europe/Amsterdam")
CSV_EXAMPLE = (
    '"Geslacht";"Leeftijd";"Postcode";"Perioden";"Bevolking (aantal)"\n'
    '"Totaal mannen en vrouwen";"0 jaar";"1034";"2026";"122"\n'
    '"Totaal mannen en vrouwen";"4 tot 12 jaar";"1034";"2026";"904"\n'
)


class Target(BaseModel):
    model_config = example_body(target=0.8)

    target: float = Field(gt=0, le=1, description="the share of the children to reach: 1.0 is 100%")


def quarter_windows(clock_ms: int, months: int, quarters: int = QUARTERS) -> list[tuple[str, int, int]]:
    """(label, start ms, end ms) of the last `quarters` quarters, oldest first: each ends at the quarter's end in
    Amsterdam (the current one now) and starts `months` months earlier."""
    now = datetime.fromtimestamp(clock_ms / 1000, AMSTERDAM)
    current = now.year * 4 + (now.month - 1) // 3
    windows = []
    for back in range(quarters - 1, -1, -1):
        year, quarter = divmod(current - back, 4)
        if back == 0:
            end = clock_ms
        else:
            following_year, following = divmod(current - back + 1, 4)
            start_of_next = datetime(following_year, following * 3 + 1, 1, tzinfo=AMSTERDAM)
            end = int((start_of_next - timedelta(milliseconds=1)).timestamp() * 1000)
        windows.append((f"{year}-Q{quarter + 1}", months_before(end, months), end))
    return windows


class PopulationReach:
    """The report: the population, the libraries' areas and targets, the reached members, combined."""

    def __init__(self, store: PopulationStore, libraries: LibraryDirectory, reports: Reports, min_cell: int) -> None:
        self._store = store
        self._libraries = libraries
        self._reports = reports
        self._min_cell = min_cell

    async def report(self, months: int, caller: Principal) -> dict[str, Any]:
        clock = await self._reports.clock_ms()
        population = await self._store.population()
        libraries = list((await self._libraries.libraries()).values())
        targets = await self._store.targets()
        reached = await self._store.reached(months_before(clock, months), clock)
        rows = reach_rows(population, reached, libraries, targets, self._min_cell)
        trend = trend_rows(
            population, await self._store.reached_by_quarter(quarter_windows(clock, months)), libraries, self._min_cell
        )
        if caller.library != NETWORK:
            rows = [r for r in rows if r["library"] in (caller.library, ALL)]
            trend = [r for r in trend if r["library"] in (caller.library, ALL)]
        return {
            "months": months,
            "population_period": population.period,
            "synthetic_population": population.synthetic,
            "bands": list(YOUTH_BANDS),
            "first_contacts": list(FIRST_CONTACTS),
            "rows": rows,
            "trend": trend,
        }


_CONTACTS = {"consultatiebureau": 610, "kinderopvang": 95, "school": 0, "library": 240, "online": 155}
REACH_EXAMPLE = {
    "months": 12,
    "population_period": "2026",
    "synthetic_population": False,
    "bands": list(YOUTH_BANDS),
    "first_contacts": list(FIRST_CONTACTS),
    "rows": [
        {"library": "oba", "age_band": "0-3", "children": 2300, "reached": 1100, "share": 0.4783, "target": 1.0,
         "gap": 1200, "by_first_contact": _CONTACTS, "suppressed": False},
    ],
    "trend": [
        {"quarter": "2025-Q4", "library": "oba", "children": 9800, "reached": 3900, "share": 0.398,
         "suppressed": False},
    ],
}  # fmt: skip


def population_router(reach: PopulationReach, store: PopulationStore, libraries: LibraryDirectory) -> APIRouter:
    router = APIRouter(tags=["reach 0-18"], responses=AUTH_RESPONSES)

    @router.post(
        "/v1/population",
        status_code=200,
        summary="Load children per postcode area and age (CBS StatLine CSV): replaces the population (admin)",
        description="`;`-separated with the columns Leeftijd (`0 jaar`… or `0 tot 4 jaar`), Postcode (4 digits), "
        "Perioden and Bevolking (aantal); `klantreis population load FILE` posts a file. See docs/soob.md.",
        responses=json_example(
            {
                "period": "2026",
                "synthetic": False,
                "areas": 312,
                "children": {"0-3": 30120, "4-11": 61544, "12-17": 47310},
            }
        ),
        openapi_extra={
            "requestBody": {
                "content": {"text/csv": {"schema": {"type": "string"}, "example": CSV_EXAMPLE}},
                "required": True,
            }
        },
    )
    async def load(request: Request, caller: AdminKey) -> dict[str, Any]:
        body = await request.body()
        if len(body) > MAX_FILE_BYTES:
            raise Problem(413, "Content Too Large", f"at most {MAX_FILE_BYTES:,} bytes")
        try:
            population = parse_population(body.decode("utf-8-sig"))
        except (PopulationFileError, UnicodeDecodeError) as exc:
            problems = exc.problems if isinstance(exc, PopulationFileError) else ["the file is not UTF-8"]
            errors = [FieldError("body", problem) for problem in problems[:50]]
            raise Problem(422, "Unprocessable Content", "; ".join(problems[:5]), errors=errors) from None
        await store.load(population)
        children = {band: sum(n for (_, b), n in population.children.items() if b == band) for band in YOUTH_BANDS}
        return {
            "period": population.period,
            "synthetic": population.synthetic,
            "areas": len({area for area, _ in population.children}),
            "children": children,
        }

    @router.put(
        "/v1/population/targets/{library}",
        summary="Set a library's reach target (default 100%) (admin)",
        responses={
            422: {"description": "not a library of the catalogue, or not a share in (0, 1]"},
            **json_example({"library": "oba", "target": 0.8}),
        },
    )
    async def set_target(library: LibraryCode, body: Target, caller: AdminKey) -> dict[str, Any]:
        await libraries.require({"library": library})
        await store.set_target(library, body.target)
        return {"library": library, "target": body.target}

    @router.get(
        "/v1/reports/population-reach",
        summary="Active reach 0-18 against the population: per library and band, target, gap, first contact, trend",
        description="Reached: members active in the last `months` months living in the library's postcode areas, "
        "in the band of their age on 1 January of the reporting day's year (as CBS counts); children: the CBS "
        "population of those areas. A key of one library sees its library and the network. Reached counts below "
        "`min_cell` are suppressed (null). See docs/soob.md.",
        responses=json_example(REACH_EXAMPLE),
    )
    async def report(caller: AnalystKey, months: Annotated[int, Query(ge=1, le=36)] = 12) -> dict[str, Any]:
        return await reach.report(months, caller)

    return router


def population_pages_router(parts: ServiceParts, reach: PopulationReach) -> APIRouter:
    """The page "Actief bereik 0-18", in the dashboard's section. Its site's sign-in and static routes are the
    same as the dashboard's (the dashboard's, registered first, answer them)."""
    site = Site("analytics", parts, TEMPLATES)
    Analyst = Annotated[Visitor, Depends(site.guard(DASHBOARD))]

    @site.router.get("/pages/dashboard/reach-0-18")
    async def reach_page(request: Request, visitor: Analyst) -> Response:
        assert visitor.principal is not None
        answer = await reach.report(12, visitor.principal)
        t = visitor.t

        def name(code: str) -> str:
            return t("reach0_18.network") if code == ALL else code

        totals = [r for r in answer["rows"] if r["age_band"] == ALL]
        charts = {
            "share": bar_chart(
                [
                    Bar(name(r["library"]), r["share"], t("reach0_18.of_target", target=t.percent(r["target"], 0)))
                    for r in totals
                ],
                chart_id="chart-reach-0-18",
                title=t("reach0_18.chart_share"),
                shown=lambda v: t.percent(v),
                empty=t("reach0_18.no_population"),
                maximum=1.0,
            ),
            "trend": line_chart(
                [Series(t("reach0_18.network"), [r["share"] for r in answer["trend"] if r["library"] == ALL])],
                [r["quarter"] for r in answer["trend"] if r["library"] == ALL],
                chart_id="chart-reach-trend",
                title=t("reach0_18.chart_trend"),
                shown=lambda v: t.percent(v, 0),
                empty=t("reach0_18.no_population"),
            ),
        }
        return site.render(request, visitor, "population_reach.html", answer=answer, charts=charts, name=name)

    return site.router


def build(
    parts: ServiceParts, reports: Reports, store: AnalyticsStore, settings: AnalyticsSettings
) -> tuple[list[APIRouter], LibraryDirectory]:
    """The routers of active reach 0-18 (population, reach, the BoekStart funnel, referrals, the page) and the library
    directory they read (closed by the app at shutdown)."""
    libraries = LibraryDirectory(settings)
    population = PopulationStore(store)
    reach = PopulationReach(population, libraries, reports, settings.analytics_min_cell)
    return [
        population_router(reach, population, libraries),
        boekstart_router(store, reports, settings.analytics_min_cell),
        referrals_router(store, reports, settings.analytics_min_cell),
        population_pages_router(parts, reach),
    ], libraries
