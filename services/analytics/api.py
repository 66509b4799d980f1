"""analytics' reports over HTTP: friction, funnel and reach for analysts, one member's timeline for front-office
help. The same URLs, parameters and answers journey's reports had (docs/reports.md is the contract).

Thin: parameters are parsed here, the counting is SQL (`services.analytics.queries`) run by `reading.Reports`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from services.analytics import reports
from services.analytics.reading import Reports
from services.analytics.reports import BadParameter, FrictionQuery, FunnelQuery, Period, Report, Split
from services.analytics.settings import AnalyticsSettings
from shared.auth import AUTH_RESPONSES, NETWORK, AnalystKey, MemberDataKey, Principal, forbid_other_library
from shared.events import FieldError
from shared.events.registry import TYPE_PREFIX, event_types
from shared.events.types import AGE_BANDS
from shared.problems import Problem, not_found
from shared.topics import MEMBERS, USAGE

CSV = "text/csv"
LIBRARY_CODE = re.compile(r"^[a-z][a-z0-9-]{1,39}$")
Format = Literal["json", "csv"]

# Query parameters the reports share.
FromDay = Annotated[
    date | None, Query(alias="from", description="first day (Europe/Amsterdam), inclusive", examples=["2025-03-01"])
]
ToDay = Annotated[date | None, Query(description="last day (Europe/Amsterdam), inclusive", examples=["2025-03-31"])]
Libraries = Annotated[
    str | None, Query(description="library codes, comma-separated; a library key: its own only", examples=["oba"])
]
AgeBands = Annotated[str | None, Query(description="age bands, comma-separated", examples=["0-3,4-11"])]
FormatChoice = Annotated[Format | None, Query(description="`csv` for links; default: by the Accept header")]
Dimensions = Annotated[
    str,
    Query(
        description="comma-separated, any of rule, library, channel_pair, platform, age_band; empty: one total row",
        examples=["rule,library"],
    ),
]
Rules = Annotated[str | None, Query(description="rule ids, comma-separated", examples=["online-signup-not-activated"])]
Steps = Annotated[
    str,
    Query(
        description="2 to 10 event types (short names, as in rules.yaml), comma-separated",
        examples=["member.signed_up.v1,member.card_activated.v1,usage.loan_borrowed.v1"],
    ),
]
Within = Annotated[timedelta, Query(description="ISO 8601 duration allowed between two steps", examples=["P30D"])]
Months = Annotated[int, Query(ge=1, le=120, description="active within this many calendar months", examples=[12])]


class ReportAnswer(BaseModel):
    """Every report: what was asked, when it was computed, and flat rows (the CSV's lines, same keys in order)."""

    report: str
    parameters: dict[str, Any] = Field(description="the parameters as understood, defaults filled in")
    clock: str = Field(description="the clock the report was computed at (Europe/Amsterdam)")
    generated_at: str = Field(description="when the report was computed; it is served again for a few seconds")
    min_cell: int = Field(description="rows counting fewer members or frictions than this are suppressed")
    rows: list[dict[str, Any]]


class Milestone(BaseModel):
    type: str
    at: str
    channel: str | None
    platform: str | None


class TimelineEntry(Milestone):
    library: str | None


class OpenFriction(BaseModel):
    friction_id: str
    rule: str
    started: str
    detected: str
    library: str | None
    channel_pair: str | None
    platform: str | None


class LastTouch(BaseModel):
    channels: dict[str, str]
    platforms: dict[str, str]


class Timeline(BaseModel):
    member_id: str = Field(description="the member (the survivor, when the requested id was merged)")
    requested_id: str
    profile: dict[str, str | None] = Field(
        description="from the sign-up: age_band, home_library, postcode_area, channel, platform, source"
    )
    milestones: list[Milestone] = Field(description="the first occurrence of each event type, oldest first")
    last_touch: LastTouch
    last_activity: str | None
    timeline: list[TimelineEntry] = Field(description="the most recent events (up to 25), newest first")
    open_frictions: list[OpenFriction]


def _example(report: str, parameters: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "report": report,
        "parameters": parameters,
        "clock": "2025-03-14T10:02:11+01:00",
        "generated_at": "2025-03-14T10:02:12+01:00",
        "min_cell": 5,
        "rows": rows,
    }


def _answers(example: dict[str, Any], csv: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "model": ReportAnswer,
            "content": {"application/json": {"example": example}, CSV: {"schema": {"type": "string"}, "example": csv}},
        },
        422: {"description": "a query parameter cannot be understood; `errors[].field` names it, e.g. `query.by`"},
        **AUTH_RESPONSES,
        403: {"description": "the key lacks the role, or asks for another library than its own (`query.library`)"},
    }


FRICTIONS_EXAMPLE = _example(
    "frictions",
    {"by": ["rule", "library"], "period": "week", "from": "2025-03-01", "to": None, "library": [], "rule": [],
     "age_band": []},
    [{"rule": "online-signup-not-activated", "library": "oba", "period": "2025-W10", "detected": 42, "resolved": 30,
      "starts": 600, "rate_per_1000_starts": 70.0, "resolution_rate": 0.7143, "median_seconds_to_resolve": 259200.0,
      "members": 12000, "frictions_per_1000_members": 3.5, "suppressed": False}],
)  # fmt: skip
FUNNEL_EXAMPLE = _example(
    "funnel",
    {"steps": ["member.signed_up.v1", "member.card_activated.v1"], "by": "channel", "within": "P30D", "from": None,
     "to": None, "library": [], "age_band": []},
    [{"channel": "online", "step_number": 1, "step": "member.signed_up.v1", "entered": 1000, "reached": 1000,
      "dropped": 0, "in_progress": 0, "conversion": None, "suppressed": False},
     {"channel": "online", "step_number": 2, "step": "member.card_activated.v1", "entered": 1000, "reached": 700,
      "dropped": 200, "in_progress": 100, "conversion": 0.7778, "suppressed": False}],
)  # fmt: skip
REACH_EXAMPLE = _example(
    "reach",
    {"age_bands": ["0-3", "4-11", "12-17"], "months": 12, "library": []},
    [{"library": "oba", "age_band": "0-3", "members": 800, "active": 610, "share": 0.7625, "suppressed": False},
     {"library": "*", "age_band": "*", "members": 26000, "active": 17100, "share": 0.6577, "suppressed": False}],
)  # fmt: skip


@dataclass(frozen=True)
class Computed:
    report: Report
    clock_ms: int
    generated_ms: int


class ReportCache:
    """Computed reports, per query and key scope, kept for `seconds`: a dashboard refresh costs nothing, and
    identical requests arriving together share one computation."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._entries: dict[Hashable, tuple[float, asyncio.Task[Computed]]] = {}

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[Computed]]) -> Computed:
        if self._seconds <= 0:
            return await compute()
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is None or entry[0] <= now or _failed(entry[1]):
            for stale in [k for k, (until, _) in self._entries.items() if until <= now]:
                del self._entries[stale]
            entry = (now + self._seconds, asyncio.ensure_future(compute()))
            self._entries[key] = entry
        # Shielded: a client that goes away does not cancel the computation others wait for.
        return await asyncio.shield(entry[1])


def _failed(task: asyncio.Task[Computed]) -> bool:
    return task.done() and (task.cancelled() or task.exception() is not None)


def _bad(parameter: str, message: str) -> Problem:
    field = f"query.{parameter}"
    return Problem(422, "Unprocessable Content", f"{field}: {message}", errors=[FieldError(field, message)])


def _libraries(caller: Principal, raw: str | None) -> frozenset[str]:
    """The libraries a report covers: those asked for, within the key's scope (403 naming `library` beyond it)."""
    asked = reports.parse_list("library", raw)
    bad = [code for code in asked if not LIBRARY_CODE.match(code)]
    if bad:
        raise BadParameter("library", f"not a library code: {', '.join(bad)}")
    if caller.library == NETWORK:
        return frozenset(asked)
    beyond = [code for code in asked if code != caller.library]
    if beyond:
        message = f"this key is scoped to library {caller.library!r}; it cannot read {', '.join(beyond)}"
        raise Problem(403, "Forbidden", message, errors=[FieldError("query.library", message)])
    return frozenset({caller.library})


def _journey_types() -> list[str]:
    """The event types of a member's journey (short names, as in rules.yaml): member and usage events."""
    topics = {MEMBERS.name, USAGE.name}
    return sorted(t.removeprefix(TYPE_PREFIX) for t, model in event_types().items() if model.topic in topics)


def reports_router(reading: Reports, settings: AnalyticsSettings) -> APIRouter:
    router = APIRouter(tags=["reports"])
    cache = ReportCache(settings.analytics_cache_seconds)
    min_cell = settings.analytics_min_cell

    def answer(
        request: Request, name: str, parameters: dict[str, Any], computed: Computed, fmt: Format | None
    ) -> Response:
        headers = {"Cache-Control": f"private, max-age={int(settings.analytics_cache_seconds)}"}
        wants_csv = fmt == "csv" if fmt is not None else CSV in request.headers.get("accept", "")
        if wants_csv:
            headers["Content-Disposition"] = f'attachment; filename="{name}.csv"'
            return Response(reports.to_csv(computed.report), media_type=f"{CSV}; charset=utf-8", headers=headers)
        body = {
            "report": name,
            "parameters": parameters,
            "clock": reports.local_time(computed.clock_ms),
            "generated_at": reports.local_time(computed.generated_ms),
            "min_cell": min_cell,
            "rows": computed.report.rows,
        }
        return JSONResponse(body, headers=headers)

    async def run(key: Hashable, make: Callable[[int], Awaitable[Report]]) -> Computed:
        async def compute() -> Computed:
            clock = await reading.clock_ms()
            return Computed(await make(clock), clock, int(time.time() * 1000))

        return await cache.get(key, compute)

    @router.get(
        "/v1/reports/frictions",
        summary="Frictions detected and resolved, per 1,000 closed windows, grouped by rule, library, channel "
        "pair, platform, age band and period",
        description="Right-censored: only windows that have closed count (`starts`). Rows counting fewer than "
        "`min_cell` frictions or windows are suppressed. JSON, or CSV with `Accept: text/csv` or `format=csv`. "
        "See docs/reports.md.",
        response_model=None,
        responses=_answers(
            FRICTIONS_EXAMPLE,
            "rule,library,period,detected,resolved,starts,rate_per_1000_starts,resolution_rate,"
            "median_seconds_to_resolve,members,frictions_per_1000_members,suppressed\r\n"
            "online-signup-not-activated,oba,2025-W10,42,30,600,70.0,0.7143,259200.0,12000,3.5,false\r\n",
        ),
    )
    async def frictions(
        request: Request,
        caller: AnalystKey,
        by: Dimensions = "rule",
        period: Annotated[Period | None, Query(description="adds a period column (ISO weeks)")] = None,
        from_: FromDay = None,
        to: ToDay = None,
        library: Libraries = None,
        rule: Rules = None,
        age_band: AgeBands = None,
        format: FormatChoice = None,
    ) -> Response:
        try:
            reports.check_range(from_, to)
            query = FrictionQuery(
                by=reports.parse_dimensions(by),
                period=period,
                start=from_,
                end=to,
                libraries=_libraries(caller, library),
                rules=frozenset(reports.parse_list("rule", rule)),
                age_bands=frozenset(reports.parse_list("age_band", age_band, AGE_BANDS)),
            )
        except BadParameter as exc:
            raise _bad(exc.parameter, exc.message) from None

        async def make(clock: int) -> Report:
            return await reading.frictions(query, clock)

        computed = await run(("frictions", query), make)
        parameters = {
            "by": list(query.by),
            "period": period,
            "from": _day(from_),
            "to": _day(to),
            "library": sorted(query.libraries),
            "rule": sorted(query.rules),
            "age_band": sorted(query.age_bands),
        }
        return answer(request, "frictions", parameters, computed, format)

    @router.get(
        "/v1/reports/funnel",
        summary="A funnel between any sequence of event types: reached, dropped and still in progress per step, "
        "split by the channel or platform of the first step",
        description="A step counts at its first occurrence at or after the previous step, no later than `within` "
        "after it. Right-censored: a member whose previous step is younger than `within` (the clock) is in "
        "progress, never dropped. Rows with fewer than `min_cell` members entering the step are suppressed.",
        response_model=None,
        responses=_answers(
            FUNNEL_EXAMPLE,
            "channel,step_number,step,entered,reached,dropped,in_progress,conversion,suppressed\r\n"
            "online,1,member.signed_up.v1,1000,1000,0,0,,false\r\n"
            "online,2,member.card_activated.v1,1000,700,200,100,0.7778,false\r\n",
        ),
    )
    async def funnel(
        request: Request,
        caller: AnalystKey,
        steps: Steps,
        by: Annotated[Split | None, Query(description="split by the first step's channel or platform")] = None,
        within: Within = timedelta(days=30),
        from_: FromDay = None,
        to: ToDay = None,
        library: Libraries = None,
        age_band: AgeBands = None,
        format: FormatChoice = None,
    ) -> Response:
        try:
            if within <= timedelta(0) or within > timedelta(days=3660):
                raise BadParameter("within", "give a duration between PT1S and P3660D")
            reports.check_range(from_, to)
            query = FunnelQuery(
                steps=reports.parse_steps(steps, _journey_types()),
                within=within,
                by=by,
                start=from_,
                end=to,
                libraries=_libraries(caller, library),
                age_bands=frozenset(reports.parse_list("age_band", age_band, AGE_BANDS)),
            )
        except BadParameter as exc:
            raise _bad(exc.parameter, exc.message) from None

        async def make(clock: int) -> Report:
            return await reading.funnel(query, clock)

        computed = await run(("funnel", query), make)
        parameters = {
            "steps": list(query.steps),
            "by": by,
            "within": reports.iso_duration(within),
            "from": _day(from_),
            "to": _day(to),
            "library": sorted(query.libraries),
            "age_band": sorted(query.age_bands),
        }
        return answer(request, "funnel", parameters, computed, format)

    @router.get(
        "/v1/reports/reach",
        summary="Active reach: members active in the last N months, per library and age band, with the network total",
        description="Active: the member's last activity is at most `months` calendar months before the "
        "clock. `*` rows are totals: all the requested bands, or the whole network (a library key: its library). "
        "Cells under `min_cell` members are suppressed, and more where a total would give them away.",
        response_model=None,
        responses=_answers(
            REACH_EXAMPLE,
            "library,age_band,members,active,share,suppressed\r\noba,0-3,800,610,0.7625,false\r\n",
        ),
    )
    async def reach(
        request: Request,
        caller: AnalystKey,
        age_bands: Annotated[str, Query(description="age bands, comma-separated", examples=["0-3,4-11,12-17"])] = (
            "0-3,4-11,12-17"
        ),
        months: Months = 12,
        library: Libraries = None,
        format: FormatChoice = None,
    ) -> Response:
        try:
            bands = reports.parse_list("age_bands", age_bands, AGE_BANDS)
            if not bands:
                raise BadParameter("age_bands", "give at least one age band")
            libraries = _libraries(caller, library)
        except BadParameter as exc:
            raise _bad(exc.parameter, exc.message) from None

        async def make(clock: int) -> Report:
            return await reading.reach(bands, months, libraries, clock)

        computed = await run(("reach", bands, months, libraries), make)
        parameters = {"age_bands": list(bands), "months": months, "library": sorted(libraries)}
        return answer(request, "reach", parameters, computed, format)

    @router.get(
        "/v1/members/{member_id}/timeline",
        response_model=Timeline,
        summary="One member's journey across channels and platforms: milestones, last touches, recent events, "
        "open frictions",
        description="For front-office help (role `member-data`). A library key reads only members whose home "
        "library is its own. A merged id answers with the survivor's journey. No names or contact details: those "
        "stay in identity.",
        responses={
            **AUTH_RESPONSES,
            403: {"description": "the key lacks the role, or the member's home library is another library"},
            404: {"description": "no such member, or erased"},
        },
        tags=["members"],
    )
    async def timeline(
        member_id: Annotated[str, Path(min_length=1, max_length=64, examples=["cc02c620-7d3e-4f1b-9b7a-2f9e3c1d0a55"])],
        caller: MemberDataKey,
    ) -> dict[str, Any]:
        view = await reading.timeline(member_id)
        if view is None:
            raise not_found("the member")
        forbid_other_library(caller, view["profile"]["home_library"])
        return view

    return router


def _day(value: date | None) -> str | None:
    return None if value is None else value.isoformat()
