"""Campaigns as data, without I/O: checks naming the field, triggers with filters, audiences, overlaps,
status changes, and the built-in campaign."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.notifications import templates
from services.notifications.campaigns import (
    ACTIVATE_YOUR_CARD,
    EXAMPLE,
    AudienceFacts,
    CampaignDefinition,
    TriggerEvent,
    in_audience,
    next_status,
    overlap,
    problems,
    triggered_by,
)

T = datetime(2026, 3, 10, 11, 0, tzinfo=UTC)


def definition(**overrides: Any) -> CampaignDefinition:
    values: dict[str, Any] = {
        "name": "test",
        "trigger": {"friction_rules": ["reservation-not-collected"]},
        "channels": ["in_app"],
        "messages": {"in_app": {"nl": {"title": "t", "body": "b"}}},
        **overrides,
    }
    return CampaignDefinition.model_validate(values)


def friction(rule: str = "reservation-not-collected", **data: Any) -> TriggerEvent:
    return TriggerEvent("f-1", "nl.bibliotheek.friction.detected.v1", "m", T, {"library": "oba"},
                        {"rule": rule, "friction_id": "f-1", **data})  # fmt: skip


def test_the_built_in_campaign_and_the_documented_example_pass_every_check() -> None:
    assert problems(ACTIVATE_YOUR_CARD.definition) == []
    assert templates.check(ACTIVATE_YOUR_CARD.definition) == []
    example = CampaignDefinition.model_validate(EXAMPLE)
    assert problems(example) + templates.check(example) == []


def test_a_definition_s_problems_name_their_fields() -> None:
    bad = definition(
        trigger={"event_types": ["nl.bibliotheek.nope.v1"], "filters": {"data.nope": ["x"], "platform": []}},
        channels=["in_app", "email", "in_app"],
        messages={"in_app": {"en": {"title": "t", "body": "b"}}, "sms": {"nl": {"title": "x", "body": "b"}}},
        schedule={"starts_at": T.isoformat(), "ends_at": (T - timedelta(days=1)).isoformat()},
        library="oba",
        audience={"libraries": ["haarlem"]},
    )
    assert [p.field for p in problems(bad)] == [
        "trigger.event_types.0",
        "trigger.filters.data.nope",
        "trigger.filters.platform",
        "messages.email",
        "channels.2",
        "messages.in_app.nl",
        "messages.sms",
        "messages.sms.nl.title",
        "schedule.ends_at",
        "audience.libraries",
    ]


def test_a_trigger_matches_its_rules_and_types_narrowed_by_filters() -> None:
    on_rule = definition(trigger={"friction_rules": ["reservation-not-collected"], "filters": {"library": ["oba"]}})
    assert triggered_by(on_rule, friction())
    assert not triggered_by(on_rule, friction("registration-abandoned"))
    assert not triggered_by(on_rule, friction(library="haarlem"))
    on_type = definition(
        trigger={"event_types": ["nl.bibliotheek.member.login_failed.v1"], "filters": {"data.reason": ["locked"]}}
    )
    login = TriggerEvent("e", "nl.bibliotheek.member.login_failed.v1", "m", T, {}, {"reason": "locked"})
    assert triggered_by(on_type, login)
    assert not triggered_by(on_type, TriggerEvent("e", login.type, "m", T, {}, {"reason": "bad_credentials"}))
    assert not triggered_by(definition(kind="broadcast", trigger=None, schedule={"send_at": T.isoformat()}), login)


def test_the_same_trigger_is_one_friction_rule_whichever_library_or_start_raised_it() -> None:
    assert friction().key == friction(library="haarlem").key == "rule:reservation-not-collected"
    assert (
        TriggerEvent("a", "nl.bibliotheek.member.signed_up.v1", "m", T).key == "type:nl.bibliotheek.member.signed_up.v1"
    )
    assert friction().library == "oba"
    assert friction(library="haarlem").library == "haarlem"


def test_an_audience_narrows_by_library_age_band_origin_and_proposition() -> None:
    audience = {"age_bands": ["0-3"], "channels_of_origin": ["offline"], "propositions": ["boekstart"]}
    d = definition(audience=audience, library="oba")
    baby = AudienceFacts(library="oba", age_band="0-3", origin="offline", propositions=frozenset({"boekstart"}))
    assert in_audience(d, baby)
    assert not in_audience(d, AudienceFacts(**{**baby.__dict__, "library": "haarlem"}))
    assert not in_audience(d, AudienceFacts(**{**baby.__dict__, "age_band": "4-11"}))
    assert not in_audience(d, AudienceFacts(**{**baby.__dict__, "origin": "online"}))
    assert not in_audience(d, AudienceFacts(**{**baby.__dict__, "propositions": frozenset()}))
    assert in_audience(definition(), AudienceFacts())


@pytest.mark.parametrize(
    ("other", "overlaps"),
    [
        ({}, True),
        ({"audience": {"libraries": ["haarlem"]}}, False),
        ({"audience": {"age_bands": ["0-3"]}}, True),
        ({"trigger": {"friction_rules": ["registration-abandoned"]}}, False),
        ({"trigger": {"friction_rules": ["reservation-not-collected"], "filters": {"library": ["haarlem"]}}}, False),
        ({"library": "haarlem"}, False),
        ({"schedule": {"ends_at": "2026-01-01T00:00:00Z"}}, False),
    ],
    ids=["same", "other-library", "narrower", "other-trigger", "filtered-away", "library-campaign", "over-before"],
)
def test_two_campaigns_overlap_when_they_would_hit_the_same_members_for_the_same_trigger(
    other: dict[str, Any], overlaps: bool
) -> None:
    first = definition(
        trigger={"friction_rules": ["reservation-not-collected"], "filters": {"library": ["oba"]}},
        audience={"libraries": ["oba"]},
        schedule={"starts_at": "2026-02-01T00:00:00Z"},
    )
    assert overlap(first, definition(**other)) is overlaps


def test_status_changes_follow_the_campaign_s_life() -> None:
    assert next_status("draft", "activate") == "active"
    assert next_status("paused", "activate") == "active"
    assert next_status("active", "activate") is None
    assert next_status("draft", "pause") is None
    assert next_status("active", "archive") == "archived"
    assert next_status("archived", "activate") is None


def test_a_campaign_is_live_only_while_active_and_inside_its_schedule() -> None:
    from services.notifications.campaigns import Campaign

    scheduled = definition(schedule={"starts_at": T.isoformat(), "ends_at": (T + timedelta(days=7)).isoformat()})
    assert Campaign("c", 1, "active", scheduled).live(T + timedelta(days=1))
    assert not Campaign("c", 1, "active", scheduled).live(T - timedelta(seconds=1))
    assert not Campaign("c", 1, "active", scheduled).live(T + timedelta(days=7))
    assert not Campaign("c", 1, "paused", scheduled).live(T + timedelta(days=1))
