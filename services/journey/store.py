"""Journey state in Redis, by input partition: what an instance restores when it is assigned a partition, and
writes back once per batch. Only the instance that owns a partition writes it, and an instance that lost the
partition (a zombie after a rebalance) is fenced off by the partition's epoch.

Keys (prefix `journey:`, `<p>` the partition number):
  state:<p>     hash: member id (as `state.ref` keeps ids: 16 bytes for a UUID) → MemberState as MessagePack
                (services/journey/state.py)
  meta:<p>      hash: `o:<topic>` → last offset applied, `c:<topic>:<stream>` → the clock (ms, event time)
  outbox:<p>    hash: `<ms stored>:<the batch's first derived event id>` → the batch's derived events in their Kafka
                form (MessagePack, services/journey/derived.py), stored with the state until Kafka has them
  epoch:<p>     integer: raised by every new owner; a write carrying an older epoch is refused

Why Redis and not a compacted changelog topic: a batch's state, offsets and derived events are stored in one
atomic step (a Lua script), so a crash can never leave frictions published for state that was not stored, and a
partition's state is read back with HSCAN in seconds without replaying a topic.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

from redis.asyncio import Redis

from services.journey.derived import from_outbox, to_outbox
from services.journey.state import MemberState, decode, encode, full_id, stored_id
from shared.publishing import Encoded
from shared.settings import Settings

# KEYS: epoch, state, meta, outbox. ARGV: the epoch, then four counted groups: pairs to set in state, fields to
# delete from state, pairs to set in meta, pairs to set in the outbox. Lua's unpack takes a few thousand values at
# most, so each command gets a slice of at most 1,000.
_WRITE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local i = 2
for _, step in ipairs({{KEYS[2], 'HSET', 2}, {KEYS[2], 'HDEL', 1}, {KEYS[3], 'HSET', 2}, {KEYS[4], 'HSET', 2}}) do
  local n = tonumber(ARGV[i]) * step[3]; i = i + 1
  local last = i + n - 1
  while i <= last do
    local upto = math.min(i + 999, last)
    redis.call(step[2], step[1], unpack(ARGV, i, upto))
    i = upto + 1
  end
end
return 1
"""


class Fenced(Exception):
    """Another instance owns the partition now: this one must stop writing it."""


@dataclass
class PartitionWrite:
    """Everything one batch changed in one partition."""

    states: dict[str, MemberState] = field(default_factory=dict)
    erased: set[str] = field(default_factory=set)
    offsets: dict[str, int] = field(default_factory=dict)
    clocks: dict[str, int] = field(default_factory=dict)
    outbox: list[Encoded] = field(default_factory=list)
    detected: Counter[str] = field(default_factory=Counter)  # frictions by rule, for the metrics once published
    resolved: Counter[str] = field(default_factory=Counter)
    stored_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    records: int = 0  # the batch's records of this partition (applied), for the count of records done

    def outbox_field(self) -> str:
        """Where the batch's derived events are kept until Kafka has them: when they were stored (what of them
        reached Kafka is found by that time, see `stored_at`) and the first one's id (ids are unique)."""
        return f"{self.stored_ms}:{self.outbox[0].event_id}"


def stored_at(outbox_field: str) -> int | None:
    """When an outbox entry was stored (ms), from its field; None for an entry of a version that did not say."""
    stored, _, rest = outbox_field.partition(":")
    return int(stored) if rest and stored.isdigit() else None


@dataclass(frozen=True)
class PreparedWrite:
    partition: int
    keys: list[str]
    args: list[Any]


@dataclass
class Restored:
    members: list[tuple[str, MemberState]]
    offsets: dict[str, int]  # topic → last offset applied
    clocks: dict[tuple[str, str], int]  # (topic, stream) → clock
    outbox: list[tuple[str, list[Encoded]]]  # (field, a batch's derived events) stored and not yet published
    epoch: int


class JourneyStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self._write = redis.register_script(_WRITE)

    def _k(self, *parts: str | int) -> str:
        return self._settings.key("journey", *(str(p) for p in parts))

    async def claim(self, partition: int) -> int:
        """Become the partition's owner: a new epoch, which fences off any earlier owner's writes."""
        return int(await self._redis.incr(self._k("epoch", partition)))

    async def restore(self, partition: int, epoch: int, chunk: int = 5000) -> Restored:
        members: list[tuple[str, MemberState]] = []
        async for batch in self._scan(self._k("state", partition), chunk):
            members += [(full_id(m), decode(raw)) for m, raw in batch]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._k("meta", partition))
            pipe.hgetall(self._k("outbox", partition))
            raw_meta, raw_outbox = await pipe.execute()
        offsets: dict[str, int] = {}
        clocks: dict[tuple[str, str], int] = {}
        for name, value in cast(dict[bytes, bytes], raw_meta).items():
            kind, _, rest = name.decode().partition(":")
            if kind == "o":
                offsets[rest] = int(value)
            elif kind == "c":
                topic, _, stream = rest.partition("|")
                clocks[(topic, stream)] = int(value)
        outbox = [(k.decode(), from_outbox(v)) for k, v in cast(dict[bytes, bytes], raw_outbox).items()]
        return Restored(members, offsets, clocks, outbox, epoch)

    async def _scan(self, key: str, chunk: int) -> AsyncIterator[list[tuple[bytes, bytes]]]:
        cursor = 0
        while True:
            cursor, found = await self._redis.hscan(key, cursor, count=chunk)
            if found:
                yield list(cast(dict[bytes, bytes], found).items())
            if cursor == 0:
                return

    async def write(self, partition: int, epoch: int, change: PartitionWrite) -> None:
        """The batch's state, offsets, clocks and derived events in one atomic, fenced step."""
        await self.send(self.prepared(partition, epoch, change))

    def prepared(self, partition: int, epoch: int, change: PartitionWrite) -> PreparedWrite:
        """The write as it will be sent, states encoded now (the same bytes however often it is retried)."""
        states = [(stored_id(m), encode(s)) for m, s in change.states.items()]
        erased = [stored_id(m) for m in sorted(change.erased - change.states.keys())]
        meta: list[tuple[str, int]] = [(f"o:{t}", o) for t, o in change.offsets.items()]
        meta += [(f"c:{k}", c) for k, c in change.clocks.items()]
        outbox = [(change.outbox_field(), to_outbox(change.outbox))] if change.outbox else []
        args: list[Any] = [epoch]
        for group in (states, erased, meta, outbox):
            args.append(len(group))
            for item in group:
                args += item if isinstance(item, tuple) else [item]
        return PreparedWrite(partition, [self._k(n, partition) for n in ("epoch", "state", "meta", "outbox")], args)

    async def send(self, write: PreparedWrite) -> None:
        """Raises Fenced when a newer owner holds the partition."""
        if not await self._write(keys=write.keys, args=write.args):
            raise Fenced(f"partition {write.partition} has a newer owner")

    async def forget_outbox(self, partition: int, stored: str) -> None:
        await self._redis.hdel(self._k("outbox", partition), stored)
