"""One partition's clocks, without I/O: a window is decided only once every topic that may still deliver events of
its time has passed it; a quiet topic holds nothing back (replay) or follows the wall clock (live); a history
loaded into a running platform keeps a clock of its own; erasure and merges."""

from __future__ import annotations

import heapq
import random
from datetime import timedelta

import pytest

from services.journey.engine import Engine
from services.journey.partition import BACKFILL, LIVE, Partition, in_event_time
from services.journey.rules import JourneyEvent, load_rules

RULES = load_rules().rules
DAY = 24 * 3600 * 1000
T0 = 1_772_442_000_000  # 2026-03-02 09:00 UTC, in ms
ACTIVATION = "online-signup-not-activated"


def event(kind: str, t: int, member: str = "m", event_id: str | None = None, **data: object) -> JourneyEvent:
    channel = "online" if kind == "member.signed_up.v1" else "offline"
    return JourneyEvent(event_id or f"{kind}@{t}/{member}", kind, t, member, channel, "website", "oba",
                        {"age_band": "18-64", "home_library": "oba", **data})  # fmt: skip


def sign_up(t: int = T0, member: str = "m") -> JourneyEvent:
    return event("member.signed_up.v1", t, member)


def activation(t: int, member: str = "m") -> JourneyEvent:
    return event("member.card_activated.v1", t, member)


def detected(partition: Partition) -> list[str]:
    return [f"{f.rule}:{f.member_id}" for f in partition.take().outcome.detected]


def test_a_topic_that_has_delivered_nothing_yet_holds_every_window_open() -> None:
    partition = Partition(Engine(RULES, 0), 0, {"members", "usage"})
    partition.feed("members", sign_up())
    partition.feed("members", sign_up(T0 + 20 * DAY, "other"))  # the members topic is 20 days further
    partition.advance()
    assert detected(partition) == [] and partition.pending_timers() == 2
    # The usage topic, still at the sign-up's day, could bring the activation: the window stays open.
    partition.feed("usage", activation(T0 + DAY, "x"))
    partition.advance()
    assert detected(partition) == []
    partition.feed("usage", activation(T0 + 15 * DAY, "x"))
    partition.advance()
    assert detected(partition) == [f"{ACTIVATION}:m"]


def test_in_a_replay_a_quiet_topic_holds_nothing_back() -> None:
    partition = Partition(Engine(RULES, 0), 0, {"members", "usage"})
    partition.observe({"usage"}, set(), None)
    partition.feed("members", sign_up())
    partition.feed("members", sign_up(T0 + 15 * DAY, "other"))
    assert detected(partition) == [f"{ACTIVATION}:m"]


def test_live_a_quiet_topic_follows_the_wall_clock() -> None:
    partition = Partition(Engine(RULES, 0), 0, {"members", "usage"})
    partition.feed("members", sign_up())
    partition.feed("usage", activation(T0, "x"))
    partition.observe({"members", "usage"}, set(), T0 + 14 * DAY)  # both caught up; the wall clock says day 14
    partition.advance()
    assert detected(partition) == []
    partition.observe({"members", "usage"}, set(), T0 + 14 * DAY + 1)
    assert partition.due()
    partition.advance()
    assert detected(partition) == [f"{ACTIVATION}:m"]


def test_a_history_loaded_into_a_running_platform_has_a_clock_of_its_own() -> None:
    lateness = 60_000
    partition = Partition(Engine(RULES, lateness), 0, {"members"})
    partition.feed("members", sign_up(T0 + 100 * DAY, "live"))
    old = sign_up(T0, "old")  # older than the live clock less the lateness: a history being loaded
    partition.feed("members", old)
    assert partition.backfilling() and partition.streams() == {LIVE, BACKFILL}
    assert partition.clock(BACKFILL) == T0 and partition.clock(LIVE) == T0 + 100 * DAY
    # The live clock is a hundred days further, yet the old sign-up's window waits for the history's own clock.
    assert detected(partition) == []
    partition.feed("members", activation(T0 + 3 * DAY, "old"))
    partition.feed("members", sign_up(T0 + 30 * DAY, "old2"))
    assert detected(partition) == []  # "old" activated within its window, decided by the history's clock
    [timer] = partition.timers_of("old2")
    assert timer.due == T0 + 44 * DAY and timer.stream == BACKFILL
    partition.observe({"members"}, set(), T0 + 101 * DAY)
    partition.end_backfill()
    assert detected(partition) == [f"{ACTIVATION}:old2"]
    assert not partition.backfilling() and partition.clock(LIVE) == T0 + 101 * DAY


def test_an_erased_member_s_windows_decide_nothing_and_their_state_is_gone() -> None:
    partition = Partition(Engine(RULES, 0))
    partition.feed("t", sign_up())
    partition.feed("t", event("member.erased.v1", T0 + DAY))
    applied = partition.take()
    assert applied.erased == {"m"} and "m" not in applied.changed and "m" not in partition.members
    partition.advance(T0 + 30 * DAY)
    assert detected(partition) == [] and partition.timers_of("m") == []


def test_a_merged_member_s_later_events_continue_the_survivor_s_journey() -> None:
    partition = Partition(Engine(RULES, 0))
    partition.feed("t", sign_up(T0, "n"))
    partition.feed("t", sign_up(T0, "m"))
    partition.feed("t", event("member.merged.v1", T0 + DAY, "m", survivor_id="n"))
    applied = partition.take()
    assert [(f.survivor, f.event.kind, f.event.subject) for f in applied.forwards] == [
        ("n", "member.merged.v1", "n"),
    ]  # fmt: skip
    partition.feed("t", activation(T0 + 2 * DAY, "m"))
    [forward] = partition.take().forwards
    assert (forward.survivor, forward.event.kind) == ("n", "member.card_activated.v1")
    partition.apply(forward.event._replace(subject="n"))
    partition.advance(T0 + 30 * DAY)
    assert detected(partition) == []  # n activated in time; m's own window ended with the merge
    assert partition.timers_of("m") == []


def test_a_clock_only_moves_forward() -> None:
    partition = Partition(Engine(RULES, int(timedelta(days=1).total_seconds() * 1000)), 0, {"t"})
    partition.feed("t", sign_up(T0 + 10 * DAY, "a"))
    partition.feed("t", sign_up(T0 + 10 * DAY - 1000, "b"))  # late, within the lateness
    assert partition.clock(LIVE) == T0 + 10 * DAY and not partition.backfilling()


def test_an_expected_event_seen_late_but_before_the_window_is_decided_resolves_the_friction_at_once() -> None:
    partition = Partition(Engine(RULES, 0), 0, {"members", "usage"})
    partition.feed("members", sign_up())
    late = activation(T0 + 15 * DAY)
    partition.feed("usage", late)  # the usage topic runs ahead: the window is not decided yet
    assert partition.take().outcome.detected == []
    partition.feed("members", sign_up(T0 + 20 * DAY, "other"))
    outcome = partition.take().outcome
    [friction] = outcome.detected
    [resolution] = outcome.resolved
    assert (friction.rule, friction.due_ms) == (ACTIVATION, T0 + 14 * DAY)
    assert (resolution.friction_id, resolution.event_id, resolution.at_ms) == (friction.friction_id, late.id, late.t)
    assert partition.members["m"].open == []  # resolved: nothing left open to resolve again


def test_a_success_seen_late_but_before_the_failures_are_decided_resolves_their_friction() -> None:
    partition = Partition(Engine(RULES, 0), 0, {"members", "usage"})
    minute = 60_000
    for i in range(3):
        partition.feed("members", event("member.login_failed.v1", T0 + i * minute, login_platform="app"))
    partition.feed("members", event("member.login_succeeded.v1", T0 + 20 * minute, login_platform="app"))
    assert partition.take().outcome.detected == []  # the usage topic has delivered nothing: nothing decided
    partition.feed("usage", activation(T0 + DAY, "x"))
    outcome = partition.take().outcome
    [friction] = outcome.detected
    [resolution] = outcome.resolved
    assert (friction.rule, friction.started_ms, friction.due_ms) == ("repeated-login-failures", T0, T0 + 2 * minute)
    assert (resolution.friction_id, resolution.at_ms) == (friction.friction_id, T0 + 20 * minute)


def test_a_child_back_too_late_but_before_the_wait_is_decided_resolves_the_friction_at_once() -> None:
    partition = Partition(Engine(RULES, 0), 0, {"members", "usage"})
    partition.feed("members", event("member.signed_up.v1", T0, age_band="4-11"))
    back = event("usage.loan_borrowed.v1", T0 + 200 * DAY, item_id="b", loan_id="l")
    partition.feed("usage", back)
    assert partition.take().outcome.detected == []
    partition.feed("members", sign_up(T0 + 250 * DAY, "other"))
    outcome = partition.take().outcome
    [friction] = [f for f in outcome.detected if f.rule == "youth-inactive"]
    [resolution] = [r for r in outcome.resolved if r.rule == "youth-inactive"]
    assert (friction.started_ms, friction.due_ms) == (T0, T0 + 180 * DAY)
    assert (resolution.friction_id, resolution.event_id, resolution.at_ms) == (friction.friction_id, back.id, back.t)


def test_live_a_quiet_topic_behind_holds_the_clock_at_the_wall_clock() -> None:
    partition = Partition(Engine(RULES, 0), 0, {"members", "usage"})
    partition.feed("usage", activation(T0, "x"))
    partition.feed("members", sign_up())
    partition.observe({"usage"}, set(), T0 + 5 * DAY)  # usage caught up at day 5 (wall clock); members busy
    partition.feed("members", sign_up(T0 + 20 * DAY, "other"))
    assert partition.clock(LIVE) == T0 + 5 * DAY
    assert detected(partition) == []


def test_in_a_replay_a_topic_turning_quiet_lets_the_clock_move_at_once() -> None:
    partition = Partition(Engine(RULES, 0), 0, {"members", "usage"})
    partition.feed("usage", activation(T0, "x"))
    partition.feed("members", sign_up())
    partition.feed("members", sign_up(T0 + 15 * DAY, "other"))
    assert partition.clock(LIVE) == T0 and detected(partition) == []
    partition.observe({"usage"}, set(), None)
    assert partition.clock(LIVE) == T0 + 15 * DAY
    partition.advance()
    assert detected(partition) == [f"{ACTIVATION}:m"]


def test_live_an_event_older_than_the_wall_clock_of_a_quiet_topic_belongs_to_a_history() -> None:
    partition = Partition(Engine(RULES, 0), 3, {"members"})
    partition.feed("members", sign_up(T0, "a"))
    partition.observe({"members"}, set(), T0 + 100 * DAY)
    partition.feed("members", sign_up(T0 + 50 * DAY, "b"))
    assert partition.backfilling() and partition.number == 3
    assert [t.stream for t in partition.timers_of("b")] == [BACKFILL]


def test_a_history_s_clock_waits_for_every_topic_unless_it_has_been_quiet_since_the_history_began() -> None:
    partition = Partition(Engine(RULES, 0), 0, {"members", "usage"})
    partition.feed("members", sign_up(T0 + 100 * DAY, "live"))
    partition.feed("usage", activation(T0 + 100 * DAY, "live"))
    partition.feed("members", sign_up(T0, "old"))
    partition.feed("members", sign_up(T0 + 20 * DAY, "old2"))
    assert partition.clock(BACKFILL) < T0 and detected(partition) == []  # usage may still bring the history
    partition.observe(set(), {"usage"}, None)  # usage has been quiet since the history began
    assert partition.clock(BACKFILL) == T0 + 20 * DAY
    partition.advance()
    assert detected(partition) == [f"{ACTIVATION}:old"]


def test_with_a_lateness_a_window_is_decided_only_once_the_clock_has_passed_it_by_the_lateness() -> None:
    hour = 3_600_000
    partition = Partition(Engine(RULES, hour), 0, {"members"})
    partition.feed("members", sign_up())
    partition.feed("members", sign_up(T0 + 14 * DAY + hour // 2, "other"))
    partition.advance()
    assert not partition.due() and detected(partition) == []
    partition.feed("members", activation(T0 + 14 * DAY + hour * 3 // 4))  # late, within the lateness
    partition.observe({"members"}, set(), T0 + 20 * DAY)
    assert partition.due()
    partition.advance()
    outcome = partition.take().outcome
    assert outcome.detected == []
    assert [(c.member_id, c.met) for c in outcome.closed] == [("m", True)]


def test_restored_timers_fire_in_due_order_whatever_order_the_states_come_in() -> None:
    first = Partition(Engine(RULES, 0))
    for member, day in (("a", 0), ("c", 2), ("b", 5)):
        first.feed("t", sign_up(T0 + day * DAY, member))
    restored = Partition(Engine(RULES, 0))
    restored.restore((m, first.members[m]) for m in ("b", "c", "a"))  # latest due first
    assert restored.pending_timers() == 3
    restored.advance(T0 + 17 * DAY)
    assert sorted(detected(restored)) == [f"{ACTIVATION}:a", f"{ACTIVATION}:c"]


def test_the_members_whose_state_changed_are_told_so_they_can_be_stored() -> None:
    partition = Partition(Engine(RULES, 0))
    partition.feed("t", sign_up(T0, "a"))
    partition.feed("t", sign_up(T0, "b"))
    assert partition.take().changed == {"a", "b"}
    partition.advance(T0 + 15 * DAY)  # a's and b's windows are decided: their states change
    assert partition.take().changed == {"a", "b"}
    partition.feed("t", event("member.erased.v1", T0 + 16 * DAY, "a"))
    partition.feed("t", sign_up(T0 + 17 * DAY, "a"))  # the same id signs up again after its erasure
    applied = partition.take()
    assert ("a" in applied.changed, "a" in applied.erased) == (True, False)


def test_a_batch_of_many_events_of_one_member_keeps_the_state_small_as_it_goes() -> None:
    # A window waits (the activation) while a batch brings 30 loans an hour apart, which no window waits for: each
    # event's work stays small because the partition's clock forgets them before the batch is taken.
    partition = Partition(Engine(RULES, 0), 0, {"members"})
    partition.feed("members", sign_up())
    for hour in range(1, 31):
        partition.feed("members", event("usage.loan_borrowed.v1", T0 + hour * 3_600_000, item_id=f"i{hour}"))
    state = partition.members["m"]
    assert 0 < len(state.seen) <= 13 and len(state.starts) == 1


@pytest.mark.parametrize("seed", range(5))
def test_topics_merge_in_event_time_each_in_its_own_order_the_earlier_topic_first_at_equal_times(seed: int) -> None:
    rng = random.Random(seed)
    event = JourneyEvent("e-1", "member.signed_up.v1", 0, "m-1", None, None, None, {})
    # Times out of order within a topic (a late event), many equal across topics, a topic with nothing this batch.
    topics = [[(rng.randint(0, 40), name, event) for _ in range(rng.randint(0, 60))] for name in ("m", "u", "f")]
    topics.insert(rng.randint(0, 3), [])
    merged = in_event_time(topics)
    assert merged == list(heapq.merge(*topics, key=lambda item: item[0]))
    assert sorted(merged) == sorted(item for events in topics for item in events)  # each exactly once


def test_topics_merge_whatever_is_empty_this_batch() -> None:
    first, second = sign_up(T0, "a"), activation(T0 + DAY, "a")
    assert in_event_time([]) == [] and in_event_time([[], []]) == []
    assert in_event_time([[], [(T0, "m", first)]]) == [(T0, "m", first)]
    assert in_event_time([[(T0 + DAY, "u", second)], [(T0, "m", first)]]) == [(T0, "m", first), (T0 + DAY, "u", second)]


def test_a_batch_fed_merged_applies_every_event_of_every_topic_in_event_time() -> None:
    partition = Partition(Engine(RULES, 0), 0, {"members", "usage"})
    usage = [(T0 + DAY, "usage", activation(T0 + DAY, "a")), (T0 + 20 * DAY, "usage", activation(T0 + 20 * DAY, "x"))]
    members = [(T0, "members", sign_up(T0, "a")), (T0 + 2 * DAY, "members", sign_up(T0 + 2 * DAY, "b")),
               (T0 + 20 * DAY, "members", sign_up(T0 + 20 * DAY, "c"))]  # fmt: skip
    partition.feed_merged([members, usage])
    partition.advance()
    # "a" activated within its window; "b" did not, and both topics have passed b's window; c's is still open.
    assert detected(partition) == [f"{ACTIVATION}:b"]
    assert partition.clocks == {("members", LIVE): T0 + 20 * DAY, ("usage", LIVE): T0 + 20 * DAY}


def test_clocks_set_anew_are_the_partition_s_clocks_from_then_on() -> None:
    partition = Partition(Engine(RULES, 0), 0, {"members"})
    partition.feed("members", sign_up(T0, "a"))
    assert partition.clock(LIVE) == T0
    partition.set_clocks({("members", LIVE): T0 + 30 * DAY})  # as restored from the store
    assert partition.clock(LIVE) == T0 + 30 * DAY


def test_a_history_over_two_topics_is_held_by_the_one_further_behind() -> None:
    partition = Partition(Engine(RULES, 0), 0, {"members", "usage"})
    partition.feed("members", sign_up(T0 + 100 * DAY, "live"))
    partition.feed("usage", activation(T0 + 100 * DAY, "live"))
    partition.feed("members", sign_up(T0, "old"))
    partition.feed("usage", activation(T0 + 20 * DAY, "someone"))  # usage's history runs twenty days ahead
    assert partition.clock(BACKFILL) == T0
    partition.advance()
    assert detected(partition) == []  # the members topic may still bring what decides old's window


def test_a_history_still_coming_in_on_a_busy_topic_is_not_ended() -> None:
    partition = Partition(Engine(RULES, 0), 0, {"members", "usage"})
    partition.feed("members", sign_up(T0 + 100 * DAY, "live"))
    partition.feed("usage", activation(T0 + 100 * DAY, "live"))
    partition.feed("members", sign_up(T0, "old"))
    partition.observe({"members"}, set(), T0 + 101 * DAY)  # usage is still busy
    partition.end_backfill()
    assert partition.backfilling() and detected(partition) == []


def test_a_history_s_clock_moves_with_its_events_while_the_live_clock_is_further_behind() -> None:
    partition = Partition(Engine(RULES, 0), 0, {"members", "usage"})
    partition.feed("members", sign_up(T0 + 100 * DAY, "live"))
    partition.feed("usage", activation(T0 + 10 * DAY, "x"))  # the live clock: usage's, ten days in
    partition.observe(set(), {"usage"}, None)  # usage brings no history
    partition.feed("members", sign_up(T0 + 15 * DAY, "old"))  # a history, on the members topic
    partition.advance()
    assert partition.clock(LIVE) == T0 + 10 * DAY and partition.clock(BACKFILL) == T0 + 15 * DAY
    partition.feed("members", sign_up(T0 + 40 * DAY, "old2"))  # the history's clock passes old's window
    assert detected(partition) == [f"{ACTIVATION}:old"]
