"""The skeleton's absence rule, evaluated without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.journey.rules import MeetExpectation, StartTimer, evaluate, online_signup_not_activated
from shared.events import CloudEvent
from shared.events.members import CardActivated, MemberSignedUp

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
RULES = [online_signup_not_activated(timedelta(days=14))]


def sign_up(channel: str = "online", subject: str = "m-1") -> CloudEvent:
    return CloudEvent.create(
        MemberSignedUp(age_band="4-11", home_library="haarlem", postcode_area="2011"),
        subject=subject, source="/libraries/haarlem/website", library="haarlem",
        channel=channel,  # type: ignore[arg-type]
        platform="website" if channel == "online" else "desk", time=T0,
    )  # fmt: skip


def test_an_online_sign_up_starts_a_timer_due_after_the_window() -> None:
    [effect] = evaluate(RULES, sign_up())
    assert isinstance(effect, StartTimer)
    assert effect.rule == "online-signup-not-activated"
    assert effect.due_at == T0 + timedelta(days=14)
    assert (effect.member_id, effect.library, effect.age_band) == ("m-1", "haarlem", "4-11")
    assert effect.channel_pair == "online→offline"


def test_a_sign_up_at_the_desk_starts_nothing() -> None:
    assert evaluate(RULES, sign_up(channel="offline")) == []


def test_a_card_activation_meets_the_expectation() -> None:
    activation = CloudEvent.create(CardActivated(), subject="m-1", source="/libraries/haarlem/desk", time=T0)
    assert evaluate(RULES, activation) == [MeetExpectation("online-signup-not-activated", "m-1", activation.id, T0)]


def test_the_friction_id_depends_on_rule_member_and_start_event_only() -> None:
    event = sign_up()
    [first] = evaluate(RULES, event)
    [again] = evaluate([online_signup_not_activated(timedelta(days=30))], event)
    [other] = evaluate(RULES, sign_up(subject="m-2"))
    assert isinstance(first, StartTimer) and isinstance(again, StartTimer) and isinstance(other, StartTimer)
    assert first.friction_id == again.friction_id
    assert first.friction_id != other.friction_id
