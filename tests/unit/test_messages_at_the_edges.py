"""notifications' deciding rules and campaigns at their edges: the holdout at 0/1/99/100% and per member (known
buckets of fixed members, the same in another process), every trigger filter field, the frequency cap and the
freshness limit at their exact values, and what the template sandbox refuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from services.notifications.campaigns import (
    ACTIVATE_YOUR_CARD,
    AudienceFacts,
    Campaign,
    CampaignDefinition,
    TriggerEvent,
    in_audience,
    next_status,
    overlap,
    problems,
    trigger_key,
    triggered_by,
)
from services.notifications.rules import (
    Circumstances,
    MemberFacts,
    Policy,
    decide,
    in_holdout,
    message_id,
    quiet_until,
)
from services.notifications.settings import NotificationsSettings
from services.notifications.templates import (
    LibraryInfo,
    PropositionInfo,
    Sample,
    check,
    check_one,
    context,
    one_line,
    render,
)

ROOT = Path(__file__).resolve().parents[2]
AMSTERDAM = ZoneInfo("Europe/Amsterdam")
NOON = datetime(2026, 3, 10, 12, 0, tzinfo=AMSTERDAM)
POLICY = Policy(
    frequency_cap=3,
    quiet_start=time(21, 0),
    quiet_end=time(8, 0),
    timezone=AMSTERDAM,
    quiet_media=frozenset({"email", "sms", "push"}),
    plain_language_propositions=frozenset(),
)
FRICTION = "nl.bibliotheek.friction.detected.v1"
SIGNED_UP = "nl.bibliotheek.member.signed_up.v1"

# Known holdout buckets (percent) of fixed members in campaign c-1: the first 8 bytes of
# sha256("c-1:<member>") as a fraction of 2**64.
BUCKETS = {"m-291": 0.58, "m-604": 0.19, "m-3": 32.49, "m-1": 76.32, "m-232": 99.08, "m-75": 99.73, "m-139": 99.999}


def definition(**overrides: Any) -> CampaignDefinition:
    values: dict[str, Any] = {
        "name": "test",
        "purpose": "service",
        "trigger": {"friction_rules": ["reservation-not-collected"]},
        "channels": ["in_app"],
        "messages": {"in_app": {"nl": {"title": "t", "body": "b"}}},
        **overrides,
    }
    return CampaignDefinition.model_validate(values)


@pytest.mark.parametrize("percent", [0, 1, 50, 99, 100])
def test_the_holdout_of_fixed_members_at_each_percentage_follows_their_known_bucket(percent: float) -> None:
    held_out = {m for m in BUCKETS if in_holdout("c-1", m, percent)}
    assert held_out == {m for m, bucket in BUCKETS.items() if bucket < percent}


def test_a_one_percent_holdout_holds_out_about_one_member_in_a_hundred() -> None:
    share = sum(in_holdout("c-1", f"m-{i}", 1) for i in range(10_000)) / 100
    assert 0.7 < share < 1.3


def test_the_holdout_is_decided_per_member_and_per_campaign() -> None:
    assert in_holdout("c-1", "m-3", 50) and not in_holdout("c-1", "m-1", 50)
    assert not in_holdout("c-2", "m-3", 50)  # m-3's bucket in c-2 is 89.04


def test_a_member_is_in_the_same_holdout_in_another_process_with_another_hash_seed() -> None:
    members = [f"m-{i}" for i in range(200)]
    program = (
        "import json, sys\n"
        "from services.notifications.rules import in_holdout\n"
        "print(json.dumps([in_holdout('c-1', f'm-{i}', 30) for i in range(200)]))\n"
    )
    here = [in_holdout("c-1", m, 30) for m in members]
    # This process's hash seed is random (or whatever PYTHONHASHSEED says); the other one's is fixed and another.
    seed = "4243" if os.environ.get("PYTHONHASHSEED") == "4242" else "4242"
    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=True)  # fmt: skip
    assert json.loads(done.stdout) == here
    assert 30 < sum(here) < 90  # a 30% holdout of 200 members holds some out, not all


def trigger(attributes: dict[str, Any], data: dict[str, Any] | None = None, type_: str = SIGNED_UP) -> TriggerEvent:
    return TriggerEvent("e-1", type_, "m", NOON, attributes, data or {})


@pytest.mark.parametrize(
    ("name", "matching", "other"),
    [
        ("library", {"library": "oba"}, {"library": "haarlem"}),
        ("channel", {"channel": "online"}, {"channel": "offline"}),
        ("platform", {"platform": "app"}, {"platform": "website"}),
        ("source", {"source": "consultatiebureau"}, {"source": "school"}),
    ],
)
def test_each_attribute_filter_lets_its_values_through_and_nothing_else(
    name: str, matching: dict[str, Any], other: dict[str, Any]
) -> None:
    allowed = next(iter(matching.values()))
    d = definition(trigger={"event_types": [SIGNED_UP], "filters": {name: [allowed]}})
    assert triggered_by(d, trigger(matching))
    assert not triggered_by(d, trigger(other))
    assert not triggered_by(d, trigger({}))  # a trigger without the attribute does not pass a filter on it
    assert problems(d) == []


def test_a_data_filter_compares_the_event_s_own_field() -> None:
    d = definition(trigger={"event_types": [SIGNED_UP], "filters": {"data.age_band": ["0-3"]}})
    assert triggered_by(d, trigger({}, {"age_band": "0-3"}))
    assert not triggered_by(d, trigger({"age_band": "0-3"}, {"age_band": "18-64"}))


def test_every_filter_must_match_not_just_one() -> None:
    d = definition(trigger={"event_types": [SIGNED_UP], "filters": {"channel": ["online"], "platform": ["app"]}})
    assert triggered_by(d, trigger({"channel": "online", "platform": "app"}))
    assert not triggered_by(d, trigger({"channel": "online", "platform": "website"}))
    assert not triggered_by(d, trigger({"channel": "offline", "platform": "app"}))


def test_a_friction_triggers_by_its_rule_and_an_event_by_its_type_not_the_other_way_round() -> None:
    on_rule = definition(trigger={"friction_rules": ["reservation-not-collected"]})
    on_type = definition(trigger={"event_types": [SIGNED_UP]})
    raised = trigger({}, {"rule": "reservation-not-collected", "library": "oba"}, FRICTION)
    assert triggered_by(on_rule, raised) and not triggered_by(on_type, raised)
    assert triggered_by(on_type, trigger({})) and not triggered_by(on_rule, trigger({}, {"rule": "x"}))
    # A friction's library is the one in its data (where the friction happened), else the envelope's.
    assert raised.library == "oba" and trigger({"library": "delft"}, {}, FRICTION).library == "delft"
    assert trigger({"library": "delft"}).library == "delft" and trigger({}).library is None
    assert trigger_key("broadcast", None) == "broadcast"


def test_a_friction_s_branch_and_id_come_from_its_data() -> None:
    assert trigger({}, {"branch": "banne"}).branch == "banne"
    assert trigger({}, {"pickup_branch": "osdorp"}).branch == "osdorp"
    assert trigger({}, {}).branch is None
    assert trigger({}, {"friction_id": "f-9"}, FRICTION).friction_id == "f-9"
    assert trigger({}, {"friction_id": "f-9"}).friction_id is None


def facts(member_id: str = "m-1", **audience: Any) -> MemberFacts:
    return MemberFacts(member_id, AudienceFacts(**({"library": "oba"} | audience)))


def decided(campaign: Campaign, member: MemberFacts | None = None, **now: Any) -> Any:
    event = trigger({"library": "oba"}, {"rule": "reservation-not-collected"}, FRICTION)
    return decide(campaign, event, member or facts(), Circumstances(**{"now": NOON, **now}), POLICY)


def test_the_frequency_cap_allows_exactly_the_cap_and_no_more() -> None:
    campaign = Campaign("c-1", 1, "active", definition())
    assert decided(campaign, sent_in_window=2).outcome == "send"
    assert decided(campaign, sent_in_window=3).reason == "frequency_cap"


def test_a_held_out_member_is_suppressed_and_a_member_outside_the_holdout_is_sent_to() -> None:
    campaign = Campaign("c-1", 1, "active", definition(holdout_percent=50))
    held = decided(campaign, facts("m-3"))
    assert (held.outcome, held.reason, held.media) == ("suppress", "holdout", ("in_app",))
    assert decided(campaign, facts("m-1")).outcome == "send"


def test_a_campaign_about_a_proposition_reaches_members_of_libraries_that_offer_it() -> None:
    campaign = Campaign("c-1", 1, "active", definition(proposition="boekstart"))
    assert decided(campaign, offered_by=frozenset({"oba", "delft"})).outcome == "send"
    assert decided(campaign, offered_by=frozenset({"delft"})).reason == "not_offered"


def test_a_sent_or_deferred_message_counts_toward_the_cap_and_takes_the_slot() -> None:
    sent = decided(Campaign("c-1", 1, "active", definition()))
    assert (sent.claims, sent.counts_toward_cap) == (True, True)
    email = definition(channels=["email"], messages={"email": {"nl": {"subject": "s", "body": "b"}}})
    deferred = decided(Campaign("c-1", 1, "active", email), now=datetime(2026, 3, 10, 23, 0, tzinfo=AMSTERDAM))
    assert (deferred.outcome, deferred.medium, deferred.claims, deferred.counts_toward_cap) == (
        "defer", "email", True, True,
    )  # fmt: skip
    assert deferred.until == datetime(2026, 3, 11, 8, 0, tzinfo=AMSTERDAM)


def test_quiet_hours_right_after_midnight_end_the_same_morning() -> None:
    assert quiet_until(datetime(2026, 3, 11, 0, 0, tzinfo=AMSTERDAM), POLICY) == datetime(
        2026, 3, 11, 8, 0, tzinfo=AMSTERDAM
    )


def test_an_audience_of_each_kind_admits_exactly_its_members() -> None:
    assert in_audience(definition(audience={"age_bands": ["0-3"]}), AudienceFacts(age_band="0-3"))
    assert not in_audience(definition(audience={"age_bands": ["0-3"]}), AudienceFacts(age_band="4-11"))
    assert in_audience(definition(audience={"channels_of_origin": ["online"]}), AudienceFacts(origin="online"))
    assert not in_audience(definition(audience={"propositions": ["boekstart"]}), AudienceFacts())
    taalcafe = AudienceFacts(propositions=frozenset({"taalcafe"}))
    assert in_audience(definition(audience={"propositions": ["boekstart", "taalcafe"]}), taalcafe)
    assert in_audience(definition(library="oba"), AudienceFacts(library="oba"))
    assert not in_audience(definition(library="oba"), AudienceFacts(library="delft"))


@pytest.mark.parametrize(
    ("other", "overlaps"),
    [
        ({"trigger": {"event_types": [SIGNED_UP]}}, False),
        ({"trigger": {"friction_rules": ["reservation-not-collected"], "filters": {"channel": ["online"]}}}, True),
        ({"audience": {"age_bands": ["4-11"]}}, False),
        ({"audience": {"propositions": ["taalcafe"]}}, False),
        ({"audience": {"channels_of_origin": ["online"]}}, False),
        ({"schedule": {"starts_at": "2026-04-01T00:00:00Z"}}, False),
        ({"schedule": {"starts_at": "2026-03-31T23:59:59Z"}}, True),
        ({"kind": "broadcast", "trigger": None, "schedule": {"send_at": "2026-03-01T00:00:00Z"}}, False),
    ],
    ids=["type", "filter", "band", "proposition", "origin", "starts-at-end", "starts-before-end", "broadcast"],
)
def test_campaigns_overlap_only_when_every_narrowing_leaves_someone_in_common(
    other: dict[str, Any], overlaps: bool
) -> None:
    first = definition(
        audience={"age_bands": ["0-3"], "propositions": ["boekstart"], "channels_of_origin": ["offline"]},
        schedule={"ends_at": "2026-04-01T00:00:00Z"},
    )
    assert overlap(first, definition(**other)) is overlaps
    assert overlap(definition(**other), first) is overlaps


def test_pausing_and_archiving_follow_the_campaign_s_life() -> None:
    assert next_status("active", "pause") == "paused"
    assert next_status("paused", "pause") is None
    assert next_status("draft", "archive") == "archived"
    assert next_status("paused", "archive") == "archived"
    assert next_status("archived", "archive") is None


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"kind": "broadcast", "trigger": None}, "schedule.send_at"),
        ({"kind": "broadcast", "schedule": {"send_at": "2026-03-01T00:00:00Z"}}, "trigger"),
        ({"trigger": None}, "trigger"),
        ({"trigger": {}}, "trigger"),
        ({"schedule": {"starts_at": "2026-03-01T00:00:00Z", "ends_at": "2026-03-01T00:00:00Z"}}, "schedule.ends_at"),
        ({"library": "oba", "audience": {"libraries": ["delft"]}}, "audience.libraries"),
        ({"renotify_after": "PT0S"}, "renotify_after"),
        ({"trigger": {"event_types": ["nl.bibliotheek.notification.sent.v1"]}}, "trigger.event_types.0"),
        ({"trigger": {"event_types": ["nl.bibliotheek.member.teleported.v1"]}}, "trigger.event_types.0"),
        ({"trigger": {"friction_rules": ["x-y"], "filters": {"colour": ["red"]}}}, "trigger.filters.colour"),
        ({"trigger": {"friction_rules": ["x-y"], "filters": {"channel": []}}}, "trigger.filters.channel"),
        ({"trigger": {"friction_rules": ["x-y"], "filters": {"data.nope": ["1"]}}}, "trigger.filters.data.nope"),
        ({"channels": ["in_app", "in_app"]}, "channels.1"),
        ({"channels": ["in_app", "email"]}, "messages.email"),
        ({"messages": {"in_app": {"nl": {"title": "t", "body": "b"}}, "sms": {"nl": {"body": "b"}}}}, "messages.sms"),
        ({"messages": {"in_app": {"en": {"title": "t", "body": "b"}}}}, "messages.in_app.nl"),
        ({"messages": {"in_app": {"nl": {"body": "b"}}}}, "messages.in_app.nl.title"),
        ({"messages": {"in_app": {"nl": {"title": "t", "subject": "s", "body": "b"}}}}, "messages.in_app.nl.subject"),
        ({"channels": ["email"], "messages": {"email": {"nl": {"body": "b"}}}}, "messages.email.nl.subject"),
        ({"channels": ["sms"], "messages": {"sms": {"nl": {"title": "t", "body": "b"}}}}, "messages.sms.nl.title"),
    ],
)
def test_each_mistake_in_a_definition_is_named_by_its_field(overrides: dict[str, Any], field: str) -> None:
    assert [p.field for p in problems(definition(**overrides))] == [field]


def test_a_renotify_period_and_a_schedule_in_order_are_fine() -> None:
    assert problems(definition(renotify_after="P7D", schedule={"starts_at": "2026-03-01T00:00:00Z",
                                                                "ends_at": "2026-03-01T00:00:01Z"})) == []  # fmt: skip


@pytest.mark.parametrize(
    ("source", "refused"),
    [
        ("{{ 2 ** 100 }}", False),
        ("{{ 2 ** 101 }}", True),
        ("{{ -101 ** 2 }}", True),
        ("{{ 'ab' * 1000 }}", False),
        ("{{ 'ab' * 1001 }}", True),
        ("{{ 1001 * 'ab' }}", True),
        ("{{ [1] * 1001 }}", True),
        ("{{ 1001 * 1001 }}", False),  # numbers may be large; only repetition is bounded
    ],
)
def test_the_template_sandbox_bounds_powers_and_repetition_exactly(source: str, refused: bool) -> None:
    error = check_one(source, {})
    assert (error is not None) is refused, error
    if refused:
        assert "too large" in str(error)


def test_a_message_id_is_a_known_uuid_of_campaign_member_and_trigger() -> None:
    # uuid5(NAMESPACE_URL, "klantreis:message/c-1/m-1/e-1"): the same message on every instance and redelivery.
    assert message_id("c-1", "m-1", "e-1") == "12d62854-4fdc-5a55-910c-af311b5a16e4"
    assert len({message_id("c-1", "m-1", "e-1"), message_id("c-1", "m-1", "e-2"), message_id("c-2", "m-1", "e-1")}) == 3


def test_the_policy_is_read_from_the_settings() -> None:
    settings = NotificationsSettings(
        notifications_frequency_cap=5,
        notifications_quiet_hours_start=time(22, 0),
        notifications_quiet_hours_end=time(7, 30),
        notifications_quiet_media=["sms"],
        notifications_plain_language_propositions=["taalcafe"],
        notifications_freshness_limit="P3D",
    )
    policy = Policy.from_settings(settings)
    assert (policy.frequency_cap, policy.quiet_start, policy.quiet_end) == (5, time(22, 0), time(7, 30))
    assert (policy.quiet_media, policy.plain_language_propositions) == (frozenset({"sms"}), frozenset({"taalcafe"}))
    assert (policy.timezone, policy.freshness) == (AMSTERDAM, timedelta(days=3))


def test_a_member_who_was_sent_nothing_yet_gets_a_message_under_a_cap_of_one() -> None:
    campaign = Campaign("c-1", 1, "active", definition())
    event = trigger({"library": "oba"}, {"rule": "reservation-not-collected"}, FRICTION)
    once = Policy(**{**POLICY.__dict__, "frequency_cap": 1})
    assert decide(campaign, event, facts(), Circumstances(NOON), once).outcome == "send"


@pytest.mark.parametrize(
    ("local", "until"),
    [((11, 59), None), ((12, 0), (13, 0)), ((12, 59), (13, 0)), ((13, 0), None)],
)
def test_quiet_hours_within_a_day_start_at_their_start_and_end_at_their_end(
    local: tuple[int, int], until: tuple[int, int] | None
) -> None:
    lunch = Policy(**{**POLICY.__dict__, "quiet_start": time(12, 0), "quiet_end": time(13, 0)})
    found = quiet_until(datetime(2026, 3, 10, *local, tzinfo=AMSTERDAM), lunch)
    assert found == (None if until is None else datetime(2026, 3, 10, *until, tzinfo=AMSTERDAM))


OBA = LibraryInfo(
    "oba",
    "OBA",
    "https://www.oba.nl",
    branches={"oosterdok": "OBA Oosterdok", "banne": "OBA Banne"},
    branch_hours={"banne": "di-za 10-17"},
)


def email(body: str, **overrides: Any) -> CampaignDefinition:
    return definition(channels=["email"], messages={"email": {"nl": {"subject": "Onderwerp", "body": body}}},
                      **overrides)  # fmt: skip


def test_every_placeholder_is_filled_from_the_catalogue_the_trigger_and_the_recipient() -> None:
    d = email("x", proposition="boekstart")
    sample = Sample(library=OBA, branch="oosterdok", trigger_type=FRICTION, trigger_rule="r",
                    trigger_time=datetime(2026, 3, 10, 12, 0, tzinfo=AMSTERDAM), recipient_name="Sanne",
                    is_guardian=True)  # fmt: skip
    values = context(d, "email", sample, app_link="https://app.example")
    assert values["library"] == {
        "code": "oba", "name": "OBA", "website": "https://www.oba.nl", "opening_hours": "di-za 10-17",
        "branches": ["OBA Banne", "OBA Oosterdok"],
    }  # fmt: skip
    # The main branch gives no hours: the library's are those of the first branch that does.
    assert values["branch"] == {"code": "oosterdok", "name": "OBA Oosterdok", "opening_hours": "di-za 10-17"}
    assert values["links"] == {"app": "https://app.example", "inbox": "https://app.example/inbox",
                               "library": "https://www.oba.nl",
                               "proposition": "https://app.example/propositions/boekstart"}  # fmt: skip
    assert values["trigger"] == {"type": FRICTION, "rule": "r", "library": "oba", "time": "2026-03-10T12:00:00+01:00"}
    assert values["proposition"] == {"slug": "boekstart", "name": "boekstart",
                                     "url": "https://app.example/propositions/boekstart"}  # fmt: skip
    assert values["recipient"] == {"name": "Sanne", "is_guardian": True}
    assert values["campaign"] == {"name": "test"}


def test_a_sample_without_library_or_proposition_info_still_fills_every_placeholder() -> None:
    values = context(email("x"), "sms", Sample(), app_link="https://app.example")
    assert values["library"] == {"code": "", "name": "de Bibliotheek", "website": "https://www.bibliotheek.nl",
                                 "opening_hours": "", "branches": []}  # fmt: skip
    assert values["branch"] == {"code": "", "name": "", "opening_hours": ""}
    assert values["trigger"]["time"] == "" and "proposition" not in values and "proposition" not in values["links"]
    named = context(email("x", proposition="boekstart"), "email",
                    Sample(proposition=PropositionInfo("boekstart", "BoekStart", "https://boekstart.nl")),
                    app_link="https://app.example")  # fmt: skip
    assert named["proposition"]["url"] == named["links"]["proposition"] == "https://boekstart.nl"
    assert named["proposition"]["name"] == "BoekStart"
    own_hours = LibraryInfo("oba", "OBA", branches={"a": "A"}, branch_hours={"a": "ma 9-17"})
    assert (
        context(email("x"), "email", Sample(library=own_hours, branch="a"), app_link="x")["branch"]["opening_hours"]
        == "ma 9-17"
    )


def test_subjects_and_titles_are_checked_like_bodies_and_every_error_is_named() -> None:
    d = definition(
        channels=["email", "push"],
        messages={
            "email": {"nl": {"subject": "{{ library.naam }}", "body": "{{ library.name }}"}},
            "push": {"nl": {"title": "{{ nope }}", "body": "{{ recipient.name }}"}},
        },
    )
    assert [p.field for p in check(d)] == ["messages.email.nl.subject", "messages.push.nl.title"]


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("{{ library['naam'] }}", "unknown placeholder 'library.naam'; library has branches, code, name"),
        ("{{ library.branches[0] }}", None),
        ("{{ links.app | length }}", None),
        ("{{ library.name.upper() }}", None),
        ("{{ library }}", None),
        ("{{ 1 / 0 }}", "template cannot be rendered: ZeroDivisionError"),
        ("{{ library.name | int('x') }}", None),
        ("{{ 2 ** -101 }}", "power too large"),
        ("{{ -1001 * 'x' }}", "repetition too large"),
    ],
)
def test_what_a_template_may_use_is_checked_on_save(source: str, error: str | None) -> None:
    allowed = context(email("x"), "email", Sample(library=OBA), app_link="https://app.example")
    found = check_one(source, allowed)
    assert found == error if error is None else found is not None and error in found, found


def test_rendered_text_has_no_surrounding_space_and_one_line_fields_have_no_line_breaks() -> None:
    assert render("  {{ x }}\n\n", {"x": "Welkom"}) == "Welkom"
    assert one_line("Welkom\tbij  de\nOBA ") == "Welkom bij de OBA"


@pytest.mark.parametrize(
    ("overrides", "fits"),
    [
        ({"name": "n" * 120}, True),
        ({"name": "n" * 121}, False),
        ({"name": ""}, False),
        ({"name": "n"}, True),
        ({"channels": ["in_app", "email", "sms", "push"]}, True),
        ({"channels": ["in_app", "email", "sms", "push", "in_app"]}, False),
        ({"priority": 0}, True),
        ({"priority": -1}, False),
        ({"priority": 100}, True),
        ({"priority": 101}, False),
        ({"holdout_percent": 0}, True),
        ({"holdout_percent": -0.5}, False),
        ({"holdout_percent": 50}, True),
        ({"holdout_percent": 50.5}, False),
        ({"trigger": {"event_types": [SIGNED_UP] * 20}}, True),
        ({"trigger": {"event_types": [SIGNED_UP] * 21}}, False),
        ({"trigger": {"friction_rules": ["r"] * 20}}, True),
        ({"trigger": {"friction_rules": ["r"] * 21}}, False),
        ({"messages": {"in_app": {"nl": {"title": "t" * 200, "body": "b" * 5000}}}}, True),
        ({"messages": {"in_app": {"nl": {"title": "t" * 201, "body": "b"}}}}, False),
        ({"messages": {"in_app": {"nl": {"title": "t", "body": "b" * 5001}}}}, False),
        ({"messages": {"in_app": {"nl": {"title": "t", "body": ""}}}}, False),
        ({"messages": {"email": {"nl": {"subject": "s" * 300, "body": "b"}}}}, True),
        ({"messages": {"email": {"nl": {"subject": "s" * 301, "body": "b"}}}}, False),
    ],
)
def test_a_definition_s_fields_are_bounded_exactly_as_documented(overrides: dict[str, Any], fits: bool) -> None:
    if fits:
        definition(**overrides)
    else:
        with pytest.raises(ValidationError):
            definition(**overrides)


def test_a_definition_has_documented_defaults_and_cannot_be_changed_once_made() -> None:
    d = definition()
    assert (d.priority, d.holdout_percent, d.kind, d.renotify_after) == (50, 0, "triggered", None)
    with pytest.raises(ValidationError):
        d.name = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        d.trigger.friction_rules = []  # type: ignore[misc, union-attr]
    assert not Campaign("c", 1, "draft", d).built_in


def test_the_built_in_campaign_goes_before_ordinary_ones_and_is_marked_built_in() -> None:
    assert ACTIVATE_YOUR_CARD.built_in and ACTIVATE_YOUR_CARD.version == 1
    assert ACTIVATE_YOUR_CARD.definition.priority == 80 > definition().priority


def test_a_scheduled_campaign_is_live_from_its_very_start() -> None:
    start = datetime(2026, 3, 10, 12, 0, tzinfo=AMSTERDAM)
    campaign = Campaign("c", 1, "active", definition(schedule={"starts_at": start.isoformat()}))
    assert campaign.live(start) and not campaign.live(start - timedelta(microseconds=1))


def test_definitions_that_are_fine_raise_no_problem() -> None:
    assert problems(definition(audience={"libraries": ["oba", "delft"]})) == []  # a network campaign
    assert problems(definition(library="oba", audience={"libraries": ["oba"]})) == []
    assert problems(definition(renotify_after="PT12H")) == []
    friction_field = {"friction_rules": ["reservation-not-collected"], "filters": {"data.channel_pair": ["a→b"]}}
    assert problems(definition(trigger=friction_field)) == []


def test_an_event_type_about_no_member_cannot_trigger_a_campaign() -> None:
    [problem] = problems(definition(trigger={"event_types": ["nl.bibliotheek.catalog.offering_changed.v1"]}))
    assert (problem.field, problem.message) == (
        "trigger.event_types.0", "not about a member: cannot trigger a campaign",
    )  # fmt: skip


def test_only_a_friction_has_a_rule_and_only_a_triggered_campaign_is_triggered() -> None:
    assert trigger({}, {"rule": "r"}).rule is None
    assert trigger({}, {"rule": "r"}, FRICTION).rule == "r"
    assert trigger({}, {}, FRICTION).rule is None
    with_trigger = definition(kind="broadcast", schedule={"send_at": "2026-03-01T00:00:00Z"},
                              trigger={"event_types": [SIGNED_UP]})  # fmt: skip
    assert not triggered_by(with_trigger, trigger({}))


def test_templates_compute_and_keep_text_as_written() -> None:
    assert render("{{ 2 * 3 }} {{ 2 ** 3 }} {{ 'ab' * 2 }}", {}) == "6 8 abab"
    # Plain text (e-mail text/plain, SMS, push): no HTML escaping.
    assert render("{{ x }}", {"x": "Tom & Jerry <3"}) == "Tom & Jerry <3"


def test_an_item_by_number_is_a_rendering_error_not_an_unknown_placeholder() -> None:
    allowed = context(email("x"), "email", Sample(library=OBA), app_link="https://app.example")
    assert str(check_one("{{ library[0] }}", allowed)).startswith("template cannot be rendered")
