"""The web tracker's events in journey's rules and analytics' interest report, without I/O."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from services.analytics.interest import interest_rows
from shared.events import CloudEvent
from shared.events.client import PageViewed, PropositionViewed, SearchPerformed
from tests.unit.test_journey_engine import ev, rules_hit, run, signed_up

RULE = "viewed-online-not-taken-up"
DAY = timedelta(days=1)


def viewed(member: str, at: timedelta, proposition: str = "boekstart") -> CloudEvent:
    return ev("client.proposition_viewed.v1", member, at, channel="online", platform="website",
              proposition=proposition, path=f"/{proposition}")  # fmt: skip


def registered(member: str, at: timedelta, proposition: str = "boekstart") -> CloudEvent:
    return ev("usage.activity_registered.v1", member, at, channel="online", platform="website",
              activity_id=f"oba.{proposition}.3f9a1c2e7d4b", proposition=proposition)  # fmt: skip


def test_a_member_who_viewed_a_proposition_online_and_did_not_take_it_up_in_14_days_is_a_friction() -> None:
    journeys = run(signed_up("m", -30 * DAY), viewed("m", timedelta(0)), ev("member.card_activated.v1", "m", 20 * DAY))
    assert RULE in rules_hit(journeys)
    [friction] = [f for f in journeys.result.detected if f.rule == RULE]
    assert friction.due_ms - friction.started_ms == 14 * 24 * 3600 * 1000


def test_registering_for_the_same_proposition_within_14_days_meets_the_window() -> None:
    journeys = run(signed_up("m", -30 * DAY), viewed("m", timedelta(0)), registered("m", 3 * DAY),
                   ev("member.card_activated.v1", "m", 20 * DAY))  # fmt: skip
    assert RULE not in rules_hit(journeys)


def test_registering_for_another_proposition_does_not() -> None:
    journeys = run(signed_up("m", -30 * DAY), viewed("m", timedelta(0)), registered("m", 3 * DAY, "klik-en-tik"),
                   ev("member.card_activated.v1", "m", 20 * DAY))  # fmt: skip
    assert RULE in rules_hit(journeys)


def test_a_visitor_not_linked_to_a_member_is_no_friction() -> None:
    journeys = run(viewed("visitor-1", timedelta(0)), signed_up("m", 20 * DAY))
    assert RULE not in rules_hit(journeys, "visitor-1")


def test_client_events_carry_no_query_string_nor_the_words_searched_for() -> None:
    with pytest.raises(ValidationError, match="path"):
        PageViewed(path="/zoeken?q=jan+jansen")
    with pytest.raises(ValidationError, match="query"):
        SearchPerformed.model_validate({"scope": "catalogue", "results": 3, "query": "jan jansen"})
    assert PropositionViewed(proposition="boekstart").path is None


def test_interest_counts_viewers_took_up_and_pending_per_library_and_proposition_with_small_cells_suppressed() -> None:
    counted = [
        {"library": "oba", "proposition": "boekstart", "viewers": 10, "took_up": 3, "pending": 4},
        {"library": "oba", "proposition": "klik-en-tik", "viewers": 2, "took_up": 1, "pending": 0},
        {"library": "haarlem", "proposition": "boekstart", "viewers": 5, "took_up": 0, "pending": 0},
    ]
    rows = {(r["library"], r["proposition"]): r for r in interest_rows(counted, min_cell=5)}
    assert rows[("oba", "boekstart")] == {"library": "oba", "proposition": "boekstart", "viewers": 10,
                                          "took_up": 3, "pending": 4, "take_up": 0.5, "suppressed": False}  # fmt: skip
    small = rows[("oba", "klik-en-tik")]
    assert small["suppressed"] and [small[f] for f in ("viewers", "took_up", "pending", "take_up")] == [None] * 4
    assert (rows[("oba", "*")]["viewers"], rows[("oba", "*")]["took_up"]) == (12, 4)
    assert (rows[("*", "boekstart")]["viewers"], rows[("*", "boekstart")]["take_up"]) == (15, round(3 / 11, 4))
    assert rows[("*", "*")]["viewers"] == 17
    assert ("haarlem", "klik-en-tik") not in rows
