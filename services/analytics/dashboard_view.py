"""What each dashboard section shows, made from the reports API's answers without I/O: its charts and its table
(top ten rows, and all of them behind "show all"), numbers written in the visitor's language, a suppressed
number an en dash that says why, and the drill-down links from a library to its own page.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from markupsafe import Markup

from services.analytics.cohorts import NOTHING
from services.analytics.dashboard import TOP, DashboardFilters, Timeline, ranked
from services.analytics.dashboard_charts import HeatCell, PathRow, heat_map, path_chart
from shared.events.types import AGE_BANDS
from shared.web.charts import Bar, Series, bar_chart, funnel_chart, line_chart
from shared.web.i18n import Translator

Answer = Mapping[str, Any]
Row = Mapping[str, Any]
Link = Callable[..., str]  # the dashboard's address with some filters changed


@dataclass(frozen=True)
class Cell:
    text: str
    hidden: str = ""  # why a number is an en dash (its tooltip); empty when the number is shown
    link: str = ""  # a drill-down address
    code: bool = False  # a name kept on one line (a library code, a rule): the table scrolls in its box instead


@dataclass(frozen=True)
class Table:
    label: str  # the table's accessible name
    columns: Sequence[tuple[str, bool]]  # (heading, numeric)
    rows: Sequence[Sequence[Cell]]  # the first cell of a row heads it

    @property
    def top(self) -> Sequence[Sequence[Cell]]:
        return self.rows[:TOP]


@dataclass
class SectionView:
    name: str
    title: str
    charts: list[tuple[str, Markup]] = field(default_factory=list)  # (caption, svg)
    table: Table | None = None
    note: str = ""
    full: bool = False  # spans the page (time series, heat map, paths) rather than half of it
    all_rows: bool = False  # a long table (the time series' periods) behind "show the numbers" only


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


class View:
    """Builds the sections for one visitor's language and filters; `link(**changed)` is the dashboard's
    address with those filters changed."""

    def __init__(self, t: Translator, filters: DashboardFilters, link: Link) -> None:
        self.t = t
        self.filters = filters
        self.link = link

    # ------------------------------------------------------------------------------------------ cells

    def day(self, value: date) -> str:
        return value.strftime("%d-%m-%Y") if self.t.language == "nl" else value.isoformat()

    def number(self, row: Row, name: str, decimals: int = 0) -> Cell:
        return self._cell(row, name, lambda v: self.t.number(v, decimals))

    def percent(self, row: Row, name: str) -> Cell:
        return self._cell(row, name, self.t.percent)

    def _cell(self, row: Row, name: str, shown: Callable[[Any], str]) -> Cell:
        value = row.get(name)
        if value is None:
            why = "reports.suppressed_short" if row.get("suppressed") else "reports.not_computable"
            return Cell(self.t.number(None), hidden=self.t(why))
        return Cell(shown(value))

    def library(self, code: str | None) -> Cell:
        """A library's name in a table; on the network's page it leads to the library's own page."""
        if code in (None, "*"):
            return Cell(self.t("dashboard.network") if code == "*" else self.t("dashboard.none"), code=True)
        return Cell(code, link="" if self.filters.library else self.link(library=code), code=True)

    def _bars(self, name: str, bars: list[Bar], shown: Callable[[float | None], str], **extra: Any) -> Markup:
        return bar_chart(bars[:TOP], chart_id=f"chart-{name}", title=self.t(f"dashboard.{name.replace('-', '_')}"),
                         shown=shown, empty=self.t("dashboard.empty"), **extra)  # fmt: skip

    # --------------------------------------------------------------------------------------- sections

    def over_time(self, answer: Answer, line: Timeline) -> SectionView:
        t, labels = self.t, line.labels
        rows = answer["rows"]
        rules = sorted({str(r["rule"]) for r in rows})
        cells = {(str(r["rule"]), str(r["period"])): r for r in rows}
        series = []
        for rule in rules:
            # No row: nothing detected in that period. A suppressed row: not drawn (the line breaks).
            series.append(Series(rule_name(t, rule), [cells[(rule, p)]["detected"] if (rule, p) in cells else 0
                                                      for p in labels]))  # fmt: skip
        chart = line_chart(series, labels, chart_id="chart-over-time", title=t("dashboard.over_time"),
                           shown=lambda v: t.number(v), empty=t("dashboard.empty"), width=720)  # fmt: skip
        table = Table(
            t("dashboard.over_time_table"),
            [(t("dashboard.period"), False), *((rule_name(t, rule), True) for rule in rules)],
            [
                [Cell(p), *(self.number(cells[(rule, p)], "detected") if (rule, p) in cells else Cell(t.number(0))
                            for rule in rules)]
                for p in labels
            ],
        )  # fmt: skip
        note = t("dashboard.granularity_auto" if line.chosen else "dashboard.granularity_chosen",
                 period=t(f"periods.{line.period}"), start=self.day(line.start), end=self.day(line.end))  # fmt: skip
        return SectionView("over-time", t("dashboard.over_time"), [("", chart)], table, note, full=True, all_rows=True)

    def libraries(self, answer: Answer) -> SectionView:
        t = self.t
        rows = ranked(answer["rows"], "frictions_per_1000_members")
        bars = [Bar(str(r["library"]), r["frictions_per_1000_members"]) for r in rows]
        table = Table(
            t("dashboard.libraries"),
            [(t("dashboard.library"), False), (t("columns.members"), True), (t("columns.detected"), True),
             (t("columns.per_1000_members"), True)],
            [[self.library(r["library"]), self.number(r, "members"), self.number(r, "detected"),
              self.number(r, "frictions_per_1000_members", 1)] for r in rows],
        )  # fmt: skip
        chart = self._bars("libraries", bars, lambda v: t.number(v, 1))
        return SectionView("libraries", t("dashboard.libraries"), [("", chart)], table, t("dashboard.drill_note"))

    def resolution(self, answer: Answer) -> SectionView:
        t = self.t
        rows = answer["rows"]
        bars = [Bar(rule_name(t, str(r["rule"])), r["resolution_rate"]) for r in rows]
        title = (
            t("dashboard.rules_of", library=self.filters.library) if self.filters.library else t("dashboard.resolution")
        )
        table = Table(
            title,
            [(t("dashboard.rule"), False), (t("columns.detected"), True), (t("columns.resolved"), True),
             (t("columns.resolution_rate"), True), (t("columns.median"), True), (t("columns.starts"), True),
             (t("columns.per_1000_starts"), True)],
            [[Cell(rule_name(t, str(r["rule"])), link=self.link(rule=str(r["rule"])), code=True),
              self.number(r, "detected"),
              self.number(r, "resolved"), self.percent(r, "resolution_rate"),
              self._cell(r, "median_seconds_to_resolve", lambda v: duration(t, v)), self.number(r, "starts"),
              self.number(r, "rate_per_1000_starts", 1)] for r in rows],
        )  # fmt: skip
        chart = self._bars("resolution", bars, t.percent, maximum=1.0)
        return SectionView("resolution", title, [("", chart)], table)

    def split(self, name: str, answer: Answer, column: str) -> SectionView:
        """Frictions per channel switch, platform or age band: detected, resolved, resolution rate."""
        t = self.t
        rows = ranked(answer["rows"], "detected")

        def label(value: Any) -> str:
            if value is None:
                return t("dashboard.none")
            return t.get(f"age_bands.{value}", str(value)) if column == "age_band" else str(value)

        bars = [Bar(label(r[column]), r["detected"]) for r in rows]
        table = Table(
            t(f"dashboard.{name.replace('-', '_')}"),
            [(t(f"columns.{column}"), False), (t("columns.detected"), True), (t("columns.resolved"), True),
             (t("columns.resolution_rate"), True)],
            [[Cell(label(r[column])), self.number(r, "detected"), self.number(r, "resolved"),
              self.percent(r, "resolution_rate")] for r in rows],
        )  # fmt: skip
        chart = self._bars(name, bars, lambda v: t.number(v))
        return SectionView(name, t(f"dashboard.{name.replace('-', '_')}"), [("", chart)], table)

    def funnel(self, answer: Answer) -> SectionView:
        t, split = self.t, self.filters.split
        rows = answer["rows"]
        charts = []
        groups = list(dict.fromkeys(str(r.get(split) or "") for r in rows)) if split else [""]
        for group in groups or [""]:
            steps = [r for r in rows if not split or str(r.get(split) or "") == group]
            label = group or t("dashboard.all_members")
            bars = [Bar(step_name(t, str(r["step"])), r["reached"],
                        "" if r["conversion"] is None else t("dashboard.conversion", share=t.percent(r["conversion"])))
                    for r in steps]  # fmt: skip
            charts.append((label, funnel_chart(bars, chart_id=f"chart-funnel-{group or 'all'}",
                                               title=f"{t('dashboard.funnel')}: {label}", shown=lambda v: t.number(v),
                                               empty=t("dashboard.empty"))))  # fmt: skip
        table = Table(
            t("dashboard.funnel"),
            [*([(t(f"splits.{split}"), False)] if split else []), (t("columns.step"), False),
             (t("columns.entered"), True), (t("columns.reached"), True), (t("columns.dropped"), True),
             (t("columns.in_progress"), True), (t("columns.conversion"), True)],
            [[*([Cell(str(r.get(split) or t("dashboard.none")))] if split else []),
              Cell(f"{r['step_number']}. {step_name(t, str(r['step']))}"), self.number(r, "entered"),
              self.number(r, "reached"), self.number(r, "dropped"), self.number(r, "in_progress"),
              self.percent(r, "conversion")] for r in rows],
        )  # fmt: skip
        note = t("dashboard.funnel_note", days=self.filters.within_days)
        return SectionView("funnel", t("dashboard.funnel"), charts, table, note)

    def reach(self, answer: Answer) -> SectionView:
        """A library's page: a row per age band. The network's: a row per library (the network first, then the
        highest reach), with the share in each age band beside the share in all of them."""
        t = self.t
        rows = answer["rows"]
        columns = [(t("dashboard.library"), False), (t("columns.members"), True), (t("columns.active"), True),
                   (t("columns.share"), True)]  # fmt: skip
        if self.filters.library:
            rows = [r for r in rows if r["library"] != "*"] or rows  # the `*` rows would repeat the library's
            bars = [Bar(t.get(f"age_bands.{r['age_band']}", str(r["age_band"])), r["share"])
                    for r in rows if r["age_band"] != "*"]  # fmt: skip
            table = Table(
                t("dashboard.reach"),
                [columns[0], (t("dashboard.age_band"), False), *columns[1:]],
                [[self.library(r["library"]),
                  Cell(t("dashboard.all_requested") if r["age_band"] == "*" else str(r["age_band"])),
                  self.number(r, "members"), self.number(r, "active"), self.percent(r, "share")] for r in rows],
            )  # fmt: skip
        else:
            totals = [r for r in rows if r["age_band"] == "*"]
            order = [r for r in totals if r["library"] == "*"] + ranked(
                [r for r in totals if r["library"] != "*"], "share"
            )
            present = {str(r["age_band"]) for r in rows}
            bands = answer.get("parameters", {}).get("age_bands") or [b for b in AGE_BANDS if b in present]
            cells = {(r["library"], r["age_band"]): r for r in rows}
            bars = [Bar(t("dashboard.network") if r["library"] == "*" else str(r["library"]), r["share"])
                    for r in order]  # fmt: skip
            none = {"suppressed": False}
            table = Table(
                t("dashboard.reach"),
                [*columns, *((t("dashboard.share_of", band=t.get(f"age_bands.{b}", b)), True) for b in bands)],
                [[self.library(r["library"]), self.number(r, "members"), self.number(r, "active"),
                  self.percent(r, "share"),
                  *(self.percent(cells.get((r["library"], b), none), "share") for b in bands)] for r in order],
            )  # fmt: skip
        chart = self._bars("reach", bars, t.percent, maximum=1.0)
        note = t("dashboard.reach_note_library" if self.filters.library and not self.filters.age_band else
                 "dashboard.reach_note")  # fmt: skip
        return SectionView("reach", t("dashboard.reach"), [("", chart)], table, note)

    def retention(self, answer: Answer) -> SectionView:
        t = self.t
        rows = answer["rows"]
        months = 1 + max((int(r["months_after"]) for r in rows), default=0)
        sizes = {r["cohort"]: r for r in rows if r["months_after"] == 0}
        cohorts = [(c, f"{c} ({self.number(sizes[c], 'members').text})") for c in sorted(sizes)]
        cells = [
            HeatCell(str(r["cohort"]), int(r["months_after"]), r["share"],
                     t("dashboard.retention_cell", cohort=r["cohort"], month=r["months_after"],
                       share=t.percent(r["share"]), active=t.number(r["active"]), members=t.number(r["members"])))
            for r in rows
        ]  # fmt: skip
        chart = heat_map(cells, cohorts, months, chart_id="chart-retention", title=t("dashboard.retention"),
                         column_title=t("dashboard.months_after"),
                         legend=(t.percent(0, 0), t.percent(1, 0), t("reports.suppressed_short")),
                         shown=lambda v: t.number(v, 0), empty=t("dashboard.empty"))  # fmt: skip
        table = Table(
            t("dashboard.retention"),
            [(t("columns.cohort"), False), (t("columns.months_after"), True), (t("columns.members"), True),
             (t("columns.active"), True), (t("columns.share"), True)],
            [[Cell(str(r["cohort"])), Cell(t.number(r["months_after"])), self.number(r, "members"),
              self.number(r, "active"), self.percent(r, "share")] for r in rows],
        )  # fmt: skip
        return SectionView("retention", t("dashboard.retention"), [("", chart)], table,
                           t("dashboard.retention_note"), full=True, all_rows=True)  # fmt: skip

    def paths(self, answer: Answer) -> SectionView:
        t = self.t
        rows = answer["rows"]
        depth = max((int(k.removeprefix("step_")) for r in rows for k in r if k.startswith("step_")), default=0)
        steps = [f"step_{k}" for k in range(1, depth + 1)]

        def name(step: Any) -> str:
            return t("dashboard.nothing") if step == NOTHING else step_name(t, str(step))

        def label(r: Row) -> str:
            return t("dashboard.path_count", n=t.number(r["occurrences"]), share=t.percent(r["share"]))

        paths = [PathRow([name(r[s]) for s in steps], r["share"], label(r), [r[s] == NOTHING for s in steps])
                 for r in rows]  # fmt: skip
        start = step_name(t, self.filters.after)
        chart = path_chart(paths, start, chart_id="chart-paths", title=t("dashboard.paths", event=start),
                           empty=t("dashboard.empty"))  # fmt: skip
        table = Table(
            t("dashboard.paths", event=start),
            [(t("columns.rank"), True), *((t("dashboard.step", n=k), False) for k in range(1, depth + 1)),
             (t("columns.occurrences"), True), (t("columns.share_of_all"), True)],
            [[Cell(t.number(r["rank"])), *(Cell(name(r[s])) for s in steps), self.number(r, "occurrences"),
              self.percent(r, "share")] for r in rows],
        )  # fmt: skip
        return SectionView("paths", t("dashboard.paths", event=start), [("", chart)], table,
                           t("dashboard.paths_note"), full=True, all_rows=True)  # fmt: skip
