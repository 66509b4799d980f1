"""The dashboard's pure parts: the time series' granularity and periods, which sections a page shows and how they
are laid out, rankings with drill-down links, the retention heat map and the paths chart."""

from __future__ import annotations

import re
from datetime import date, timedelta

from services.analytics.dashboard import (
    SECTIONS,
    dashboard_filters,
    granularity,
    period_label,
    period_start,
    periods_between,
    timeline,
)
from services.analytics.dashboard_charts import HeatCell, PathRow, heat_map, path_chart
from services.analytics.dashboard_view import View
from services.analytics.pages import layout
from services.journey.rules import load_rules
from shared.web.charts import Series, line_chart
from shared.web.i18n import NO_NUMBER, Translator

RULES = [rule.id for rule in load_rules(None).rules]
NL = Translator("nl")
DAY = timedelta(days=1)


def test_the_granularity_keeps_a_time_series_to_a_readable_number_of_points() -> None:
    start = date(2026, 1, 1)
    assert granularity(start, start) == "day"
    assert granularity(start, start + 61 * DAY) == "day"  # 62 days
    assert granularity(start, start + 62 * DAY) == "week"
    assert granularity(start, start + 370 * DAY) == "week"  # 53 weeks at most
    assert granularity(start, start + 371 * DAY) == "month"
    assert granularity(date(2024, 12, 6), date(2026, 12, 6)) == "month"  # two years: 25 points, not 105 weeks


def test_every_period_of_a_range_is_named_as_the_reports_api_names_it() -> None:
    assert periods_between(date(2026, 12, 28), date(2027, 1, 12), "week") == ["2026-W53", "2027-W01", "2027-W02"]
    assert periods_between(date(2025, 1, 31), date(2025, 4, 1), "month") == ["2025-01", "2025-02", "2025-03",
                                                                              "2025-04"]  # fmt: skip
    assert periods_between(date(2024, 2, 28), date(2024, 3, 1), "day") == ["2024-02-28", "2024-02-29", "2024-03-01"]
    assert period_label(date(2027, 1, 1), "week") == "2026-W53"  # the ISO year, as the SQL's toISOYear
    assert period_start("2026-W53", "week") == date(2026, 12, 28)
    assert period_start("2025-03", "month") == date(2025, 3, 1)


def test_an_open_range_runs_from_the_first_period_answered_to_the_clock() -> None:
    filters = dashboard_filters({}, RULES, None)
    rows = [{"period": "2025-03"}, {"period": "2024-12"}]
    line = timeline(filters, rows, "month", date(2026, 12, 6))
    assert (line.start, line.end, line.period, line.chosen) == (date(2024, 12, 1), date(2026, 12, 6), "month", True)
    assert len(line.labels) == 25
    short = timeline(filters, [{"period": "2026-11"}], "month", date(2026, 12, 6))
    assert (short.start, short.period) == (date(2026, 11, 1), "day")  # asked again by day
    # A period chosen by hand wins; the dates filtered on bound the range.
    chosen = dashboard_filters({"period": "week", "from": "2026-01-01", "to": "2026-01-10"}, RULES, None)
    line = timeline(chosen, [], "week", date(2026, 12, 6))
    assert (line.period, line.chosen, line.labels) == ("week", False, ["2026-W01", "2026-W02"])


def test_the_period_is_automatic_unless_chosen_and_paths_start_after_a_known_event() -> None:
    assert dashboard_filters({}, RULES, None).period == "auto"
    assert dashboard_filters({"period": "day"}, RULES, None).period == "day"
    events = ["member.login_failed.v1", "usage.loan_borrowed.v1"]
    assert dashboard_filters({"after": "usage.loan_borrowed.v1"}, RULES, None, events).after == "usage.loan_borrowed.v1"
    wrong = dashboard_filters({"after": "friction.detected.v1"}, RULES, None, events)
    assert (wrong.after, wrong.errors) == ("member.login_failed.v1", {"after": "dashboard.errors.choice"})


def test_a_library_page_shows_its_rules_channels_and_ages_instead_of_the_ranking_of_libraries() -> None:
    network = [s.name for s in SECTIONS if s.shown(dashboard_filters({}, RULES, None))]
    library = [s.name for s in SECTIONS if s.shown(dashboard_filters({"library": "oba"}, RULES, None))]
    assert "libraries" in network and "age-bands" not in network
    assert "libraries" not in library and {"resolution", "channel-pairs", "platforms", "age-bands"} <= set(library)
    assert layout(network) == [["over-time"], ["libraries"], ["resolution"], ["channel-pairs", "platforms"],
                               ["funnel"], ["reach"], ["retention"], ["paths"]]  # fmt: skip


def rows_of_libraries(count: int) -> list[dict[str, object]]:
    return [
        {"library": f"lib-{i:02d}", "members": 100, "detected": i, "frictions_per_1000_members": i * 10.0,
         "suppressed": False}
        for i in range(count)
    ] + [{"library": "tiny", "members": None, "detected": None, "frictions_per_1000_members": None,
          "suppressed": True}]  # fmt: skip


def test_libraries_rank_highest_first_with_the_suppressed_last_each_leading_to_its_page() -> None:
    filters = dashboard_filters({"from": "2026-01-01"}, RULES, None)
    view = View(NL, filters, lambda **changed: "/d?" + "&".join(f"{k}={v}" for k, v in filters.form(**changed).items()))
    section = view.libraries({"rows": rows_of_libraries(12)})
    assert section.table is not None
    names = [row[0].text for row in section.table.rows]
    assert names == [f"lib-{i:02d}" for i in range(11, -1, -1)] + ["tiny"]
    assert [row[0].text for row in section.table.top] == names[:10]  # the rest behind "show all"
    assert section.table.rows[0][0].link == "/d?from=2026-01-01&library=lib-11&split=channel&within=30&step1=" \
        "member.signed_up.v1&step2=member.card_activated.v1&step3=usage.loan_borrowed.v1"  # fmt: skip
    tiny = section.table.rows[-1]
    assert (tiny[1].text, tiny[1].hidden) == (NO_NUMBER, "verborgen, te weinig leden")
    assert str(section.charts[0][1]).count('class="chart-label"') == 10  # the chart: the top ten
    on_its_page = View(NL, dashboard_filters({"library": "oba"}, RULES, None), lambda **_: "/x")
    assert on_its_page.library("oba").link == ""


def test_the_heat_map_writes_each_share_shades_it_and_hatches_a_suppressed_cell() -> None:
    cells = [
        HeatCell("2026-01", 0, 1.0, "januari, maand 0: 100%"),
        HeatCell("2026-01", 1, 0.25, "januari, maand 1: 25%"),
        HeatCell("2026-02", 0, None, "februari, maand 0: verborgen"),
    ]
    svg = str(heat_map(cells, [("2026-01", "2026-01 (40)"), ("2026-02", "2026-02 (3)")], 2, chart_id="h",
                       title="Behoud", column_title="Maanden", legend=("0%", "100%", "verborgen"),
                       shown=lambda v: NO_NUMBER if v is None else f"{v:.0f}", empty="leeg"))  # fmt: skip
    assert re.findall(r'class="heat-value[^"]*"[^>]*>([^<]+)<', svg) == ["100", "25", NO_NUMBER]
    fills = re.findall(r'<g class="heat-cell"><title>[^<]*</title><rect [^>]*fill="([^"]+)"', svg)
    assert fills[0] == "#0b5cad" and fills[1] != fills[0] and fills[2] == "url(#hatch)"
    assert "<title>januari, maand 1: 25%</title>" in svg and "2026-02 (3)" in svg and ">verborgen<" in svg


def test_paths_draw_each_path_with_a_bar_as_long_as_its_share() -> None:
    svg = str(path_chart([PathRow(["Ingelogd", "Geleend"], 0.5, "10 keer (50%)"),
                          PathRow(["niets", "niets"], 0.25, "5 keer (25%)", [True, True]),
                          PathRow(["Geleend", "niets"], None, NO_NUMBER)],
                         "Inloggen mislukt", chart_id="p", title="Paden", empty="leeg"))  # fmt: skip
    widths = [float(w) for w in re.findall(r'<rect class="chart-bar" x="[\d.]+" y="[\d.]+" width="([\d.]+)"', svg)]
    assert len(widths) == 2 and widths[0] == 2 * widths[1]  # the suppressed path draws no bar
    assert "<title>Inloggen mislukt → Ingelogd → Geleend: 10 keer (50%)</title>" in svg
    assert svg.count('class="path-start"') == 3 and svg.count('class="path-none"') == 2


def test_a_wide_time_series_tells_each_point_on_hover_and_lays_its_legend_in_columns() -> None:
    names = [f"regel {k}" for k in range(4)]
    svg = str(line_chart([Series(name, [1, None, 3]) for name in names], ["2026-01", "2026-02", "2026-03"],
                         chart_id="t", title="t", shown=lambda v: NO_NUMBER if v is None else f"{v:g}", empty="",
                         width=720))  # fmt: skip
    assert 'class="chart wide" viewBox="0 0 720 ' in svg
    assert "<title>regel 2, 2026-03: 3</title>" in svg and "2026-02: " not in svg  # a suppressed point: no marker
    legend = [float(x) for x in re.findall(r'<text class="chart-legend" x="([\d.]+)"', svg)]
    assert legend == [30, 390, 30, 390]  # two columns
