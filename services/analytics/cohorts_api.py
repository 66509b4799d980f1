"""Retention and paths over HTTP (role `analyst`, library scope as every report): docs/reports.md."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from services.analytics import reports
from services.analytics.answers import (
    AgeBands,
    Answering,
    FormatChoice,
    FromDay,
    Libraries,
    PresetChoice,
    ToDay,
    answers,
    checked,
    example,
    journey_types,
    scope_of,
)
from services.analytics.cohorts import PathQuery, RetentionQuery
from services.analytics.reading import Reports
from services.analytics.reports import BadParameter, Report
from services.analytics.settings import AnalyticsSettings
from shared.auth import AnalystKey

RETENTION_EXAMPLE = example(
    "retention",
    {"from": "2025-01-01", "to": None, "preset": None, "months": 12, "library": [], "age_band": []},
    [{"cohort": "2025-01", "months_after": 0, "members": 1200, "active": 1200, "share": 1.0, "suppressed": False},
     {"cohort": "2025-01", "months_after": 1, "members": 1200, "active": 640, "share": 0.5333, "suppressed": False}],
)  # fmt: skip
PATHS_EXAMPLE = example(
    "paths",
    {"event": "member.login_failed.v1", "depth": 2, "within": "P7D", "from": None, "to": None, "preset": None,
     "limit": 10, "library": [], "age_band": []},
    [{"rank": 1, "path": "member.login_succeeded.v1 → usage.loan_borrowed.v1", "step_1": "member.login_succeeded.v1",
      "step_2": "usage.loan_borrowed.v1", "occurrences": 812, "share": 0.4121, "suppressed": False},
     {"rank": 2, "path": "member.login_failed.v1 → (none)", "step_1": "member.login_failed.v1", "step_2": "(none)",
      "occurrences": 301, "share": 0.1528, "suppressed": False}],
)  # fmt: skip


def cohorts_router(reading: Reports, settings: AnalyticsSettings) -> APIRouter:
    router = APIRouter(tags=["reports"])
    answering = Answering(reading, settings)

    @router.get(
        "/v1/reports/retention",
        summary="Retention: members by the month they signed up, and the share of each cohort active in each "
        "later month",
        description="Month 0 is the sign-up month. Activity: any member or usage event except merges and "
        "erasures. Months after the clock's month are not shown (nobody counts as inactive in a month still to "
        "come). A cohort under `min_cell` members is suppressed whole; a month with fewer than `min_cell` (but "
        "some) active members has `active` and `share` suppressed.",
        response_model=None,
        responses=answers(
            RETENTION_EXAMPLE,
            "cohort,months_after,members,active,share,suppressed\r\n2025-01,0,1200,1200,1.0,false\r\n",
        ),
    )
    async def retention(
        request: Request,
        caller: AnalystKey,
        from_: FromDay = None,
        to: ToDay = None,
        preset: PresetChoice = None,
        months: Annotated[int, Query(ge=1, le=36, description="later months per cohort", examples=[12])] = 12,
        library: Libraries = None,
        age_band: AgeBands = None,
        format: FormatChoice = None,
    ) -> Response:
        with checked():
            scope = scope_of(caller, preset, from_, to, library, age_band)
        query = RetentionQuery(months=months, **scope.query())

        async def make(clock: int) -> Report:
            return await reading.retention(query, clock)

        computed = await answering.run(("retention", query), make)
        parameters = {**scope.days(), "months": months, **scope.members()}
        return answering.answer(request, "retention", parameters, computed, format)

    @router.get(
        "/v1/reports/paths",
        summary="Paths: the most common next steps after an event of a chosen type",
        description="For every occurrence of `event`, the member's next `depth` events (member and usage events), "
        "each at most `within` after the one before; `(none)` where nothing came in time. Right-censored: "
        "occurrences younger than `depth` times `within` are left out. The `limit` most common paths, with their "
        "share of all occurrences counted; paths followed fewer than `min_cell` times are suppressed.",
        response_model=None,
        responses=answers(
            PATHS_EXAMPLE,
            "rank,path,step_1,step_2,occurrences,share,suppressed\r\n"
            "1,member.login_succeeded.v1 → usage.loan_borrowed.v1,member.login_succeeded.v1,"
            "usage.loan_borrowed.v1,812,0.4121,false\r\n",
        ),
    )
    async def paths(
        request: Request,
        caller: AnalystKey,
        event: Annotated[
            str,
            Query(description="the event type the paths start after (short name)", examples=["member.login_failed.v1"]),
        ],
        depth: Annotated[int, Query(ge=1, le=3, description="next steps per path")] = 2,
        within: Annotated[timedelta, Query(description="ISO 8601 duration between two steps", examples=["P7D"])] = (
            timedelta(days=7)
        ),
        from_: FromDay = None,
        to: ToDay = None,
        preset: PresetChoice = None,
        limit: Annotated[int, Query(ge=1, le=100, description="the most common paths shown")] = 10,
        library: Libraries = None,
        age_band: AgeBands = None,
        format: FormatChoice = None,
    ) -> Response:
        with checked():
            if event not in journey_types():
                raise BadParameter("event", f"unknown event type {event} (short names, e.g. member.login_failed.v1)")
            if within <= timedelta(0) or within > timedelta(days=366):
                raise BadParameter("within", "give a duration between PT1S and P366D")
            scope = scope_of(caller, preset, from_, to, library, age_band)
        query = PathQuery(event=event, depth=depth, within=within, limit=limit, **scope.query())

        async def make(clock: int) -> Report:
            return await reading.paths(query, clock)

        computed = await answering.run(("paths", query), make)
        parameters = {"event": event, "depth": depth, "within": reports.iso_duration(within), **scope.days(),
                      "limit": limit, **scope.members()}  # fmt: skip
        return answering.answer(request, "paths", parameters, computed, format)

    return router
