"""Referrals by the front office and their follow-through, per library and proposition: of the members referred
onward (identity's `member.referred`), how many attended an activity of that proposition within 30 days.

Right-censored: a referral still inside its 30 days without attendance is `pending`, not missed; the
follow-through rate counts only the referrals whose outcome is known.
"""

# ruff: noqa: S608  (SQL is built from the code's own names; every value travels as a typed query parameter)
from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query

from services.analytics.population import ALL
from services.analytics.reading import Reports
from services.analytics.store import AnalyticsStore
from shared.auth import AUTH_RESPONSES, NETWORK, AnalystKey

DAY_MS = 86_400_000
REFERRED = "member.referred.v1"
ATTENDED = "usage.activity_attended.v1"
FIGURES = ("referred", "followed", "pending")

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


def referral_rows(counted: Sequence[dict[str, Any]], min_cell: int) -> list[dict[str, Any]]:
    """A row per library and proposition, per library (`*`), per proposition over the network and the network;
    rows of fewer than `min_cell` referrals suppressed."""
    cells = {(str(r["library"]), str(r["proposition"])): {f: int(r[f]) for f in FIGURES} for r in counted}
    libraries = sorted({library for library, _ in cells})
    propositions = sorted({proposition for _, proposition in cells})
    rows = []
    for library in [*libraries, ALL]:
        for proposition in [*propositions, ALL]:
            parts = [v for (lib, p), v in cells.items() if library in (ALL, lib) and proposition in (ALL, p)]
            if not parts:
                continue
            figures = {f: sum(part[f] for part in parts) for f in FIGURES}
            hidden = figures["referred"] < min_cell
            known = figures["referred"] - figures["pending"]
            rows.append(
                {
                    "library": library,
                    "proposition": proposition,
                    **{f: None if hidden else n for f, n in figures.items()},
                    "follow_through": None if hidden or known == 0 else round(figures["followed"] / known, 4),
                    "suppressed": hidden,
                }
            )
    return rows


def referrals_router(store: AnalyticsStore, reports: Reports, min_cell: int) -> APIRouter:
    router = APIRouter(tags=["reach 0-18"], responses=AUTH_RESPONSES)

    @router.get(
        "/v1/reports/referrals",
        summary="Front-office referrals and their follow-through per library and proposition",
        description="Followed: the member attended an activity of the proposition within `within_days` of the "
        "referral. Right-censored: referrals still inside their window are `pending`. See docs/soob.md.",
    )
    async def referrals(caller: AnalystKey, within_days: Annotated[int, Query(ge=1, le=365)] = 30) -> dict[str, Any]:
        clock = await reports.clock_ms()
        counted = await store.rows(SQL, {"within": within_days * DAY_MS, "clock": clock})
        rows = referral_rows(counted, min_cell)
        if caller.library != NETWORK:
            rows = [r for r in rows if r["library"] == caller.library]
        return {"within_days": within_days, "rows": rows}

    return router
