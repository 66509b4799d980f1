"""notifications' deciding rules, without I/O: each rule in its order, quiet hours across days and DST, the
holdout split."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.notifications.campaigns import (
    AudienceFacts,
    Campaign,
    CampaignDefinition,
    TriggerEvent,
)
from services.notifications.rules import (
    Circumstances,
    MemberFacts,
    Policy,
    choose_locale,
    consented,
    decide,
    in_holdout,
    message_id,
    quiet_until,
)

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
NOON = datetime(2026, 3, 10, 12, 0, tzinfo=AMSTERDAM)
POLICY = Policy(
    frequency_cap=3,
    quiet_start=time(21, 0),
    quiet_end=time(8, 0),
    timezone=AMSTERDAM,
    quiet_media=frozenset({"email", "sms", "push"}),
    plain_language_propositions=frozenset({"digitaalhuis"}),
)
MEMBER = "m-1"


def make_campaign(**overrides: Any) -> Campaign:
    definition: dict[str, Any] = {
        "name": "test",
        "purpose": "service",
        "trigger": {"friction_rules": ["desk-signup-never-online"]},
        "channels": ["email", "in_app"],
        "messages": {
            "email": {"nl": {"subject": "s", "body": "b"}},
            "in_app": {"nl": {"title": "t", "body": "b"}, "nl-plain": {"title": "t", "body": "eenvoudig"}},
        },
        **overrides,
    }
    return Campaign("c-1", 1, "active", CampaignDefinition.model_validate(definition))


TRIGGER = TriggerEvent("e-1", "nl.bibliotheek.friction.detected.v1", MEMBER, NOON, {"library": "oba"},
                       {"rule": "desk-signup-never-online", "friction_id": "e-1", "library": "oba"})  # fmt: skip


def facts(**overrides: Any) -> MemberFacts:
    values: dict[str, Any] = {
        "member_id": MEMBER,
        "audience": AudienceFacts(library="oba", age_band="18-64", origin="offline"),
        **overrides,
    }
    return MemberFacts(**values)


def decided(campaign: Campaign | None = None, member: MemberFacts | None = None, **now: Any) -> Any:
    circumstances = Circumstances(**{"now": NOON, **now})
    return decide(campaign or make_campaign(), TRIGGER, member or facts(), circumstances, POLICY)


def test_a_member_meeting_every_rule_is_sent_the_message_on_the_first_medium() -> None:
    decision = decided()
    assert (decision.outcome, decision.media, decision.recipient) == ("send", ("email", "in_app"), "member")
    assert decision.message_id == message_id("c-1", MEMBER, "e-1")


@pytest.mark.parametrize(
    ("member", "now", "reason"),
    [
        (facts(erased=True), {}, "erased"),
        (facts(audience=AudienceFacts(library="haarlem")), {}, "not_in_audience"),
        (facts(), {"offered_by": frozenset({"haarlem"})}, "not_offered"),
        (facts(), {"claimed_by": "another-message"}, "duplicate"),
        (facts(consents={"email:service": False, "in_app:service": False}), {}, "no_consent"),
        (facts(), {"sent_in_window": 3}, "frequency_cap"),
    ],
    ids=["erased", "audience", "proposition", "once", "consent", "cap"],
)
def test_each_rule_suppresses_with_its_reason(member: MemberFacts, now: dict[str, Any], reason: str) -> None:
    campaign = make_campaign(audience={"libraries": ["oba"]}, proposition="boekstart")
    decision = decided(campaign, member, **({"offered_by": frozenset({"oba"})} | now))
    assert (decision.outcome, decision.reason) == ("suppress", reason)


def test_the_rules_apply_in_order_the_first_that_applies_decides() -> None:
    member = facts(erased=True, audience=AudienceFacts(library="haarlem"))
    assert decided(make_campaign(audience={"libraries": ["oba"]}), member, sent_in_window=9).reason == "erased"
    assert decided(member=facts(consents={}), claimed_by="x", sent_in_window=9).reason == "duplicate"


def test_the_same_message_redecided_is_not_its_own_duplicate() -> None:
    assert decided(claimed_by=message_id("c-1", MEMBER, "e-1")).outcome == "send"


def test_marketing_needs_consent_and_a_service_message_only_needs_it_not_withdrawn() -> None:
    assert not consented({}, "email", "marketing")
    assert consented({"email:marketing": True}, "email", "marketing")
    assert consented({}, "email", "service")
    assert not consented({"email:service": False}, "email", "service")
    marketing = make_campaign(purpose="marketing")
    decision = decided(marketing, facts(consents={"in_app:marketing": True}))
    assert (decision.outcome, decision.media) == ("send", ("in_app",))


def test_a_member_with_a_guardian_is_decided_for_the_guardian() -> None:
    decision = decided(member=facts(guardian_id="parent", consents={"email:service": False}))
    assert (decision.recipient, decision.media) == ("guardian", ("in_app",))


def test_a_held_out_member_takes_the_trigger_s_slot_but_not_a_cap_slot() -> None:
    campaign = make_campaign(holdout_percent=50)
    member = next(
        m for m in (f"m-{i}" for i in range(100)) if in_holdout("c-1", m, 50)
    )  # fmt: skip
    decision = decide(campaign, TRIGGER, facts(member_id=member), Circumstances(NOON), POLICY)
    assert (decision.outcome, decision.reason, decision.claims, decision.counts_toward_cap) == (
        "suppress", "holdout", True, False,
    )  # fmt: skip
    assert not decided(member=facts(consents={"email:service": False, "in_app:service": False})).claims


def test_the_holdout_split_is_deterministic_and_close_to_its_percentage_on_many_members() -> None:
    members = [str(uuid.UUID(int=i)) for i in range(20_000)]
    for percent in (5, 10, 50):
        share = sum(in_holdout("c-1", m, percent) for m in members) / len(members) * 100
        assert abs(share - percent) < 1.0, (percent, share)
    # Known answer (sha256 of "c-1:<member>"), the same in every process and on every instance.
    assert [i for i, m in enumerate(members[:50]) if in_holdout("c-1", m, 10)] == [9, 13, 17, 28, 48]
    # Another campaign holds out other members.
    overlap = sum(in_holdout("c-1", m, 10) and in_holdout("c-2", m, 10) for m in members) / len(members) * 100
    assert overlap < 2.0
    assert not any(in_holdout("c-1", m, 0) for m in members[:1000])


def test_a_message_on_an_interrupting_medium_in_quiet_hours_is_deferred_to_their_end() -> None:
    evening = datetime(2026, 3, 10, 22, 30, tzinfo=AMSTERDAM)
    decision = decided(now=evening)
    assert (decision.outcome, decision.until) == ("defer", datetime(2026, 3, 11, 8, 0, tzinfo=AMSTERDAM))
    in_app_first = make_campaign(channels=["in_app", "email"])
    assert decided(in_app_first, now=evening).outcome == "send"


@pytest.mark.parametrize(
    ("local", "until"),
    [
        (datetime(2026, 3, 10, 20, 59), None),
        (datetime(2026, 3, 10, 21, 0), datetime(2026, 3, 11, 8, 0)),
        (datetime(2026, 3, 11, 2, 0), datetime(2026, 3, 11, 8, 0)),
        (datetime(2026, 3, 11, 7, 59), datetime(2026, 3, 11, 8, 0)),
        (datetime(2026, 3, 11, 8, 0), None),
        # The nights the clocks change: 08:00 local on the other side, whatever the UTC offset.
        (datetime(2026, 3, 28, 23, 0), datetime(2026, 3, 29, 8, 0)),
        (datetime(2026, 10, 24, 23, 0), datetime(2026, 10, 25, 8, 0)),
    ],
)
def test_quiet_hours_end_at_eight_in_amsterdam(local: datetime, until: datetime | None) -> None:
    found = quiet_until(local.replace(tzinfo=AMSTERDAM).astimezone(UTC), POLICY)
    assert found == (until.replace(tzinfo=AMSTERDAM) if until else None)
    if found is not None:
        assert found.astimezone(AMSTERDAM).time() == time(8, 0)


def test_quiet_hours_within_one_day_and_none_at_all() -> None:
    lunch = Policy(**{**POLICY.__dict__, "quiet_start": time(12, 0), "quiet_end": time(13, 0)})
    assert quiet_until(NOON + timedelta(minutes=30), lunch) == datetime(2026, 3, 10, 13, 0, tzinfo=AMSTERDAM)
    assert quiet_until(NOON + timedelta(hours=2), lunch) is None
    never = Policy(**{**POLICY.__dict__, "quiet_start": time(0, 0), "quiet_end": time(0, 0)})
    assert quiet_until(NOON, never) is None


def test_members_who_came_through_a_basic_skills_proposition_get_plain_language() -> None:
    campaign = make_campaign()
    assert choose_locale(campaign, frozenset({"digitaalhuis"}), "nl", POLICY) == "nl-plain"
    assert choose_locale(campaign, frozenset({"boekstart"}), "nl", POLICY) == "nl"
    without_plain = make_campaign(channels=["email"], messages={"email": {"nl": {"subject": "s", "body": "b"}}})
    assert choose_locale(without_plain, frozenset({"digitaalhuis"}), "nl", POLICY) == "nl"
    assert without_plain.definition.message("email", "nl-plain").body == "b"


def test_a_member_who_reads_english_gets_english_where_the_campaign_has_it_and_dutch_otherwise() -> None:
    bilingual = make_campaign(
        channels=["email", "in_app"],
        messages={
            "email": {
                "nl": {"subject": "Welkom", "body": "Kom langs"},
                "en": {"subject": "Welcome", "body": "Drop by"},
            },
            "in_app": {"nl": {"title": "Welkom", "body": "Kom langs"}},
        },
    )
    assert choose_locale(bilingual, frozenset(), "en", POLICY) == "en"
    assert bilingual.definition.message("email", "en").body == "Drop by"
    assert bilingual.definition.message("in_app", "en").body == "Kom langs"  # no English in-app text: Dutch
    assert choose_locale(make_campaign(), frozenset({"digitaalhuis"}), "en", POLICY) == "nl-plain"
    assert decided(bilingual, facts(language="en")).locale == "en"


@pytest.mark.parametrize(
    ("closed_ago", "outcome"),
    [(timedelta(days=2, seconds=1), "suppress"), (timedelta(days=2), "send"), (timedelta(hours=1), "send")],
)
def test_a_friction_whose_window_closed_longer_ago_than_the_freshness_limit_is_reported_not_messaged(
    closed_ago: timedelta, outcome: str
) -> None:
    decision = decided(now=NOON + closed_ago)
    assert decision.outcome == outcome
    assert decision.reason == ("stale" if outcome == "suppress" else None)


def test_a_broadcast_is_never_stale() -> None:
    broadcast = TriggerEvent("b-1", "broadcast", MEMBER, NOON - timedelta(days=30), {"library": "oba"}, {})
    decision = decide(make_campaign(), broadcast, facts(), Circumstances(NOON), POLICY)
    assert decision.reason != "stale"
