"""The friction dashboard's rules without I/O: its filters, which report each section asks and with what query,
the time series' granularity, top-10 lists and the periods of a range.

Every number the dashboard shows is a reports API answer (pages.py asks them with the visitor's key): nothing
here counts, so library scope and small-cell suppression are exactly the API's.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

from services.analytics.reports import Period, Preset, local_date, preset_range
from shared.events.types import AGE_BANDS

PERIODS: tuple[Period, ...] = ("day", "week", "month")
AUTO = "auto"  # the time series' granularity chosen from the date range
SPLITS = ("channel", "platform")
YOUTH_BANDS = "0-3,4-11,12-17"  # the reach goal's bands: the API's default
TOP = 10  # rows a ranking shows before "show all"
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
DEFAULT_PATH_EVENT = "member.login_failed.v1"  # "what do members do after a failed login?"
PRESETS: tuple[Preset, ...] = ("last_30_days", "last_12_months", "this_year", "last_year")
RETENTION_MONTHS = 12  # cohorts of the last year by default, each followed for a year
_LIBRARY = re.compile(r"^[a-z][a-z0-9-]{1,39}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def today() -> date:
    """Today in Europe/Amsterdam (the reports' days)."""
    return local_date(int(time.time() * 1000))


# ---------------------------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class DashboardFilters:
    """The dashboard's filters, checked; `errors` maps a form field to the catalogue key of what is wrong.
    A library (chosen, or the key's own) turns the dashboard into that library's page."""

    start: str = ""
    end: str = ""
    period: str = AUTO
    library: str = ""
    rule: str = ""
    age_band: str = ""
    steps: tuple[str, ...] = DEFAULT_STEPS
    split: str = "channel"
    within_days: int = 30
    after: str = DEFAULT_PATH_EVENT
    errors: dict[str, str] = field(default_factory=dict)

    def form(self, **changed: str) -> dict[str, str]:
        """The filters as the form (and the page's links) carry them; `changed` replaces some (a drill-down
        link: `library=oba`; an empty value drops the filter)."""
        values = {
            "from": self.start,
            "to": self.end,
            "period": "" if self.period == AUTO else self.period,
            "library": self.library,
            "rule": self.rule,
            "age_band": self.age_band,
            "split": self.split,
            "within": str(self.within_days),
            "after": "" if self.after == DEFAULT_PATH_EVENT else self.after,
        }
        values.update({f"step{i + 1}": step for i, step in enumerate(self.steps)})
        values.update(changed)
        return {name: value for name, value in values.items() if value}

    def common(self) -> dict[str, str]:
        values = {"from": self.start, "to": self.end, "library": self.library, "age_band": self.age_band}
        return {name: value for name, value in values.items() if value}


def dashboard_filters(
    raw: Mapping[str, str], rules: Sequence[str], scope: str | None, events: Sequence[str] = ()
) -> DashboardFilters:
    """Read the filters from the query string; a key of one library always gets its own library. `events`: the
    event types paths may start after (none given: any)."""
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
        period=choice("period", (AUTO, *PERIODS), AUTO) or AUTO,
        library=library,
        rule=choice("rule", rules),
        age_band=choice("age_band", AGE_BANDS),
        steps=steps,
        split=choice("split", ("", *SPLITS), "channel") if "split" in raw else "channel",
        within_days=within,
        after=choice("after", events, DEFAULT_PATH_EVENT) if events else DEFAULT_PATH_EVENT,
        errors=errors,
    )


def preset_links(filters: DashboardFilters, on: date) -> list[tuple[Preset, dict[str, str]]]:
    """Date-range presets as the form's values: each preset's from and to, the other filters kept."""
    links = []
    for preset in PRESETS:
        first, last = preset_range(preset, on)
        links.append((preset, filters.form(**{"from": first.isoformat(), "to": last.isoformat()})))
    return links


# ---------------------------------------------------------------------------------------------- sections


def _over_time(f: DashboardFilters) -> dict[str, str]:
    period = f.period if f.period in PERIODS else "month"
    return {"by": "rule", "period": period, **f.common(), **_rule(f)}


def _rule(f: DashboardFilters) -> dict[str, str]:
    return {"rule": f.rule} if f.rule else {}


def _funnel(f: DashboardFilters) -> dict[str, str]:
    split = {"by": f.split} if f.split else {}
    return {"steps": ",".join(f.steps), "within": f"P{f.within_days}D", **split, **f.common()}


def _reach(f: DashboardFilters) -> dict[str, str]:
    # The chosen age band, else the reach goal's youth bands (a library's page: every band); no dates (12 months).
    bands = f.age_band or (",".join(AGE_BANDS) if f.library else YOUTH_BANDS)
    reach = {"age_bands": bands, "months": "12"}
    return {**reach, "library": f.library} if f.library else reach


def _retention(f: DashboardFilters) -> dict[str, str]:
    # Without dates: the cohorts of the last twelve months (a two-year history would be 24 rows of 13 cells).
    start = f.start or months_back(today(), RETENTION_MONTHS - 1).isoformat()
    return {"months": str(RETENTION_MONTHS), **f.common(), "from": start}


def _paths(f: DashboardFilters) -> dict[str, str]:
    return {"event": f.after, "depth": "2", "within": "P7D", "limit": str(TOP), **f.common()}


@dataclass(frozen=True)
class Section:
    """One part of the dashboard: the report it shows, the query that asks for it, and on which page (the
    network's, a library's, or both)."""

    name: str
    path: str
    make: Callable[[DashboardFilters], dict[str, str]]
    network: bool = True
    library: bool = True

    def query(self, filters: DashboardFilters) -> dict[str, str]:
        return self.make(filters)

    def shown(self, filters: DashboardFilters) -> bool:
        return self.library if filters.library else self.network


FRICTIONS = "/v1/reports/frictions"
SECTIONS: tuple[Section, ...] = (
    Section("over-time", FRICTIONS, _over_time),
    Section("libraries", FRICTIONS, lambda f: {"by": "library", **f.common(), **_rule(f)}, library=False),
    Section("resolution", FRICTIONS, lambda f: {"by": "rule", **f.common(), **_rule(f)}),
    Section("channel-pairs", FRICTIONS, lambda f: {"by": "channel_pair", **f.common(), **_rule(f)}),
    Section("platforms", FRICTIONS, lambda f: {"by": "platform", **f.common(), **_rule(f)}),
    Section("age-bands", FRICTIONS, lambda f: {"by": "age_band", **f.common(), **_rule(f)}, network=False),
    Section("funnel", "/v1/reports/funnel", _funnel),
    Section("reach", "/v1/reports/reach", _reach),
    Section("retention", "/v1/reports/retention", _retention),
    Section("paths", "/v1/reports/paths", _paths),
)
BY_NAME = {section.name: section for section in SECTIONS}


# --------------------------------------------------------------------------------------- time series


def granularity(start: date, end: date) -> Period:
    """The period that keeps a time series readable: days up to two months (at most 62 points), weeks up to a
    year (at most 53), months beyond."""
    days = (end - start).days + 1
    if days <= 62:
        return "day"
    if days <= 371:
        return "week"
    return "month"


def period_label(day: date, period: Period) -> str:
    """A day's period as the reports API names it: `2025-03-14`, `2025-W11` (ISO week), `2025-03`."""
    if period == "day":
        return day.isoformat()
    if period == "week":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{day.year}-{day.month:02d}"


def period_start(label: str, period: Period) -> date:
    """The first day of a period named as the API names it."""
    if period == "day":
        return date.fromisoformat(label)
    if period == "week":
        year, week = label.split("-W")
        return date.fromisocalendar(int(year), int(week), 1)
    return date.fromisoformat(f"{label}-01")


def periods_between(start: date, end: date, period: Period) -> list[str]:
    """Every period from the one holding `start` to the one holding `end`: a period without a row is a period
    without frictions, drawn as 0 rather than left out."""
    labels: list[str] = []
    day = start
    while day <= end:
        label = period_label(day, period)
        if not labels or labels[-1] != label:
            labels.append(label)
        day += timedelta(days=1) if period == "day" else timedelta(days=7 if period == "week" else 28)
    last = period_label(end, period)
    if labels[-1:] != [last]:
        labels.append(last)
    return labels


def months_back(day: date, months: int) -> date:
    """The first day of the month `months` months before `day`'s."""
    index = day.year * 12 + day.month - 1 - months
    return date(index // 12, index % 12 + 1, 1)


@dataclass(frozen=True)
class Timeline:
    """What the time series shows: the range (days, inclusive), the granularity and whether it was chosen."""

    start: date
    end: date
    period: Period
    chosen: bool

    @property
    def labels(self) -> list[str]:
        return periods_between(self.start, self.end, self.period)


def timeline(filters: DashboardFilters, rows: Sequence[Mapping[str, Any]], asked: Period, on: date) -> Timeline:
    """The time series' range and granularity: the dates filtered on, or (open ends) from the first period the
    API answered (`rows`, asked `asked`) up to `on` (the report's clock day); the period chosen by the filter,
    else by `granularity`."""
    first = min((period_start(str(r["period"]), asked) for r in rows), default=on)
    start = date.fromisoformat(filters.start) if filters.start else first
    end = date.fromisoformat(filters.end) if filters.end else max(on, start)
    if filters.period in PERIODS:
        return Timeline(start, end, filters.period, chosen=False)
    return Timeline(start, end, granularity(start, end), chosen=True)


def with_period(filters: DashboardFilters, period: Period) -> DashboardFilters:
    return replace(filters, period=period)


# ----------------------------------------------------------------------------------------------- rankings


def ranked(rows: Sequence[Mapping[str, Any]], figure: str) -> list[Mapping[str, Any]]:
    """Rows highest `figure` first; a suppressed or not computable one (None) after the rest, in API order."""
    return sorted(rows, key=lambda r: (r[figure] is None, -(r[figure] or 0)))
