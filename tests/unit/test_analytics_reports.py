"""The analytics service without I/O: an event's row, the SQL a report asks, and the rows, rates, suppression and
CSV made from the store's counts."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from services.analytics import queries
from services.analytics.answers import journey_types
from services.analytics.cohorts import PathQuery, RetentionQuery, paths_report, retention_report
from services.analytics.funnel import funnel_counts
from services.analytics.reading import timeline_view
from services.analytics.reports import (
    BadParameter,
    Cell,
    FrictionQuery,
    FunnelQuery,
    Report,
    friction_report,
    funnel_report,
    iso_duration,
    months_before,
    parse_dimensions,
    parse_list,
    parse_steps,
    preset_range,
    previous_range,
    reach_report,
    suppress_with_totals,
    to_csv,
    with_previous,
)
from services.analytics.schema import STEP_TYPES
from services.journey.rules import load_rules, parse_rules
from shared.events.registry import TYPE_PREFIX, event_types

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SIGNED_UP, ACTIVATED, BORROWED = "member.signed_up.v1", "member.card_activated.v1", "usage.loan_borrowed.v1"


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


# ------------------------------------------------------------------------------------------------ SQL


def test_absence_rules_become_windows_with_their_start_conditions() -> None:
    windows = {w.rule: w for w in queries.windows_of(load_rules())}
    assert "repeated-login-failures" not in windows  # a threshold rule has no windows
    activation = windows["online-signup-not-activated"]
    assert activation.condition == "type IN ('member.signed_up.v1') AND channel IN ('online')"
    assert (activation.within_ms, activation.channel_pair) == (14 * 86_400_000, "online→offline")


def test_a_window_on_a_field_the_store_does_not_keep_is_refused_at_start() -> None:
    catalogue = parse_rules("""
rules:
  - id: odd
    kind: absence
    start: {type: usage.loan_reserved.v1, where: {pickup_branch: centrum}}
    expect: {type: usage.loan_borrowed.v1}
    within: P7D
""")
    with pytest.raises(ValueError, match="pickup_branch"):
        queries.windows_of(catalogue)


def test_report_values_travel_as_typed_parameters_never_in_the_sql() -> None:
    query = FrictionQuery(by=("rule", "library"), period="week", libraries=frozenset({"zz'yy"}))
    asked = [((query.by, query.period), ms(T0))]
    sql, params = queries.friction_counts(query, asked, queries.windows_of(load_rules()))
    assert "zz" not in sql and "['zz\\'yy']" in params.values()
    assert "toISOWeek" in sql and "library IN {p1:Array(String)}" in sql
    steps = ("usage.loan_reserved.v1", ACTIVATED, BORROWED)
    funnel_sql, funnel_params = funnel_counts(FunnelQuery(steps=steps), ms(T0))
    assert not any(step in funnel_sql for step in steps)
    assert set(steps) <= set(funnel_params.values()) and "in_progress_3" in funnel_sql


def test_members_keep_as_steps_exactly_the_event_types_a_funnel_may_have_as_steps() -> None:
    kinds = [kind.removeprefix(TYPE_PREFIX) for kind in event_types()]
    assert {kind for kind in kinds if kind.startswith(STEP_TYPES)} == set(journey_types())


# -------------------------------------------------------------------------------------------- frictions


def counted(**values: Any) -> dict[str, Any]:
    return {"detected": 10, "windowed": 10, "resolved": 4, "median_seconds": 3600.0, "starts": 100} | values


def test_friction_rows_get_rates_resolution_and_members_per_library() -> None:
    rows = [counted(library="oba"), counted(library="haarlem", detected=4, windowed=4)]
    report = friction_report(rows, FrictionQuery(by=("library",)), min_cell=5,
                             members_by_library={"oba": 2000, "haarlem": 3})  # fmt: skip
    haarlem, oba = report.rows
    assert oba == {"library": "oba", "detected": 10, "resolved": 4, "starts": 100, "rate_per_1000_starts": 100.0,
                   "resolution_rate": 0.4, "median_seconds_to_resolve": 3600.0, "members": 2000,
                   "frictions_per_1000_members": 5.0, "suppressed": False}  # fmt: skip
    assert haarlem["suppressed"] and haarlem["detected"] is None and haarlem["members"] is None
    assert report.columns[-1] == "suppressed"


def test_a_group_without_absence_windows_has_no_starts_and_no_rate() -> None:
    [row] = friction_report([counted(rule="r", starts=0, windowed=0)], FrictionQuery(), min_cell=5).rows
    assert (row["starts"], row["rate_per_1000_starts"], row["suppressed"]) == (None, None, False)


# ----------------------------------------------------------------------------------------------- funnel


def test_funnel_rows_per_split_and_step_with_conversion_of_known_outcomes() -> None:
    cell = {"split": "online", "entered_1": 10, "reached_1": 10, "dropped_1": 0, "in_progress_1": 0,
            "entered_2": 10, "reached_2": 6, "dropped_2": 2, "in_progress_2": 2}  # fmt: skip
    few = {**cell, "split": "offline", "entered_1": 3, "reached_1": 3, "entered_2": 3, "reached_2": 1}
    report = funnel_report([few, cell], FunnelQuery(steps=(SIGNED_UP, ACTIVATED), by="channel"), min_cell=5)
    assert [(r["channel"], r["step_number"]) for r in report.rows] == [
        ("offline", 1), ("offline", 2), ("online", 1), ("online", 2),
    ]  # fmt: skip
    assert report.rows[3]["conversion"] == 0.75 and report.rows[2]["conversion"] is None
    assert report.rows[0]["suppressed"] and report.rows[0]["reached"] is None


# ------------------------------------------------------------------------------------------------ reach


def test_reach_rows_with_totals_and_secondary_suppression() -> None:
    counts: dict[Cell, tuple[int, int]] = {
        ("oba", "0-3"): (40, 30),
        ("haarlem", "0-3"): (30, 3),
        ("utrecht", "0-3"): (2, 1),
    }
    rows = {(r["library"], r["age_band"]): r for r in reach_report(counts, ("0-3", "4-11"), min_cell=5).rows}
    assert rows[("utrecht", "0-3")]["members"] is None
    # 72 in the network minus oba's 40 would leave haarlem + utrecht: haarlem (the smaller shown) goes too
    assert rows[("haarlem", "0-3")]["suppressed"] and not rows[("oba", "0-3")]["suppressed"]
    assert (rows[("*", "0-3")]["members"], rows[("*", "4-11")]["members"]) == (72, 0)
    assert rows[("oba", "*")]["share"] == 0.75


def test_suppression_with_totals_hides_at_least_two_cells_holding_the_minimum_per_line() -> None:
    sizes: dict[Cell, int] = {("a", "x"): 3, ("b", "x"): 50, ("c", "x"): 60, ("*", "x"): 113}
    line = [(("*", "x"), [("a", "x"), ("b", "x"), ("c", "x")])]
    assert suppress_with_totals(sizes, line, min_cell=5) == {("a", "x"), ("b", "x")}
    lonely: dict[Cell, int] = {("a", "x"): 2, ("*", "x"): 2}
    assert suppress_with_totals(lonely, [(("*", "x"), [("a", "x")])], min_cell=5) == {("a", "x"), ("*", "x")}


def test_months_before_is_the_same_moment_calendar_months_earlier_in_amsterdam() -> None:
    may_31 = datetime(2026, 5, 31, 12, 0, tzinfo=UTC)
    assert datetime.fromtimestamp(months_before(ms(may_31), 3) / 1000, UTC) == datetime(2026, 2, 28, 13, tzinfo=UTC)


# --------------------------------------------------------------------------------------------- timeline


def test_a_timeline_from_the_member_s_rows_newest_first_with_open_frictions() -> None:
    def row(kind: str, at: datetime, **more: Any) -> dict[str, Any]:
        base = {"type": kind, "ms": ms(at), "library": "oba", "channel": "online", "platform": "website",
                "home_library": None, "age_band": None, "postcode_area": None, "source": None, "rule": None,
                "friction_id": None, "channel_pair": None, "started_ms": None, "due_ms": None}  # fmt: skip
        return base | more

    rows = [
        row(SIGNED_UP, T0, home_library="oba", age_band="18-64"),
        row(ACTIVATED, T0 + DAY, channel="offline", platform="desk"),
        row("friction.detected.v1", T0 + 2 * DAY, rule="r", friction_id="f", started_ms=ms(T0), due_ms=ms(T0 + DAY)),
    ]
    view = timeline_view("m", "old", rows)
    assert (view["member_id"], view["requested_id"], view["profile"]["home_library"]) == ("m", "old", "oba")
    assert [e["type"] for e in view["timeline"]] == [ACTIVATED, SIGNED_UP]
    assert view["milestones"][0]["at"] == "2026-03-02T10:00:00+01:00"
    assert view["last_touch"]["platforms"] == {
        "desk": "2026-03-03T10:00:00+01:00",
        "website": "2026-03-02T10:00:00+01:00",
    }
    assert [f["rule"] for f in view["open_frictions"]] == ["r"]


# ---------------------------------------------------------------------------------------- CSV, parameters


def test_csv_has_the_header_even_without_rows_and_empty_fields_for_suppressed_counts() -> None:
    assert to_csv(Report(("library", "members", "suppressed"), [])) == "library,members,suppressed\r\n"
    text = to_csv(
        Report(("library", "members", "suppressed"), [{"library": "a,b", "members": None, "suppressed": True}])
    )
    assert list(csv.reader(io.StringIO(text))) == [["library", "members", "suppressed"], ["a,b", "", "true"]]


def test_bad_parameters_name_the_parameter() -> None:
    with pytest.raises(BadParameter) as by:
        parse_dimensions("rule,colour")
    assert by.value.parameter == "by"
    assert parse_dimensions("age_band,rule,rule") == ("rule", "age_band")
    with pytest.raises(BadParameter) as steps:
        parse_steps(SIGNED_UP, [SIGNED_UP])
    assert steps.value.parameter == "steps"
    with pytest.raises(BadParameter):
        parse_list("age_bands", "0-3,70+", ["0-3", "65+"])
    assert [iso_duration(d) for d in (30 * DAY, timedelta(hours=1))] == ["P30D", "PT1H"]


# --------------------------------------------------------------------------- presets, comparison, cohorts


def test_date_presets_are_whole_amsterdam_days_up_to_today_and_the_previous_period_is_as_long() -> None:
    today = date(2026, 3, 14)
    assert preset_range("last_7_days", today) == (date(2026, 3, 8), today)
    assert preset_range("last_month", today) == (date(2026, 2, 1), date(2026, 2, 28))
    assert preset_range("last_12_months", date(2024, 2, 29)) == (date(2023, 3, 1), date(2024, 2, 29))
    assert preset_range("last_year", today) == (date(2025, 1, 1), date(2025, 12, 31))
    assert previous_range(date(2026, 3, 1), date(2026, 3, 31)) == (date(2026, 1, 29), date(2026, 2, 28))


def test_a_comparison_adds_the_previous_period_s_figures_and_the_change() -> None:
    current = friction_report(
        [counted(rule="a"), counted(rule="b", detected=6, windowed=6)], FrictionQuery(), min_cell=5
    )
    previous = friction_report(
        [counted(rule="a", detected=8, windowed=8), counted(rule="c")], FrictionQuery(), min_cell=5
    )
    rows = {r["rule"]: r for r in with_previous(current, previous, ("rule",)).rows}
    assert (rows["a"]["previous_detected"], rows["a"]["detected_change"]) == (8, 0.25)
    assert rows["b"]["previous_detected"] is None and rows["b"]["detected_change"] is None
    assert list(rows["a"])[-1] == "suppressed"


def test_retention_rows_stop_at_the_clock_s_month_and_suppress_small_cohorts_and_cells() -> None:
    counted = [
        {"cohort": "2026-01-01", "after": -1, "members": 40}, {"cohort": "2026-01-01", "after": 0, "members": 40},
        {"cohort": "2026-01-01", "after": 1, "members": 3}, {"cohort": "2026-01-01", "after": 2, "members": 20},
        {"cohort": "2026-02-01", "after": -1, "members": 4}, {"cohort": "2026-02-01", "after": 0, "members": 4},
    ]  # fmt: skip
    report = retention_report(counted, RetentionQuery(months=12), ms(datetime(2026, 3, 10, tzinfo=UTC)), min_cell=5)
    rows = {(r["cohort"], r["months_after"]): r for r in report.rows}
    assert set(rows) == {("2026-01", 0), ("2026-01", 1), ("2026-01", 2), ("2026-02", 0), ("2026-02", 1)}
    assert (rows[("2026-01", 2)]["active"], rows[("2026-01", 2)]["share"]) == (20, 0.5)
    assert rows[("2026-01", 1)]["suppressed"] and rows[("2026-01", 1)]["members"] == 40
    assert rows[("2026-02", 1)] == {"cohort": "2026-02", "months_after": 1, "members": None, "active": None,
                                    "share": None, "suppressed": True}  # fmt: skip


def test_paths_are_the_most_common_first_with_their_share_and_small_ones_suppressed() -> None:
    query = PathQuery(event="member.login_failed.v1", depth=1, limit=2)
    counted = [{"step_1": "(none)", "occurrences": 30}, {"step_1": "member.login_succeeded.v1", "occurrences": 66},
               {"step_1": "member.login_failed.v1", "occurrences": 4}]  # fmt: skip
    rows = paths_report(counted, query, min_cell=5).rows
    assert [(r["rank"], r["path"], r["occurrences"], r["share"]) for r in rows] == [
        (1, "member.login_succeeded.v1", 66, 0.66), (2, "(none)", 30, 0.3),
    ]  # fmt: skip
    small = paths_report(counted, PathQuery(event="x", depth=1), min_cell=5).rows[2]
    assert small["suppressed"] and small["occurrences"] is None and small["step_1"] == "member.login_failed.v1"
