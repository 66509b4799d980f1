"""The arithmetic of the journey reports, without I/O: grouping, rates, medians, censoring, suppression, CSV."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from services.journey import engine
from services.journey.memory import InMemoryJourneys
from services.journey.reports import (
    BadParameter,
    Cell,
    FrictionQuery,
    FunnelCounter,
    FunnelQuery,
    MemberCounter,
    ReachCounter,
    Report,
    friction_report,
    iso_duration,
    local_date,
    months_before,
    parse_dimensions,
    parse_list,
    parse_steps,
    period_of,
    suppress_with_totals,
    timeline_view,
    to_csv,
)
from services.journey.rules import load_rules
from services.journey.store import Changes
from shared.events import CloudEvent

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SIGNED_UP, ACTIVATED, BORROWED = "member.signed_up.v1", "member.card_activated.v1", "usage.loan_borrowed.v1"


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def ev(kind: str, member: str, at: datetime, *, channel: str | None = "offline", platform: str | None = "desk",
       library: str = "oba", **data: Any) -> CloudEvent:  # fmt: skip
    return CloudEvent(
        id=str(uuid.uuid4()), source="/test", type=f"nl.bibliotheek.{kind}", time=at, subject=member,
        library=library, channel=channel, platform=platform, data=data,
    )  # fmt: skip


def signed_up(member: str, at: datetime, *, channel: str = "online", library: str = "oba", age_band: str = "18-64",
              **data: Any) -> CloudEvent:  # fmt: skip
    platform = "website" if channel == "online" else "desk"
    return ev(SIGNED_UP, member, at, channel=channel, platform=platform, library=library, age_band=age_band,
              home_library=library, postcode_area="1034", **data)  # fmt: skip


def journey(*events: CloudEvent) -> engine.Journey:
    """A member's journey as the service keeps it: the engine records the events (no rules needed)."""
    subject = events[0].subject
    assert subject is not None
    built = engine.new_journey(subject)
    for event in events:
        engine.apply(built, event, [])
    return built


def fact(rule: str = "online-signup-not-activated", *, due: datetime = T0, resolved: datetime | None = None,
         library: str | None = "oba", age_band: str | None = "18-64", platform: str | None = "website",
         channel_pair: str | None = "online→offline") -> dict[str, Any]:  # fmt: skip
    return {"rule": rule, "library": library, "channel_pair": channel_pair, "platform": platform,
            "age_band": age_band, "started": ms(due - 14 * DAY), "due": ms(due),
            "resolved": None if resolved is None else ms(resolved)}  # fmt: skip


def starts(rule: str = "online-signup-not-activated", day: str = "2026-03-02", count: int = 100, *,
           library: str = "oba", age_band: str = "18-64", platform: str = "website",
           pair: str = "online→offline") -> dict[str, int]:  # fmt: skip
    return {f"{rule}|{library}|{pair}|{platform}|{age_band}|{day}": count}


def by_key(report: Report, *keys: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {tuple(row[k] for k in keys): row for row in report.rows}


# -------------------------------------------------------------------------------------------- frictions


def test_friction_rows_count_detected_resolved_and_closed_windows_with_rates_and_the_median_time() -> None:
    facts = [fact(resolved=T0 + DAY * d) for d in (1, 2, 4)] + [fact() for _ in range(7)]
    report = friction_report(facts, starts(count=200), FrictionQuery(by=("rule",)), min_cell=5)
    [row] = report.rows
    assert row == {
        "rule": "online-signup-not-activated", "detected": 10, "resolved": 3, "starts": 200,
        "rate_per_1000_starts": 50.0, "resolution_rate": 0.3, "median_seconds_to_resolve": 2 * 86400.0,
        "suppressed": False,
    }  # fmt: skip
    assert report.columns == ("rule", *list(row)[1:])


def test_rules_without_windows_have_no_starts_and_do_not_enter_the_rate() -> None:
    facts = [fact() for _ in range(6)] + [fact("repeated-login-failures", channel_pair=None) for _ in range(9)]
    rows = by_key(friction_report(facts, starts(count=60), FrictionQuery(by=("rule",)), min_cell=5), "rule")
    assert rows[("repeated-login-failures",)]["starts"] is None
    assert rows[("repeated-login-failures",)]["rate_per_1000_starts"] is None
    [total] = friction_report(facts, starts(count=60), FrictionQuery(by=()), min_cell=5).rows
    assert (total["detected"], total["starts"], total["rate_per_1000_starts"]) == (15, 60, 100.0)


def test_facts_and_closed_windows_from_the_engine_add_up_per_group() -> None:
    """The shapes the store writes (store.Changes) are the shapes the report reads: windows that closed met are
    starts without a friction, windows still open count nowhere (right-censored)."""
    replay = InMemoryJourneys(load_rules())
    events = [signed_up(f"m{i}", T0 + i * timedelta(minutes=1)) for i in range(12)]
    events += [ev(ACTIVATED, f"m{i}", T0 + 3 * DAY) for i in range(4)]  # 4 met, 8 stuck
    events += [ev(ACTIVATED, f"m{i}", T0 + 20 * DAY) for i in range(4, 6)]  # 2 of those get through after all
    events += [signed_up("late", T0 + 19 * DAY)]  # window still open when the history ends at day 20
    replay.feed(events)
    result = replay.finish(until=T0 + 20 * DAY)
    changes = Changes()
    for friction in result.detected:
        changes.detected(friction)
    for resolution in result.resolved:
        changes.resolved(resolution)
    for closed in result.closed:
        changes.closed(closed)
    query = FrictionQuery(by=("rule",), rules=frozenset({"online-signup-not-activated"}))
    [row] = friction_report(list(changes.frictions.values()), changes.starts, query, min_cell=5).rows
    assert (row["detected"], row["resolved"], row["starts"]) == (8, 2, 12)
    assert row["rate_per_1000_starts"] == pytest.approx(666.67)
    assert row["resolution_rate"] == 0.25


def test_grouping_by_several_dimensions_and_filters() -> None:
    facts = [fact(library="oba", age_band="18-64") for _ in range(5)]
    facts += [fact(library="haarlem", age_band="0-3") for _ in range(6)]
    facts += [fact(library="haarlem", age_band="18-64", platform="app") for _ in range(5)]
    query = FrictionQuery(by=("library", "age_band"))
    assert list(by_key(friction_report(facts, {}, query, min_cell=5), "library", "age_band")) == [
        ("haarlem", "0-3"), ("haarlem", "18-64"), ("oba", "18-64"),
    ]  # fmt: skip
    only = FrictionQuery(by=("library", "platform"), libraries=frozenset({"haarlem"}), age_bands=frozenset({"18-64"}))
    [row] = friction_report(facts, {}, only, min_cell=5).rows
    assert (row["library"], row["platform"], row["detected"]) == ("haarlem", "app", 5)


def test_periods_are_amsterdam_days_iso_weeks_and_months() -> None:
    # 22:30 UTC on 30 March 2026 is 00:30 on 31 March in Amsterdam (summer time).
    late_evening = datetime(2026, 3, 30, 22, 30, tzinfo=UTC)
    assert local_date(ms(late_evening)) == date(2026, 3, 31)
    assert period_of(date(2026, 3, 31), "day") == "2026-03-31"
    assert period_of(date(2026, 3, 31), "month") == "2026-03"
    assert period_of(date(2024, 12, 30), "week") == "2025-W01"
    facts = [fact(due=late_evening) for _ in range(5)] + [fact(due=late_evening - DAY) for _ in range(6)]
    rows = by_key(friction_report(facts, {}, FrictionQuery(by=(), period="day"), min_cell=5), "period")
    assert {k: r["detected"] for k, r in rows.items()} == {("2026-03-30",): 6, ("2026-03-31",): 5}
    weekly = friction_report(facts, {}, FrictionQuery(by=(), period="week"), min_cell=5)
    assert [(r["period"], r["detected"]) for r in weekly.rows] == [("2026-W14", 11)]


def test_from_and_to_are_inclusive_amsterdam_dates_for_frictions_and_windows() -> None:
    facts = [fact(due=T0 + d * DAY) for d in range(10)]
    windows = {**starts(day="2026-03-02", count=10), **starts(day="2026-03-05", count=20)}
    query = FrictionQuery(by=(), start=date(2026, 3, 3), end=date(2026, 3, 7))
    [row] = friction_report(facts, windows, query, min_cell=5).rows
    assert (row["detected"], row["starts"]) == (5, 20)


def test_a_row_with_fewer_frictions_or_windows_than_the_minimum_is_suppressed_but_still_listed() -> None:
    facts = [fact(library="oba") for _ in range(4)] + [fact(library="haarlem") for _ in range(5)]
    windows = {**starts(library="oba", count=50), **starts(library="haarlem", count=5)}
    rows = by_key(friction_report(facts, windows, FrictionQuery(by=("library",)), min_cell=5), "library")
    assert rows[("oba",)] == {
        "library": "oba", "detected": None, "resolved": None, "starts": None, "rate_per_1000_starts": None,
        "resolution_rate": None, "median_seconds_to_resolve": None, "suppressed": True,
    }  # fmt: skip
    assert rows[("haarlem",)]["detected"] == 5 and not rows[("haarlem",)]["suppressed"]
    windows_only = friction_report([], starts(count=3), FrictionQuery(by=("rule",)), min_cell=1)
    assert windows_only.rows[0]["suppressed"] and windows_only.rows[0]["starts"] is None


def test_grouped_by_library_a_row_shows_its_members_and_frictions_per_thousand_members() -> None:
    facts = [fact(library="oba") for _ in range(6)] + [fact(library="haarlem") for _ in range(2)]
    members: dict[str | None, int] = {"oba": 3000, "haarlem": 4, "utrecht": 900}
    report = friction_report(facts, {}, FrictionQuery(by=("library",)), min_cell=5, members_by_library=members)
    rows = by_key(report, "library")
    assert (rows[("oba",)]["members"], rows[("oba",)]["frictions_per_1000_members"]) == (3000, 2.0)
    assert rows[("haarlem",)]["members"] is None  # four members: suppressed
    assert rows[("haarlem",)]["frictions_per_1000_members"] is None
    assert report.columns[-3:] == ("members", "frictions_per_1000_members", "suppressed")


def test_members_are_counted_per_home_library_within_the_age_bands() -> None:
    counter = MemberCounter(age_bands=frozenset({"0-3"}))
    counter.add([
        journey(signed_up("a", T0, age_band="0-3")), journey(signed_up("b", T0, library="haarlem", age_band="0-3")),
        journey(signed_up("c", T0)), journey(ev(BORROWED, "d", T0)),  # no sign-up seen: no profile
    ])  # fmt: skip
    assert dict(counter.counts) == {"oba": 1, "haarlem": 1}


# ----------------------------------------------------------------------------------------------- funnel

FUNNEL = FunnelQuery(steps=(SIGNED_UP, ACTIVATED, BORROWED), within=30 * DAY, by="channel")


def funnel_rows(journeys: list[engine.Journey], clock: datetime, query: FunnelQuery = FUNNEL,
                min_cell: int = 1) -> dict[tuple[Any, ...], dict[str, Any]]:  # fmt: skip
    counter = FunnelCounter(query, ms(clock))
    counter.add(journeys)
    return by_key(counter.report(min_cell), *((query.by,) if query.by else ()), "step_number")


def test_a_funnel_counts_reached_dropped_and_in_progress_per_step_and_right_censors() -> None:
    clock = T0 + 100 * DAY
    members = [
        journey(signed_up("in", T0), ev(ACTIVATED, "in", T0 + 2 * DAY), ev(BORROWED, "in", T0 + 9 * DAY)),
        journey(signed_up("stuck", T0)),  # 100 days without activation: dropped
        journey(signed_up("too-late", T0), ev(ACTIVATED, "too-late", T0 + 31 * DAY)),  # after `within`: dropped
        journey(signed_up("new", clock - 3 * DAY)),  # still inside the window: in progress, never dropped
        journey(signed_up("recent", clock - 10 * DAY), ev(ACTIVATED, "recent", clock - 5 * DAY)),  # no loan yet
    ]  # fmt: skip
    rows = funnel_rows(members, clock)
    one, two, three = rows[("online", 1)], rows[("online", 2)], rows[("online", 3)]
    assert (one["entered"], one["reached"], one["dropped"], one["in_progress"], one["conversion"]) == (5, 5, 0, 0, None)
    assert (two["entered"], two["reached"], two["dropped"], two["in_progress"], two["conversion"]) == (5, 2, 2, 1, 0.5)
    assert (three["entered"], three["reached"], three["dropped"], three["in_progress"]) == (2, 1, 0, 1)
    assert three["conversion"] == 1.0  # of those whose outcome is known
    for k in (2, 3):
        prev, row = rows[("online", k - 1)], rows[("online", k)]
        assert prev["reached"] == row["reached"] + row["dropped"] + row["in_progress"] == row["entered"]


def test_a_step_counts_at_its_first_occurrence_at_or_after_the_previous_step() -> None:
    # A loan before the sign-up (say, a school pass) does not count; the one after it does, found in the timeline.
    member = journey(
        ev(BORROWED, "m", T0 - 5 * DAY), signed_up("m", T0), ev(ACTIVATED, "m", T0), ev(BORROWED, "m", T0 + 4 * DAY)
    )
    assert member["f"][BORROWED][0] == ms(T0 - 5 * DAY)
    rows = funnel_rows([member], T0 + 5 * DAY)
    assert rows[("online", 2)]["reached"] == 1  # the same moment counts
    assert rows[("online", 3)]["reached"] == 1
    before_only = journey(ev(BORROWED, "x", T0 - 5 * DAY), signed_up("x", T0), ev(ACTIVATED, "x", T0 + DAY))
    assert funnel_rows([before_only], T0 + 60 * DAY)[("online", 3)]["dropped"] == 1


def test_a_funnel_splits_by_the_channel_or_platform_of_the_first_step_and_filters_the_cohort() -> None:
    members = [journey(signed_up(f"on{i}", T0 + i * DAY)) for i in range(3)]
    members += [journey(signed_up(f"off{i}", T0, channel="offline", library="haarlem")) for i in range(2)]
    by_channel = funnel_rows(members, T0 + 90 * DAY)
    assert (by_channel[("online", 1)]["reached"], by_channel[("offline", 1)]["reached"]) == (3, 2)
    by_platform = funnel_rows(members, T0 + 90 * DAY, FunnelQuery(steps=FUNNEL.steps, by="platform"))
    assert set(by_platform) >= {("website", 1), ("desk", 1)}
    cohort = FunnelQuery(steps=FUNNEL.steps, start=date(2026, 3, 3), libraries=frozenset({"oba"}))
    assert funnel_rows(members, T0 + 90 * DAY, cohort)[(1,)]["reached"] == 2


def test_a_funnel_step_entered_by_fewer_members_than_the_minimum_is_suppressed() -> None:
    members = [journey(signed_up(f"m{i}", T0), ev(ACTIVATED, f"m{i}", T0 + DAY)) for i in range(6)]
    members += [journey(signed_up("x", T0))]
    rows = funnel_rows(members, T0 + 90 * DAY, FunnelQuery(steps=FUNNEL.steps), min_cell=7)
    assert rows[(1,)]["reached"] == 7 and rows[(2,)]["reached"] == 6
    assert rows[(3,)] == {"step_number": 3, "step": BORROWED, "entered": None, "reached": None, "dropped": None,
                          "in_progress": None, "conversion": None, "suppressed": True}  # fmt: skip


# ------------------------------------------------------------------------------------------------ reach


def test_months_before_is_the_same_moment_calendar_months_earlier_in_amsterdam() -> None:
    may_31 = datetime(2026, 5, 31, 12, 0, tzinfo=UTC)  # 14:00 in Amsterdam
    assert datetime.fromtimestamp(months_before(ms(may_31), 3) / 1000, UTC) == datetime(2026, 2, 28, 13, tzinfo=UTC)
    assert datetime.fromtimestamp(months_before(ms(may_31), 12) / 1000, UTC) == datetime(2025, 5, 31, 12, tzinfo=UTC)


def reach(journeys: list[engine.Journey], clock: datetime, *, min_cell: int = 1, months: int = 12) -> dict[
    tuple[Any, ...], dict[str, Any]
]:  # fmt: skip
    counter = ReachCounter(("0-3", "4-11", "12-17"), months_before(ms(clock), months))
    counter.add(journeys)
    return by_key(counter.report(min_cell), "library", "age_band")


def test_reach_counts_members_active_within_the_months_per_library_and_band_with_totals() -> None:
    clock = T0 + 400 * DAY
    members = [
        journey(signed_up(f"a{i}", T0, age_band="0-3"), ev(BORROWED, f"a{i}", clock - 30 * DAY)) for i in range(3)
    ]
    members += [journey(signed_up(f"b{i}", T0, age_band="0-3")) for i in range(2)]  # last active 400 days ago
    members += [journey(signed_up(f"c{i}", clock - DAY, age_band="4-11", library="haarlem")) for i in range(4)]
    members += [journey(signed_up("adult", clock - DAY))]  # not in the requested bands
    rows = reach(members, clock)
    assert (rows[("oba", "0-3")]["members"], rows[("oba", "0-3")]["active"], rows[("oba", "0-3")]["share"]) == (
        5,
        3,
        0.6,
    )
    assert ("oba", "4-11") not in rows
    assert rows[("haarlem", "*")]["members"] == 4 and rows[("haarlem", "*")]["share"] == 1.0
    assert (rows[("*", "0-3")]["members"], rows[("*", "4-11")]["members"], rows[("*", "12-17")]["members"]) == (5, 4, 0)
    assert (rows[("*", "*")]["members"], rows[("*", "*")]["active"]) == (9, 7)
    assert list(rows)[-1] == ("*", "*")


def test_a_small_reach_cell_is_suppressed_and_a_total_cannot_give_it_away() -> None:
    clock = T0 + DAY
    members = [journey(signed_up(f"o{i}", T0, age_band="0-3")) for i in range(40)]
    members += [journey(signed_up(f"h{i}", T0, age_band="0-3", library="haarlem")) for i in range(30)]
    members += [journey(signed_up(f"u{i}", T0, age_band="0-3", library="utrecht")) for i in range(2)]
    rows = reach(members, clock, min_cell=5)
    assert rows[("utrecht", "0-3")]["suppressed"] and rows[("utrecht", "0-3")]["members"] is None
    # network total 72 minus oba 40 minus haarlem 30 would be utrecht's 2: haarlem (the smaller one) goes too
    assert rows[("haarlem", "0-3")]["suppressed"] and not rows[("oba", "0-3")]["suppressed"]
    assert rows[("*", "0-3")]["members"] == 72


def test_suppression_with_totals_hides_at_least_two_cells_holding_the_minimum_per_line() -> None:
    sizes: dict[Cell, int] = {("a", "x"): 3, ("b", "x"): 50, ("c", "x"): 60, ("*", "x"): 113}
    line = [(("*", "x"), [("a", "x"), ("b", "x"), ("c", "x")])]
    assert suppress_with_totals(sizes, line, min_cell=5) == {("a", "x"), ("b", "x")}
    assert suppress_with_totals({**sizes, ("a", "x"): 30}, line, min_cell=5) == set()
    lonely: dict[Cell, int] = {("a", "x"): 2, ("*", "x"): 2}
    assert suppress_with_totals(lonely, [(("*", "x"), [("a", "x")])], min_cell=5) == {("a", "x"), ("*", "x")}


# --------------------------------------------------------------------------------------------- timeline


def test_a_timeline_shows_milestones_touches_and_recent_events_in_amsterdam_time_newest_first() -> None:
    member = journey(
        signed_up("m", T0),
        ev(ACTIVATED, "m", T0 + DAY, channel="offline", platform="desk"),
        ev("member.login_failed.v1", "m", T0 + 2 * DAY, channel="online", platform="ebook"),
    )
    view = timeline_view(member, "old-id")
    assert (view["member_id"], view["requested_id"]) == ("m", "old-id")
    assert view["profile"]["home_library"] == "oba" and "name" not in view["profile"]
    assert [m["type"] for m in view["milestones"]] == [SIGNED_UP, ACTIVATED, "member.login_failed.v1"]
    assert view["milestones"][0]["at"] == "2026-03-02T10:00:00+01:00"
    assert [e["type"] for e in view["timeline"]] == ["member.login_failed.v1", ACTIVATED, SIGNED_UP]
    assert view["last_touch"]["platforms"]["ebook"] == "2026-03-04T10:00:00+01:00"
    assert view["last_activity"] == "2026-03-04T10:00:00+01:00"
    assert view["open_frictions"] == []


# ---------------------------------------------------------------------------------------- CSV, parameters


def test_csv_has_the_header_even_without_rows_and_empty_fields_for_suppressed_counts() -> None:
    assert to_csv(Report(("library", "members", "suppressed"), [])) == "library,members,suppressed\r\n"
    text = to_csv(Report(("library", "members", "suppressed"), [
        {"library": "oba", "members": None, "suppressed": True},
        {"library": "a,b", "members": 12, "suppressed": False},
    ]))  # fmt: skip
    assert list(csv.reader(io.StringIO(text))) == [
        ["library", "members", "suppressed"], ["oba", "", "true"], ["a,b", "12", "false"],
    ]  # fmt: skip


def test_bad_parameters_name_the_parameter() -> None:
    with pytest.raises(BadParameter) as by:
        parse_dimensions("rule,colour")
    assert by.value.parameter == "by" and "colour" in by.value.message
    assert parse_dimensions("age_band,rule,rule") == ("rule", "age_band")
    assert parse_dimensions("") == ()
    with pytest.raises(BadParameter) as steps:
        parse_steps("member.signed_up.v1,member.nope.v1", [SIGNED_UP])
    assert steps.value.parameter == "steps"
    with pytest.raises(BadParameter):
        parse_steps(SIGNED_UP, [SIGNED_UP])
    with pytest.raises(BadParameter) as bands:
        parse_list("age_bands", "0-3,70+", ["0-3", "65+"])
    assert bands.value.parameter == "age_bands"


def test_durations_are_echoed_in_iso_8601() -> None:
    assert [iso_duration(d) for d in (30 * DAY, timedelta(hours=1), timedelta(days=1, hours=12))] == [
        "P30D", "PT1H", "P1DT12H",
    ]  # fmt: skip
