"""identity's `POST /v1/events`: a batch of posted CloudEvents handled as one, as if one by one in order.

A batch costs a fixed number of round trips however long it is: the ids claimed (shared/ingest.py), the members'
standing read, every event handed to the producer before the acks are awaited together, the members' state
written. Deciding is pure (`plan`): it folds the batch in order over the members' standing in memory, so a login
after a card activation of the same member in one batch sees the activation's touch, as it would one by one.

State is written only after Kafka acknowledged the batch's events: a batch answered 503 changed nothing, and its
retry computes the same events under the same ids (derived from the posted ids) and publishes them again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter

from services.identity.publishable import is_publishable
from services.identity.records import MemberChange, Registration
from services.identity.store import IngestedChanges, MemberStore, Standing
from services.identity.touches import SOURCE, Touch, conflict, member_record, switch_data
from shared.auth import Principal
from shared.events import FieldError, binary_headers, kafka_value
from shared.events.client import CLIENT_TYPES, VISITOR
from shared.events.members import (
    CardActivated,
    ConsentChanged,
    LanguageChanged,
    LoginFailed,
    LoginSucceeded,
    RegistrationStarted,
)
from shared.failed_items import FailedItems
from shared.idempotency import Ids
from shared.ingest import EventClaims, Item
from shared.ingest import ingest_router as shared_ingest_router
from shared.libraries import LibraryDirectory, unknown_library
from shared.problems import Problem, not_found
from shared.publishing import Encoded, EventPublisher
from shared.topics import MEMBERS

INGESTIBLE = {
    RegistrationStarted.event_type,
    CardActivated.event_type,
    LoginSucceeded.event_type,
    LoginFailed.event_type,
    ConsentChanged.event_type,
    LanguageChanged.event_type,  # from notifications' preference centre
    *CLIENT_TYPES,
}

EXAMPLE_EVENT = {
    "specversion": "1.0",
    "id": "0c6a1f0e-8a4d-4a52-9f0e-6b1d2f3a4c51",
    "source": "/libraries/oba/app",
    "type": LoginFailed.event_type,
    "time": "2026-11-23T10:15:00+01:00",
    "subject": "3f2b8c1e-7d4a-4e9b-a1c2-5d6e7f809a1b",
    "library": "oba",
    "channel": "online",
    "platform": "app",
    "data": {"login_platform": "app", "reason": "account_not_linked"},
}


@dataclass
class Plan:
    """What a batch publishes (in its Kafka form), stores, and which of its items (by index) it refuses and why."""

    events: list[Encoded] = field(default_factory=list)
    changes: IngestedChanges = field(default_factory=IngestedChanges)
    refused: dict[int, Problem] = field(default_factory=dict)


def plan(
    items: Sequence[Item], standings: Mapping[str, Standing], caller: Principal, unknown: frozenset[str] = frozenset()
) -> Plan:
    """Handle `items` in order over the members' `standings` (by posted subject): no I/O. `unknown`: library codes
    the catalogue does not have (refused)."""
    result = Plan()
    # Where each member was last, as the items before have left it.
    last: dict[str, tuple[str, str] | None] = {}
    publishable = is_publishable(caller)
    for item in items:
        event, data = item.event, item.data
        assert event.subject is not None  # checked by the shared route
        standing = standings[event.subject]
        platform = event.platform or "website"
        try:
            if publishable and not VISITOR.match(event.subject):
                raise Problem(422, "Unprocessable Content", "subject: a browser posts as a visitor (v-<uuid>)",
                              errors=[FieldError("subject", "a browser posts as a visitor (v-<uuid>)")])  # fmt: skip
            if event.type in CLIENT_TYPES:
                # A visitor's own id, or the member's once linked: published as posted, always online.
                subject = standing.member_id if standing.home_library is not None else event.subject
                headers = binary_headers(event.id, event.source, event.type, event.time, subject, event.library,
                                         "online", event.platform)  # fmt: skip
                result.events.append(
                    Encoded(data.topic, event.id, event.type, subject.encode(), kafka_value(event), headers)
                )
                continue
            if publishable:
                raise Problem(403, "Forbidden", "a publishable key posts only client events",
                              errors=[FieldError("type", "a publishable key posts only client events")])  # fmt: skip
            named = _library_named(item)
            if named is not None and named[1] in unknown:
                raise unknown_library([named[0]])
            if isinstance(data, RegistrationStarted):
                if not caller.covers(data.home_library):
                    raise Problem(403, "Forbidden", f"this key is scoped to library {caller.library!r}")
                if standing.member_id == event.subject and standing.home_library is not None:
                    raise conflict("a member with this id exists already")
                touch = Touch(data.home_library, platform, event.utc_time, event.source)
                result.events.append(member_record(data, event.subject, touch, event.id))
                result.changes.registrations[event.subject] = Registration(data.home_library, touch.time)
                continue
            if standing.home_library is None:
                raise not_found("member")
            member_id = standing.member_id
            previous = last.get(member_id, standing.last_touch)
            if isinstance(data, (ConsentChanged, LanguageChanged)):
                if not caller.covers(standing.home_library):
                    raise Problem(403, "Forbidden", f"this key is scoped to library {caller.library!r}")
                where = previous[1] if previous else "website"
                touch = Touch(standing.home_library, where, event.utc_time, f"{SOURCE}/consents")
                result.events.append(member_record(data, member_id, touch, event.id))
                if isinstance(data, LanguageChanged):
                    _change(result.changes, member_id, MemberChange(language=data.language))
                    continue
                consents = result.changes.consents.setdefault(member_id, {})
                consents[f"{data.medium}:{data.purpose}"] = data.granted
                continue
            if isinstance(data, CardActivated):
                touch = Touch(event.library or "", platform, event.utc_time, event.source)
            else:
                assert isinstance(data, LoginSucceeded | LoginFailed)
                if not caller.covers(standing.home_library):
                    raise Problem(403, "Forbidden", f"this key is scoped to library {caller.library!r}")
                touch = Touch(standing.home_library, data.login_platform, event.utc_time, event.source)
            switched = switch_data(previous, touch)
            if switched is not None:
                switched_id = Ids(f"event:{event.id}").new("channel_switched")
                result.events.append(member_record(switched, member_id, touch, switched_id))
            result.events.append(member_record(data, member_id, touch, event.id))
            last[member_id] = (touch.channel, touch.platform)
            activated = touch.time if isinstance(data, CardActivated) else None
            _change(result.changes, member_id, MemberChange(touch.channel, touch.platform, activated))
        except Problem as refusal:
            result.refused[item.index] = refusal
    return result


def _change(changes: IngestedChanges, member_id: str, change: MemberChange) -> None:
    """Fold a change of the member's record into what the batch changes so far."""
    earlier = changes.members.get(member_id)
    changes.members[member_id] = change if earlier is None else earlier.then(change)


def _library_named(item: Item) -> tuple[str, str] | None:
    """(field, code) of the library a posted event names as where it happened or the member's home."""
    if isinstance(item.data, RegistrationStarted):
        return "data.home_library", item.data.home_library
    if isinstance(item.data, CardActivated):
        return "library", item.event.library or ""
    return None


class PostedMemberEvents:
    def __init__(self, store: MemberStore, publisher: EventPublisher, libraries: LibraryDirectory) -> None:
        self._store = store
        self._publisher = publisher
        self._libraries = libraries

    async def handle(self, items: Sequence[Item], caller: Principal) -> dict[int, Problem]:
        standings = await self._store.standings(item.event.subject for item in items if item.event.subject)
        named = (_library_named(item) for item in items)
        unknown = frozenset(await self._libraries.unknown(n[1] for n in named if n is not None))
        outcome = plan(items, standings, caller, unknown)
        await self._publisher.publish_encoded(outcome.events)
        await self._store.apply(outcome.changes)
        return outcome.refused


def ingest_router(
    store: MemberStore,
    publisher: EventPublisher,
    claims: EventClaims,
    libraries: LibraryDirectory,
    caller_from: Any = None,
) -> APIRouter:
    return shared_ingest_router(
        service="identity",
        topic_name=MEMBERS.name,
        types=INGESTIBLE,
        handle=PostedMemberEvents(store, publisher, libraries).handle,
        claims=claims,
        example=EXAMPLE_EVENT,
        caller_from=caller_from,
        failed=FailedItems(publisher, "identity"),
    )
