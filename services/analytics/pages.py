"""The friction dashboard for library staff: frictions over time per rule (by day, week or month as the range
needs), the libraries with most friction per 1,000 members, resolution per rule, channel switches and platforms,
a funnel between chosen steps, active reach, retention by sign-up month and the paths after an event. A library
(chosen, or the key's own) turns it into that library's page: its rules, channels and age bands.

Every number comes from the reports API (docs/reports.md), called in-process through the app itself with the
visitor's key: the page shows exactly what `GET /v1/reports/...` answers, with the same library scope, the same
suppression (a suppressed cell is an en dash, explained under the table) and the same cache. Each section's CSV
download is the API's CSV for the same query. The rules of the page are in `dashboard`, its sections' charts and
tables in `dashboard_view`. docs/web.md describes what people see.
(No `from __future__ import annotations`: FastAPI reads the routes' `Annotated` dependencies, defined locally.)
"""

import asyncio
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from services.analytics.answers import journey_types
from services.analytics.dashboard import (
    AUTO,
    BY_NAME,
    FUNNEL_STEPS,
    PERIODS,
    SECTIONS,
    SPLITS,
    DashboardFilters,
    Section,
    Timeline,
    dashboard_filters,
    granularity,
    preset_links,
    timeline,
    today,
    with_period,
)
from services.analytics.dashboard_view import SectionView, View, duration
from shared.events.types import AGE_BANDS
from shared.problems import Problem
from shared.service import ServiceParts
from shared.web.site import DASHBOARD, Site, Visitor

TEMPLATES = Path(__file__).parent / "templates"
# Sections of a few rows each, side by side on a wide screen; the others have their chart beside their table.
PAIRS = (("channel-pairs", "platforms"),)

__all__ = ["FUNNEL_STEPS", "SECTIONS", "dashboard_filters", "duration", "pages_router"]


class ReportFailed(Exception):
    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(problem.get("detail") or problem.get("title") or str(status))
        self.status = status
        self.problem = problem


class Reports:
    """The reports API of this very app, called in-process (ASGI, no network) with the visitor's key."""

    def __init__(self, request: Request, key: str) -> None:
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=request.app),
            base_url="http://analytics",
            headers={"Authorization": f"Bearer {key}"},
            timeout=120,
        )

    async def __aenter__(self) -> "Reports":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._client.aclose()

    async def get(self, section: Section, filters: DashboardFilters, *, csv: bool = False) -> httpx.Response:
        params = {**section.query(filters), **({"format": "csv"} if csv else {})}
        response = await self._client.get(section.path, params=params)
        if response.status_code != 200:
            try:
                problem = response.json()
            except ValueError:
                problem = {"title": response.text[:200]}
            raise ReportFailed(response.status_code, problem)
        return response

    async def answer(self, section: Section, filters: DashboardFilters) -> dict[str, Any]:
        body: dict[str, Any] = (await self.get(section, filters)).json()
        return body

    async def over_time(self, filters: DashboardFilters) -> tuple[dict[str, Any], Timeline]:
        """The time series at the granularity its range needs. With both dates the range is known; with an open
        end the API is asked by month first (a two-year history is then answered at once), and again by week or
        day when the history turns out shorter."""
        section = BY_NAME["over-time"]
        if filters.period in PERIODS:
            asked = filters.period
        elif filters.start and filters.end:
            asked = granularity(date.fromisoformat(filters.start), date.fromisoformat(filters.end))
        else:
            asked = "month"
        answer = await self.answer(section, with_period(filters, asked))
        clock = answer.get("clock")
        line = timeline(filters, answer["rows"], asked, date.fromisoformat(clock[:10]) if clock else today())
        if line.period != asked:
            answer = await self.answer(section, with_period(filters, line.period))
        return answer, line


def sections_of(view: View, answers: dict[str, dict[str, Any]], line: Timeline) -> dict[str, SectionView]:
    """Each shown section's charts and table, from its answer."""
    made = {
        "over-time": lambda a: view.over_time(a, line),
        "libraries": view.libraries,
        "resolution": view.resolution,
        "channel-pairs": lambda a: view.split("channel-pairs", a, "channel_pair"),
        "platforms": lambda a: view.split("platforms", a, "platform"),
        "age-bands": lambda a: view.split("age-bands", a, "age_band"),
        "funnel": view.funnel,
        "reach": view.reach,
        "retention": view.retention,
        "paths": view.paths,
    }
    return {name: made[name](answer) for name, answer in answers.items()}


def layout(names: Sequence[str]) -> list[list[str]]:
    """The page's rows: a pair of sections side by side where both are shown, else one section across."""
    rows: list[list[str]] = []
    left = list(names)
    while left:
        name = left.pop(0)
        partner = next((b for a, b in PAIRS if a == name and b in left), None)
        if partner is not None:
            left.remove(partner)
        rows.append([name] if partner is None else [name, partner])
    return rows


# ------------------------------------------------------------------------------------------------- routes


def pages_router(parts: ServiceParts, rules: Sequence[str]) -> APIRouter:
    site = Site("analytics", parts, TEMPLATES)
    router = site.router
    Analyst = Annotated[Visitor, Depends(site.guard(DASHBOARD))]
    rule_ids = list(rules)
    events = journey_types()

    def key_of(visitor: Visitor) -> str:
        assert visitor.session is not None and visitor.session.api_key is not None  # guard() checked it
        return visitor.session.api_key

    @router.get("/")
    async def root() -> Response:
        return RedirectResponse(DASHBOARD.path, 303)

    @router.get("/pages/dashboard")
    async def dashboard(request: Request, visitor: Analyst) -> Response:
        t = visitor.t
        filters = dashboard_filters(request.query_params, rule_ids, visitor.library, events)
        shown = [section for section in SECTIONS if section.shown(filters)]
        answers: dict[str, dict[str, Any]] = {}
        failed: dict[str, str] = {}
        line = Timeline(today(), today(), "day", chosen=True)
        async with Reports(request, key_of(visitor)) as api:

            async def ask(section: Section) -> dict[str, Any] | ReportFailed:
                nonlocal line
                try:
                    if section.name == "over-time":
                        answer, line = await api.over_time(filters)
                        return answer
                    return await api.answer(section, filters)
                except ReportFailed as failure:
                    return failure

            # The sections are asked side by side (the store answers reads at once), shown in their order.
            for section, asked in zip(shown, await asyncio.gather(*(ask(s) for s in shown)), strict=True):
                if not isinstance(asked, ReportFailed):
                    answers[section.name] = asked
                    continue
                if asked.status in (401, 403):
                    raise Problem(asked.status, "Forbidden", str(asked)) from None
                # A 422 names the parameter: shown at the section, the rest of the dashboard still works.
                failed[section.name] = str(asked)
                answers[section.name] = {"rows": [], "min_cell": 0, "clock": None, "generated_at": None}
        any_answer = next((a for a in answers.values() if a.get("clock")), {})

        view = View(t, filters, lambda **changed: _path(request, filters.form(**changed)))
        return site.render(
            request,
            visitor,
            "dashboard.html",
            filters=filters,
            form=filters.form(),
            csv_form=filters.form(period=line.period),
            errors={name: t(key) for name, key in filters.errors.items()},
            sections=sections_of(view, answers, line),
            rows=layout([section.name for section in shown]),
            failed=failed,
            clock=any_answer.get("clock"),
            min_cell=any_answer.get("min_cell", 5),
            network_link=_path(request, filters.form(library="")),
            presets=[(preset, _path(request, values)) for preset, values in preset_links(filters, today())],
            rules=rule_ids,
            periods=(AUTO, *PERIODS),
            splits=SPLITS,
            age_bands=AGE_BANDS,
            funnel_steps=FUNNEL_STEPS,
            events=events,
            chosen_steps=" → ".join(t.get(f"steps.{step}", step) for step in filters.steps),
        )

    @router.get("/pages/dashboard/{name}.csv")
    async def download(request: Request, name: str, visitor: Analyst) -> Response:
        section = BY_NAME.get(name)
        if section is None:
            return Response(status_code=404)
        filters = dashboard_filters(request.query_params, rule_ids, visitor.library, events)
        async with Reports(request, key_of(visitor)) as api:
            try:
                if section.name == "over-time" and filters.period == AUTO:  # the granularity the page showed
                    filters = with_period(filters, (await api.over_time(filters))[1].period)
                answer = await api.get(section, filters, csv=True)
            except ReportFailed as failure:
                raise Problem(failure.status, "Report", str(failure)) from None
        return Response(
            answer.content,
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="klantreis-{section.name}.csv"',
                "Cache-Control": "no-store",
            },
        )

    return router


def _path(request: Request, values: dict[str, str]) -> str:
    """The dashboard's address (path and query) with these filters."""
    return request.url.path + ("?" + urlencode(values) if values else "")
