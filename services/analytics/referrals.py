"""Referrals by the front office and their follow-through, per library and proposition: of the members referred
onward (identity's `member.referred`), how many attended an activity of that proposition within 30 days.

Right-censored: a referral still inside its 30 days without attendance is `pending`, not missed; the
follow-through rate counts only the referrals whose outcome is known.
"""

# ruff: noqa: S608  (SQL is built from the code's own names; every value travels as a typed query parameter)
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query

from services.analytics.answers import json_example, readable_rows
from services.analytics.population import ALL
from services.analytics.reading import Reports
from services.analytics.reports import ratio
from services.analytics.store import AnalyticsStore
from shared.auth import AUTH_RESPONSES, AnalystKey

DAY_MS = 86_400_000
REFERRED = "member.referred.v1"
ATTENDED = "usage.activity_attended.v1"
FIGURES = ("referred", "followed", "pending")
Rows = Callable[[Sequence[dict[str, Any]], int], list[dict[str, Any]]]

SQL = f"""
    SELECT ref.2 AS library, ref.3 AS proposition, count() AS referred,
           countIf(arrayExists(a -> a.2 = ref.3 AND a.1 >= ref.1 AND a.1 <= ref.1 + {{within:Int64}}, attended))
             AS followed,
           countIf(NOT arrayExists(a -> a.2 = ref.3 AND a.1 >= ref.1 AND a.1 <= ref.1 + {{within:Int64}}, attended)
                   AND ref.1 + {{within:Int64}} > {{clock:Int64}}) AS pending
    FROM (
        SELECT member_key,
               groupArrayIf((toUnixTimestamp64Milli(time), ifNull(library, ''), ifNull(proposition, '')),
                            type = '{REFERRED}') AS referrals,
               groupArrayIf((toUnixTimestamp64Milli(time), ifNull(proposition, '')), type = '{ATTENDED}') AS attended
        FROM {{db}}.events
        WHERE type IN ('{REFERRED}', '{ATTENDED}')
        GROUP BY member_key
        HAVING length(referrals) > 0
    )
    ARRAY JOIN referrals AS ref
    GROUP BY library, proposition
"""


def outcome_rows(
    counted: Sequence[dict[str, Any]], figures: tuple[str, str, str], rate: str, min_cell: int
) -> list[dict[str, Any]]:
    """A row per library and proposition, per library (`*`), per proposition over the network and the network, of
    `figures`: (how many started, how many did it, how many are still inside their window); `rate`: did it / those
    whose outcome is known. Rows of fewer than `min_cell` started are suppressed (figures and rate null)."""
    size, done, pending = figures
    cells = {(str(r["library"]), str(r["proposition"])): {f: int(r[f]) for f in figures} for r in counted}
    rows = []
    for library in [*sorted({library for library, _ in cells}), ALL]:
        for proposition in [*sorted({proposition for _, proposition in cells}), ALL]:
            parts = [v for (lib, p), v in cells.items() if library in (ALL, lib) and proposition in (ALL, p)]
            if not parts:
                continue
            summed = {f: sum(part[f] for part in parts) for f in figures}
            hidden = summed[size] < min_cell
            rows.append(
                {
                    "library": library,
                    "proposition": proposition,
                    **{f: None if hidden else n for f, n in summed.items()},
                    rate: None if hidden else ratio(summed[done], summed[size] - summed[pending], 1, 4),
                    "suppressed": hidden,
                }
            )
    return rows


def outcome_route(
    router: APIRouter,
    path: str,
    read: tuple[AnalyticsStore, Reports, int],
    *,
    sql: str,
    rows_of: Rows,
    within_days: int,
    example: dict[str, Any],
    name: str,
    summary: str,
    description: str,
) -> None:
    """Declare on `router` the report `name` at `path`: `sql` run with parameters `within` (`within_days`, the
    default) and the store's `clock` (ms), made rows by `rows_of(counted, min_cell)`; a library's key sees its own
    library's rows. `example`: one counted row, for the OpenAPI example."""
    store, reports, min_cell = read
    default = within_days
    shown = json_example({"within_days": default, "rows": rows_of([example], 5)})

    @router.get(path, name=name, summary=summary, description=description, responses=shown)
    async def report(caller: AnalystKey, within_days: Annotated[int, Query(ge=1, le=365)] = default) -> dict[str, Any]:
        clock = await reports.clock_ms()
        counted = await store.rows(sql, {"within": within_days * DAY_MS, "clock": clock})
        return {"within_days": within_days, "rows": readable_rows(rows_of(counted, min_cell), caller)}


def referral_rows(counted: Sequence[dict[str, Any]], min_cell: int) -> list[dict[str, Any]]:
    """`outcome_rows` of the referrals: referred, followed through, pending."""
    return outcome_rows(counted, FIGURES, "follow_through", min_cell)


def referrals_router(store: AnalyticsStore, reports: Reports, min_cell: int) -> APIRouter:
    router = APIRouter(tags=["reach 0-18"], responses=AUTH_RESPONSES)
    outcome_route(
        router,
        "/v1/reports/referrals",
        (store, reports, min_cell),
        sql=SQL,
        rows_of=referral_rows,
        within_days=30,
        example={"library": "oba", "proposition": "taalcafe", "referred": 25, "followed": 14, "pending": 3},
        name="referrals",
        summary="Front-office referrals and their follow-through per library and proposition",
        description="Followed: the member attended an activity of the proposition within `within_days` of the "
        "referral. Right-censored: referrals still inside their window are `pending`. See docs/soob.md.",
    )
    return router
