"""Activities: sessions of a proposition at a branch, registration within a capacity, attendance.

Scheduling and cancelling are catalogue changes (compacted topic, key = activity id); registering and attending
are usage (`propositions.usage.v1`, subject = member_id). Capacity and double registration are decided atomically
in Redis; a registration or attendance whose event Kafka did not acknowledge is taken back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from services.propositions import domain
from services.propositions.catalogue import Catalogue, conflict, holding, unprocessable
from services.propositions.domain import Activity, ActivityQuery, Refusal
from services.propositions.store import PropositionsStore
from shared.auth import Principal, forbid_other_library
from shared.events import CloudEvent, EventData
from shared.events.propositions import (
    ActivityAttended,
    ActivityCancelled,
    ActivityRegistered,
    ActivityScheduled,
)
from shared.events.types import Channel
from shared.idempotency import Ids
from shared.kafka import EventPublisher
from shared.problems import not_found

SOURCE = "/propositions/activities"
_FAR_PAST = datetime(1970, 1, 1, tzinfo=UTC)
_FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)
# Why the store refused to take a place, by its outcome.
_REGISTRATION_REFUSED = {
    "already": "the member is registered for this activity already",
    "full": "the activity is full",
    "cancelled": "the activity is cancelled",
}
_ATTENDANCE_REFUSED = {
    "already": "the member's attendance is recorded already",
    "cancelled": "the activity is cancelled",
}


@dataclass(frozen=True)
class Touch:
    """Where and when a member took part: the platform that reports it, its channel, the event time."""

    platform: str
    channel: Channel
    time: datetime
    source: str | None = None


@dataclass(frozen=True)
class Session:
    """An activity with the number of members registered for it."""

    activity: Activity
    registered: int

    @property
    def places_left(self) -> int:
        return domain.places_left(self.activity, self.registered)


@dataclass(frozen=True)
class Taken:
    """A registration or attendance stored, whose event is still to be published."""

    event: CloudEvent
    activity_id: str
    member_id: str
    attended: bool
    walk_in: bool


@dataclass(frozen=True)
class TakingPart:
    """A member taking part in a session: registering or attending. An ingested event brings the proposition it
    names (checked against the session's) and its own id."""

    activity_id: str
    member_id: str
    touch: Touch
    proposition: str | None = None
    event_id: str | None = None


@dataclass(frozen=True)
class Plan:
    """What a request to schedule an activity asks for."""

    proposition: str
    library: str
    branch: str
    title: str | None
    starts_at: datetime
    ends_at: datetime
    capacity: int


class Activities:
    def __init__(self, catalogue: Catalogue, store: PropositionsStore, publisher: EventPublisher) -> None:
        self._catalogue = catalogue
        self._store = store
        self._publisher = publisher

    # ---------------------------------------------------------------------------------------------- reads

    async def session(self, activity_id: str) -> Session:
        found = await self._store.activity(activity_id)
        if found is None:
            raise not_found("activity")
        event, registered = found
        return Session(domain.entities([event], Activity)[0], registered)

    async def sessions(self, query: ActivityQuery) -> list[Session]:
        """The sessions a query asks for, in order of start time."""
        found = await self._store.activities(
            (query.starts_from or _FAR_PAST).timestamp(), (query.starts_before or _FAR_FUTURE).timestamp()
        )
        sessions = []
        for event, registered in found:
            activity = domain.entities([event], Activity)[0]
            if domain.activity_matches(activity, query):
                sessions.append(Session(activity, registered))
        return sorted(sessions, key=session_key)

    # ------------------------------------------------------------------------------------------- schedule

    async def schedule(self, plan: Plan, caller: Principal, ids: Ids) -> Session:
        """A new session of a proposition the library offers, at one of its branches."""
        forbid_other_library(caller, plan.library)
        libraries = await self._catalogue.libraries()
        propositions = await self._catalogue.propositions()
        library, proposition = libraries.get(plan.library), propositions.get(plan.proposition)
        refusals = []
        if library is None:
            refusals.append(Refusal("library", "no such library"))
        elif plan.branch not in library.branch_names:
            refusals.append(Refusal("branch", f"not a branch of {plan.library}"))
        if proposition is None:
            refusals.append(Refusal("proposition", "no such proposition"))
        if refusals:
            raise unprocessable(refusals)
        assert proposition is not None
        offering_id = domain.offering_id(plan.library, plan.proposition)
        offered = next((o for o in await self._catalogue.offerings() if o.id == offering_id), None)
        if offered is None or not domain.offering_available(offered, proposition, library):
            raise conflict(f"{plan.library} does not offer {plan.proposition}: add the offering first")
        activity_id = domain.activity_id(plan.library, plan.proposition, ids.new("activity"))
        data = ActivityScheduled(
            activity_id=activity_id,
            proposition=plan.proposition,
            library=plan.library,
            branch=plan.branch,
            title=plan.title,
            starts_at=plan.starts_at.astimezone(UTC),
            ends_at=plan.ends_at.astimezone(UTC),
            capacity=plan.capacity,
        )
        event = self._catalogue_event(data, ids)
        async with holding(self._store, activity_id):
            await self._publisher.publish(event)
            await self._store.put_activity(activity_id, event, capacity=plan.capacity, cancelled=False)
        return Session(Activity(data, False, event.utc_time), 0)

    async def cancel(self, activity_id: str, caller: Principal, ids: Ids) -> str:
        async with holding(self._store, activity_id):
            session = await self.session(activity_id)
            activity = session.activity
            forbid_other_library(caller, activity.data.library)
            if activity.cancelled:
                raise conflict("the activity is cancelled already")
            event = self._catalogue_event(ActivityCancelled.model_validate(activity.data.model_dump()), ids)
            await self._publisher.publish(event)
            await self._store.put_activity(activity_id, event, capacity=activity.data.capacity, cancelled=True)
        return event.id

    @staticmethod
    def _catalogue_event(data: ActivityScheduled | ActivityCancelled, ids: Ids) -> CloudEvent:
        return CloudEvent.create(
            data, subject=data.activity_id, source=SOURCE, library=data.library, channel="offline", id=ids.new("event")
        )

    # --------------------------------------------------------------------------------- take part in one

    async def register(self, part: TakingPart, caller: Principal, ids: Ids) -> str:
        """Register a member while there is a place: 409 when full, registered already, cancelled or over."""
        taken = await self.take(part, caller, ids, attending=False)
        await self.publish_taken([taken])
        return taken.event.id

    async def attend(self, part: TakingPart, caller: Principal, ids: Ids) -> tuple[str, bool]:
        """Record that a member attended (registered or walked in); returns the event id and whether a walk-in."""
        taken = await self.take(part, caller, ids, attending=True)
        await self.publish_taken([taken])
        return taken.event.id, taken.walk_in

    async def take(self, part: TakingPart, caller: Principal, ids: Ids, *, attending: bool) -> Taken:
        """A place taken for the member (registering), or their attendance recorded (registered or a walk-in),
        with its event, not yet published (`publish_taken`)."""
        activity = await self._session_for(part, caller)
        if attending:
            refusal = domain.attendance_refusal(activity, part.touch.time, datetime.now(UTC))
        else:
            refusal = domain.registration_refusal(activity, part.touch.time)
        if refusal is not None:
            raise conflict(refusal)
        store = self._store.attend if attending else self._store.register
        outcome = await store(part.activity_id, part.member_id)
        if outcome == "unknown":
            raise not_found("activity")
        refused = (_ATTENDANCE_REFUSED if attending else _REGISTRATION_REFUSED).get(outcome)
        if refused is not None:
            raise conflict(refused)
        walk_in = outcome == "walk_in"
        proposition = activity.data.proposition
        data: EventData = (
            ActivityAttended(activity_id=part.activity_id, proposition=proposition, walk_in=walk_in)
            if attending
            else ActivityRegistered(activity_id=part.activity_id, proposition=proposition)
        )
        event = self._usage_event(data, activity, part, ids)
        return Taken(event, part.activity_id, part.member_id, attended=attending, walk_in=walk_in)

    async def publish_taken(self, taken: Sequence[Taken], *, along: Sequence[CloudEvent] = ()) -> None:
        """Publish what was taken (and `along` with it) in one round of acks; not acknowledged means not taken: the
        places are given back."""
        try:
            await self._publisher.publish_many([*along, *(t.event for t in taken)])
        except BaseException:
            for part in taken:
                if part.attended:
                    await self._store.unattend(part.activity_id, part.member_id)
                else:
                    await self._store.unregister(part.activity_id, part.member_id)
            raise

    async def _session_for(self, part: TakingPart, caller: Principal) -> Activity:
        activity = (await self.session(part.activity_id)).activity
        forbid_other_library(caller, activity.data.library)
        if part.proposition is not None and part.proposition != activity.data.proposition:
            raise unprocessable(
                [Refusal("proposition", f"the activity is a session of {activity.data.proposition}")], "data."
            )
        return activity

    @staticmethod
    def _usage_event(data: EventData, activity: Activity, part: TakingPart, ids: Ids) -> CloudEvent:
        library, touch = activity.data.library, part.touch
        return CloudEvent.create(
            data,
            id=part.event_id or ids.new("event"),
            subject=part.member_id,
            source=touch.source or f"/libraries/{library}/{touch.platform}",
            library=library,
            channel=touch.channel,
            platform=touch.platform,
            time=touch.time,
        )

    # ------------------------------------------------------------------------------------------ erasure

    async def forget_member(self, event: CloudEvent, data: EventData) -> None:
        """member.erased: the member leaves every activity (their place frees up). Idempotent."""
        if event.subject is not None:
            await self._store.forget_member(event.subject)


def session_key(session: Session) -> str:
    """Sessions sort, and pages turn, by start time and then id."""
    data = session.activity.data
    return f"{data.starts_at.astimezone(UTC).isoformat()}|{data.activity_id}"
