"""The friction rule catalogue as data: what a rule's event match lets through (envelope attributes, data
fields, lists of values), which members a rule applies to, and the mistakes a rule file is refused for."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from services.journey.rules import (
    AbsenceRule,
    EventMatch,
    ImmediateRule,
    InactivityRule,
    JourneyEvent,
    ThresholdRule,
    load_rules,
    parse_rules,
    with_window,
)
from shared.events import CloudEvent


def event(kind: str = "member.signed_up.v1", channel: str | None = "online", platform: str | None = "app",
          library: str | None = "oba", **data: Any) -> JourneyEvent:  # fmt: skip
    return JourneyEvent("e", kind, 0, "m", channel, platform, library, data)


def match(**spec: Any) -> EventMatch:
    return EventMatch.model_validate(spec)


@pytest.mark.parametrize(
    ("where", "matching", "other"),
    [
        ({"channel": "online"}, event(channel="online"), event(channel="offline")),
        ({"platform": "app"}, event(platform="app"), event(platform="website")),
        ({"library": "oba"}, event(library="oba"), event(library="delft")),
        ({"source": "consultatiebureau"}, event(source="consultatiebureau"), event(source="desk")),
        ({"platform": ["app", "ebook"]}, event(platform="ebook"), event(platform="website")),
    ],
    ids=["channel", "platform", "library", "source", "list"],
)
def test_a_match_compares_an_envelope_attribute_or_a_data_field(
    where: dict[str, Any], matching: JourneyEvent, other: JourneyEvent
) -> None:
    m = match(type="member.signed_up.v1", where=where)
    assert m.matches(matching)
    assert not m.matches(other)


def test_a_match_needs_the_type_and_every_condition_and_a_missing_field_never_matches() -> None:
    m = match(type=["member.signed_up.v1", "member.card_activated.v1"], where={"channel": "online", "age_band": "0-3"})
    assert m.matches(event(age_band="0-3"))
    assert m.matches(event("member.card_activated.v1", age_band="0-3"))
    assert not m.matches(event("member.login_failed.v1", age_band="0-3"))
    assert not m.matches(event(channel="offline", age_band="0-3"))
    assert not m.matches(event(age_band="4-11"))
    assert not m.matches(event(channel=None, age_band="0-3"))
    assert not m.matches(event())  # no age_band at all


def test_numbers_and_booleans_in_a_rule_compare_with_the_event_s_values() -> None:
    m = match(type="member.signed_up.v1", where={"consent_given": True, "children": [1, 2]})
    assert m.matches(event(consent_given=True, children=2))
    assert not m.matches(event(consent_given=False, children=2))
    assert not m.matches(event(consent_given=True, children=3))


def test_a_journey_event_reads_the_envelope_first_and_the_data_otherwise() -> None:
    e = event(channel="offline", platform="desk", library="delft", source="school", channel_in_data="x")
    assert (e.field("channel"), e.field("platform"), e.field("library"), e.field("source")) == (
        "offline", "desk", "delft", "school",
    )  # fmt: skip
    assert e.field("nothing") is None


def test_a_journey_event_is_made_from_a_cloud_event_with_its_time_in_milliseconds() -> None:
    from datetime import UTC, datetime

    cloud = CloudEvent(id="e-1", source="/t", type="nl.bibliotheek.member.card_activated.v1",
                       time=datetime(2026, 1, 1, 0, 0, 1, 500000, tzinfo=UTC), subject="m-1", library="oba",
                       channel="offline", platform="desk", data={})  # fmt: skip
    journey = JourneyEvent.of(cloud)
    assert (journey.id, journey.kind, journey.t, journey.subject) == (
        "e-1", "member.card_activated.v1", 1767225601500, "m-1",
    )  # fmt: skip
    assert (journey.channel, journey.platform, journey.library) == ("offline", "desk", "oba")
    assert JourneyEvent.of(cloud, subject="survivor").subject == "survivor"


def test_the_shipped_catalogue_holds_each_rule_with_its_window() -> None:
    rules = {r.id: r for r in load_rules().rules}
    assert rules["online-signup-not-activated"].within == timedelta(days=14)
    assert rules["repeated-login-failures"].within == timedelta(minutes=15)
    threshold = rules["repeated-login-failures"]
    assert isinstance(threshold, ThresholdRule) and threshold.count == 3
    youth = rules["youth-inactive"]
    assert isinstance(youth, InactivityRule) and youth.within == timedelta(days=180)
    duplicate = rules["duplicate-accounts"]
    assert isinstance(duplicate, ImmediateRule) and duplicate.within == timedelta(days=1)
    switch = rules["switch-without-success"]
    assert isinstance(switch, AbsenceRule) and switch.same == {"to_platform": "login_platform"}
    reservation = rules["reservation-not-collected"]
    assert isinstance(reservation, AbsenceRule) and reservation.same == {"item_id": "item_id"}


def test_a_rule_looks_at_the_event_types_of_every_part() -> None:
    rules = {r.id: r for r in load_rules().rules}
    assert rules["repeated-login-failures"].kinds() == {"member.login_failed.v1", "member.login_succeeded.v1"}
    assert rules["duplicate-accounts"].kinds() == {"member.duplicate_suspected.v1", "member.merged.v1"}
    assert rules["online-signup-not-activated"].kinds() == {"member.signed_up.v1", "member.card_activated.v1"}
    assert "usage.loan_borrowed.v1" in rules["youth-inactive"].kinds()
    failures = "{type: member.login_failed.v1}"
    no_reset = parse_rules(
        f"rules:\n  - {{id: t1, kind: threshold, match: {failures}, count: 2, within: PT1M}}\n"
        f"  - {{id: i1, kind: immediate, match: {failures}}}"
    )
    assert [r.kinds() for r in no_reset.rules] == [{"member.login_failed.v1"}, {"member.login_failed.v1"}]


def test_a_rule_for_some_members_admits_only_their_profiles() -> None:
    youth = next(r for r in load_rules().rules if r.id == "youth-inactive")
    assert youth.admits({"age_band": "12-17", "home_library": "oba"})
    assert not youth.admits({"age_band": "18-64"})
    assert not youth.admits({})
    everyone = next(r for r in load_rules().rules if r.id == "online-signup-not-activated")
    assert everyone.admits({})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- {id: x1, kind: inactivity, activity: {type: member.signed_up.v1}, within: PT0S}", "positive"),
        (
            "- {id: x1, kind: inactivity, activity: {type: member.signed_up.v1}, within: PT1S,"
            " member: {postcode_area: ['1034']}}",
            "not by postcode_area",
        ),
        (
            "- {id: x1, kind: immediate, match: {type: member.signed_up.v1}}\n"
            "  - {id: x1, kind: immediate, match: {type: member.card_activated.v1}}",
            "unique: x1",
        ),
        ("- {id: x1, kind: immediate, match: {type: member.beamed.v1}}", "unknown event type member.beamed.v1"),
        ("- {id: x1, kind: threshold, match: {type: member.login_failed.v1}, count: 1, within: PT1M}", "count"),
        ("- {id: X, kind: immediate, match: {type: member.signed_up.v1}}", "id"),
    ],
    ids=["window", "member-field", "double-id", "type", "count", "id"],
)
def test_a_rule_file_with_a_mistake_is_refused_saying_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_rules("rules:\n  " + text)


def test_a_window_of_one_second_and_a_type_given_with_its_prefix_are_refused_or_accepted_as_documented() -> None:
    [rule] = parse_rules(
        "rules:\n  - {id: x1, kind: inactivity, activity: {type: member.signed_up.v1}, within: PT1S}"
    ).rules
    assert rule.within == timedelta(seconds=1)
    with pytest.raises(ValidationError, match="unknown event type"):
        parse_rules("rules:\n  - {id: x1, kind: immediate, match: {type: nl.bibliotheek.member.signed_up.v1}}")


def test_a_rule_s_window_can_be_changed_for_one_rule_only() -> None:
    catalogue = load_rules()
    shorter = with_window(catalogue, "online-signup-not-activated", timedelta(minutes=5))
    windows = {r.id: r.within for r in shorter.rules}
    assert windows["online-signup-not-activated"] == timedelta(minutes=5)
    assert windows["desk-signup-never-online"] == timedelta(days=30)
    youth = catalogue.by_id("youth-inactive")
    assert youth is not None and youth.id == "youth-inactive" and shorter.by_id("youth-inactive") == youth
    assert catalogue.by_id("no-such-rule") is None


def test_a_loaded_catalogue_cannot_be_changed_by_the_code_that_uses_it() -> None:
    catalogue = load_rules()
    rule = catalogue.rules[0]
    assert isinstance(rule, AbsenceRule)
    with pytest.raises(ValidationError):
        catalogue.rules = []  # type: ignore[misc]
    with pytest.raises(ValidationError):
        rule.within = timedelta(days=1)  # type: ignore[misc]
    with pytest.raises(ValidationError):
        rule.start.type = ["member.erased.v1"]  # type: ignore[misc]
