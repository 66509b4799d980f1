"""The friction dashboard for analysts: frictions over time per rule, the libraries with most friction per 1,000
members, channel pairs and platforms, resolution rates, a funnel between chosen steps, active reach.

Every number comes from the reports API (docs/reports.md), called in-process through the app itself with the
visitor's key: the page shows exactly what `GET /v1/reports/...` answers, with the same library scope, the same
suppression (a suppressed cell is an en dash, explained under the table) and the same cache. Each section's CSV
download is the API's CSV for the same query.
(No `from __future__ import annotations`: FastAPI reads the routes' `Annotated` dependencies, defined locally.)
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from shared.events.types import AGE_BANDS
from shared.problems import Problem
from shared.service import ServiceParts
from shared.web.charts import Bar, Series, bar_chart, funnel_chart, line_chart
from shared.web.i18n import Translator
from shared.web.site import DASHBOARD, Site, Visitor

TEMPLATES = Path(__file__).parent / "templates"
PERIODS = ("day", "week", "month")
SPLITS = ("channel", "platform")
YOUTH_BANDS = "0-3,4-11,12-17"  # the reach goal's bands: the API's default
# Steps offered for the funnel (short event type names, as the API takes them), in journey order.
FUNNEL_STEPS = (
    "member.registration_started.v1",
    "member.signed_up.v1",
    "member.card_activated.v1",
    "member.account_linked.v1",
    "member.login_succeeded.v1",
    "usage.loan_reserved.v1",
    "usage.loan_borrowed.v1",
    "usage.activity_registered.v1",
    "usage.activity_attended.v1",
)
DEFAULT_STEPS = ("member.signed_up.v1", "member.card_activated.v1", "usage.loan_borrowed.v1")
_LIBRARY = re.compile(r"^[a-z][a-z0-9-]{1,39}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# ---------------------------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class DashboardFilters:
    """The dashboard's filters, checked; `errors` maps a form field to the catalogue key of what is wrong."""

    start: str = ""
    end: str = ""
    period: str = "week"
    library: str = ""
    rule: str = ""
    age_band: str = ""
    steps: tuple[str, ...] = DEFAULT_STEPS
    split: str = "channel"
    within_days: int = 30
    errors: dict[str, str] = field(default_factory=dict)

    def form(self) -> dict[str, str]:
        """The filters as the form (and the page's links) carry them."""
        values = {
            "from": self.start,
            "to": self.end,
            "period": self.period,
            "library": self.library,
            "rule": self.rule,
            "age_band": self.age_band,
            "split": self.split,
            "within": str(self.within_days),
        }
        values.update({f"step{i + 1}": step for i, step in enumerate(self.steps)})
        return {name: value for name, value in values.items() if value}

    def _common(self) -> dict[str, str]:
        values = {"from": self.start, "to": self.end, "library": self.library, "age_band": self.age_band}
        return {name: value for name, value in values.items() if value}


def dashboard_filters(raw: Mapping[str, str], rules: Sequence[str], scope: str | None) -> DashboardFilters:
    """Read the filters from the query string; a key of one library always gets its own library."""
    errors: dict[str, str] = {}

    def choice(name: str, allowed: Sequence[str], default: str = "") -> str:
        value = raw.get(name, default).strip()
        if value and value not in allowed:
            errors[name] = "dashboard.errors.choice"
            return default
        return value

    def day(name: str) -> str:
        value = raw.get(name, "").strip()
        if not value:
            return ""
        try:
            if not _DATE.match(value):
                raise ValueError(value)
            date.fromisoformat(value)
        except ValueError:
            errors[name] = "dashboard.errors.date"
            return ""
        return value

    start, end = day("from"), day("to")
    if start and end and end < start:
        errors["to"] = "dashboard.errors.range"
        end = ""
    library = raw.get("library", "").strip()
    if scope is not None:
        library = scope
    elif library and not _LIBRARY.match(library):
        errors["library"] = "dashboard.errors.library"
        library = ""
    steps = tuple(s for s in (raw.get(f"step{i}", "").strip() for i in range(1, 4)) if s)
    if any(s not in FUNNEL_STEPS for s in steps):
        errors["step1"] = "dashboard.errors.choice"
        steps = DEFAULT_STEPS
    elif not steps:
        steps = DEFAULT_STEPS
    elif len(steps) < 2:
        errors["step2"] = "dashboard.errors.two_steps"
        steps = DEFAULT_STEPS
    within_text = raw.get("within", "30").strip() or "30"
    within = int(within_text) if within_text.isdigit() else 0
    if not 1 <= within <= 365:
        errors["within"] = "dashboard.errors.within"
        within = 30
    return DashboardFilters(
        start=start,
        end=end,
        period=choice("period", PERIODS, "week") or "week",
        library=library,
        rule=choice("rule", rules),
        age_band=choice("age_band", AGE_BANDS),
        steps=steps,
        split=choice("split", ("", *SPLITS), "channel") if "split" in raw else "channel",
        within_days=within,
        errors=errors,
    )


# ---------------------------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class Section:
    """One part of the dashboard: the report it shows and the query that asks for it."""

    name: str
    path: str

    def query(self, filters: DashboardFilters) -> dict[str, str]:
        common = filters._common()
        rule = {"rule": filters.rule} if filters.rule else {}
        if self.name == "over-time":
            return {"by": "rule", "period": filters.period, **common, **rule}
        if self.name == "libraries":
            return {"by": "library", **common, **rule}
        if self.name == "channel-pairs":
            return {"by": "channel_pair", **common, **rule}
        if self.name == "platforms":
            return {"by": "platform", **common, **rule}
        if self.name == "resolution":
            return {"by": "rule", **common, **rule}
        if self.name == "funnel":
            split = {"by": filters.split} if filters.split else {}
            return {"steps": ",".join(filters.steps), "within": f"P{filters.within_days}D", **split, **common}
        # reach: the chosen age band, else the youth bands of the reach goal; no dates (last 12 months)
        reach = {"age_bands": filters.age_band or YOUTH_BANDS, "months": "12"}
        return {**reach, "library": filters.library} if filters.library else reach


SECTIONS: tuple[Section, ...] = (
    Section("over-time", "/v1/reports/frictions"),
    Section("libraries", "/v1/reports/frictions"),
    Section("channel-pairs", "/v1/reports/frictions"),
    Section("platforms", "/v1/reports/frictions"),
    Section("resolution", "/v1/reports/frictions"),
    Section("funnel", "/v1/reports/funnel"),
    Section("reach", "/v1/reports/reach"),
)
BY_NAME = {section.name: section for section in SECTIONS}


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


# ----------------------------------------------------------------------------------------------- figures


def rule_name(t: Translator, rule: str) -> str:
    return t.get(f"rules.{rule}", rule)


def step_name(t: Translator, step: str) -> str:
    return t.get(f"steps.{step}", step)


def duration(t: Translator, seconds: float | None) -> str:
    """A median time to resolve, in the unit that reads best."""
    if seconds is None:
        return t.number(None)
    if seconds >= 86_400:
        return t("units.days", n=t.number(seconds / 86_400, 1))
    if seconds >= 3_600:
        return t("units.hours", n=t.number(seconds / 3_600, 1))
    return t("units.minutes", n=t.number(seconds / 60, 0))


def over_time_chart(t: Translator, rows: Sequence[Mapping[str, Any]]) -> Any:
    periods = sorted({str(row["period"]) for row in rows})
    rules = sorted({str(row["rule"]) for row in rows})
    cells = {(row["rule"], row["period"]): row for row in rows}
    series = []
    for rule in rules:
        values: list[float | None] = []
        for period in periods:
            row = cells.get((rule, period))
            # No row: nothing detected in that period. A suppressed row: not shown (the line breaks).
            values.append(0 if row is None else row["detected"])
        series.append(Series(rule_name(t, rule), values))
    return line_chart(
        series,
        periods,
        chart_id="chart-over-time",
        title=t("dashboard.over_time"),
        shown=lambda v: t.number(v),
        empty=t("dashboard.empty"),
    )


def charts(t: Translator, answers: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The SVG chart of each section, from the API's rows."""
    libraries = sorted(
        answers["libraries"]["rows"],
        key=lambda r: (r["frictions_per_1000_members"] is None, -(r["frictions_per_1000_members"] or 0)),
    )
    made: dict[str, Any] = {
        "over-time": over_time_chart(t, answers["over-time"]["rows"]),
        "libraries": bar_chart(
            [Bar(str(r["library"]), r["frictions_per_1000_members"]) for r in libraries],
            chart_id="chart-libraries",
            title=t("dashboard.libraries"),
            shown=lambda v: t.number(v, 1),
            empty=t("dashboard.empty"),
        ),
        "channel-pairs": bar_chart(
            [
                Bar(str(r["channel_pair"] or t("dashboard.none")), r["detected"])
                for r in answers["channel-pairs"]["rows"]
            ],
            chart_id="chart-channel-pairs",
            title=t("dashboard.channel_pairs"),
            shown=lambda v: t.number(v),
            empty=t("dashboard.empty"),
        ),
        "platforms": bar_chart(
            [Bar(str(r["platform"] or t("dashboard.none")), r["detected"]) for r in answers["platforms"]["rows"]],
            chart_id="chart-platforms",
            title=t("dashboard.platforms"),
            shown=lambda v: t.number(v),
            empty=t("dashboard.empty"),
        ),
        "resolution": bar_chart(
            [Bar(rule_name(t, str(r["rule"])), r["resolution_rate"]) for r in answers["resolution"]["rows"]],
            chart_id="chart-resolution",
            title=t("dashboard.resolution"),
            shown=lambda v: t.percent(v),
            empty=t("dashboard.empty"),
            maximum=1.0,
        ),
        "reach": bar_chart(
            [
                Bar(t("dashboard.network") if r["library"] == "*" else str(r["library"]), r["share"])
                for r in answers["reach"]["rows"]
                if r["age_band"] == "*"
            ],
            chart_id="chart-reach",
            title=t("dashboard.reach"),
            shown=lambda v: t.percent(v),
            empty=t("dashboard.empty"),
            maximum=1.0,
        ),
    }
    funnels = []
    rows = answers["funnel"]["rows"]
    splits = list(dict.fromkeys(str(r.get("channel") or r.get("platform") or "") for r in rows))
    for split in splits or [""]:
        steps = [r for r in rows if str(r.get("channel") or r.get("platform") or "") == split]
        label = split or t("dashboard.all_members")
        funnels.append(
            (
                label,
                funnel_chart(
                    [
                        Bar(
                            step_name(t, str(r["step"])),
                            r["reached"],
                            ""
                            if r["conversion"] is None
                            else t("dashboard.conversion", share=t.percent(r["conversion"])),
                        )
                        for r in steps
                    ],
                    chart_id=f"chart-funnel-{split or 'all'}",
                    title=f"{t('dashboard.funnel')}: {label}",
                    shown=lambda v: t.number(v),
                    empty=t("dashboard.empty"),
                ),
            )
        )
    made["funnel"] = funnels
    return made


# ------------------------------------------------------------------------------------------------- routes


def pages_router(parts: ServiceParts, rules: Sequence[str]) -> APIRouter:
    site = Site("analytics", parts, TEMPLATES)
    router = site.router
    Analyst = Annotated[Visitor, Depends(site.guard(DASHBOARD))]
    rule_ids = list(rules)

    def key_of(visitor: Visitor) -> str:
        assert visitor.session is not None and visitor.session.api_key is not None  # guard() checked it
        return visitor.session.api_key

    @router.get("/")
    async def root() -> Response:
        return RedirectResponse(DASHBOARD.path, 303)

    @router.get("/pages/dashboard")
    async def dashboard(request: Request, visitor: Analyst) -> Response:
        t = visitor.t
        filters = dashboard_filters(request.query_params, rule_ids, visitor.library)
        answers: dict[str, dict[str, Any]] = {}
        failed: dict[str, str] = {}
        async with Reports(request, key_of(visitor)) as api:
            for section in SECTIONS:
                try:
                    answers[section.name] = await api.answer(section, filters)
                except ReportFailed as failure:
                    if failure.status in (401, 403):
                        raise Problem(failure.status, "Forbidden", str(failure)) from None
                    # A 422 names the parameter: shown at the section, the rest of the dashboard still works.
                    failed[section.name] = str(failure)
                    answers[section.name] = {"rows": [], "min_cell": 0, "clock": None, "generated_at": None}
        any_answer = next((a for a in answers.values() if a.get("clock")), {})
        return site.render(
            request,
            visitor,
            "dashboard.html",
            filters=filters,
            form=filters.form(),
            errors={name: t(key) for name, key in filters.errors.items()},
            answers=answers,
            failed=failed,
            charts=charts(t, answers),
            clock=any_answer.get("clock"),
            min_cell=any_answer.get("min_cell", 5),
            rules=rule_ids,
            rule_name=lambda rule: rule_name(t, rule),
            step_name=lambda step: step_name(t, step),
            duration=lambda seconds: duration(t, seconds),
            periods=PERIODS,
            splits=SPLITS,
            age_bands=AGE_BANDS,
            funnel_steps=FUNNEL_STEPS,
        )

    @router.get("/pages/dashboard/{name}.csv")
    async def download(request: Request, name: str, visitor: Analyst) -> Response:
        section = BY_NAME.get(name)
        if section is None:
            return Response(status_code=404)
        filters = dashboard_filters(request.query_params, rule_ids, visitor.library)
        async with Reports(request, key_of(visitor)) as api:
            try:
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
