"""Identity's operations: each checks, stores and publishes. REST endpoints and CloudEvents ingest both call them.

Every operation returns only after Kafka acknowledged its events. Where state is stored before publishing and the
publish fails, the state is put back, so nothing is half done; ids come from `Ids`, so a retried request with the
same Idempotency-Key publishes the same event ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from services.identity import domain
from services.identity.duplicates import Duplicates
from services.identity.records import MemberRecord, Recipient, Registration
from services.identity.settings import IdentitySettings
from services.identity.store import MemberStore
from services.identity.touches import SOURCE, Touch, conflict, member_event, switch_events
from shared.auth import Principal, forbid_other_library
from shared.events import CloudEvent
from shared.events.members import (
    CardActivated,
    ConsentChanged,
    GuardianSet,
    MemberErased,
    MemberSignedUp,
    Referred,
    RegistrationStarted,
)
from shared.events.types import Language, Medium, Purpose
from shared.idempotency import Ids
from shared.kafka import EventPublisher
from shared.libraries import LibraryDirectory
from shared.problems import Problem, not_found
from shared.telemetry import attribute_member


@dataclass(frozen=True)
class Person:
    """What a sign-up tells identity about a person: stays here. A child signed up with a family has no e-mail."""

    name: str
    email: str | None
    phone: str | None
    birth_date: date
    postcode: str


@dataclass(frozen=True)
class Admission:
    """A new member to store, with the events that say so (signed_up among them), published in this order."""

    member_id: str
    record: MemberRecord
    events: list[CloudEvent]


class Members:
    def __init__(
        self, store: MemberStore, publisher: EventPublisher, settings: IdentitySettings, libraries: LibraryDirectory
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._settings = settings
        self._libraries = libraries
        self._hmac_key = settings.hmac_key()
        self.duplicates = Duplicates(store, publisher, settings)

    # --------------------------------------------------------------------------------------- lookups

    async def member(self, member_id: str, caller: Principal) -> tuple[str, MemberRecord]:
        """The member (after following merges) and their record; 404 when unknown or erased, 403 out of scope."""
        attribute_member(member_id)
        resolved = await self._store.resolve(member_id)
        record = await self._store.get(resolved)
        if record is None:
            raise not_found("member")
        forbid_other_library(caller, record.home_library)
        return resolved, record

    async def find(self, query: str, caller: Principal) -> list[tuple[str, MemberRecord]]:
        """Members the front office looks up by e-mail address or phone number (exact, by keyed hash) or member
        id, in the caller's library scope."""
        query = query.strip()
        kind = "email" if "@" in query else "phone" if domain.PHONE.match(query) else None
        if kind is not None:
            value = domain.normalise_email(query) if kind == "email" else domain.normalise_phone(query)
            ids = sorted(await self._store.members_with(domain.keyed_hash(self._hmac_key, kind, value)))
        else:
            ids = [await self._store.resolve(query)] if query else []
        found = []
        for member_id in ids:
            record = await self._store.get(member_id)
            if record is not None and caller.covers(record.home_library):
                found.append((member_id, record))
        return found

    def minor(self, born: date) -> bool:
        """Under the age from which a member manages their own consent (16, the Dutch GDPR age)."""
        return domain.is_minor(born, datetime.now(UTC).date(), self._settings.identity_minor_below_age)

    @staticmethod
    def adult(born: date) -> bool:
        """Of age (18): who may be a guardian."""
        return domain.is_adult(born, datetime.now(UTC).date())

    # ---------------------------------------------------------------------------------- registration

    async def start_registration(
        self,
        touch: Touch,
        source: str | None,
        caller: Principal,
        ids: Ids,
        registration_id: str | None = None,
        event_id: str | None = None,
    ) -> str:
        """A registration under a new id, or under the subject and id of a posted CloudEvent."""
        forbid_other_library(caller, touch.library)
        await self._libraries.require({"body.home_library": touch.library})
        registration_id = registration_id or ids.new("member")
        attribute_member(registration_id)
        if await self._store.get(registration_id) is not None:
            raise conflict("a member with this id exists already")
        event = member_event(
            RegistrationStarted(home_library=touch.library, source=source),
            registration_id,
            touch,
            event_id or ids.new("event"),
        )
        await self._store.start_registration(registration_id, Registration(touch.library, touch.time))
        await self._publisher.publish(event)
        return registration_id

    def new_record(
        self, person: Person, touch: Touch, source: str | None, language: Language, guardian_id: str | None = None
    ) -> MemberRecord:
        return MemberRecord(
            name=person.name,
            email=domain.normalise_email(person.email) if person.email else None,
            phone=domain.normalise_phone(person.phone) if person.phone else None,
            birth_date=person.birth_date,
            postcode=person.postcode,
            home_library=touch.library,
            signed_up_at=touch.time,
            channel=touch.channel,
            platform=touch.platform,
            source=source,
            language=language,
            last_channel=touch.channel,
            last_platform=touch.platform,
            guardian_id=guardian_id,
        )

    def signed_up(
        self, member_id: str, record: MemberRecord, touch: Touch, proposition: str | None, event_id: str
    ) -> CloudEvent:
        day = touch.time.astimezone(UTC).date()
        data = MemberSignedUp(
            age_band=domain.member_age_band(record.birth_date, day),
            home_library=record.home_library,
            postcode_area=domain.postcode_area(record.postcode),
            source=record.source,
            proposition=proposition,
            language=record.language,
            birth_year=domain.youth_birth_year(record.birth_date, day),
        )
        return member_event(data, member_id, touch, event_id)

    async def sign_up(
        self,
        person: Person,
        touch: Touch,
        *,
        source: str | None,
        proposition: str | None,
        registration_id: str | None,
        caller: Principal,
        ids: Ids,
        language: Language = "nl",
    ) -> tuple[str, str]:
        """A new member: personal data stored here, pseudonymous signed_up (and duplicate suspicions) published."""
        forbid_other_library(caller, touch.library)
        await self._libraries.require({"body.home_library": touch.library})
        if registration_id is not None:
            registration = await self._store.registration(registration_id)
            if registration is None or await self._store.get(registration_id) is not None:
                raise Problem(404, "Not Found", "registration does not exist or was completed already")
            member_id = registration_id
        else:
            member_id = ids.new("member")
        attribute_member(member_id)
        record = self.new_record(person, touch, source, language)
        signed_up = self.signed_up(member_id, record, touch, proposition, ids.new("event"))
        await self.admit([Admission(member_id, record, [signed_up])], touch)
        return member_id, signed_up.id

    async def admit(self, admissions: Sequence[Admission], touch: Touch, first: Sequence[CloudEvent] = ()) -> None:
        """Store new members, queue duplicate suspicions of those with contact details, publish `first` and their
        events. Not acknowledged means not signed up: nothing of them is left behind."""
        created: list[tuple[str, list[str], str | None]] = []
        queued: list[str] = []
        try:
            events: list[CloudEvent] = []
            for admission in admissions:
                member_id, record = admission.member_id, admission.record
                hashes = self.duplicates.hashes(record)
                # Stored (with its duplicate index) before looking for duplicates: of two simultaneous sign-ups
                # sharing an address, each sees the other, and the one that queues their suspicion first publishes it.
                await self._store.create(member_id, record, hashes.values())
                created.append((member_id, list(hashes.values()), record.guardian_id))
                if record.guardian_id is not None:
                    await self._store.set_guardian(member_id, record.guardian_id, None)
                events.extend(admission.events)
                events.extend(await self.duplicates.found(member_id, record, hashes, touch, queued))
            await self._publisher.publish_many([*first, *events])
        except Exception:
            for member_id, digests, guardian_id in created:
                await self._store.erase(member_id, digests, guardian_id)
            await self._store.drop_suspicions(queued)
            raise

    async def activate_card(
        self, member_id: str, touch: Touch, branch: str | None, caller: Principal, ids: Ids, event_id: str | None = None
    ) -> tuple[str, str]:
        forbid_other_library(caller, touch.library)
        await self._libraries.require({"body.library": touch.library})
        attribute_member(member_id)
        resolved = await self._store.resolve(member_id)
        record = await self._store.get(resolved)
        if record is None:
            raise not_found("member")
        event = member_event(CardActivated(branch=branch), resolved, touch, event_id or ids.new("event"))
        switched = switch_events(record.last_touch, resolved, touch, ids)
        await self._publisher.publish_many([*switched, event])
        await self._store.touched(resolved, touch.channel, touch.platform, card_activated_at=touch.time)
        return resolved, event.id

    # ------------------------------------------------------------------------------ consent, guardian

    async def refer(
        self, member_id: str, proposition: str, library: str | None, platform: str, caller: Principal, ids: Ids
    ) -> tuple[str, str]:
        """The front office refers the member onward to a proposition, at `library` (default their own)."""
        resolved, record = await self.member(member_id, caller)
        where = library or record.home_library
        forbid_other_library(caller, where)
        await self._libraries.require({"body.library": where})
        touch = Touch(where, platform, datetime.now(UTC), f"{SOURCE}/referrals")
        event = member_event(Referred(proposition=proposition), resolved, touch, ids.new("event"))
        switched = switch_events(record.last_touch, resolved, touch, ids)
        await self._publisher.publish_many([*switched, event])
        await self._store.touched(resolved, touch.channel, touch.platform)
        return resolved, event.id

    async def change_consent(
        self,
        member_id: str,
        medium: Medium,
        purpose: Purpose,
        granted: bool,
        caller: Principal,
        ids: Ids,
        at: datetime | None = None,
        event_id: str | None = None,
    ) -> tuple[str, str]:
        resolved, record = await self.member(member_id, caller)
        touch = Touch(
            record.home_library,
            record.last_platform or "website",
            at or datetime.now(UTC),
            f"{SOURCE}/consents",
        )
        event = member_event(
            ConsentChanged(medium=medium, purpose=purpose, granted=granted),
            resolved,
            touch,
            event_id or ids.new("event"),
        )
        await self._publisher.publish(event)
        await self._store.set_consent(resolved, medium, purpose, granted)
        return resolved, event.id

    async def set_guardian(self, member_id: str, guardian_id: str, caller: Principal, ids: Ids) -> str:
        resolved, record = await self.member(member_id, caller)
        if not self.minor(record.birth_date):
            raise Problem(422, "Unprocessable Content", "only a minor (under 16) has a guardian", errors=[])
        guardian = await self._store.resolve(guardian_id)
        guardian_record = await self._store.get(guardian)
        if guardian_record is None:
            raise Problem(404, "Not Found", "the guardian is not a member")
        if guardian == resolved or not self.adult(guardian_record.birth_date):
            raise Problem(422, "Unprocessable Content", "a guardian is an adult other than the member")
        touch = Touch(record.home_library, "desk", datetime.now(UTC), f"{SOURCE}/guardians")
        event = member_event(GuardianSet(guardian_id=guardian), resolved, touch, ids.new("event"))
        await self._publisher.publish(event)
        await self._store.set_guardian(resolved, guardian, record.guardian_id)
        return event.id

    # ------------------------------------------------------------------------------------------ erasure

    async def erase(self, member_id: str, caller: Principal, ids: Ids) -> tuple[str, str]:
        """Remove the person; `erased` tells every service. For one held nothing of here: network-wide keys only."""
        attribute_member(member_id)
        resolved = await self._store.resolve(member_id)
        held = await self._store.get(resolved)
        library = held.home_library if held else None
        forbid_other_library(caller, library)
        event = CloudEvent.create(
            MemberErased(), id=ids.new("event"), subject=resolved, source=f"{SOURCE}/erasure", library=library,
            channel="offline", platform="desk", time=datetime.now(UTC),
        )  # fmt: skip
        await self._publisher.publish(event)
        await self._store.erase(resolved, self.duplicates.hashes(held).values(), held.guardian_id if held else None)
        return resolved, event.id

    # ---------------------------------------------------------------------------------------- contact

    async def contact(self, member_id: str, medium: Medium, caller: Principal) -> Recipient:
        """Where to send a message now: the member's address, or their guardian's when they are a minor."""
        resolved, record = await self.member(member_id, caller)
        recipient, target, target_id = "member", record, resolved
        if self.minor(record.birth_date):
            guardian = await self._store.get(record.guardian_id) if record.guardian_id else None
            if guardian is None or record.guardian_id is None:
                raise conflict("the member is a minor without a guardian: nobody to write to")
            recipient, target, target_id = "guardian", guardian, record.guardian_id
        if medium == "email":
            address = target.email or ""
        elif medium == "sms":
            address = target.phone or ""
        elif medium == "push":
            app = (await self._store.accounts(target_id)).get("app")
            address = app.ref if app else ""
        else:
            address = resolved
        if not address:
            raise conflict(f"no {medium} address for this member")
        return Recipient(resolved, medium, recipient, address, target.name)
