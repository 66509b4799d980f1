"""The catalogue's operations: canonical propositions, library organisations and offerings (the formula model).

Each change is published on the compacted catalogue topic and then stored, while the entity is held
(`PropositionsStore.writing`), so that the latest record of each key and the stored state agree. A change that
changes nothing publishes nothing: loading the seed twice leaves the topic as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from services.propositions import domain
from services.propositions.domain import Library, Offering, OfferingQuery, Proposition, PropositionQuery, Refusal
from services.propositions.store import Busy, CatalogKind, PropositionsStore
from shared.audit import AdminAudit
from shared.auth import Principal, forbid_other_library
from shared.events import CloudEvent, EventData, FieldError
from shared.events.admin import AdminAction
from shared.events.propositions import (
    LibraryChanged,
    OfferingChanged,
    PropositionPublished,
    PropositionRetired,
    PropositionState,
)
from shared.events.types import Channel
from shared.idempotency import Ids
from shared.kafka import EventPublisher
from shared.problems import Problem, not_found

SOURCE = "/propositions/catalog"


@dataclass(frozen=True)
class Change:
    """What a catalogue write did: the event it published, or None when the entity was like that already."""

    subject: str
    event_id: str | None

    @property
    def status(self) -> int:
        return 202 if self.event_id is not None else 200

    def reply(self, **extra: object) -> tuple[int, dict[str, object]]:
        return self.status, {**extra, "event_id": self.event_id, "changed": self.event_id is not None}


@dataclass(frozen=True)
class OfferingDetail:
    """An offering with the library that offers it and the proposition it offers (as they stand now)."""

    offering: Offering
    library: Library | None
    proposition: Proposition | None


def conflict(detail: str) -> Problem:
    return Problem(409, "Conflict", detail)


def unprocessable(refusals: Sequence[Refusal], prefix: str = "body.") -> Problem:
    errors = [FieldError(prefix + r.field, r.message) for r in refusals]
    return Problem(422, "Unprocessable Content", "; ".join(f"{e.field}: {e.message}" for e in errors), errors=errors)


@contextlib.asynccontextmanager
async def holding(store: PropositionsStore, subject: str) -> AsyncIterator[None]:
    try:
        async with store.writing(subject):
            yield
    except Busy:
        raise Problem(
            409, "Conflict", "another request is changing this entry; retry", headers={"Retry-After": "1"}
        ) from None


class Catalogue:
    def __init__(self, store: PropositionsStore, publisher: EventPublisher) -> None:
        self._store = store
        self._publisher = publisher
        self._audit = AdminAudit(publisher, "propositions")

    # ---------------------------------------------------------------------------------------------- reads

    async def propositions(self) -> dict[str, Proposition]:
        found = domain.entities(await self._store.catalog("propositions"), Proposition)
        return {p.slug: p for p in found}

    async def proposition(self, slug: str) -> Proposition:
        event = await self._store.catalog_entry("propositions", slug)
        if event is None:
            raise not_found("proposition")
        return domain.entities([event], Proposition)[0]

    async def find_propositions(self, query: PropositionQuery) -> list[Proposition]:
        found = [p for p in (await self.propositions()).values() if domain.proposition_matches(p, query)]
        return sorted(found, key=lambda p: p.slug)

    async def libraries(self) -> dict[str, Library]:
        found = domain.entities(await self._store.catalog("libraries"), Library)
        return {library.code: library for library in found}

    async def library(self, code: str) -> Library:
        event = await self._store.catalog_entry("libraries", code)
        if event is None:
            raise not_found("library")
        return domain.entities([event], Library)[0]

    async def offering(self, offering_id: str) -> Offering:
        event = await self._store.catalog_entry("offerings", offering_id)
        if event is None:
            raise not_found("offering")
        return domain.entities([event], Offering)[0]

    async def offerings(self) -> list[Offering]:
        return domain.entities(await self._store.catalog("offerings"), Offering)

    async def offering_detail(self, offering_id: str) -> OfferingDetail:
        offering = await self.offering(offering_id)
        libraries, propositions = await self.libraries(), await self.propositions()
        return OfferingDetail(
            offering, libraries.get(offering.data.library), propositions.get(offering.data.proposition)
        )

    async def find_offerings(self, query: OfferingQuery) -> list[OfferingDetail]:
        """The offerings a query asks for, by id, each with its library and proposition."""
        propositions, libraries = await self.propositions(), await self.libraries()
        found = domain.find_offerings(await self.offerings(), propositions, libraries.values(), query)
        return [OfferingDetail(o, libraries.get(o.data.library), propositions.get(o.data.proposition)) for o in found]

    # --------------------------------------------------------------------------------------- propositions

    async def put_proposition(self, state: PropositionState, caller: Principal, ids: Ids) -> Change:
        """Add or change a canonical proposition (a retired one is published again)."""
        # The canonical catalogue belongs to the whole network: a library's key cannot change it.
        forbid_other_library(caller, None)
        data = PropositionPublished(
            **state.model_dump(exclude={"target_groups"}),
            target_groups=domain.normalise_target_groups(state.target_groups),
        )
        async with holding(self._store, data.slug):
            current = await self._store.catalog_entry("propositions", data.slug)
            return await self._publish("propositions", data.slug, data.slug, current, data, ids)

    async def retire_proposition(self, slug: str, caller: Principal, ids: Ids) -> Change:
        forbid_other_library(caller, None)
        async with holding(self._store, slug):
            current = await self._store.catalog_entry("propositions", slug)
            if current is None:
                raise not_found("proposition")
            if current.type == PropositionRetired.event_type:
                raise conflict(f"{slug} is retired already")
            retired = PropositionRetired.model_validate(current.data)
            return await self._publish("propositions", slug, slug, current, retired, ids)

    # ------------------------------------------------------------------------------------------ libraries

    async def put_library(self, data: LibraryChanged, caller: Principal, ids: Ids) -> Change:
        """Add or change a library organisation. One library serves a postcode area: an area another library serves
        already is refused (409), so that a query by postcode area has one answer."""
        forbid_other_library(caller, data.library)
        data = data.model_copy(update={"postcode_areas": domain.normalise_areas(data.postcode_areas)})
        # Every library change is held under one lock, as the area check reads all the others. Its name has a
        # colon, so it is never the lock of a proposition, offering or activity.
        async with holding(self._store, "library:*"):
            libraries = (await self.libraries()).values()
            conflicts = domain.area_conflicts(data.library, data.postcode_areas, libraries)
            if conflicts:
                raise conflict(
                    "postcode areas served by another library already: "
                    + "; ".join(f"{', '.join(areas)} by {other}" for other, areas in sorted(conflicts.items()))
                )
            kept = {b.code for b in data.branches}
            in_use = sorted(
                f"{b} (offering {o.id})"
                for o in await self.offerings()
                if o.data.library == data.library and o.data.active
                for b in o.data.branches
                if b not in kept
            )
            if in_use:
                raise conflict(f"branches still named by an offering: {', '.join(in_use)}")
            current = await self._store.catalog_entry("libraries", data.library)
            subject = domain.library_subject(data.library)
            return await self._publish("libraries", data.library, subject, current, data, ids, library=data.library,
                                       audit=("library.put", caller))  # fmt: skip

    async def retire_library(self, code: str, caller: Principal, ids: Ids) -> Change:
        """Retire a library (made by mistake, or merged into another): its record stays, marked retired (module
        `shared.libraries` says what that means); putting the library again restores it."""
        forbid_other_library(caller, None)  # a library does not retire itself: the network does
        async with holding(self._store, "library:*"):
            current = await self._store.catalog_entry("libraries", code)
            if current is None:
                raise not_found("library")
            if current.data.get("retired"):
                raise conflict(f"{code} is retired already")
            retired = LibraryChanged.model_validate({**current.data, "retired": True})
            subject = domain.library_subject(code)
            return await self._publish("libraries", code, subject, current, retired, ids, library=code,
                                       audit=("library.retire", caller))  # fmt: skip

    # ------------------------------------------------------------------------------------------ offerings

    async def put_offering(
        self,
        offering_id: str,
        *,
        local_name: str | None,
        branches: Sequence[str],
        channels: Sequence[Channel],
        url: str | None,
        caller: Principal,
        ids: Ids,
    ) -> Change:
        """A library offers a proposition (or changes how): local name, branches, channels."""
        library_code, slug = domain.split_offering_id(offering_id)
        forbid_other_library(caller, library_code)
        library = await self.library(library_code)
        proposition = await self.proposition(slug)
        if proposition.retired:
            raise conflict(f"{slug} is retired: it cannot be offered")
        if library.retired:
            raise conflict(f"{library_code} is retired: it offers nothing (put the library again to restore it)")
        branches, channels = domain.dedupe(branches), sorted(set(channels))
        refusals = domain.offering_refusals(proposition, library, branches, channels)
        if refusals:
            raise unprocessable(refusals)
        data = OfferingChanged(
            offering_id=offering_id,
            library=library_code,
            proposition=slug,
            local_name=local_name,
            branches=branches,
            channels=channels,
            url=url,
            active=True,
        )
        async with holding(self._store, offering_id):
            current = await self._store.catalog_entry("offerings", offering_id)
            return await self._publish("offerings", offering_id, offering_id, current, data, ids, library=library_code)

    async def withdraw_offering(self, offering_id: str, caller: Principal, ids: Ids) -> Change:
        library_code, _ = domain.split_offering_id(offering_id)
        forbid_other_library(caller, library_code)
        async with holding(self._store, offering_id):
            current = await self._store.catalog_entry("offerings", offering_id)
            if current is None:
                raise not_found("offering")
            withdrawn = OfferingChanged.model_validate({**current.data, "active": False})
            if not current.data.get("active", True):
                raise conflict(f"{offering_id} is withdrawn already")
            return await self._publish(
                "offerings", offering_id, offering_id, current, withdrawn, ids, library=library_code
            )

    # --------------------------------------------------------------------------------------------- common

    async def _publish(
        self,
        kind: CatalogKind,
        key: str,
        subject: str,
        current: CloudEvent | None,
        data: EventData,
        ids: Ids,
        *,
        library: str | None = None,
        audit: tuple[AdminAction, Principal] | None = None,
    ) -> Change:
        """Publish the entity's new state, then store it; nothing when it is in that state already. An admin write
        (`audit`: what and who) is recorded on the audit topic first (shared.audit)."""
        if current is not None and current.type == data.event_type and current.data == data.model_dump(mode="json"):
            return Change(subject, None)
        if audit is not None:
            await self._audit.record(audit[0], subject, audit[1], ids, library=library)
        event = CloudEvent.create(data, subject=subject, source=SOURCE, library=library, id=ids.new("event"))
        await self._publisher.publish(event)
        await self._store.put_catalog_entry(kind, key, event)
        return Change(subject, event.id)
