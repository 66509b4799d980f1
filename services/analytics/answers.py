"""What every analytics report shares: the query parameters, the answer (JSON envelope or CSV), the short cache,
the checks of library scope and the OpenAPI models and examples. docs/reports.md is the contract."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Annotated, Any, Literal

import msgspec
from fastapi import Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from services.analytics import reports
from services.analytics.reading import Reports
from services.analytics.reports import BadParameter, Preset, Report, local_date, preset_range
from services.analytics.settings import AnalyticsSettings
from shared.auth import AUTH_RESPONSES, NETWORK, Principal
from shared.events import FieldError
from shared.events.registry import TYPE_PREFIX, event_types
from shared.events.types import AGE_BANDS, IsoDate
from shared.problems import Problem
from shared.topics import MEMBERS, USAGE

CSV = "text/csv"
LIBRARY_CODE = re.compile(r"^[a-z][a-z0-9-]{1,39}$")
Format = Literal["json", "csv"]

# Query parameters the reports share.
FromDay = Annotated[
    IsoDate | None, Query(alias="from", description="first day (Europe/Amsterdam), inclusive", examples=["2025-03-01"])
]
ToDay = Annotated[IsoDate | None, Query(description="last day (Europe/Amsterdam), inclusive", examples=["2025-03-31"])]
Libraries = Annotated[
    str | None, Query(description="library codes, comma-separated; a library key: its own only", examples=["oba"])
]
AgeBands = Annotated[str | None, Query(description="age bands, comma-separated", examples=["0-3,4-11"])]
PresetChoice = Annotated[
    Preset | None,
    Query(
        description="a date range by name, up to today (Europe/Amsterdam): today, last_7_days, last_30_days, "
        "this_month, last_month, last_12_months, this_year, last_year; instead of from/to",
        examples=["last_30_days"],
    ),
]
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
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "member_id": "cc02c620-7d3e-4f1b-9b7a-2f9e3c1d0a55",
                    "requested_id": "cc02c620-7d3e-4f1b-9b7a-2f9e3c1d0a55",
                    "profile": {"age_band": "18-64", "home_library": "oba", "postcode_area": "1034",
                                "channel": "online", "platform": "website", "source": None},
                    "milestones": [{"type": "member.signed_up.v1", "at": "2025-03-01T10:00:00+01:00",
                                    "channel": "online", "platform": "website"}],
                    "last_touch": {"channels": {"online": "2025-03-01T10:00:00+01:00"},
                                   "platforms": {"website": "2025-03-01T10:00:00+01:00"}},
                    "last_activity": "2025-03-01T10:00:00+01:00",
                    "timeline": [{"type": "member.signed_up.v1", "at": "2025-03-01T10:00:00+01:00",
                                  "channel": "online", "platform": "website", "library": "oba"}],
                    "open_frictions": [{"friction_id": "5b0e1c2d-8f3a-4e6b-9c7d-1a2b3c4d5e6f",
                                        "rule": "online-signup-not-activated", "started": "2025-03-01T10:00:00+01:00",
                                        "detected": "2025-03-15T10:00:00+01:00", "library": "oba",
                                        "channel_pair": "online→offline", "platform": "website"}],
                }
            ]
        }
    )  # fmt: skip

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


def json_example(example: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` entry of a 200 JSON answer that shows `example`."""
    return {200: {"content": {"application/json": {"example": example}}}}


def example(report: str, parameters: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "report": report,
        "parameters": parameters,
        "clock": "2025-03-14T10:02:11+01:00",
        "generated_at": "2025-03-14T10:02:12+01:00",
        "min_cell": 5,
        "rows": rows,
    }


def answers(example: dict[str, Any], csv: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "model": ReportAnswer,
            "content": {"application/json": {"example": example}, CSV: {"schema": {"type": "string"}, "example": csv}},
        },
        422: {"description": "a query parameter cannot be understood; `errors[].field` names it, e.g. `query.by`"},
        **AUTH_RESPONSES,
        403: {"description": "the key lacks the role, or asks for another library than its own (`query.library`)"},
    }


FRICTIONS_EXAMPLE = example(
    "frictions",
    {"by": ["rule", "library"], "period": "week", "from": "2025-03-01", "to": None, "library": [], "rule": [],
     "age_band": []},
    [{"rule": "online-signup-not-activated", "library": "oba", "period": "2025-W10", "detected": 42, "resolved": 30,
      "starts": 600, "rate_per_1000_starts": 70.0, "resolution_rate": 0.7143, "median_seconds_to_resolve": 259200.0,
      "members": 12000, "frictions_per_1000_members": 3.5, "suppressed": False}],
)  # fmt: skip
FUNNEL_EXAMPLE = example(
    "funnel",
    {"steps": ["member.signed_up.v1", "member.card_activated.v1"], "by": "channel", "within": "P30D", "from": None,
     "to": None, "library": [], "age_band": []},
    [{"channel": "online", "step_number": 1, "step": "member.signed_up.v1", "entered": 1000, "reached": 1000,
      "dropped": 0, "in_progress": 0, "conversion": None, "suppressed": False},
     {"channel": "online", "step_number": 2, "step": "member.card_activated.v1", "entered": 1000, "reached": 700,
      "dropped": 200, "in_progress": 100, "conversion": 0.7778, "suppressed": False}],
)  # fmt: skip
REACH_EXAMPLE = example(
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


def bad(parameter: str, message: str) -> Problem:
    field = f"query.{parameter}"
    return Problem(422, "Unprocessable Content", f"{field}: {message}", errors=[FieldError(field, message)])


@contextmanager
def checked() -> Iterator[None]:
    """Parameters parsed inside are answered, when one is bad, with the 422 naming it (`bad`)."""
    try:
        yield
    except BadParameter as exc:
        raise bad(exc.parameter, exc.message) from None


def libraries_of(caller: Principal, raw: str | None) -> frozenset[str]:
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


def readable_rows(rows: list[dict[str, Any]], caller: Principal) -> list[dict[str, Any]]:
    """The rows of the libraries the key may read: all for a key of the whole network, else its library's own."""
    return [r for r in rows if caller.covers(r["library"])]


@dataclass(frozen=True)
class Scope:
    """The days and the members a report counts (funnel, retention, paths), as its query and its answer take them."""

    preset: Preset | None
    start: date | None
    end: date | None
    libraries: frozenset[str]
    age_bands: frozenset[str]

    def query(self) -> dict[str, Any]:
        """The fields every report's query has for them."""
        return {"start": self.start, "end": self.end, "libraries": self.libraries, "age_bands": self.age_bands}

    def days(self) -> dict[str, Any]:
        """The days as the answer's `parameters` show them."""
        return {"from": day(self.start), "to": day(self.end), "preset": self.preset}

    def members(self) -> dict[str, Any]:
        """The members as the answer's `parameters` show them."""
        return {"library": sorted(self.libraries), "age_band": sorted(self.age_bands)}


def scope_of(
    caller: Principal,
    preset: Preset | None,
    start: date | None,
    end: date | None,
    library: str | None,
    age_band: str | None,
) -> Scope:
    """The report's days (`date_range`) and members (`libraries_of`, age bands), checked in that order."""
    first, last = date_range(preset, start, end)
    libraries = libraries_of(caller, library)
    return Scope(preset, first, last, libraries, frozenset(reports.parse_list("age_band", age_band, AGE_BANDS)))


def journey_types() -> list[str]:
    """The event types of a member's journey (short names, as in rules.yaml): member and usage events."""
    topics = {MEMBERS.name, USAGE.name}
    return sorted(t.removeprefix(TYPE_PREFIX) for t, model in event_types().items() if model.topic in topics)


class Answering:
    """Computes a report once per query and key scope (`cache`), and answers it as JSON or CSV."""

    def __init__(self, reading: Reports, settings: AnalyticsSettings) -> None:
        self._reading = reading
        self._cache = ReportCache(settings.analytics_cache_seconds)
        self._max_age = int(settings.analytics_cache_seconds)
        self.min_cell = settings.analytics_min_cell

    async def run(self, key: Hashable, make: Callable[[int], Awaitable[Report]]) -> Computed:
        async def compute() -> Computed:
            clock = await self._reading.clock_ms()
            return Computed(await make(clock), clock, int(time.time() * 1000))

        return await self._cache.get(key, compute)

    def answer(
        self, request: Request, name: str, parameters: dict[str, Any], computed: Computed, fmt: Format | None
    ) -> Response:
        headers = {"Cache-Control": f"private, max-age={self._max_age}"}
        wants_csv = fmt == "csv" if fmt is not None else CSV in request.headers.get("accept", "")
        if wants_csv:
            headers["Content-Disposition"] = f'attachment; filename="{name}.csv"'
            return Response(reports.to_csv(computed.report), media_type=f"{CSV}; charset=utf-8", headers=headers)
        body = {
            "report": name,
            "parameters": parameters,
            "clock": reports.local_time(computed.clock_ms),
            "generated_at": reports.local_time(computed.generated_ms),
            "min_cell": self.min_cell,
            "rows": computed.report.rows,
        }
        # msgspec: a report of 50,000 rows is encoded in milliseconds, not the second the json module takes.
        return Response(msgspec.json.encode(body), media_type="application/json", headers=headers)


def date_range(preset: Preset | None, start: date | None, end: date | None) -> tuple[date | None, date | None]:
    """from/to as given, or the preset's days; both at once is a bad `preset`."""
    if preset is None:
        reports.check_range(start, end)
        return start, end
    if start is not None or end is not None:
        raise BadParameter("preset", "give a preset or from/to, not both")
    return preset_range(preset, local_date(int(time.time() * 1000)))


def day(value: date | None) -> str | None:
    return None if value is None else value.isoformat()
