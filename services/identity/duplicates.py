"""Duplicate members: suspected on sign-up when two share an e-mail address or phone number (by keyed hash),
confirmed at the desk or by the member (the other record merges into the survivor), or dismissed.

A guardian and their ward are never suspected: a child signed up with a family has no contact details of their
own, and a guardian's match with one of their wards (a child who later got the parent's address) is skipped.
"""

from __future__ import annotations

from datetime import UTC, datetime

from services.identity import domain
from services.identity.records import MemberRecord, Suspicion
from services.identity.settings import IdentitySettings
from services.identity.store import MemberStore
from services.identity.touches import SOURCE, Touch, conflict, member_event
from shared.auth import Principal
from shared.events import CloudEvent, deterministic_id
from shared.events.members import DuplicateSuspected, MemberMerged
from shared.idempotency import Ids
from shared.kafka import EventPublisher
from shared.problems import Problem, not_found


class Duplicates:
    def __init__(self, store: MemberStore, publisher: EventPublisher, settings: IdentitySettings) -> None:
        self._store = store
        self._publisher = publisher
        self._settings = settings
        self._hmac_key = settings.hmac_key()

    def hashes(self, record: MemberRecord | None) -> dict[str, str]:
        """Keyed hashes of the member's e-mail address and phone number, by kind (none for a child without, or
        for no record)."""
        found = {}
        if record and record.email:
            found["email"] = domain.keyed_hash(self._hmac_key, "email", record.email)
        if record and record.phone:
            found["phone"] = domain.keyed_hash(self._hmac_key, "phone", record.phone)
        return found

    async def found(
        self, member_id: str, record: MemberRecord, hashes: dict[str, str], touch: Touch, queued: list[str]
    ) -> list[CloudEvent]:
        """Members sharing the e-mail address or phone number, queued for confirmation before any merge; the
        `duplicate_suspected` events to publish. Ids of suspicions queued here are added to `queued`."""
        matches: dict[str, list[str]] = {}
        for kind, digest in hashes.items():
            for other in await self._store.members_with(digest):
                if other != member_id:
                    matches.setdefault(other, []).append(kind)
        events = []
        for other, matched_on in sorted(matches.items()):
            other_record = await self._store.get(other)
            if other_record is None or other in (record.guardian_id,) or other_record.guardian_id == member_id:
                continue
            suspicion_id = deterministic_id("duplicate", *sorted((member_id, other)))
            suspicion = Suspicion(suspicion_id, member_id, other, record.home_library, other_record.home_library,
                                  tuple(matched_on), "pending", touch.time.isoformat())  # fmt: skip
            if await self._store.add_suspicion(suspicion):
                queued.append(suspicion_id)
            elif getattr(await self._store.suspicion(suspicion_id), "member_id", None) != member_id:
                continue  # the other member's simultaneous sign-up queued it and publishes it
            # else: queued by this very sign-up before a crash; published again under the same event id
            data = DuplicateSuspected(
                other_member_id=other, other_library=other_record.home_library, matched_on=matched_on
            )
            events.append(member_event(data, member_id, touch, deterministic_id("duplicate_suspected", suspicion_id)))
        return events

    async def suspicions(self, caller: Principal) -> list[Suspicion]:
        return [s for s in await self._store.pending_suspicions() if _covers(caller, s)]

    async def _suspicion(self, suspicion_id: str, caller: Principal) -> Suspicion:
        suspicion = await self._store.suspicion(suspicion_id)
        if suspicion is None:
            raise not_found("duplicate suspicion")
        if not _covers(caller, suspicion):
            raise Problem(403, "Forbidden", f"this key is scoped to library {caller.library!r}")
        if suspicion.status != "pending":
            raise conflict(f"this suspicion is {suspicion.status} already")
        return suspicion

    async def dismiss(self, suspicion_id: str, caller: Principal) -> None:
        await self._suspicion(suspicion_id, caller)
        await self._store.close_suspicion(suspicion_id, "dismissed")

    async def confirm(self, suspicion_id: str, survivor_id: str, confirmed_by: str, caller: Principal, ids: Ids) -> str:
        """The duplicate is confirmed (at the desk or by the member): merge the other record into the survivor."""
        suspicion = await self._suspicion(suspicion_id, caller)
        pair = {suspicion.member_id, suspicion.other_member_id}
        if survivor_id not in pair:
            raise Problem(422, "Unprocessable Content", "the survivor must be one of the two suspected members")
        merged_id = (pair - {survivor_id}).pop()
        merged, survivor = await self._store.get(merged_id), await self._store.get(survivor_id)
        if merged is None or survivor is None:
            raise not_found("member")
        refusal = domain.merge_refusal(
            domain.MergeCandidate(merged_id, merged.birth_date, merged.guardian_id),
            domain.MergeCandidate(survivor_id, survivor.birth_date, survivor.guardian_id),
            datetime.now(UTC).date(),
            self._settings.identity_minor_below_age,
        )
        if refusal:
            await self._store.close_suspicion(suspicion_id, "refused")
            raise conflict(refusal)
        touch = Touch(
            merged.home_library,
            "desk" if confirmed_by == "desk" else "website",
            datetime.now(UTC),
            f"{SOURCE}/duplicates",
        )
        event = member_event(MemberMerged(survivor_id=survivor_id), merged_id, touch, ids.new("event"))
        await self._publisher.publish(event)
        await self._store.merge(merged_id, survivor_id, self.hashes(merged).values())
        return merged_id


def _covers(caller: Principal, suspicion: Suspicion) -> bool:
    """Staff of either member's library see the suspicion."""
    return caller.covers(suspicion.library) or caller.covers(suspicion.other_library)
