"""A family at the door: one request signs up children with their guardian, at a partner (consultatiebureau,
kinderopvang, school), a desk or online.

The guardian is a member already or is signed up in the same request. A child has no contact details of their own,
so a child and their guardian are never suspected duplicates; siblings share the guardian. Children under the
consent age (16, the Dutch GDPR age) only: their messages go to the guardian, with the guardian's consent and in
the guardian's language. From 16 a member manages their own consent and signs up themselves.

Published in two rounds of acks, under ids derived from the Idempotency-Key: first the consents the guardian gives
and a new guardian's signed_up, then per child `guardian_set` and `signed_up` (on the child's key, so one
partition keeps their order): whoever answers the child's signed_up (the welcome) knows the guardian and their
consent already.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from services.identity.members import Admission, Members, Person
from services.identity.records import MemberRecord
from services.identity.store import MemberStore
from services.identity.touches import SOURCE, Touch, member_event
from shared.auth import Principal, forbid_other_library
from shared.events import CloudEvent, FieldError
from shared.events.members import ConsentChanged, GuardianSet
from shared.events.types import Language, Medium, Purpose
from shared.idempotency import Ids
from shared.kafka import EventPublisher
from shared.libraries import LibraryDirectory
from shared.problems import Problem


@dataclass(frozen=True)
class Family:
    """Who comes to the door: an existing guardian (by id) or a new one, the children, the consents the guardian
    gives for them."""

    guardian_id: str | None
    guardian: Person | None
    language: Language
    children: Sequence[Person]
    consents: Sequence[tuple[Medium, Purpose]]


@dataclass(frozen=True)
class SignedUpFamily:
    guardian_id: str
    children: list[str]
    event_ids: list[str]


def unprocessable(field: str, message: str) -> Problem:
    return Problem(422, "Unprocessable Content", f"{field}: {message}", errors=[FieldError(field, message)])


class Families:
    def __init__(
        self, members: Members, store: MemberStore, publisher: EventPublisher, libraries: LibraryDirectory
    ) -> None:
        self._members = members
        self._store = store
        self._publisher = publisher
        self._libraries = libraries

    async def sign_up(
        self,
        family: Family,
        touch: Touch,
        *,
        source: str | None,
        proposition: str | None,
        caller: Principal,
        ids: Ids,
    ) -> SignedUpFamily:
        forbid_other_library(caller, touch.library)
        await self._libraries.require({"body.home_library": touch.library})
        for index, child in enumerate(family.children):
            if not self._members.minor(child.birth_date):
                raise unprocessable(
                    f"body.children.{index}.birth_date",
                    "from 16 a child manages their own consent: they sign up themselves",
                )
        admissions: list[Admission] = []
        if family.guardian_id is not None:
            guardian_id, guardian = await self._members.member(family.guardian_id, caller)
            if not self._members.adult(guardian.birth_date):
                raise unprocessable("body.guardian_id", "a guardian is an adult (18 or older)")
        else:
            assert family.guardian is not None
            if not self._members.adult(family.guardian.birth_date):
                raise unprocessable("body.guardian.birth_date", "a guardian is an adult (18 or older)")
            guardian_id = ids.new("member")
            guardian = self._members.new_record(family.guardian, touch, source, family.language)
            admissions.append(
                Admission(
                    guardian_id,
                    guardian,
                    [self._members.signed_up(guardian_id, guardian, touch, None, ids.new("event"))],
                )
            )
        consented = Touch(touch.library, touch.platform, touch.time, f"{SOURCE}/consents")
        consents = [
            member_event(ConsentChanged(medium=m, purpose=p, granted=True), guardian_id, consented, ids.new("event"))
            for m, p in dict.fromkeys(family.consents)
        ]
        children: list[str] = []
        born: list[Admission] = []
        for given in family.children:
            child = given if given.postcode else replace(given, postcode=guardian.postcode)
            child_id = ids.new("member")
            record = self._members.new_record(child, touch, source, guardian.language, guardian_id=guardian_id)
            born.append(Admission(child_id, record, self._child_events(child_id, record, touch, proposition, ids)))
            children.append(child_id)
        # The guardian (and their consents) acknowledged before the children are published: a consumer meets the
        # guardian's consent no later than the children's sign-ups, though they are on other partitions. A retry
        # after the children's publish failed publishes the guardian's events again under the same ids.
        if admissions or consents:
            await self._members.admit(admissions, touch, first=consents)
        for medium, purpose in dict.fromkeys(family.consents):
            await self._store.set_consent(guardian_id, medium, purpose, True)
        await self._members.admit(born, touch)
        published = [e.id for e in consents] + [e.id for a in (*admissions, *born) for e in a.events]
        return SignedUpFamily(guardian_id, children, published)

    def _child_events(
        self, child_id: str, record: MemberRecord, touch: Touch, proposition: str | None, ids: Ids
    ) -> list[CloudEvent]:
        assert record.guardian_id is not None
        guardian_touch = Touch(touch.library, touch.platform, touch.time, f"{SOURCE}/guardians")
        guardian_set = member_event(
            GuardianSet(guardian_id=record.guardian_id), child_id, guardian_touch, ids.new("event")
        )
        return [guardian_set, self._members.signed_up(child_id, record, touch, proposition, ids.new("event"))]
