"""Back-testing, without I/O: a changed window flags who it should, the comparison per rule and per member, and
the same comparison scoring a detector against planted truth."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.journey.offline import backtest
from services.journey.offline.backtest import BacktestError, RuleDiff
from services.journey.offline.simulator import simulate
from services.journey.rules import RuleCatalogue, load_rules, with_window
from shared.events import CloudEvent

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
IN_FORCE = load_rules()
DESK = "desk-signup-never-online"


def ev(kind: str, member: str, days: float, *, channel: str, platform: str, **data: Any) -> CloudEvent:
    return CloudEvent(
        id=str(uuid.uuid4()), source="/test", type=f"nl.bibliotheek.{kind}", time=T0 + timedelta(days=days),
        subject=member, library="oba", channel=channel, platform=platform, data=data,
    )  # fmt: skip


def desk_sign_up(member: str) -> CloudEvent:
    return ev("member.signed_up.v1", member, 0, channel="offline", platform="desk", age_band="18-64",
              home_library="oba", postcode_area="1034")  # fmt: skip


def online_login(member: str, days: float) -> CloudEvent:
    return ev("member.login_succeeded.v1", member, days, channel="online", platform="website",
              login_platform="website")  # fmt: skip


# Three desk sign-ups: online after 5 days, after 20 days, never.
HISTORY = [
    desk_sign_up("soon"), online_login("soon", 5),
    desk_sign_up("later"), online_login("later", 20),
    desk_sign_up("never"),
]  # fmt: skip
UNTIL = T0 + timedelta(days=100)


def test_a_window_is_written_as_rule_and_iso_duration() -> None:
    assert backtest.parse_window("desk-signup-never-online=P14D") == (DESK, timedelta(days=14))
    assert backtest.parse_window(" repeated-login-failures = PT30M ") == (
        "repeated-login-failures",
        timedelta(minutes=30),
    )


@pytest.mark.parametrize("text", ["desk-signup-never-online", "=P14D", "desk-signup-never-online=14",
                                  "desk-signup-never-online=fortnight", "desk-signup-never-online=PT0S"])  # fmt: skip
def test_a_window_that_is_not_rule_and_positive_iso_duration_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(BacktestError, match="window"):
        backtest.parse_window(text)


def test_a_window_for_a_rule_the_catalogue_lacks_is_refused_naming_the_rules_there_are() -> None:
    with pytest.raises(BacktestError, match=r"no rule 'desk-never'.*online-signup-not-activated"):
        backtest.candidate_catalogue(IN_FORCE, [("desk-never", timedelta(days=3))])


def test_the_candidate_changes_only_the_window_asked_for() -> None:
    candidate = backtest.candidate_catalogue(IN_FORCE, [(DESK, timedelta(days=14))])
    assert candidate.by_id(DESK).within == timedelta(days=14)  # type: ignore[union-attr]
    assert [r for r in candidate.rules if r.id != DESK] == [r for r in IN_FORCE.rules if r.id != DESK]
    assert backtest.describe_change(IN_FORCE, candidate) == [f"  {DESK}: within P14D instead of P30D"]


def test_fourteen_instead_of_thirty_days_also_flags_who_came_online_between_and_they_resolve() -> None:
    candidate = with_window(IN_FORCE, DESK, timedelta(days=14))
    in_force_run, candidate_run = backtest.run_both(HISTORY, IN_FORCE, candidate, timedelta(0), UNTIL)
    [desk] = [d for d in backtest.compare_runs(in_force_run, candidate_run, IN_FORCE, candidate) if d.rule == DESK]

    assert desk.changed
    assert (len(desk.reference), len(desk.other)) == (1, 2)
    assert desk.members_only_other == ["later"] and desk.members_only_reference == []
    assert (desk.resolved_reference, desk.resolved_other) == (0, 1)  # "later" came online on day 20


def test_a_window_still_open_where_the_history_ends_is_not_counted() -> None:
    in_force_run = backtest.run(HISTORY, IN_FORCE, timedelta(0), T0 + timedelta(days=25))
    assert [f for f in in_force_run.detected if f.rule == DESK] == []


def test_running_only_the_differing_rules_again_gives_what_a_full_candidate_run_gives() -> None:
    events = simulate(400, seed=3).events
    candidate = with_window(with_window(IN_FORCE, DESK, timedelta(days=10)), "reservation-not-collected",
                            timedelta(days=3))  # fmt: skip
    _, shortcut = backtest.run_both(events, IN_FORCE, candidate, timedelta(minutes=1), None)
    full = backtest.run(events, candidate, timedelta(minutes=1), None)
    assert sorted(backtest.friction_keys(shortcut)) == sorted(backtest.friction_keys(full))
    assert len(shortcut.resolved) == len(full.resolved) and len(shortcut.closed) == len(full.closed)


def test_a_removed_rule_is_flagged_only_by_the_rules_in_force_and_a_new_one_only_by_the_candidate() -> None:
    desk = IN_FORCE.by_id(DESK)
    assert desk is not None
    renamed = desk.model_copy(update={"id": "desk-signup-never-online-v2", "within": timedelta(days=14)})
    candidate = RuleCatalogue(rules=[*(r for r in IN_FORCE.rules if r.id != DESK), renamed])
    in_force_run, candidate_run = backtest.run_both(HISTORY, IN_FORCE, candidate, timedelta(0), UNTIL)
    diffs = {d.rule: d for d in backtest.compare_runs(in_force_run, candidate_run, IN_FORCE, candidate)}

    assert diffs[DESK].members_only_reference == ["never"] and not diffs[DESK].other
    assert diffs["desk-signup-never-online-v2"].members_only_other == ["later", "never"]
    assert "  desk-signup-never-online-v2: new (absence, within P14D)" in backtest.describe_change(IN_FORCE, candidate)
    assert f"  {DESK}: removed" in backtest.describe_change(IN_FORCE, candidate)


def test_the_comparison_is_per_friction_and_per_member_with_every_rule_listed() -> None:
    reference = [("r1", "a", "s1"), ("r1", "b", "s2"), ("r2", "c", "s3")]
    other = [("r1", "a", "s1"), ("r1", "a", "s9"), ("r3", "d", "s4")]
    diffs = {d.rule: d for d in backtest.compare(reference, other, ["r0", "r1", "r2"])}

    assert list(diffs) == ["r0", "r1", "r2", "r3"]
    r1 = diffs["r1"]
    assert (r1.both, r1.precision, r1.recall) == (1, 0.5, 0.5)
    assert r1.members_only_reference == ["b"] and r1.members_only_other == []  # a is flagged by both
    assert (diffs["r0"].precision, diffs["r0"].recall) == (1.0, 1.0)  # nothing planted, nothing found
    assert (diffs["r2"].recall, diffs["r3"].precision) == (0.0, 0.0)
    assert not backtest.exact(list(diffs.values()))


def test_the_engine_finds_exactly_what_the_simulator_planted_and_the_score_says_so() -> None:
    network = simulate(1500, seed=21)
    detected = backtest.run(network.events, IN_FORCE, timedelta(minutes=1), datetime.now(UTC))
    truth = [(p.rule, p.member_id, p.start_event_id) for p in network.truth]
    diffs = backtest.compare(truth, backtest.friction_keys(detected), [r.id for r in IN_FORCE.rules])

    assert backtest.exact(diffs)
    table = backtest.score_table(diffs).splitlines()
    assert table[-1].split() == ["all", f"{len(truth):,}", f"{len(truth):,}", "1.000", "1.000"]


def test_the_tables_show_counts_marks_and_the_members_behind_them() -> None:
    diff = RuleDiff(DESK, frozenset({("m1", "s1")}), frozenset({("m1", "s1"), ("m2", "s2")}), 0, 1, changed=True)
    table = backtest.backtest_table([diff]).splitlines()
    assert table[2].split() == [DESK, "*", "1", "2", "1", "0", "0/1"]
    assert backtest.member_lists([diff]).splitlines() == [f"{DESK}: 1 members flagged only by the candidate", "  m2"]
    assert backtest.member_lists([RuleDiff(DESK, frozenset(), frozenset())]) == "no member is flagged by one side only"
