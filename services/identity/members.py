"""Identity's operations: each checks, stores and publishes. REST endpoints and CloudEvents ingest both call them.

Every operation returns only after Kafka acknowledged its events. Where state is stored before publishing and the
publish fails, the state is put back, so nothing is half done; ids come from `Ids`, so a retried request with the
same Idempotency-Key publishes the same event ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from services.identity import domain
from services.identity.settings import IdentitySettings
from services.identity.store import MemberStore
from shared.auth import Principal, forbid_other_library
from shared.events import CloudEvent, EventData, deterministic_id
from shared.events.members import (
    AccountLinked,
    AccountUnlinked,
    CardActivated,
    ChannelSwitched,
    ConsentChanged,
    DuplicateSuspected,
    GuardianSet,
    LoginFailed,
    LoginFailure,
    LoginSucceeded,
    MemberErased,
    MemberMerged,
    MemberSignedUp,
    RegistrationStarted,
)
from shared.events.types import Language, Medium, Purpose
from shared.idempotency import Ids
from shared.kafka import EventPublisher
from shared.problems import Problem, not_found
from shared.telemetry import attribute_member

SOURCE = "/identity"


@dataclass(frozen=True)
class Person:
    """What a sign-up tells identity about a person: stays here."""

    name: str
    email: str
    phone: str | None
    birth_date: date
    postcode: str


@dataclass(frozen=True)
class Touch:
    """Where and when a member did something."""

    library: str
    platform: str
    time: datetime
    source: str

    @property
    def channel(self) -> str:
        return domain.channel_of(self.platform)


def conflict(detail: str) -> Problem:
    return Problem(409, "Conflict", detail)


def member_event(data: EventData, member_id: str, touch: Touch, event_id: str) -> CloudEvent:
    return CloudEvent.create(
        data,
        id=event_id,
        subject=member_id,
        source=touch.source,
        library=touch.library,
        channel=domain.channel_of(touch.platform),
        platform=touch.platform,
        time=touch.time,
    )


def channel_switched(previous: tuple[str, str] | None, member_id: str, touch: Touch, ids: Ids) -> CloudEvent | None:
    """The channel_switched of a touch on another channel or platform than the member's `previous` one."""
    switch = domain.channel_switch(previous, (touch.channel, touch.platform))
    if switch is None:
        return None
    (from_channel, from_platform), (to_channel, to_platform) = switch
    data = ChannelSwitched(
        from_channel=from_channel, from_platform=from_platform, to_channel=to_channel, to_platform=to_platform
    )
    return member_event(data, member_id, touch, ids.new("channel_switched"))


class Members:
    def __init__(self, store: MemberStore, publisher: EventPublisher, settings: IdentitySettings) -> None:
        self._store = store
        self._publisher = publisher
        self._settings = settings
        self._hmac_key = settings.identity_hmac_key.get_secret_value().encode()

    # --------------------------------------------------------------------------------------- lookups

    async def member(self, member_id: str, caller: Principal) -> tuple[str, dict[str, str]]:
        """The member (after following merges) and their record; 404 when unknown or erased, 403 out of scope."""
        attribute_member(member_id)
        resolved = await self._store.resolve(member_id)
        record = await self._store.get(resolved)
        if record is None:
            raise not_found("member")
        forbid_other_library(caller, record["home_library"])
        return resolved, record

    def _dup_hashes(self, record: dict[str, str]) -> list[str]:
        hashes = [domain.keyed_hash(self._hmac_key, "email", record["email"])]
        if record.get("phone"):
            hashes.append(domain.keyed_hash(self._hmac_key, "phone", record["phone"]))
        return hashes

    def _account_index(self, platform: str, external_id: str) -> str:
        return domain.keyed_hash(self._hmac_key, f"account:{platform}", external_id.strip())

    def _minor(self, record: dict[str, str]) -> bool:
        born = date.fromisoformat(record["birth_date"])
        return domain.is_minor(born, datetime.now(UTC).date(), self._settings.identity_minor_below_age)

    @staticmethod
    def _touch_events(member_id: str, record: dict[str, str], touch: Touch, ids: Ids) -> list[CloudEvent]:
        """A channel_switched when this touch is on another channel or platform than the member's last one.

        The touch is stored (`_touched`) only once Kafka acknowledged: a retry after a 503 finds the same last touch
        and publishes the same switch again."""
        previous = (record["last_channel"], record["last_platform"]) if record.get("last_platform") else None
        switched = channel_switched(previous, member_id, touch, ids)
        return [switched] if switched is not None else []

    @staticmethod
    def _touched(touch: Touch) -> dict[str, str]:
        return {"last_channel": touch.channel, "last_platform": touch.platform}

    _event = staticmethod(member_event)

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
        registration_id = registration_id or ids.new("member")
        attribute_member(registration_id)
        if await self._store.get(registration_id) is not None:
            raise conflict("a member with this id exists already")
        event = self._event(
            RegistrationStarted(home_library=touch.library, source=source),
            registration_id,
            touch,
            event_id or ids.new("event"),
        )
        await self._store.start_registration(
            registration_id, {"home_library": touch.library, "started_at": touch.time.isoformat()}
        )
        await self._publisher.publish(event)
        return registration_id

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
        if registration_id is not None:
            registration = await self._store.registration(registration_id)
            if registration is None or await self._store.get(registration_id) is not None:
                raise Problem(404, "Not Found", "registration does not exist or was completed already")
            member_id = registration_id
        else:
            member_id = ids.new("member")
        attribute_member(member_id)
        today = touch.time.astimezone(UTC).date()
        record = {
            "name": person.name,
            "email": domain.normalise_email(person.email),
            "phone": domain.normalise_phone(person.phone) if person.phone else "",
            "birth_date": person.birth_date.isoformat(),
            "postcode": person.postcode,
            "home_library": touch.library,
            "signed_up_at": touch.time.isoformat(),
            "channel": touch.channel,
            "platform": touch.platform,
            "source": source or "",
            "language": language,
            "last_channel": touch.channel,
            "last_platform": touch.platform,
        }
        signed_up = self._event(
            MemberSignedUp(
                age_band=domain.member_age_band(person.birth_date, today),
                home_library=touch.library,
                postcode_area=domain.postcode_area(person.postcode),
                source=source,
                proposition=proposition,
                language=language,
            ),
            member_id,
            touch,
            ids.new("event"),
        )
        hashes = self._dup_hashes(record)
        # Stored (with its duplicate index) before looking for duplicates: of two simultaneous sign-ups sharing an
        # address, each sees the other, and the one that queues their suspicion first publishes it.
        await self._store.create(member_id, record, hashes)
        queued: list[str] = []
        try:
            suspicions = await self._duplicates(member_id, record, hashes, touch, queued)
            await self._publisher.publish_many([signed_up, *suspicions])
        except Exception:
            # Not acknowledged means not signed up: leave no personal data behind for a member nobody knows.
            await self._store.erase(member_id, hashes, None)
            await self._store.drop_suspicions(queued)
            raise
        return member_id, signed_up.id

    async def _duplicates(
        self, member_id: str, record: dict[str, str], hashes: list[str], touch: Touch, queued: list[str]
    ) -> list[CloudEvent]:
        """Members sharing the e-mail address or phone number, queued for confirmation before any merge."""
        matches: dict[str, list[str]] = {}
        for kind, digest in zip(("email", "phone"), hashes, strict=False):
            for other in await self._store.members_with(digest):
                if other != member_id:
                    matches.setdefault(other, []).append(kind)
        events = []
        for other, matched_on in sorted(matches.items()):
            other_record = await self._store.get(other)
            if other_record is None:
                continue
            suspicion_id = deterministic_id("duplicate", *sorted((member_id, other)))
            added = await self._store.add_suspicion(
                suspicion_id,
                {
                    "id": suspicion_id,
                    "member_id": member_id,
                    "other_member_id": other,
                    "library": record["home_library"],
                    "other_library": other_record["home_library"],
                    "matched_on": ",".join(matched_on),
                    "status": "pending",
                    "created_at": touch.time.isoformat(),
                },
            )
            if added:
                queued.append(suspicion_id)
            elif (await self._store.suspicion(suspicion_id) or {}).get("member_id") != member_id:
                continue  # the other member's simultaneous sign-up queued it and publishes it
            # else: queued by this very sign-up before a crash; published again under the same event id
            events.append(
                self._event(
                    DuplicateSuspected(
                        other_member_id=other,
                        other_library=other_record["home_library"],
                        matched_on=matched_on,
                    ),
                    member_id,
                    touch,
                    deterministic_id("duplicate_suspected", suspicion_id),
                )
            )
        return events

    async def activate_card(
        self, member_id: str, touch: Touch, branch: str | None, caller: Principal, ids: Ids, event_id: str | None = None
    ) -> tuple[str, str]:
        forbid_other_library(caller, touch.library)
        attribute_member(member_id)
        resolved = await self._store.resolve(member_id)
        record = await self._store.get(resolved)
        if record is None:
            raise not_found("member")
        event = self._event(CardActivated(branch=branch), resolved, touch, event_id or ids.new("event"))
        switched = self._touch_events(resolved, record, touch, ids)
        await self._publisher.publish_many([*switched, event])
        await self._store.update(resolved, {**self._touched(touch), "card_activated_at": touch.time.isoformat()})
        return resolved, event.id

    # -------------------------------------------------------------------------------------- accounts

    async def link_account(
        self, member_id: str, platform: str, external_id: str, caller: Principal, ids: Ids
    ) -> tuple[str, str]:
        resolved, record = await self.member(member_id, caller)
        index = self._account_index(platform, external_id)
        linked = (await self._store.accounts(resolved)).get(platform)
        if linked is not None and linked["index"] != index:
            raise conflict(f"the member already has another account on {platform} linked; unlink it first")
        owner = await self._store.claim_account(index, resolved)
        if owner != resolved:
            raise conflict(f"this account on {platform} belongs to another member")
        if linked is not None:
            return resolved, linked["ref"]  # linked already: nothing new to say
        ref = ids.new("account")
        touch = Touch(record["home_library"], platform, datetime.now(UTC), f"{SOURCE}/accounts")
        event = self._event(
            AccountLinked(account_platform=platform, account_ref=ref), resolved, touch, ids.new("event")
        )
        await self._store.set_account(resolved, platform, ref, index)
        try:
            await self._publisher.publish(event)
        except Exception:
            await self._store.remove_account(resolved, platform)
            await self._store.release_account(index, resolved)
            raise
        return resolved, ref

    async def unlink_account(self, member_id: str, platform: str, caller: Principal, ids: Ids) -> str:
        resolved, record = await self.member(member_id, caller)
        linked = (await self._store.accounts(resolved)).get(platform)
        if linked is None:
            raise Problem(404, "Not Found", f"the member has no account on {platform} linked")
        touch = Touch(record["home_library"], platform, datetime.now(UTC), f"{SOURCE}/accounts")
        event = self._event(
            AccountUnlinked(account_platform=platform, account_ref=linked["ref"]), resolved, touch, ids.new("event")
        )
        await self._publisher.publish(event)
        await self._store.remove_account(resolved, platform)
        await self._store.release_account(linked["index"], resolved)
        return event.id

    async def record_login(
        self,
        platform: str,
        external_id: str,
        outcome: str,
        reason: LoginFailure | None,
        at: datetime,
        caller: Principal,
        ids: Ids,
    ) -> tuple[str, str]:
        """A platform's login outcome by external account: login_succeeded or login_failed, and a channel switch."""
        owner = await self._store.account_owner(self._account_index(platform, external_id))
        if owner is None:
            raise Problem(404, "Not Found", f"no member has this account on {platform} linked")
        return await self.login(owner, platform, outcome, reason, at, caller, ids)

    async def login(
        self,
        member_id: str,
        platform: str,
        outcome: str,
        reason: LoginFailure | None,
        at: datetime,
        caller: Principal,
        ids: Ids,
        event_id: str | None = None,
        source: str | None = None,
    ) -> tuple[str, str]:
        resolved, record = await self.member(member_id, caller)
        touch = Touch(record["home_library"], platform, at, source or f"/platforms/{platform}")
        data = (
            LoginSucceeded(login_platform=platform)
            if outcome == "succeeded"
            else LoginFailed(login_platform=platform, reason=reason or "other")
        )
        event = self._event(data, resolved, touch, event_id or ids.new("event"))
        # A failed login is a touch too: the first attempt on a new platform is where a switch starts.
        switched = self._touch_events(resolved, record, touch, ids)
        await self._publisher.publish_many([*switched, event])
        await self._store.update(resolved, self._touched(touch))
        return resolved, event.id

    # ------------------------------------------------------------------------------ consent, guardian

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
            record["home_library"],
            record.get("last_platform") or "website",
            at or datetime.now(UTC),
            f"{SOURCE}/consents",
        )
        event = self._event(
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
        if not self._minor(record):
            raise Problem(422, "Unprocessable Content", "only a minor has a guardian", errors=[])
        guardian = await self._store.resolve(guardian_id)
        guardian_record = await self._store.get(guardian)
        if guardian_record is None:
            raise Problem(404, "Not Found", "the guardian is not a member")
        if guardian == resolved or self._minor(guardian_record):
            raise Problem(422, "Unprocessable Content", "a guardian is an adult other than the member")
        touch = Touch(record["home_library"], "desk", datetime.now(UTC), f"{SOURCE}/guardians")
        event = self._event(GuardianSet(guardian_id=guardian), resolved, touch, ids.new("event"))
        await self._publisher.publish(event)
        await self._store.set_guardian(resolved, guardian, record.get("guardian_id") or None)
        return event.id

    # ------------------------------------------------------------------------------ duplicates, merge

    async def suspicions(self, caller: Principal) -> list[dict[str, str]]:
        return [
            s
            for s in await self._store.pending_suspicions()
            if caller.covers(s["library"]) or caller.covers(s["other_library"])
        ]

    async def _suspicion(self, suspicion_id: str, caller: Principal) -> dict[str, str]:
        suspicion = await self._store.suspicion(suspicion_id)
        if suspicion is None:
            raise not_found("duplicate suspicion")
        if not (caller.covers(suspicion["library"]) or caller.covers(suspicion["other_library"])):
            raise Problem(403, "Forbidden", f"this key is scoped to library {caller.library!r}")
        if suspicion["status"] != "pending":
            raise conflict(f"this suspicion is {suspicion['status']} already")
        return suspicion

    async def dismiss(self, suspicion_id: str, caller: Principal) -> None:
        await self._suspicion(suspicion_id, caller)
        await self._store.close_suspicion(suspicion_id, "dismissed")

    async def confirm(self, suspicion_id: str, survivor_id: str, confirmed_by: str, caller: Principal, ids: Ids) -> str:
        """The duplicate is confirmed (at the desk or by the member): merge the other record into the survivor."""
        suspicion = await self._suspicion(suspicion_id, caller)
        pair = {suspicion["member_id"], suspicion["other_member_id"]}
        if survivor_id not in pair:
            raise Problem(422, "Unprocessable Content", "the survivor must be one of the two suspected members")
        merged_id = (pair - {survivor_id}).pop()
        merged, survivor = await self._store.get(merged_id), await self._store.get(survivor_id)
        if merged is None or survivor is None:
            raise not_found("member")
        refusal = domain.merge_refusal(
            domain.MergeCandidate(merged_id, date.fromisoformat(merged["birth_date"]), merged.get("guardian_id")),
            domain.MergeCandidate(survivor_id, date.fromisoformat(survivor["birth_date"]), survivor.get("guardian_id")),
            datetime.now(UTC).date(),
            self._settings.identity_minor_below_age,
        )
        if refusal:
            await self._store.close_suspicion(suspicion_id, "refused")
            raise conflict(refusal)
        touch = Touch(
            merged["home_library"],
            "desk" if confirmed_by == "desk" else "website",
            datetime.now(UTC),
            f"{SOURCE}/duplicates",
        )
        event = self._event(MemberMerged(survivor_id=survivor_id), merged_id, touch, ids.new("event"))
        await self._publisher.publish(event)
        await self._store.merge(merged_id, survivor_id, self._dup_hashes(merged))
        return merged_id

    # ------------------------------------------------------------------------------------------ erasure

    async def erase(self, member_id: str, caller: Principal, ids: Ids) -> tuple[str, str]:
        """Remove the person from identity; publish `erased` so every service deletes the member's state."""
        resolved, record = await self.member(member_id, caller)
        touch = Touch(record["home_library"], "desk", datetime.now(UTC), f"{SOURCE}/erasure")
        event = self._event(MemberErased(), resolved, touch, ids.new("event"))
        await self._publisher.publish(event)
        await self._store.erase(resolved, self._dup_hashes(record), record.get("guardian_id") or None)
        return resolved, event.id

    # ---------------------------------------------------------------------------------------- contact

    async def contact(self, member_id: str, medium: Medium, caller: Principal) -> dict[str, str]:
        """Where to send a message now: the member's address, or their guardian's when they are a minor."""
        resolved, record = await self.member(member_id, caller)
        recipient, target = "member", record
        if self._minor(record):
            guardian = record.get("guardian_id")
            target_record = await self._store.get(guardian) if guardian else None
            if target_record is None:
                raise conflict("the member is a minor without a guardian: nobody to write to")
            recipient, target = "guardian", target_record
        if medium == "email":
            address = target["email"]
        elif medium == "sms":
            address = target.get("phone", "")
        elif medium == "push":
            app = (await self._store.accounts(resolved if recipient == "member" else record["guardian_id"])).get("app")
            address = app["ref"] if app else ""
        else:
            address = resolved
        if not address:
            raise conflict(f"no {medium} address for this member")
        return {
            "member_id": resolved,
            "medium": medium,
            "recipient": recipient,
            "address": address,
            "name": target["name"],
        }
