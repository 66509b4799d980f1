"""The friction engine at its edges: windows closing at exactly their length (and the lateness), threshold
windows of exactly fifteen minutes, redelivery of an earlier event after other events, the member filter per age
band, and the same frictions whatever the arrival order and batch sizes (a property, with hypothesis)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.journey.engine import Engine
from services.journey.offline.memory import InMemoryJourneys
from services.journey.partition import Partition
from services.journey.rules import JourneyEvent, load_rules
from services.journey.state import decode, encode
from shared.events import CloudEvent

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
RULES = load_rules()
MS = timedelta(milliseconds=1)
DAY = timedelta(days=1)


def ev(kind: str, at: timedelta, member: str = "m", *, channel: str | None = None, platform: str | None = None,
       library: str | None = "oba", event_id: str | None = None, **data: Any) -> CloudEvent:  # fmt: skip
    return CloudEvent(
        id=event_id or str(uuid.uuid4()), source="/test", type=f"nl.bibliotheek.{kind}", time=T0 + at,
        subject=member, library=library, channel=channel, platform=platform, data=data,
    )  # fmt: skip


def signed_up(at: timedelta = timedelta(0), member: str = "m", channel: str = "online", age_band: str = "18-64",
              **data: Any) -> CloudEvent:  # fmt: skip
    platform = "website" if channel == "online" else "desk"
    return ev("member.signed_up.v1", at, member, channel=channel, platform=platform, age_band=age_band,
              home_library="oba", postcode_area="1034", **data)  # fmt: skip


def activated(at: timedelta, member: str = "m") -> CloudEvent:
    return ev("member.card_activated.v1", at, member, channel="offline", platform="desk")


def failed(minutes: float, member: str = "m", platform: str = "ebook") -> CloudEvent:
    return ev("member.login_failed.v1", timedelta(minutes=minutes), member, channel="online", platform=platform,
              login_platform=platform, reason="bad_credentials")  # fmt: skip


def succeeded(at: timedelta, member: str = "m", platform: str = "ebook") -> CloudEvent:
    return ev("member.login_succeeded.v1", at, member, channel="online", platform=platform, login_platform=platform)


def borrowed(at: timedelta, member: str = "m", item: str = "b") -> CloudEvent:
    return ev("usage.loan_borrowed.v1", at, member, channel="offline", platform="desk", item_id=item, loan_id="l")


def run(*events: CloudEvent, lateness: timedelta = timedelta(0), until: timedelta | None = None) -> InMemoryJourneys:
    """The events replayed in the order given; the history ends `until` after T0 (never, without it)."""
    journeys = InMemoryJourneys(RULES, lateness)
    journeys.feed(events)
    journeys.finish(None if until is None else T0 + until)
    return journeys


def detected(journeys: InMemoryJourneys, rule: str) -> list[Any]:
    return [f for f in journeys.result.detected if f.rule == rule]


def ms(at: timedelta) -> int:
    return int((T0 + at).timestamp() * 1000)


ACTIVATION = "online-signup-not-activated"


def test_an_activation_at_exactly_fourteen_days_is_in_time() -> None:
    journeys = run(signed_up(), activated(14 * DAY))
    assert detected(journeys, ACTIVATION) == []
    [closed] = [c for c in journeys.result.closed if c.rule == ACTIVATION]
    assert closed.met is True and closed.due_ms == ms(14 * DAY)


def test_an_activation_a_millisecond_after_fourteen_days_is_a_friction_resolved_by_it() -> None:
    journeys = run(signed_up(), activated(14 * DAY + MS))
    [friction] = detected(journeys, ACTIVATION)
    assert (friction.started_ms, friction.due_ms) == (ms(timedelta(0)), ms(14 * DAY))
    [resolution] = [r for r in journeys.result.resolved if r.rule == ACTIVATION]
    assert (resolution.friction_id, resolution.at_ms) == (friction.friction_id, ms(14 * DAY + MS))
    [closed] = [c for c in journeys.result.closed if c.rule == ACTIVATION]
    assert closed.met is False


def test_within_the_lateness_after_the_window_an_activation_still_counts_as_in_time() -> None:
    lateness = timedelta(hours=1)
    assert detected(run(signed_up(), activated(14 * DAY + lateness), lateness=lateness), ACTIVATION) == []
    late = run(signed_up(), activated(14 * DAY + lateness + MS), lateness=lateness)
    assert len(detected(late, ACTIVATION)) == 1
    assert [r.at_ms for r in late.result.resolved if r.rule == ACTIVATION] == [ms(14 * DAY + lateness + MS)]


def test_an_activation_before_the_sign_up_by_more_than_the_lateness_does_not_count() -> None:
    lateness = timedelta(minutes=5)
    early = run(activated(timedelta(0)), signed_up(lateness + MS), lateness=lateness)
    assert len(detected(early, ACTIVATION)) == 1
    in_time = run(activated(timedelta(0)), signed_up(timedelta(0)), lateness=lateness)
    assert detected(in_time, ACTIVATION) == []


def test_a_friction_carries_where_and_who_it_happened_to() -> None:
    [friction] = detected(run(signed_up(age_band="12-17")), ACTIVATION)
    assert (friction.library, friction.channel_pair, friction.platform, friction.age_band, friction.member_id) == (
        "oba", "online→offline", "website", "12-17", "m",
    )  # fmt: skip
    # An event without a library: the member's home library from the sign-up.
    no_library = ev("usage.loan_reserved.v1", DAY, channel="online", platform="app", library=None, item_id="x",
                    reservation_id="r")  # fmt: skip
    [reservation] = detected(run(signed_up(), no_library), "reservation-not-collected")
    assert (reservation.library, reservation.platform, reservation.due_ms) == ("oba", "app", ms(8 * DAY))


def test_a_switch_names_the_channels_it_went_between() -> None:
    switch = ev("member.channel_switched.v1", timedelta(0), channel="online", platform="ebook",
                from_channel="offline", from_platform="desk", to_channel="online", to_platform="ebook")  # fmt: skip
    [friction] = detected(run(switch), "switch-without-success")
    assert (friction.channel_pair, friction.due_ms) == ("offline→online", ms(timedelta(hours=1)))
    assert detected(run(switch, succeeded(timedelta(hours=1))), "switch-without-success") == []


LOGINS = "repeated-login-failures"


@pytest.mark.parametrize(
    ("minutes", "frictions"),
    [
        ((0, 1), 0),  # two are not three
        ((0, 1, 2), 1),
        ((0, 7, 14.999), 1),  # within fifteen minutes
        ((0, 7, 15), 0),  # the first one is exactly fifteen minutes before the third: outside the window
        ((0, 7, 15, 16), 1),  # 7, 15 and 16 are within fifteen minutes
    ],
)
def test_three_failed_logins_count_within_exactly_fifteen_minutes(minutes: tuple[float, ...], frictions: int) -> None:
    journeys = run(*(failed(m) for m in minutes))
    found = detected(journeys, LOGINS)
    assert len(found) == frictions
    if found:
        assert found[0].started_ms == ms(timedelta(minutes=minutes[-3]))
        assert found[0].due_ms == ms(timedelta(minutes=minutes[-1]))


def test_a_success_at_the_same_moment_as_the_third_failure_does_not_reset_the_count_before_it() -> None:
    journeys = run(failed(0), failed(1), succeeded(timedelta(minutes=1)), failed(2), failed(3))
    assert detected(journeys, LOGINS) == []
    assert len(detected(run(failed(0), failed(1), succeeded(timedelta(minutes=0.5)), failed(2), failed(3),
                            failed(4)), LOGINS)) == 1  # fmt: skip


def test_a_burst_that_goes_on_is_one_friction_until_it_is_resolved_and_then_a_new_burst_is_another() -> None:
    journeys = run(*(failed(m) for m in range(6)), succeeded(timedelta(minutes=10)), failed(20), failed(21), failed(22))
    assert len(detected(journeys, LOGINS)) == 2
    assert len([r for r in journeys.result.resolved if r.rule == LOGINS]) == 1


def test_a_success_within_the_lateness_after_the_third_failure_means_no_friction_and_later_resolves_it() -> None:
    lateness = timedelta(minutes=30)
    at_the_edge = succeeded(timedelta(minutes=32))  # the third failure at 2 minutes, plus the lateness
    assert detected(run(failed(0), failed(1), failed(2), at_the_edge, lateness=lateness), LOGINS) == []
    too_late = succeeded(timedelta(minutes=32) + MS)
    journeys = run(failed(0), failed(1), failed(2), too_late, lateness=lateness)
    [friction] = detected(journeys, LOGINS)
    [resolution] = [r for r in journeys.result.resolved if r.rule == LOGINS]
    assert (resolution.friction_id, resolution.at_ms) == (friction.friction_id, ms(timedelta(minutes=32) + MS))


def test_failures_on_two_platforms_are_counted_apart() -> None:
    journeys = run(failed(0, platform="app"), failed(1, platform="app"), failed(2), failed(3), failed(4))
    [friction] = detected(journeys, LOGINS)
    assert friction.platform == "ebook"


YOUTH = "youth-inactive"


@pytest.mark.parametrize(("band", "held"), [("0-3", True), ("4-11", True), ("12-17", True), ("18-64", False),
                                            ("65+", False)])  # fmt: skip
def test_only_members_aged_0_to_17_are_held_to_the_inactivity_rule(band: str, held: bool) -> None:
    assert bool(detected(run(signed_up(age_band=band), activated(DAY)), YOUTH)) is held


def test_activity_at_exactly_180_days_keeps_a_child_active_and_a_millisecond_later_does_not() -> None:
    child = signed_up(age_band="4-11")
    assert detected(run(child, borrowed(180 * DAY), until=300 * DAY), YOUTH) == []
    journeys = run(child, borrowed(180 * DAY + MS), until=300 * DAY)
    [friction] = detected(journeys, YOUTH)
    assert (friction.started_ms, friction.due_ms) == (ms(timedelta(0)), ms(180 * DAY))
    assert [r.at_ms for r in journeys.result.resolved if r.rule == YOUTH] == [ms(180 * DAY + MS)]


def test_an_inactive_child_is_a_friction_once_per_silence_and_activity_resolves_it() -> None:
    child = signed_up(age_band="4-11")
    journeys = run(child, borrowed(10 * DAY), borrowed(400 * DAY), until=500 * DAY)
    [friction] = detected(journeys, YOUTH)
    assert friction.started_ms == ms(10 * DAY)
    assert [r.friction_id for r in journeys.result.resolved if r.rule == YOUTH] == [friction.friction_id]
    never_back = run(child, borrowed(10 * DAY), until=500 * DAY)
    assert len(detected(never_back, YOUTH)) == 1 and not [r for r in never_back.result.resolved if r.rule == YOUTH]


def test_an_earlier_activity_arriving_late_within_the_lateness_still_meets_the_wait() -> None:
    lateness = timedelta(days=2)
    child = signed_up(age_band="4-11")
    journeys = run(child, borrowed(181 * DAY), borrowed(179 * DAY), lateness=lateness, until=300 * DAY)
    assert detected(journeys, YOUTH) == []
    too_late = run(child, borrowed(183 * DAY), borrowed(179 * DAY), lateness=lateness, until=300 * DAY)
    assert [f.started_ms for f in detected(too_late, YOUTH)] == [ms(timedelta(0))]


def test_a_boekstart_baby_signed_up_today_needs_a_first_loan_within_sixty_days() -> None:
    baby = signed_up(channel="offline", age_band="0-3", source="consultatiebureau")
    assert detected(run(baby, borrowed(60 * DAY)), "boekstart-no-first-loan") == []
    assert len(detected(run(baby, borrowed(60 * DAY + MS)), "boekstart-no-first-loan")) == 1
    older = signed_up(channel="offline", age_band="4-11", source="consultatiebureau")
    assert detected(run(older), "boekstart-no-first-loan") == []
    via_desk = signed_up(channel="offline", age_band="0-3", source="desk")
    assert detected(run(via_desk), "boekstart-no-first-loan") == []


def test_an_earlier_event_redelivered_after_other_events_changes_nothing() -> None:
    sign_up = signed_up()
    suspicion = ev("member.duplicate_suspected.v1", DAY, other_member_id="n", other_library="haarlem",
                   matched_on=["email"])  # fmt: skip
    first = failed(60 * 24 * 3)
    history = [sign_up, suspicion, first, failed(60 * 24 * 3 + 1), succeeded(4 * DAY)]
    once = run(*history)
    again = run(*history, sign_up, suspicion, first)
    assert sorted(f.friction_id for f in again.result.detected) == sorted(f.friction_id for f in once.result.detected)
    assert len(again.result.closed) == len(once.result.closed)
    assert [f.rule for f in once.result.detected].count("duplicate-accounts") == 1


def test_a_redelivered_failure_is_not_a_third_failure() -> None:
    first = failed(0)
    assert detected(run(first, failed(1), first), LOGINS) == []


def test_a_reservation_collected_late_is_resolved_by_the_loan_of_that_item_only() -> None:
    reserve = ev("usage.loan_reserved.v1", timedelta(0), channel="online", platform="app", item_id="b1",
                 reservation_id="r1")  # fmt: skip
    journeys = run(reserve, borrowed(9 * DAY, item="b2"), borrowed(10 * DAY, item="b1"))
    [friction] = detected(journeys, "reservation-not-collected")
    [resolution] = [r for r in journeys.result.resolved if r.rule == "reservation-not-collected"]
    assert (resolution.friction_id, resolution.at_ms) == (friction.friction_id, ms(10 * DAY))


def test_a_duplicate_suspected_again_while_open_is_still_one_friction() -> None:
    suspicion = ev("member.duplicate_suspected.v1", timedelta(0), other_member_id="n", other_library="haarlem",
                   matched_on=["email"], event_id="s-1")  # fmt: skip
    later = ev("member.duplicate_suspected.v1", DAY, other_member_id="n", other_library="haarlem",
               matched_on=["email"], event_id="s-1")  # fmt: skip
    assert len(detected(run(suspicion, later), "duplicate-accounts")) == 1


# ------------------------------------------------------------------------------------------ the property


def histories() -> st.SearchStrategy[list[CloudEvent]]:
    """A few members with sign-ups, activations, failed and successful logins, loans and reservations."""

    def member_events(n: int, draw: Any) -> list[CloudEvent]:
        m = f"m{n}"
        start = timedelta(hours=draw(st.integers(0, 48)))
        events = [signed_up(start, m, channel=draw(st.sampled_from(["online", "offline"])),
                            age_band=draw(st.sampled_from(["4-11", "18-64"])))]  # fmt: skip
        for _ in range(draw(st.integers(0, 6))):
            at = start + timedelta(minutes=draw(st.integers(0, 60 * 24 * 40)))
            kind = draw(st.sampled_from(["activated", "failed", "failed", "succeeded", "borrowed"]))
            if kind == "activated":
                events.append(activated(at, m))
            elif kind == "failed":
                events.append(failed(at.total_seconds() / 60, m))
            elif kind == "succeeded":
                events.append(succeeded(at, m))
            else:
                events.append(borrowed(at, m))
        return events

    @st.composite
    def build(draw: Any) -> list[CloudEvent]:
        members = draw(st.integers(1, 3))
        return sorted((e for n in range(members) for e in member_events(n, draw)), key=lambda e: e.time)

    return build()


LATENESS_MS = 60 * 60 * 1000


def consumed(events: list[CloudEvent], jitter: list[int], batches: list[int]) -> tuple[set[Any], set[Any]]:
    """The events arriving out of order by less than the lateness, fed in batches of the given sizes."""
    delays = [*jitter, *[0] * len(events)]
    order = sorted(range(len(events)), key=lambda i: (JourneyEvent.of(events[i]).t + delays[i], i))
    arrival = [events[i] for i in order]
    partition = Partition(Engine(RULES.rules, LATENESS_MS))
    detected_ids, resolved_ids = set(), set()
    position, sizes = 0, iter(batches)
    while position < len(arrival):
        size = next(sizes, len(arrival))
        for event in arrival[position : position + size]:
            partition.feed("t", JourneyEvent.of(event))
        position += size
        partition.advance()
        applied = partition.take()
        detected_ids |= {f.friction_id for f in applied.outcome.detected}
        resolved_ids |= {(r.friction_id, r.event_id) for r in applied.outcome.resolved}
    partition.advance(2**62)
    applied = partition.take()
    detected_ids |= {f.friction_id for f in applied.outcome.detected}
    resolved_ids |= {(r.friction_id, r.event_id) for r in applied.outcome.resolved}
    return detected_ids, resolved_ids


@settings(max_examples=40)
@given(
    histories(),
    st.lists(st.integers(0, LATENESS_MS - 1), min_size=30, max_size=30),
    st.lists(st.integers(1, 8), max_size=10),
)
def test_the_same_events_in_any_order_within_the_lateness_and_any_batches_give_the_same_frictions(
    events: list[CloudEvent], jitter: list[int], batches: list[int]
) -> None:
    in_order = run(*events, lateness=timedelta(milliseconds=LATENESS_MS)).result
    expected = ({f.friction_id for f in in_order.detected}, {(r.friction_id, r.event_id) for r in in_order.resolved})
    assert consumed(events, [0] * len(events), []) == expected
    assert consumed(events, jitter, batches) == expected


def restarted(events: list[CloudEvent], at: int) -> tuple[set[Any], set[Any]]:
    """The first `at` events into one partition, its member states stored (MessagePack) and restored into a
    fresh one, as after a restart or a rebalance, then the rest of the events."""
    first = Partition(Engine(RULES.rules, LATENESS_MS))
    detected_ids: set[Any] = set()
    resolved_ids: set[Any] = set()

    def collect(partition: Partition) -> None:
        applied = partition.take()
        detected_ids.update(f.friction_id for f in applied.outcome.detected)
        resolved_ids.update((r.friction_id, r.event_id) for r in applied.outcome.resolved)

    for event in events[:at]:
        first.feed("t", JourneyEvent.of(event))
    first.advance()
    collect(first)
    second = Partition(Engine(RULES.rules, LATENESS_MS))
    second.restore((member, decode(encode(state))) for member, state in first.members.items())
    second.set_clocks(first.clocks)
    for event in events[at:]:
        second.feed("t", JourneyEvent.of(event))
    second.advance(2**62)
    collect(second)
    return detected_ids, resolved_ids


@settings(max_examples=40)
@given(histories(), st.integers(0, 40))
def test_a_partition_restored_from_its_stored_states_mid_history_decides_as_one_that_never_stopped(
    events: list[CloudEvent], at: int
) -> None:
    expected = consumed(events, [0] * len(events), [])
    assert restarted(events, min(at, len(events))) == expected


def test_a_restored_partition_still_waits_for_every_pending_window() -> None:
    events = [signed_up(), signed_up(member="kid", age_band="4-11"), failed(0), failed(1), failed(2)]
    partition = Partition(Engine(RULES.rules, 0))
    for event in events:
        partition.feed("t", JourneyEvent.of(event))
    # Two activation windows (a), the third failure's check (t; the first two were decided when the clock passed
    # them) and the child's inactivity wait (i).
    assert sorted(t.kind for t in partition.timers_of("m") + partition.timers_of("kid")) == ["a", "a", "i", "t"]
    [youth] = [t for t in partition.timers_of("kid") if t.kind == "i"]
    assert youth.due == ms(180 * DAY)


def test_a_member_s_state_stays_small_however_long_their_history() -> None:
    """Member states are stored per member (millions of them): what no window needs any more is forgotten."""

    def state_after(days: int) -> Any:
        events = [signed_up(channel="offline", age_band="4-11")]
        for day in range(1, days, 3):
            events += [succeeded(day * DAY), borrowed(day * DAY + timedelta(hours=1), item=f"b{day}"),
                       failed(day * 24 * 60 + 5)]  # fmt: skip
        journeys = InMemoryJourneys(RULES, timedelta(0))
        journeys.feed(events)
        return journeys.journeys["m"]

    short, long = state_after(10), state_after(200)
    assert len(encode(long)) <= len(encode(short)) + 16  # a few timestamps longer, not a history
    assert long.starts == [] and len(long.seen) <= 3  # the latest loan, for the rules it could still meet
    assert len(long.activity) <= 3 and sum(a.armed for a in long.activity) == 1
    [burst] = long.bursts
    assert len(burst.matches) <= 2 and len(burst.resets) <= 2


def test_at_most_eight_open_frictions_are_kept_per_member_the_latest() -> None:
    reservations = [ev("usage.loan_reserved.v1", i * DAY, channel="online", platform="app", item_id=f"b{i}",
                       reservation_id=f"r{i}") for i in range(10)]  # fmt: skip
    journeys = InMemoryJourneys(RULES, timedelta(0))
    journeys.feed([*reservations, borrowed(30 * DAY, item="b0"), borrowed(30 * DAY, item="b2")])
    assert len([f for f in journeys.result.detected if f.rule == "reservation-not-collected"]) == 10
    # b0's friction was the oldest of ten open ones: no longer kept, so its late collection resolves nothing.
    resolved = [r.friction_id for r in journeys.result.resolved]
    [b2] = [f.friction_id for f in journeys.result.detected if f.start_event_id == reservations[2].id]
    assert resolved == [b2]
    assert len(journeys.journeys["m"].open) == 7


def test_the_engine_reads_every_event_type_a_rule_names_and_the_member_lifecycle() -> None:
    kinds = Engine(RULES.rules, 0).kinds
    assert {"member.signed_up.v1", "member.merged.v1", "member.erased.v1"} <= kinds
    assert {"usage.loan_borrowed.v1", "member.login_failed.v1", "member.duplicate_suspected.v1"} <= kinds
    assert "catalog.offering_changed.v1" not in kinds and "friction.detected.v1" not in kinds


def test_a_child_s_loan_arriving_before_their_sign_up_starts_the_inactivity_wait_from_the_loan() -> None:
    loan, sign_up = borrowed(timedelta(minutes=1)), signed_up(age_band="4-11")
    journeys = run(loan, sign_up, lateness=timedelta(hours=1), until=300 * DAY)
    assert [f.started_ms for f in detected(journeys, YOUTH)] == [ms(timedelta(minutes=1))]


def test_two_reservations_arriving_out_of_order_are_each_decided_by_their_own_item_and_window() -> None:
    def reserve(day: int, item: str) -> CloudEvent:
        return ev("usage.loan_reserved.v1", day * DAY, channel="online", platform="app", item_id=item,
                  reservation_id=f"r-{item}")  # fmt: skip

    first, second = reserve(0, "b1"), reserve(1, "b2")
    journeys = run(second, first, borrowed(2 * DAY, item="b2"), lateness=timedelta(days=2))
    [friction] = detected(journeys, "reservation-not-collected")
    assert (friction.start_event_id, friction.started_ms, friction.due_ms) == (first.id, ms(timedelta(0)), ms(7 * DAY))


def test_a_member_s_state_stays_small_while_a_window_waits() -> None:
    reserve = ev("usage.loan_reserved.v1", timedelta(0), channel="online", platform="app", item_id="wanted",
                 reservation_id="r")  # fmt: skip
    loans = [borrowed(timedelta(hours=3 * i + 1), item=f"b{i}") for i in range(40)]  # five days of other loans
    journeys = InMemoryJourneys(RULES, timedelta(minutes=5))
    journeys.feed([signed_up(), reserve, *loans])
    state = journeys.journeys["m"]
    assert len(state.starts) == 2  # the activation and the reservation windows still wait
    assert len(state.seen) <= 6  # not forty loans for each rule that expects a loan
    journeys.feed([borrowed(6 * DAY, item="wanted")])
    assert detected(journeys, "reservation-not-collected") == []


def test_an_activation_in_time_still_counts_after_the_member_did_other_things() -> None:
    journeys = run(signed_up(), activated(3 * DAY), succeeded(10 * DAY), borrowed(11 * DAY))
    assert detected(journeys, ACTIVATION) == []


def test_an_activation_exactly_the_lateness_before_a_later_event_is_kept_for_a_sign_up_still_on_its_way() -> None:
    lateness = timedelta(minutes=5)
    journeys = run(activated(timedelta(0)), succeeded(lateness), signed_up(timedelta(0)), lateness=lateness)
    assert detected(journeys, ACTIVATION) == []


def test_failures_arriving_out_of_order_start_the_friction_at_the_earliest() -> None:
    journeys = run(failed(2), failed(0), failed(1), lateness=timedelta(minutes=5))
    [friction] = detected(journeys, LOGINS)
    assert (friction.started_ms, friction.due_ms) == (ms(timedelta(0)), ms(timedelta(minutes=2)))


def test_a_window_closes_at_the_library_where_it_started_not_the_home_library() -> None:
    reserve = ev("usage.loan_reserved.v1", timedelta(0), channel="online", platform="app", library="delft",
                 item_id="b", reservation_id="r")  # fmt: skip
    journeys = run(signed_up(), reserve)
    [closed] = [c for c in journeys.result.closed if c.rule == "reservation-not-collected"]
    [friction] = detected(journeys, "reservation-not-collected")
    assert (closed.library, friction.library) == ("delft", "delft")


def test_a_success_at_the_very_moment_of_the_third_failure_means_no_friction() -> None:
    assert detected(run(failed(0), failed(1), failed(2), succeeded(timedelta(minutes=2))), LOGINS) == []


def test_failures_going_on_while_the_friction_is_open_are_not_another_friction() -> None:
    journeys = run(failed(0), failed(1), failed(2), failed(30), failed(31), failed(32))
    assert len(detected(journeys, LOGINS)) == 1


def test_a_success_seen_late_resolves_the_friction_and_the_failures_before_it_raise_no_other() -> None:
    journeys = run(failed(0), failed(1), failed(2), failed(3), succeeded(timedelta(minutes=40)),
                   lateness=timedelta(minutes=30))  # fmt: skip
    assert len(detected(journeys, LOGINS)) == 1
    assert [r.at_ms for r in journeys.result.resolved if r.rule == LOGINS] == [ms(timedelta(minutes=40))]


def test_a_merge_at_the_very_moment_of_the_suspicion_resolves_it() -> None:
    suspicion = ev("member.duplicate_suspected.v1", DAY, other_member_id="n", other_library="haarlem",
                   matched_on=["email"])  # fmt: skip
    journeys = run(suspicion, ev("member.merged.v1", DAY, survivor_id="n"))
    assert [r.rule for r in journeys.result.resolved] == ["duplicate-accounts"]


def test_a_decided_wait_is_not_decided_again_after_a_restart() -> None:
    partition = Partition(Engine(RULES.rules, 0))
    for event in [signed_up(age_band="4-11"), borrowed(DAY)]:
        partition.feed("t", JourneyEvent.of(event))
    partition.advance(ms(200 * DAY))
    assert [f.rule for f in partition.take().outcome.detected if f.rule == YOUTH] == [YOUTH]
    restarted = Partition(Engine(RULES.rules, 0))
    restarted.restore((m, decode(encode(s))) for m, s in partition.members.items())
    restarted.set_clocks(partition.clocks)
    restarted.advance(ms(400 * DAY))
    assert [f.rule for f in restarted.take().outcome.detected if f.rule == YOUTH] == []
