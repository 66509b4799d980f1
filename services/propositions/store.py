"""propositions' Redis: the catalogue as the latest catalogue event per entity, and who takes part in activities.

The catalogue hashes hold, per entity, the very event that is the latest record of its key on the compacted topic
(structured CloudEvent JSON), so the API and a consumer reading the topic from the start see the same catalogue.

Keys (prefix `propositions:`; an activity's own keys share the `{activity id}` hash tag, so that one script can
check its capacity and register a member atomically):
  catalog:propositions            hash: slug → latest event (proposition_published or proposition_retired)
  catalog:libraries               hash: library code → latest library_changed
  catalog:offerings               hash: offering id (`oba.boekstart`) → latest offering_changed
  activity:{id}                   hash: event (latest activity_scheduled or activity_cancelled), capacity,
                                  cancelled (0 | 1)
  activities                      sorted set: activity ids by start time (epoch seconds)
  registered:{id}                 set: member ids registered for the activity
  attended:{id}                   set: member ids whose attendance was recorded
  member-activities:{member_id}   set: activity ids the member registered for or attended (erasure finds them here)
  lock:<subject>                  string: held by the one request changing this catalogue entity (expires in 10 s)
  ingested:<event id>             string: pending | done: a usage event id posted to /v1/events or /v1/loans
                                  (shared/ingest.py EventClaims)
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, Literal, cast

from redis.asyncio import Redis
from redis.exceptions import LockError

from shared.events import CloudEvent
from shared.settings import Settings

LOCK_SECONDS = 10
LOCK_WAIT_SECONDS = 5

CatalogKind = Literal["propositions", "libraries", "offerings"]
Registration = Literal["registered", "already", "full", "cancelled", "unknown"]
Attendance = Literal["registered", "walk_in", "already", "cancelled", "unknown"]

# Register a member for an activity: only while it is not cancelled, has a place left and they are not on it yet.
_REGISTER = """
local capacity = redis.call('HGET', KEYS[1], 'capacity')
if not capacity then return 'unknown' end
if redis.call('HGET', KEYS[1], 'cancelled') == '1' then return 'cancelled' end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 'already' end
if redis.call('SCARD', KEYS[2]) >= tonumber(capacity) then return 'full' end
redis.call('SADD', KEYS[2], ARGV[1])
return 'registered'
"""

# Record attendance once; say whether the member had registered or walked in.
_ATTEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown' end
if redis.call('HGET', KEYS[1], 'cancelled') == '1' then return 'cancelled' end
if redis.call('SADD', KEYS[3], ARGV[1]) == 0 then return 'already' end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 'registered' end
return 'walk_in'
"""


class Busy(Exception):
    """Another request is changing the same catalogue entity right now."""


def _event(raw: Any) -> CloudEvent:
    return CloudEvent.model_validate_json(cast(str, raw))


class PropositionsStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self._register = redis.register_script(_REGISTER)
        self._attend = redis.register_script(_ATTEND)

    def _k(self, *parts: str) -> str:
        return self._settings.key("propositions", *parts)

    def _tagged(self, name: str, activity_id: str) -> str:
        return self._k(name, "{" + activity_id + "}")

    # ---------------------------------------------------------------------------------------- writers

    @contextlib.asynccontextmanager
    async def writing(self, subject: str) -> AsyncIterator[None]:
        """Hold the entity while its change is published and stored, so that the order of its records on the
        topic is the order in which they are stored here (the latest record and the stored state agree)."""
        lock = self._redis.lock(
            self._k("lock", subject), timeout=LOCK_SECONDS, blocking_timeout=LOCK_WAIT_SECONDS, thread_local=False
        )
        if not await lock.acquire():
            raise Busy(subject)
        try:
            yield
        finally:
            with contextlib.suppress(LockError):
                await lock.release()

    # -------------------------------------------------------------------------------------- catalogue

    async def catalog(self, kind: CatalogKind) -> list[CloudEvent]:
        raw = cast(dict[str, str], await self._redis.hgetall(self._k("catalog", kind)))
        return [_event(value) for value in raw.values()]

    async def catalog_entry(self, kind: CatalogKind, key: str) -> CloudEvent | None:
        raw = await self._redis.hget(self._k("catalog", kind), key)
        return _event(raw) if raw is not None else None

    async def put_catalog_entry(self, kind: CatalogKind, key: str, event: CloudEvent) -> None:
        await self._redis.hset(self._k("catalog", kind), key, event.model_dump_json())

    # ------------------------------------------------------------------------------------- activities

    async def put_activity(self, activity_id: str, event: CloudEvent, *, capacity: int, cancelled: bool) -> None:
        starts_at = datetime.fromisoformat(str(event.data["starts_at"]))
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(
                self._tagged("activity", activity_id),
                mapping={"event": event.model_dump_json(), "capacity": capacity, "cancelled": int(cancelled)},
            )
            pipe.zadd(self._k("activities"), {activity_id: starts_at.timestamp()})
            await pipe.execute()

    async def activity(self, activity_id: str) -> tuple[CloudEvent, int] | None:
        """The activity's latest event and how many members registered."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(self._tagged("activity", activity_id), "event")
            pipe.scard(self._tagged("registered", activity_id))
            raw, registered = await pipe.execute()
        return (_event(raw), int(registered)) if raw is not None else None

    async def activities(self, starts_from: float, starts_before: float) -> list[tuple[CloudEvent, int]]:
        """The activities starting in [from, before), with their registration counts, in start order."""
        ids = cast(
            list[str],
            await self._redis.zrangebyscore(self._k("activities"), starts_from, f"({starts_before}"),
        )
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for activity_id in ids:
                pipe.hget(self._tagged("activity", activity_id), "event")
                pipe.scard(self._tagged("registered", activity_id))
            answers = await pipe.execute()
        return [
            (_event(raw), int(count)) for raw, count in zip(answers[::2], answers[1::2], strict=True) if raw is not None
        ]

    async def register(self, activity_id: str, member_id: str) -> Registration:
        keys = [self._tagged("activity", activity_id), self._tagged("registered", activity_id)]
        outcome = cast(Registration, await self._register(keys=keys, args=[member_id]))
        if outcome == "registered":
            await self._redis.sadd(self._k("member-activities", "{" + member_id + "}"), activity_id)
        return outcome

    async def unregister(self, activity_id: str, member_id: str) -> None:
        await self._redis.srem(self._tagged("registered", activity_id), member_id)

    async def attend(self, activity_id: str, member_id: str) -> Attendance:
        keys = [
            self._tagged("activity", activity_id),
            self._tagged("registered", activity_id),
            self._tagged("attended", activity_id),
        ]
        outcome = cast(Attendance, await self._attend(keys=keys, args=[member_id]))
        if outcome in ("registered", "walk_in"):
            await self._redis.sadd(self._k("member-activities", "{" + member_id + "}"), activity_id)
        return outcome

    async def unattend(self, activity_id: str, member_id: str) -> None:
        await self._redis.srem(self._tagged("attended", activity_id), member_id)

    async def forget_member(self, member_id: str) -> int:
        """Remove an erased member from every activity; returns how many activities they were on."""
        index = self._k("member-activities", "{" + member_id + "}")
        activity_ids: Sequence[str] = sorted(cast(set[str], await self._redis.smembers(index)))
        async with self._redis.pipeline(transaction=False) as pipe:
            for activity_id in activity_ids:
                pipe.srem(self._tagged("registered", activity_id), member_id)
                pipe.srem(self._tagged("attended", activity_id), member_id)
            pipe.delete(index)
            await pipe.execute()
        return len(activity_ids)
