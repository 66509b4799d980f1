"""Online interest versus take-up, per proposition and library: of the visitors who viewed a proposition on a
library's website (the web tracker's `client.proposition_viewed`), how many signed up for it (`member.signed_up`
naming it) or registered for one of its activities (`usage.activity_registered`) within `within_days` of their
first view.

A visitor is the subject of the client events: a member once the library's site linked the visitor to them after
login, else a random first-party id, whose take-up the store cannot see. Right-censored: a viewer still inside the
window without take-up is `pending`, not lost; the take-up rate counts only the viewers whose outcome is known.
Rows with fewer than `min_cell` viewers are suppressed (figures null), as every report's small cells are.
"""

# ruff: noqa: S608  (SQL is built from the code's own names; every value travels as a typed query parameter)
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter

from services.analytics.reading import Reports
from services.analytics.referrals import outcome_route, outcome_rows
from services.analytics.store import AnalyticsStore
from shared.auth import AUTH_RESPONSES

VIEWED = "client.proposition_viewed.v1"
TAKE_UP = ("member.signed_up.v1", "usage.activity_registered.v1")
FIGURES = ("viewers", "took_up", "pending")

_TAKEN = "arrayExists(t -> t.2 = proposition AND t.1 >= first AND t.1 <= first + {within:Int64}, taken)"
SQL = f"""
    SELECT library, proposition, count() AS viewers, countIf({_TAKEN}) AS took_up,
           countIf(NOT {_TAKEN} AND first + {{within:Int64}} > {{clock:Int64}}) AS pending
    FROM (
        SELECT member_key, ifNull(library, '') AS library, ifNull(proposition, '') AS proposition,
               min(toUnixTimestamp64Milli(time)) AS first
        FROM {{db}}.events
        WHERE type = '{VIEWED}'
        GROUP BY member_key, library, proposition
    ) AS viewed
    LEFT JOIN (
        SELECT member_key, groupArray((toUnixTimestamp64Milli(time), ifNull(proposition, ''))) AS taken
        FROM {{db}}.events
        WHERE type IN {TAKE_UP}
        GROUP BY member_key
    ) AS takers USING member_key
    GROUP BY library, proposition
"""


def interest_rows(counted: Sequence[dict[str, Any]], min_cell: int) -> list[dict[str, Any]]:
    """`outcome_rows` of the proposition views: viewers, took up, pending; rows of fewer than `min_cell` viewers
    suppressed."""
    return outcome_rows(counted, FIGURES, "take_up", min_cell)


def interest_router(store: AnalyticsStore, reports: Reports, min_cell: int) -> APIRouter:
    router = APIRouter(tags=["reports"], responses=AUTH_RESPONSES)
    outcome_route(
        router,
        "/v1/reports/interest",
        (store, reports, min_cell),
        sql=SQL,
        rows_of=interest_rows,
        within_days=14,
        example={"library": "oba", "proposition": "boekstart", "viewers": 40, "took_up": 12, "pending": 8},
        name="interest",
        summary="Online interest (proposition views on the library's website) versus take-up, per proposition and "
        "library",
        description="Took up: the viewer signed up for the proposition or registered for one of its activities "
        "within `within_days` of the first view. Right-censored: viewers still inside their window are `pending`. "
        "See docs/tracker.md.",
    )
    return router
