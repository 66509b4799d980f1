"""The BoekStart funnel, per library and partner: babies (0-3) signed up via a partner (consultatiebureau,
kinderopvang, school) → the guardian's first visit or login after the child's sign-up (the guardian's card
activated, an activity attended, or a login: a baby does none of these itself) → a first loan for the child within
60 days of the sign-up → still borrowing at 1, 2 and 3 years (a loan in the year before that
anniversary).

Right-censored like the other funnels: a child whose 60 days have not passed and who has not borrowed yet is
`first_loan_pending`, not dropped; a year's retention counts only the children whose anniversary has passed
(`due_1y` …). Years are 365 days.
"""

# ruff: noqa: S608  (SQL is built from the code's own names; every value travels as a typed query parameter)
from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query

from services.analytics.answers import json_example, readable_rows
from services.analytics.population import ALL, PARTNERS
from services.analytics.reading import Reports
from services.analytics.store import AnalyticsStore, array_literal
from shared.auth import AUTH_RESPONSES, AnalystKey

DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS
SIGNED_UP = "member.signed_up.v1"
BORROWED = "usage.loan_borrowed.v1"
VISITS = ("member.card_activated.v1", "usage.activity_attended.v1", "member.login_succeeded.v1")  # the guardian's
FIGURES = (
    "signed_up",
    "visited",
    "first_loan",
    "first_loan_pending",
    "due_1y",
    "borrowing_1y",
    "due_2y",
    "borrowing_2y",
    "due_3y",
    "borrowing_3y",
)


def funnel_sql(first_loan_days: int) -> tuple[str, dict[str, str | int | float]]:
    visits = "(" + ", ".join(f"'{v}'" for v in VISITS) + ")"
    retention = ",\n".join(
        f"countIf(joined + {k} * {YEAR_MS} <= {{clock:Int64}}) AS due_{k}y, "
        f"countIf(joined + {k} * {YEAR_MS} <= {{clock:Int64}} AND arrayExists(t -> t > joined + {k - 1} * {YEAR_MS} "
        f"AND t <= joined + {k} * {YEAR_MS}, loans)) AS borrowing_{k}y"
        for k in (1, 2, 3)
    )
    # A child's guardians' visits (family.py keeps the links; siblings share a guardian, so a visit counts for each
    # child of theirs), read only for members who are someone's guardian.
    guardian_visits = f"""
        SELECT l.child_id AS child_id, arrayFlatten(groupArray(v.times)) AS times
        FROM (SELECT DISTINCT child_id, guardian_id FROM {{db}}.guardians) AS l
        INNER JOIN (SELECT member_id, groupArray(toUnixTimestamp64Milli(time)) AS times FROM {{db}}.events
                    WHERE member_key IN (SELECT cityHash64(guardian_id) FROM {{db}}.guardians) AND type IN {visits}
                    GROUP BY member_id) AS v
          ON l.guardian_id = v.member_id
        GROUP BY l.child_id
    """
    sql = f"""
        SELECT library, partner, count() AS signed_up,
               countIf(arrayExists(t -> t >= joined, g.times)) AS visited,
               countIf(arrayExists(t -> t >= joined AND t <= joined + {{within:Int64}}, loans)) AS first_loan,
               countIf(NOT arrayExists(t -> t >= joined AND t <= joined + {{within:Int64}}, loans)
                       AND joined + {{within:Int64}} > {{clock:Int64}}) AS first_loan_pending,
               {retention}
        FROM (
            SELECT member_key, any(member_id) AS child_id,
                   argMinIf(home_library, time, type = '{SIGNED_UP}') AS library,
                   argMinIf(source, time, type = '{SIGNED_UP}') AS partner,
                   argMinIf(age_band, time, type = '{SIGNED_UP}') AS band,
                   minIf(toUnixTimestamp64Milli(time), type = '{SIGNED_UP}') AS joined,
                   groupArrayIf(toUnixTimestamp64Milli(time), type = '{BORROWED}') AS loans
            FROM {{db}}.events
            WHERE type IN ('{SIGNED_UP}', '{BORROWED}')
            GROUP BY member_key
            HAVING countIf(type = '{SIGNED_UP}' AND merged_from = '') > 0
        ) AS c
        LEFT JOIN ({guardian_visits}) AS g ON c.child_id = g.child_id
        WHERE band = '0-3' AND partner IN {{partners:Array(String)}}
        GROUP BY library, partner
    """
    return sql, {"within": first_loan_days * DAY_MS, "partners": array_literal(list(PARTNERS))}


def funnel_rows(counted: Sequence[dict[str, Any]], min_cell: int) -> list[dict[str, Any]]:
    """A row per library and partner, per library (`*` partner), per partner over the network (`*` library) and
    the network; a row of fewer than `min_cell` children signed up is suppressed (its figures null)."""
    cells = {(str(r["library"]), str(r["partner"])): {f: int(r[f]) for f in FIGURES} for r in counted}
    libraries = sorted({library for library, _ in cells})
    partners = sorted({partner for _, partner in cells})
    rows = []
    for library in [*libraries, ALL]:
        for partner in [*partners, ALL]:
            parts = [v for (lib, p), v in cells.items() if library in (ALL, lib) and partner in (ALL, p)]
            if not parts:
                continue
            figures = {f: sum(part[f] for part in parts) for f in FIGURES}
            hidden = figures["signed_up"] < min_cell
            row: dict[str, Any] = {"library": library, "partner": partner}
            row.update({f: None if hidden else n for f, n in figures.items()})
            row["first_loan_rate"] = (
                None if hidden else _rate(figures["first_loan"], figures["signed_up"] - figures["first_loan_pending"])
            )
            for k in (1, 2, 3):
                row[f"retention_{k}y"] = None if hidden else _rate(figures[f"borrowing_{k}y"], figures[f"due_{k}y"])
            row["suppressed"] = hidden
            rows.append(row)
    return rows


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole > 0 else None


_EXAMPLE_CELL = {"library": "oba", "partner": "consultatiebureau", "signed_up": 120, "visited": 84, "first_loan": 61,
                 "first_loan_pending": 9, "due_1y": 80, "borrowing_1y": 52, "due_2y": 40, "borrowing_2y": 22,
                 "due_3y": 0, "borrowing_3y": 0}  # fmt: skip


def boekstart_router(store: AnalyticsStore, reports: Reports, min_cell: int) -> APIRouter:
    router = APIRouter(tags=["reach 0-18"], responses=AUTH_RESPONSES)

    @router.get(
        "/v1/reports/boekstart-funnel",
        summary="The BoekStart funnel per library and partner: partner sign-up, the guardian's first visit or login, "
        "first loan within 60 days, still borrowing at 1, 2 and 3 years",
        description="Babies (0-3) signed up via a consultatiebureau, kinderopvang or school; `visited`: one of "
        "their guardians activated a card, attended an activity or logged in after the child's sign-up. "
        "Right-censored: children still inside their 60 days are `first_loan_pending`; a year's retention counts "
        "only children whose anniversary has passed. Rows of fewer than `min_cell` children are suppressed. See "
        "docs/soob.md.",
        responses=json_example({"first_loan_days": 60, "rows": funnel_rows([_EXAMPLE_CELL], 5)}),
    )
    async def funnel(caller: AnalystKey, first_loan_days: Annotated[int, Query(ge=1, le=365)] = 60) -> dict[str, Any]:
        sql, parameters = funnel_sql(first_loan_days)
        counted = await store.rows(sql, {**parameters, "clock": await reports.clock_ms()})
        rows = funnel_rows(counted, min_cell)
        return {"first_loan_days": first_loan_days, "rows": readable_rows(rows, caller)}

    return router
