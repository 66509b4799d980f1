"""analytics' reports over HTTP: friction, funnel and reach for analysts, one member's timeline for front-office
help. The same URLs, parameters and answers journey's reports had (docs/reports.md is the contract).

Thin: parameters are parsed here, the counting is SQL (`services.analytics.queries`) run by `reading.Reports`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from services.analytics import reports
from services.analytics.answers import (
    FRICTIONS_EXAMPLE,
    FUNNEL_EXAMPLE,
    REACH_EXAMPLE,
    AgeBands,
    Answering,
    Dimensions,
    FormatChoice,
    FromDay,
    Libraries,
    Months,
    PresetChoice,
    Rules,
    Steps,
    Timeline,
    ToDay,
    Within,
    answers,
    checked,
    journey_types,
    libraries_of,
    scope_of,
)
from services.analytics.reading import Reports
from services.analytics.reports import BadParameter, FrictionQuery, FunnelQuery, Period, Report, Split
from services.analytics.settings import AnalyticsSettings
from shared.auth import AUTH_RESPONSES, AnalystKey, MemberDataKey, forbid_other_library
from shared.events.types import AGE_BANDS
from shared.problems import not_found


def reports_router(reading: Reports, settings: AnalyticsSettings) -> APIRouter:
    router = APIRouter(tags=["reports"])
    answering = Answering(reading, settings)
    answer, run = answering.answer, answering.run

    @router.get(
        "/v1/reports/frictions",
        summary="Frictions detected and resolved, per 1,000 closed windows, grouped by rule, library, channel "
        "pair, platform, age band and period",
        description="Right-censored: only windows that have closed count (`starts`). Rows counting fewer than "
        "`min_cell` frictions or windows are suppressed. JSON, or CSV with `Accept: text/csv` or `format=csv`. "
        "See docs/reports.md.",
        response_model=None,
        responses=answers(
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
        preset: PresetChoice = None,
        compare: Annotated[
            Literal["previous"] | None,
            Query(description="`previous`: add each group's figures in the period of the same length just before"),
        ] = None,
        library: Libraries = None,
        rule: Rules = None,
        age_band: AgeBands = None,
        format: FormatChoice = None,
    ) -> Response:
        with checked():
            scope = scope_of(caller, preset, from_, to, library, age_band)
            if compare is not None and (scope.start is None or scope.end is None or period is not None):
                raise BadParameter("compare", "needs a closed date range (from and to, or a preset) and no period")
            query = FrictionQuery(
                by=reports.parse_dimensions(by),
                period=period,
                rules=frozenset(reports.parse_list("rule", rule)),
                **scope.query(),
            )

        async def make(clock: int) -> Report:
            current = await reading.frictions(query, clock)
            if compare is None or query.start is None or query.end is None:
                return current
            before = reports.previous_range(query.start, query.end)
            previous = await reading.frictions(replace(query, start=before[0], end=before[1]), clock)
            return reports.with_previous(current, previous, query.by)

        computed = await run(("frictions", query, compare), make)
        parameters = {
            "by": list(query.by),
            "period": period,
            **scope.days(),
            "compare": compare,
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
        responses=answers(
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
        preset: PresetChoice = None,
        library: Libraries = None,
        age_band: AgeBands = None,
        format: FormatChoice = None,
    ) -> Response:
        with checked():
            if within <= timedelta(0) or within > timedelta(days=3660):
                raise BadParameter("within", "give a duration between PT1S and P3660D")
            scope = scope_of(caller, preset, from_, to, library, age_band)
            query = FunnelQuery(
                steps=reports.parse_steps(steps, journey_types()), within=within, by=by, **scope.query()
            )

        async def make(clock: int) -> Report:
            return await reading.funnel(query, clock)

        computed = await run(("funnel", query), make)
        parameters = {
            "steps": list(query.steps),
            "by": by,
            "within": reports.iso_duration(within),
            **scope.days(),
            **scope.members(),
        }
        return answer(request, "funnel", parameters, computed, format)

    @router.get(
        "/v1/reports/reach",
        summary="Active reach: members active in the last N months, per library and age band, with the network total",
        description="Active: the member's last activity is at most `months` calendar months before the "
        "clock. `*` rows are totals: all the requested bands, or the whole network (a library key: its library). "
        "Cells under `min_cell` members are suppressed, and more where a total would give them away.",
        response_model=None,
        responses=answers(
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
        with checked():
            bands = reports.parse_list("age_bands", age_bands, AGE_BANDS)
            if not bands:
                raise BadParameter("age_bands", "give at least one age band")
            libraries = libraries_of(caller, library)

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
