"""What analytics reads of a family from identity's events (pure): guardian links, the birth year of members
signed up under 18, and the merges and erasures among them in order; identity publishes a year only for youth."""

from __future__ import annotations

from datetime import UTC, date, datetime

from services.analytics.family import BirthYear, GuardianLink, family_facts, member_facts
from services.identity.domain import youth_birth_year
from shared.events import CloudEvent
from shared.events.members import GuardianSet, MemberErased, MemberMerged, MemberSignedUp

AT = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def event(data: object, subject: str) -> CloudEvent:
    return CloudEvent.create(data, subject=subject, source="/identity", library="oba", channel="offline",  # type: ignore[arg-type]
                             platform="desk", time=AT)  # fmt: skip


def test_links_birth_years_merges_and_erasures_are_read_in_order() -> None:
    facts = family_facts(
        member_facts(
            [
                event(GuardianSet(guardian_id="parent"), "baby"),
                event(
                    MemberSignedUp(age_band="0-3", home_library="oba", postcode_area="1034", birth_year=2025), "baby"
                ),
                event(MemberSignedUp(age_band="18-64", home_library="oba", postcode_area="1034"), "parent"),
                event(MemberMerged(survivor_id="parent"), "parent-twin"),
                event(MemberErased(), "baby"),
                event(MemberSignedUp(age_band="0-3", home_library="oba", postcode_area="1034"), "unknown-year"),
            ]
        )
    )
    assert facts.links == [GuardianLink("baby", "parent", round(AT.timestamp() * 1000))]
    assert facts.births == [BirthYear("baby", 2025)]  # the adult has none, nor a sign-up from before
    assert facts.changes == [("member.merged.v1", "parent-twin", "parent"), ("member.erased.v1", "baby", None)]


def test_identity_publishes_a_birth_year_for_members_under_18_only() -> None:
    today = date(2026, 12, 6)
    assert youth_birth_year(date(2023, 5, 1), today) == 2023
    assert youth_birth_year(date(2008, 12, 7), today) == 2008  # 17 until tomorrow
    assert youth_birth_year(date(2008, 12, 6), today) is None  # 18 today
