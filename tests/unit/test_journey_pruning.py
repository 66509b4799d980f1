"""What a member's state keeps of their expected events and activities (millions of members: every entry kept costs
bytes, and an entry a window still needs must never go)."""

from __future__ import annotations

from services.journey.pruning import SEEN_CAP, forget_inactive, forget_unwaited
from services.journey.state import Activity, MemberState, Seen, Start


def seen(t: int, rule: int = 1, corr: str = "") -> Seen:
    return Seen(rule, corr, t, f"e-{rule}-{corr}-{t}".encode())


def times(state: MemberState) -> list[tuple[int, str, int]]:
    return [(s.rule, s.corr, s.t) for s in state.seen]


def test_without_a_pending_window_only_what_the_lateness_may_still_need_is_kept() -> None:
    state = MemberState(seen=[seen(10), seen(20), seen(30)])
    forget_unwaited(state, 20)
    assert times(state) == [(1, "", 20), (1, "", 30)]


def test_expected_events_all_within_the_lateness_are_kept_once_each() -> None:
    state = MemberState(seen=[seen(20), seen(30)])
    forget_unwaited(state, 20)
    assert times(state) == [(1, "", 20), (1, "", 30)]


def test_however_recent_one_window_keeps_no_more_than_the_cap() -> None:
    # All within the lateness (pruning has nothing to forget by time), but one correlation has run past the cap.
    state = MemberState(seen=[seen(t, 1, "a") for t in range(100, 100 + SEEN_CAP + 3)] + [seen(500, 2)])
    forget_unwaited(state, 50)
    assert times(state) == [(1, "a", t) for t in range(100, 100 + SEEN_CAP)] + [(2, "", 500)]
    recent = [seen(t, 1, "b") for t in range(300, 300 + SEEN_CAP)]
    untouched = MemberState(seen=list(recent))
    forget_unwaited(untouched, 50)
    assert untouched.seen == recent


def test_a_pending_window_keeps_the_earliest_two_at_or_after_its_start_and_the_latest() -> None:
    # Out of order, as two topics deliver them; one at the very moment of the start counts as after it.
    state = MemberState(starts=[Start(1, "", 5, b"s")], seen=[seen(40), seen(5), seen(1), seen(20), seen(30), seen(10)])
    forget_unwaited(state, 100)
    assert times(state) == [(1, "", 5), (1, "", 10), (1, "", 40)]


def test_pruning_one_window_leaves_the_others_alone() -> None:
    state = MemberState(seen=[seen(10, 1, "a"), seen(150, 1, "a"), seen(10, 1, "b"), seen(10, 2, "a")])
    forget_unwaited(state, 100, (1, "a"))
    assert sorted(times(state)) == [(1, "a", 150), (1, "b", 10), (2, "a", 10)]
    others = [seen(200, 1, "b"), seen(300, 2, "a")]
    waiting = MemberState(starts=[Start(1, "a", 5, b"s")], seen=[seen(10, 1, "a"), seen(150, 1, "a"), *others])
    forget_unwaited(waiting, 100, (1, "a"))
    assert sorted(times(waiting)) == [(1, "a", 10), (1, "a", 150), (1, "b", 200), (2, "a", 300)]


def test_activities_kept_are_the_armed_the_latest_and_those_the_lateness_may_still_need() -> None:
    state = MemberState(
        activity=[
            Activity(1, 10, b"a"),
            Activity(1, 20, b"b", armed=False),
            Activity(1, 50, b"c", armed=False),
            Activity(1, 90, b"d", armed=False),
            Activity(2, 5, b"e", armed=False),
        ]
    )
    forget_inactive(state, 50)
    assert [(a.rule, a.t) for a in state.activity] == [(1, 10), (1, 50), (1, 90), (2, 5)]
