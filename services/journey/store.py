"""Journey state in Redis. Only the instance that owns a member's partition writes the member, one batch at a time.

Keys (prefix `journey:`; member keys carry the `{member_id}` hash tag):
  m:{member}                 string: the member's journey (JSON, see engine.new_journey)
  alias:<old id>             string: the member an old id was merged into
  timers:<partition>         sorted set: "<member>\\t<timer>" → due time (ms, event time)
  clock                      hash: "<topic>:<partition>" → latest event time applied (ms)
  offsets                    hash: "<topic>:<partition>" → last offset applied (a redelivered batch is skipped)
  outbox                     hash: event id → a derived CloudEvent stored with the state, until Kafka has it
  facts:frictions            hash: friction id → {rule, library, channel_pair, platform, age_band, started, due,
                             resolved} for reports (no member id)
  facts:starts               hash: "<rule>|<library>|<pair>|<platform>|<age band>|<day>" → absence windows closed
                             that day (the denominator of friction rates: a window still open is not counted)
"""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

from redis.asyncio import Redis

from services.journey.engine import ClosedStart, Friction, Journey, Resolution
from shared.events import CloudEvent, from_structured, to_structured
from shared.settings import Settings

TAB = "\t"


def day_of(ms: int) -> str:
    """The Europe/Amsterdam date of an instant: the day reports count a closed window on."""
    return datetime.fromtimestamp(ms / 1000, ZoneInfo("Europe/Amsterdam")).date().isoformat()


@dataclass
class Changes:
    """Everything one batch (or one round of timers) changes, written in one transaction."""

    journeys: dict[str, Journey] = field(default_factory=dict)
    erased: set[str] = field(default_factory=set)
    aliases: dict[str, str] = field(default_factory=dict)
    timers_add: dict[int, dict[str, int]] = field(default_factory=dict)
    timers_remove: dict[int, set[str]] = field(default_factory=dict)
    clocks: dict[str, int] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    outbox: list[CloudEvent] = field(default_factory=list)
    frictions: dict[str, dict[str, Any]] = field(default_factory=dict)
    starts: dict[str, int] = field(default_factory=dict)

    def add_timer(self, partition: int, member: str, timer: str, due: int) -> None:
        entry = f"{member}{TAB}{timer}"
        self.timers_remove.get(partition, set()).discard(entry)
        self.timers_add.setdefault(partition, {})[entry] = due

    def remove_timer(self, partition: int, member: str, timer: str) -> None:
        entry = f"{member}{TAB}{timer}"
        self.timers_add.get(partition, {}).pop(entry, None)
        self.timers_remove.setdefault(partition, set()).add(entry)

    def detected(self, friction: Friction) -> None:
        self.frictions[friction.friction_id] = _fact(friction, None)

    def resolved(self, resolution: Resolution) -> None:
        self.frictions[resolution.friction.friction_id] = _fact(resolution.friction, resolution.at_ms)

    def closed(self, start: ClosedStart) -> None:
        dims = [start.rule, start.library, start.channel_pair, start.platform, start.age_band, day_of(start.due_ms)]
        key = "|".join("" if d is None else str(d) for d in dims)
        self.starts[key] = self.starts.get(key, 0) + 1


def _fact(friction: Friction, resolved: int | None) -> dict[str, Any]:
    return {
        "rule": friction.rule,
        "library": friction.library,
        "channel_pair": friction.channel_pair,
        "platform": friction.platform,
        "age_band": friction.age_band,
        "started": friction.started_ms,
        "due": friction.due_ms,
        "resolved": resolved,
    }


class JourneyStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings

    def _k(self, *parts: str) -> str:
        return self._settings.key("journey", *parts)

    def _member(self, member_id: str) -> str:
        return self._k("m", "{" + member_id + "}")

    async def read(
        self, members: Iterable[str], positions: Iterable[str]
    ) -> tuple[dict[str, str], dict[str, Journey], dict[str, int]]:
        """In one round trip: aliases of `members`, their journeys, and the last offsets applied at `positions`.
        Journeys are read for the ids given and for the survivors they alias to."""
        ids, where = sorted(set(members)), sorted(set(positions))
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.mget([self._k("alias", i) for i in ids] or [self._k("alias", "")])
            pipe.mget([self._member(i) for i in ids] or [self._member("")])
            pipe.hmget(self._k("offsets"), where or [""])
            raw_aliases, raw_journeys, raw_offsets = await pipe.execute()
        aliases = {i: a for i, a in zip(ids, raw_aliases, strict=False) if a}
        journeys = {i: json.loads(j) for i, j in zip(ids, raw_journeys, strict=False) if j}
        missing = sorted(set(aliases.values()) - set(journeys))
        if missing:
            for survivor, raw in zip(missing, await self._redis.mget([self._member(i) for i in missing]), strict=True):
                if raw:
                    journeys[survivor] = json.loads(raw)
        offsets = {w: int(o) for w, o in zip(where, raw_offsets, strict=False) if o is not None}
        return aliases, journeys, offsets

    async def journeys(self, members: Sequence[str]) -> dict[str, Journey]:
        if not members:
            return {}
        raw = await self._redis.mget([self._member(m) for m in members])
        return {m: json.loads(j) for m, j in zip(members, raw, strict=True) if j}

    async def write(self, changes: Changes) -> None:
        """One MULTI: state, timers, clocks, offsets, facts and the derived events to publish."""
        async with self._redis.pipeline(transaction=True) as pipe:
            for member, journey in changes.journeys.items():
                if member not in changes.erased:
                    pipe.set(self._member(member), json.dumps(journey, separators=(",", ":")))
            for member in changes.erased:
                pipe.delete(self._member(member))
            for old, survivor in changes.aliases.items():
                pipe.set(self._k("alias", old), survivor)
            for partition, entries in changes.timers_remove.items():
                if entries:
                    pipe.zrem(self._k("timers", str(partition)), *entries)
            for partition, added in changes.timers_add.items():
                if added:
                    pipe.zadd(self._k("timers", str(partition)), cast(Any, added))
            if changes.clocks:
                pipe.hset(self._k("clock"), mapping=cast(Any, changes.clocks))
            if changes.offsets:
                pipe.hset(self._k("offsets"), mapping=cast(Any, changes.offsets))
            if changes.frictions:
                facts = {k: json.dumps(v, separators=(",", ":")) for k, v in changes.frictions.items()}
                pipe.hset(self._k("facts", "frictions"), mapping=cast(Any, facts))
            for key, count in changes.starts.items():
                pipe.hincrby(self._k("facts", "starts"), key, count)
            if changes.outbox:
                outbox = {e.id: json.dumps(to_structured(e)) for e in changes.outbox}
                pipe.hset(self._k("outbox"), mapping=cast(Any, outbox))
            await pipe.execute()

    async def published(self, event_ids: Sequence[str]) -> None:
        if event_ids:
            await self._redis.hdel(self._k("outbox"), *event_ids)

    async def outbox(self) -> list[CloudEvent]:
        raw = cast(dict[str, str], await self._redis.hgetall(self._k("outbox")))
        return [from_structured(json.loads(v)) for v in raw.values()]

    async def applied_offsets(self) -> dict[str, int]:
        raw = cast(dict[str, str], await self._redis.hgetall(self._k("offsets")))
        return {k: int(v) for k, v in raw.items()}

    async def clocks(self) -> dict[str, int]:
        raw = cast(dict[str, str], await self._redis.hgetall(self._k("clock")))
        return {k: int(v) for k, v in raw.items()}

    async def due(self, partition: int, until_ms: int, limit: int) -> list[tuple[str, str, int]]:
        """(member, timer, due) of timers due by `until_ms`, earliest first."""
        raw = await self._redis.zrangebyscore(
            self._k("timers", str(partition)), "-inf", until_ms, start=0, num=limit, withscores=True
        )
        out = []
        for entry, score in cast(list[tuple[str, float]], raw):
            member, _, timer = entry.partition(TAB)
            out.append((member, timer, int(score)))
        return out

    # ----------------------------------------------------------------------------------------- reports

    async def friction_facts(self) -> list[dict[str, Any]]:
        raw = cast(dict[str, str], await self._redis.hgetall(self._k("facts", "frictions")))
        return [json.loads(v) for v in raw.values()]

    async def closed_starts(self) -> dict[str, int]:
        raw = cast(dict[str, str], await self._redis.hgetall(self._k("facts", "starts")))
        return {k: int(v) for k, v in raw.items()}

    async def all_journeys(self, batch: int = 1000) -> list[Journey]:
        """Every member's journey (reports over members scan them in batches)."""
        journeys: list[Journey] = []
        keys: list[str] = []
        async for key in self._redis.scan_iter(match=self._k("m", "*"), count=batch):
            keys.append(cast(str, key))
            if len(keys) >= batch:
                journeys += [json.loads(j) for j in await self._redis.mget(keys) if j]
                keys = []
        if keys:
            journeys += [json.loads(j) for j in await self._redis.mget(keys) if j]
        return journeys

    async def member_bytes(self, sample: int = 200) -> float:
        """Average Redis memory per member journey, over a sample."""
        sizes = []
        async for key in self._redis.scan_iter(match=self._k("m", "*"), count=sample):
            sizes.append(await self._redis.memory_usage(key) or 0)
            if len(sizes) >= sample:
                break
        return sum(sizes) / len(sizes) if sizes else 0.0

    async def journey_batches(self, batch: int = 1000) -> AsyncIterator[list[Journey]]:
        """Every member's journey, about `batch` at a time. Each round trip fetches the keys the previous SCAN
        found (MGET) and asks for the next ones (SCAN) in one pipeline: N members cost about N / batch round trips,
        and no more than one batch is held at a time."""
        pattern = self._k("m", "*")
        cursor: int | None = 0  # None once the scan has come round
        keys: list[str] = []
        while cursor is not None or keys:
            async with self._redis.pipeline(transaction=False) as pipe:
                if keys:
                    pipe.mget(keys)
                if cursor is not None:
                    pipe.scan(cursor, match=pattern, count=batch)
                results = await pipe.execute()
            if keys:
                yield _parsed(results.pop(0))
            if cursor is None:
                keys = []
            else:
                next_cursor, found = results[0]
                cursor, keys = (int(next_cursor) or None), list(found)

    async def member_journey(self, member_id: str, hops: int = 5) -> Journey | None:
        """The member's journey, following merges (at most `hops`: a survivor can be merged again) to the survivor;
        None for an unknown or erased member."""
        current = member_id
        for _ in range(hops):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(self._k("alias", current))
                pipe.get(self._member(current))
                alias, raw = await pipe.execute()
            if not alias:
                return cast(Journey, json.loads(raw)) if raw else None
            current = alias
        return None


def _parsed(raw: Sequence[str | None]) -> list[Journey]:
    """Journeys parsed with the cyclic garbage collector paused: parsed JSON holds no reference cycles, yet a
    thousand journeys are some 60,000 new containers that the collector would walk again and again (measured:
    parsing took 3-4 times as long with it running; bench/journey_reports.py). Nothing else runs meanwhile."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return [json.loads(j) for j in raw if j]
    finally:
        if was_enabled:
            gc.enable()
