"""Analytics reports at their edges: cells of exactly 1, 4 and 5 members against a minimum of 5, member counts of
libraries with many members, totals that must not give a small cell away (a property, with hypothesis), and the
calendar arithmetic of periods."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.analytics.cohorts import (
    PathQuery,
    RetentionQuery,
    derive_next_steps,
    path_counts,
    paths_report,
    retention_counts,
    retention_report,
)
from services.analytics.queries import Asked, rows_of
from services.analytics.reports import (
    ALL,
    BadParameter,
    Cell,
    FrictionQuery,
    FunnelQuery,
    check_range,
    friction_report,
    funnel_report,
    iso_duration,
    local_date,
    local_time,
    months_before,
    parse_list,
    parse_steps,
    preset_range,
    previous_range,
    reach_report,
    suppress_with_totals,
    with_previous,
)

MIN = 5


def counted(**values: Any) -> dict[str, Any]:
    return {"rule": "r", "detected": 10, "windowed": 10, "resolved": 4, "median_seconds": 90.0, "starts": 100} | values


@pytest.mark.parametrize(("detected", "suppressed"), [(0, True), (1, True), (4, True), (5, False), (6, False)])
def test_a_friction_count_below_the_minimum_is_suppressed_and_one_at_the_minimum_shown(
    detected: int, suppressed: bool
) -> None:
    [row] = friction_report([counted(detected=detected, windowed=detected)], FrictionQuery(), min_cell=MIN).rows
    assert row["suppressed"] is suppressed
    assert row["detected"] == (None if suppressed else detected)
    assert row["resolved"] == (None if suppressed else 4)


@pytest.mark.parametrize(("starts", "suppressed"), [(1, True), (4, True), (5, False)])
def test_a_group_with_fewer_windows_than_the_minimum_is_suppressed_whatever_its_frictions(
    starts: int, suppressed: bool
) -> None:
    [row] = friction_report([counted(detected=5, windowed=5, starts=starts)], FrictionQuery(), min_cell=MIN).rows
    assert row["suppressed"] is suppressed
    assert row["rate_per_1000_starts"] == (None if suppressed else 1000.0)


def test_a_friction_row_s_figures_are_its_own_counts_and_rates() -> None:
    [row] = friction_report(
        [counted(detected=8, windowed=6, resolved=2, starts=300)], FrictionQuery(), min_cell=MIN
    ).rows
    assert row == {"rule": "r", "detected": 8, "resolved": 2, "starts": 300, "rate_per_1000_starts": 20.0,
                   "resolution_rate": 0.25, "median_seconds_to_resolve": 90.0, "suppressed": False}  # fmt: skip
    [unresolved] = friction_report([counted(resolved=0)], FrictionQuery(), min_cell=MIN).rows
    assert (unresolved["resolution_rate"], unresolved["median_seconds_to_resolve"]) == (0.0, None)


@pytest.mark.parametrize(("members", "shown"), [(1, None), (4, None), (5, 5), (1234, 1234)])
def test_members_per_library_are_shown_from_the_minimum_on(members: int, shown: int | None) -> None:
    report = friction_report([counted(library="oba")], FrictionQuery(by=("library",)), min_cell=MIN,
                             members_by_library={"oba": members, "delft": 9})  # fmt: skip
    [row] = report.rows
    assert row["members"] == shown
    assert row["frictions_per_1000_members"] == (None if shown is None else round(10 * 1000 / members, 2))


def test_each_library_gets_its_own_member_count() -> None:
    rows = [counted(library="oba"), counted(library="delft", detected=20), counted(library="nergens")]
    report = friction_report(rows, FrictionQuery(by=("library",)), min_cell=MIN,
                             members_by_library={"oba": 2000, "delft": 400})  # fmt: skip
    by_library = {r["library"]: r for r in report.rows}
    assert [r["library"] for r in report.rows] == ["delft", "nergens", "oba"]
    assert (by_library["oba"]["members"], by_library["oba"]["frictions_per_1000_members"]) == (2000, 5.0)
    assert (by_library["delft"]["members"], by_library["delft"]["frictions_per_1000_members"]) == (400, 50.0)
    assert by_library["nergens"]["members"] is None  # no members known: nothing to divide by
    without = friction_report(rows, FrictionQuery(by=("rule",)), min_cell=MIN, members_by_library={"oba": 2000})
    assert "members" not in without.columns


def test_friction_rows_per_period_are_ordered_by_group_then_period() -> None:
    rows = [counted(rule="b", period="2026-03-02"), counted(rule="a", period="2026-03-09"),
            counted(rule="a", period="2026-03-02")]  # fmt: skip
    report = friction_report(rows, FrictionQuery(period="week"), min_cell=MIN)
    assert [(r["rule"], r["period"]) for r in report.rows] == [
        ("a", "2026-03-02"), ("a", "2026-03-09"), ("b", "2026-03-02"),
    ]  # fmt: skip
    assert report.columns[:2] == ("rule", "period")


@pytest.mark.parametrize(("entered", "suppressed"), [(1, True), (4, True), (5, False)])
def test_a_funnel_step_entered_by_fewer_than_the_minimum_is_suppressed(entered: int, suppressed: bool) -> None:
    cell = {"split": None, "entered_1": entered, "reached_1": entered, "dropped_1": 0, "in_progress_1": 0,
            "entered_2": entered, "reached_2": 1, "dropped_2": entered - 1, "in_progress_2": 0}  # fmt: skip
    first, second = funnel_report([cell], FunnelQuery(steps=("a", "b")), min_cell=MIN).rows
    assert first["suppressed"] is second["suppressed"] is suppressed
    assert second["entered"] == (None if suppressed else entered)
    assert second["conversion"] == (None if suppressed else round(1 / entered, 4))
    assert first["conversion"] is None  # everyone in the first step entered it
    assert "split" not in first


def test_a_reach_cell_of_one_member_is_suppressed_and_so_is_the_next_smallest() -> None:
    counts: dict[Cell, tuple[int, int]] = {
        ("oba", "0-3"): (1, 1),
        ("delft", "0-3"): (7, 2),
        ("haarlem", "0-3"): (50, 9),
    }
    rows = {(r["library"], r["age_band"]): r for r in reach_report(counts, ("0-3",), min_cell=MIN).rows}
    assert rows[("oba", "0-3")]["members"] is None and rows[("oba", "0-3")]["suppressed"]
    assert rows[("delft", "0-3")]["suppressed"] and not rows[("haarlem", "0-3")]["suppressed"]
    assert rows[(ALL, "0-3")]["members"] == 58 and rows[(ALL, ALL)]["members"] == 58
    assert rows[("haarlem", "0-3")]["share"] == 0.18


def test_a_reach_cell_of_exactly_the_minimum_is_shown() -> None:
    counts: dict[Cell, tuple[int, int]] = {("oba", "0-3"): (5, 5), ("delft", "0-3"): (5, 0)}
    rows = {(r["library"], r["age_band"]): r for r in reach_report(counts, ("0-3",), min_cell=MIN).rows}
    assert not any(r["suppressed"] for r in rows.values())
    assert (rows[("oba", "0-3")]["share"], rows[("delft", "0-3")]["share"]) == (1.0, 0.0)
    assert rows[(ALL, ALL)]["members"] == 10


BANDS = ("0-3", "4-11", "12-17")
LIBRARIES = ("oba", "delft", "haarlem")


@given(st.dictionaries(st.tuples(st.sampled_from(LIBRARIES), st.sampled_from(BANDS)),
                       st.integers(0, 12), min_size=1))  # fmt: skip
def test_a_reach_report_never_reveals_a_count_under_the_minimum_directly_or_by_subtraction(
    members: dict[Cell, int],
) -> None:
    counts = {cell: (n, n // 2) for cell, n in members.items()}
    rows = {(r["library"], r["age_band"]): r for r in reach_report(counts, BANDS, min_cell=MIN).rows}

    def size_of(cell: Cell) -> int:
        library, band = cell
        return sum(n for (lib, b), n in members.items() if library in (ALL, lib) and band in (ALL, b))

    size = {cell: size_of(cell) for cell in rows}
    for cell, row in rows.items():
        assert row["members"] is None or not 0 < row["members"] < MIN
        assert row["suppressed"] or row["members"] == size[cell]
    # Each shown total less its shown parts is what its hidden parts hold: nothing, or at least the minimum
    # spread over at least two cells.
    lines = [((ALL, band), [(lib, band) for lib in LIBRARIES]) for band in (*BANDS, ALL)]
    lines += [((lib, ALL), [(lib, band) for band in BANDS]) for lib in (*LIBRARIES, ALL)]
    for total, parts in lines:
        if total not in rows or rows[total]["suppressed"]:
            continue
        hidden = [size[p] for p in parts if p in rows and rows[p]["suppressed"] and size[p]]
        assert not hidden or (len(hidden) >= 2 and sum(hidden) >= MIN), (total, hidden)


def test_a_small_cohort_is_suppressed_whole_and_a_cohort_of_exactly_the_minimum_is_shown() -> None:
    counted = [{"cohort": "2026-01-01", "after": -1, "members": 5}, {"cohort": "2026-01-01", "after": 0, "members": 5},
               {"cohort": "2026-02-01", "after": -1, "members": 4}, {"cohort": "2026-02-01", "after": 0, "members": 4},
               {"cohort": "2026-01-01", "after": 1, "members": 1}]  # fmt: skip
    clock = int(datetime(2026, 2, 28, 22, 59, tzinfo=UTC).timestamp() * 1000)  # 23:59 on 28 February in Amsterdam
    rows = {
        (r["cohort"], r["months_after"]): r
        for r in retention_report(counted, RetentionQuery(months=3), clock, MIN).rows
    }
    assert set(rows) == {("2026-01", 0), ("2026-01", 1), ("2026-02", 0)}
    assert (rows[("2026-01", 0)]["members"], rows[("2026-01", 0)]["active"], rows[("2026-01", 0)]["share"]) == (
        5,
        5,
        1.0,
    )
    assert rows[("2026-01", 1)]["active"] is None and rows[("2026-01", 1)]["members"] == 5  # one active: hidden
    assert rows[("2026-02", 0)]["members"] is None and rows[("2026-02", 0)]["suppressed"]
    a_month_on = int(datetime(2026, 2, 28, 23, 0, tzinfo=UTC).timestamp() * 1000)  # 1 March in Amsterdam
    later = retention_report(counted, RetentionQuery(months=3), a_month_on, MIN).rows
    assert len(later) == 5
    assert next(r for r in later if r["cohort"] == "2026-01" and r["months_after"] == 2)["active"] == 0


def test_paths_are_limited_to_the_most_common_and_a_path_of_exactly_the_minimum_is_shown() -> None:
    counted = [{"step_1": "a", "step_2": "b", "occurrences": 5}, {"step_1": "a", "step_2": "c", "occurrences": 4},
               {"step_1": "b", "step_2": "(none)", "occurrences": 11}]  # fmt: skip
    rows = paths_report(counted, PathQuery(event="x", depth=2, limit=3), min_cell=MIN).rows
    assert [(r["rank"], r["path"], r["occurrences"], r["share"]) for r in rows] == [
        (1, "b → (none)", 11, 0.55), (2, "a → b", 5, 0.25), (3, "a → c", None, None),
    ]  # fmt: skip
    assert len(paths_report(counted, PathQuery(event="x", depth=2, limit=1), min_cell=MIN).rows) == 1


def test_periods_in_amsterdam() -> None:
    assert local_date(int(datetime(2026, 3, 1, 23, 30, tzinfo=UTC).timestamp() * 1000)) == date(2026, 3, 2)
    assert local_time(int(datetime(2026, 7, 1, 12, 0, tzinfo=UTC).timestamp() * 1000)) == "2026-07-01T14:00:00+02:00"
    assert local_time(None) is None
    today = date(2026, 3, 14)
    assert preset_range("today", today) == (today, today)
    assert preset_range("last_30_days", today) == (date(2026, 2, 13), today)
    assert preset_range("this_month", today) == (date(2026, 3, 1), today)
    assert preset_range("this_year", today) == (date(2026, 1, 1), today)
    assert preset_range("last_12_months", today) == (date(2025, 3, 15), today)
    assert preset_range("last_month", date(2026, 1, 5)) == (date(2025, 12, 1), date(2025, 12, 31))
    assert previous_range(date(2026, 3, 14), date(2026, 3, 14)) == (date(2026, 3, 13), date(2026, 3, 13))


def test_months_before_crosses_a_year_and_keeps_the_wall_clock_across_daylight_saving() -> None:
    def at(year: int, month: int, day: int, hour: int) -> int:
        return int(datetime(year, month, day, hour, tzinfo=UTC).timestamp() * 1000)

    # 15 January 2026 10:00 in Amsterdam (09:00 UTC) minus 2 months: 15 November 2025 10:00 (09:00 UTC).
    assert months_before(at(2026, 1, 15, 9), 2) == at(2025, 11, 15, 9)
    # 15 July 12:00 in Amsterdam (10:00 UTC, summer time) minus 6 months: 15 January 12:00 (11:00 UTC).
    assert months_before(at(2026, 7, 15, 10), 6) == at(2026, 1, 15, 11)
    assert months_before(at(2026, 3, 31, 10), 1) == at(2026, 2, 28, 11)
    assert months_before(at(2026, 12, 31, 11), 12) == at(2025, 12, 31, 11)


def test_durations_are_echoed_in_iso_8601() -> None:
    assert [iso_duration(d) for d in (timedelta(0), timedelta(minutes=90), timedelta(days=1, hours=12),
                                      timedelta(seconds=61), timedelta(days=2, seconds=5))] == [
        "PT0S", "PT1H30M", "P1DT12H", "PT1M1S", "P2DT5S",
    ]  # fmt: skip


def test_a_funnel_has_two_to_ten_steps_and_a_range_may_be_one_day() -> None:
    steps = [f"s{i}" for i in range(11)]
    assert parse_steps("s0, s1", steps) == ("s0", "s1")
    assert len(parse_steps(",".join(steps[:10]), steps)) == 10
    with pytest.raises(BadParameter, match="2 to 10"):
        parse_steps(",".join(steps), steps)
    with pytest.raises(BadParameter, match="unknown event type"):
        parse_steps("s0,nope", steps)
    check_range(date(2026, 3, 1), date(2026, 3, 1))
    check_range(None, date(2026, 3, 1))
    with pytest.raises(BadParameter) as backwards:
        check_range(date(2026, 3, 2), date(2026, 3, 1))
    assert backwards.value.parameter == "to"
    assert parse_list("libraries", " oba, delft,oba,, ") == ("oba", "delft")
    assert parse_list("libraries", None) == ()


def test_a_path_query_asks_for_each_step_within_its_time_and_leaves_out_occurrences_too_young() -> None:
    clock = 10 * 86_400_000
    query = PathQuery(event="member.login_failed.v1", depth=3, within=timedelta(hours=1))
    sql, params = path_counts(query, clock)
    assert sorted(params.values(), key=str) == sorted(["member.login_failed.v1", 3_600_000, clock - 3 * 3_600_000],
                                                      key=str)  # fmt: skip
    assert "step_3" in sql and "step_4" not in sql and "type_3 != '' AND gap_3 <=" in sql and "next_steps FINAL" in sql
    assert "member.login_failed.v1" not in sql and "home_library" not in sql
    narrowed, narrowed_params = path_counts(
        PathQuery(event="x", depth=1, start=date(2026, 3, 1), end=date(2026, 3, 31), libraries=frozenset({"oba"}),
                  age_bands=frozenset({"0-3"})), clock,
    )  # fmt: skip
    assert {"2026-03-01", "2026-03-31", "['oba']", "['0-3']"} <= set(narrowed_params.values())
    assert "step_2" not in narrowed and ">= {p" in narrowed and "<= {p" in narrowed
    assert "coalesce(home_library, merged_home_library) IN" in narrowed
    assert "coalesce(age_band, merged_age_band) IN" in narrowed


def test_a_retention_query_asks_for_the_cohorts_between_its_months_and_the_months_after() -> None:
    sql, params = retention_counts(RetentionQuery(start=date(2026, 1, 15), end=date(2026, 3, 2), months=6))
    assert sorted(params.values(), key=str) == sorted(["2026-01-15", "2026-03-02", 6], key=str)
    assert (
        "cohort >= toStartOfMonth" in sql and "cohort <= toStartOfMonth" in sql and "arrayConcat([-1]" in sql
    )  # -1: the cohort's size
    everyone, everyone_params = retention_counts(RetentionQuery())
    assert list(everyone_params.values()) == [12] and "cohort >=" not in everyone and "home_library" not in everyone


def test_a_bad_parameter_says_which_and_why() -> None:
    with pytest.raises(BadParameter) as bad:
        parse_list("age_bands", "70+", ["0-3", "65+"])
    assert str(bad.value) == "age_bands: unknown value(s) 70+; choose from 0-3, 65+"
    assert (bad.value.parameter, bad.value.message) == ("age_bands", "unknown value(s) 70+; choose from 0-3, 65+")


def test_figures_are_rounded_to_their_documented_digits() -> None:
    [row] = friction_report([counted(detected=7, windowed=10, resolved=1, starts=30, median_seconds=90.26)],
                            FrictionQuery(), min_cell=MIN).rows  # fmt: skip
    assert (row["rate_per_1000_starts"], row["resolution_rate"], row["median_seconds_to_resolve"]) == (
        333.33, 0.1429, 90.3,
    )  # fmt: skip
    reach = reach_report({("oba", "0-3"): (30, 10)}, ("0-3",), min_cell=MIN).rows
    assert reach[0]["share"] == 0.3333
    cell = {"split": "online", "entered_1": 9, "reached_1": 9, "dropped_1": 0, "in_progress_1": 0,
            "entered_2": 9, "reached_2": 1, "dropped_2": 2, "in_progress_2": 6}  # fmt: skip
    report = funnel_report([cell], FunnelQuery(steps=("a", "b"), by="channel"), min_cell=MIN)
    assert report.rows[1]["conversion"] == 0.3333
    assert [set(r) for r in report.rows] == [set(report.columns)] * 2
    assert FunnelQuery(steps=("a", "b")).within == timedelta(days=30)


def test_a_comparison_has_the_previous_figures_before_suppressed_and_the_change_to_four_digits() -> None:
    current = friction_report([counted(detected=8, windowed=8)], FrictionQuery(), min_cell=MIN)
    previous = friction_report([counted(detected=6, windowed=6)], FrictionQuery(), min_cell=MIN)
    compared = with_previous(current, previous, ("rule",))
    assert compared.columns == (
        "rule", "detected", "resolved", "starts", "rate_per_1000_starts", "resolution_rate",
        "median_seconds_to_resolve", "previous_detected", "previous_resolution_rate",
        "previous_rate_per_1000_starts", "detected_change", "suppressed",
    )  # fmt: skip
    assert compared.rows[0]["detected_change"] == 0.3333


def test_members_per_library_are_columns_of_a_report_by_library() -> None:
    report = friction_report([counted(library="oba")], FrictionQuery(by=("library",)), min_cell=MIN,
                             members_by_library={"oba": 100})  # fmt: skip
    assert report.columns[-3:] == ("members", "frictions_per_1000_members", "suppressed")


def test_hidden_cells_holding_exactly_the_minimum_together_need_no_more_hidden() -> None:
    sizes: dict[Cell, int] = {("a", "x"): 2, ("b", "x"): 3, ("c", "x"): 50, (ALL, "x"): 55}
    line = [((ALL, "x"), [("a", "x"), ("b", "x"), ("c", "x")])]
    assert suppress_with_totals(sizes, line, min_cell=5) == {("a", "x"), ("b", "x")}


def test_rows_of_an_unknown_value_come_after_the_known_ones_and_a_total_last() -> None:
    rows = [counted(library=None), counted(library="oba"), counted(library="delft")]
    report = friction_report(rows, FrictionQuery(by=("library",)), min_cell=MIN)
    assert [r["library"] for r in report.rows] == ["delft", "oba", None]
    reach = reach_report({("oba", "0-3"): (9, 1), (None, "0-3"): (8, 1)}, ("0-3",), min_cell=MIN).rows
    assert [(r["library"], r["age_band"]) for r in reach] == [("oba", "0-3"), ("oba", ALL), (None, "0-3"),
                                                              (None, ALL), (ALL, "0-3"), (ALL, ALL)]  # fmt: skip


def test_rows_by_rule_library_and_week_are_ordered_by_rule_then_library_then_week() -> None:
    cells = [("b", "oba", "2026-W02"), ("a", None, "2026-W01"), ("b", "delft", "2026-W03"), ("a", "oba", "2026-W02"),
             ("b", "oba", "2026-W01"), ("a", "oba", "2025-W52")]  # fmt: skip
    rows = [counted(rule=rule, library=library, period=week) for rule, library, week in cells]
    report = friction_report(rows, FrictionQuery(by=("rule", "library"), period="week"), min_cell=MIN)
    assert [(r["rule"], r["library"], r["period"]) for r in report.rows] == [
        ("a", "oba", "2025-W52"), ("a", "oba", "2026-W02"), ("a", None, "2026-W01"),
        ("b", "delft", "2026-W03"), ("b", "oba", "2026-W01"), ("b", "oba", "2026-W02"),
    ]  # fmt: skip


def test_friction_counts_asked_together_give_each_grouping_its_rows_and_its_clock_s_windows() -> None:
    # The dashboard's sections, asked together with two clocks.
    asked: list[Asked] = [((("rule",), None), 100), ((("library",), "week"), 200)]
    figures = {"windowed": 0, "resolved": 0, "median_seconds": None}
    by_rule, by_library_week = 0b011, 0b100  # `grouping()`: a bit for each key of the sets its set is not grouped by
    counted = [
        {"g": by_rule, "rule": "a", "library": None, "period_week": None, "detected": 6, **figures, "rows": 6,
         "starts_0": 50, "starts_1": 70},
        {"g": by_rule, "rule": "b", "library": None, "period_week": None, "detected": 0, **figures, "rows": 0,
         "starts_0": 0, "starts_1": 9},  # windows closed by the later clock only
        {"g": by_library_week, "rule": None, "library": "oba", "period_week": "2026-W01", "detected": 0, **figures,
         "rows": 0, "starts_0": 0, "starts_1": 3},
    ]  # fmt: skip
    assert rows_of(counted, asked, 0) == [{"rule": "a", "detected": 6, **figures, "starts": 50}]
    expected = {"library": "oba", "period": "2026-W01", "detected": 0, **figures, "starts": 3}
    assert rows_of(counted, asked, 1) == [expected]


def test_a_library_with_no_members_known_shows_no_member_count_even_without_suppression() -> None:
    report = friction_report([counted(library="nergens")], FrictionQuery(by=("library",)), min_cell=1,
                             members_by_library={"oba": 100})  # fmt: skip
    assert (report.rows[0]["members"], report.rows[0]["frictions_per_1000_members"]) == (None, None)


def test_retention_shows_the_sign_up_month_and_exactly_the_months_asked_for_after_it() -> None:
    counted = [
        {"cohort": "2025-01-01", "after": -1, "members": 30},
        {"cohort": "2025-01-01", "after": 1, "members": 10},
    ]
    clock = int(datetime(2026, 6, 1, 12, tzinfo=UTC).timestamp() * 1000)
    rows = retention_report(counted, RetentionQuery(months=2), clock, MIN).rows
    assert [(r["months_after"], r["active"], r["share"]) for r in rows] == [(0, 0, 0.0), (1, 10, 0.3333), (2, 0, 0.0)]


def test_a_path_query_has_documented_defaults_and_shares_to_four_digits() -> None:
    query = PathQuery(event="x")
    assert (query.depth, query.within, query.limit) == (2, timedelta(days=7), 10)
    counted = [{"step_1": "a", "occurrences": 10}, {"step_1": "b", "occurrences": 20}]
    assert [r["share"] for r in paths_report(counted, PathQuery(event="x", depth=1), min_cell=MIN).rows] == [
        0.6667, 0.3333,
    ]  # fmt: skip


def test_a_path_query_narrowed_by_age_band_only_still_asks_for_those_members() -> None:
    sql, params = path_counts(PathQuery(event="x", depth=1, age_bands=frozenset({"0-3"})), 10 * 86_400_000)
    assert "['0-3']" in params.values() and "coalesce(age_band, merged_age_band) IN" in sql
    one_step, _ = path_counts(PathQuery(event="x", depth=1), 10 * 86_400_000)
    assert "type_1, '(none)') AS step_1" in one_step and "gap_1 <= {p" in one_step
    assert "type_2" not in one_step and "member_key IN" not in one_step


def test_next_steps_are_derived_for_the_members_stored_since_in_slices_or_for_everyone() -> None:
    every, none = derive_next_steps(None)
    assert none == {} and "stored >" not in every and "%" not in every
    assert "e[i + 3].1 - e[i + 2].1" in every and "arraySort(x -> (x.1, x.3)" in every  # in order: time, event id
    since, params = derive_next_steps(1_000, part=1, parts=4)
    assert "members WHERE stored > {p0:Int64}" in since and "member_key % {p1:UInt64} = {p2:UInt64}" in since
    assert params == {"p0": 1_000, "p1": 4, "p2": 1}
