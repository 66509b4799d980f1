"""The deliveries waiting, by due time: now, the end of quiet hours, or the next retry.

One sorted set `due` orders them (`<member>|<message id>`); each delivery is a hash of its own (`d`: the delivery,
`o`: the events of its ending until they are published), keyed by its member so that erasure finds it. How a
delivery ended is stored with its events before they are published, so a crash in between republishes them rather
than delivering again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from services.notifications import codec
from services.notifications.keys import Keys
from services.notifications.state import Delivery, Outbox, from_ms, ms
from shared.settings import Settings

_CLAIM_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local lease = tonumber(ARGV[1]) + tonumber(ARGV[2])
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], lease, member) end
return due
"""

# Deliveries read in one command: each delivery hash's fields, flat. KEYS: the delivery hashes.
_LOAD = """
local found = {}
for i = 1, #KEYS do found[i] = redis.call('HGETALL', KEYS[i]) end
return found
"""

# A batch's endings in one command. ARGV[1]: JSON {e: [[delivery key, delivery, events], …],
# t: [[text key, text], …], i: [[member hash, field, item], …], c: [[results key, counter, n], …]}.
_END = """
local w = cjson.decode(ARGV[1])
for _, e in ipairs(w.e) do redis.call('HSET', e[1], 'd', e[2], 'o', e[3]) end
for _, t in ipairs(w.t) do redis.call('SET', t[1], t[2], 'NX') end
for _, i in ipairs(w.i) do redis.call('HSETNX', i[1], i[2], i[3]) end
for _, c in ipairs(w.c) do redis.call('HINCRBY', c[1], c[2], c[3]) end
return 1
"""

Entry = tuple[str, str]  # (member id, message id)


class DeliveryQueue:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._k = Keys(settings)
        self._claim_due = redis.register_script(_CLAIM_DUE)
        self._load = redis.register_script(_LOAD)
        self._end = redis.register_script(_END)

    def enqueue(self, pipe: Pipeline, deliveries: Sequence[tuple[Delivery, int]]) -> None:
        """Queue deliveries, each due at its ms (one sorted-set command for all)."""
        if not deliveries:
            return
        for delivery, _ in deliveries:
            pipe.hset(self._k.delivery(delivery.member_id, delivery.message_id), "d", codec.delivery_value(delivery))
        pipe.zadd(self._k.due, {f"{d.member_id}|{d.message_id}": due_ms for d, due_ms in deliveries})

    async def claim_due(self, now: datetime, lease_seconds: float, limit: int) -> list[Entry]:
        """Deliveries due by `now`, leased to the caller: another claim gets them only after the lease."""
        found = cast(
            list[str], await self._claim_due(keys=[self._k.due], args=[ms(now), int(lease_seconds * 1000), limit])
        )
        return [cast(Entry, tuple(entry.split("|", 1))) for entry in found]

    async def next_due(self) -> float | None:
        first = cast(list[tuple[str, float]], await self._redis.zrange(self._k.due, 0, 0, withscores=True))
        return first[0][1] if first else None

    async def due_at(self, member_id: str, message_id: str) -> datetime | None:
        score = await self._redis.zscore(self._k.due, f"{member_id}|{message_id}")
        return None if score is None else from_ms(int(score))

    async def deliveries(self, entries: Sequence[Entry]) -> list[tuple[Delivery | None, Outbox | None]]:
        """Each delivery, and the events of its ending when it ended but they may not have been published yet."""
        if not entries:
            return []
        flat = cast(list[list[str]], await self._load(keys=[self._k.delivery(m, i) for m, i in entries]))
        found = [dict(zip(f[::2], f[1::2], strict=True)) for f in flat]
        return [
            (
                codec.delivery(message_id, raw["d"]) if raw.get("d") else None,
                codec.outbox(raw["o"]) if raw.get("o") else None,
            )
            for (_, message_id), raw in zip(entries, found, strict=True)
        ]

    async def retry_later(self, delivery: Delivery, due: datetime) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            self.enqueue(pipe, [(delivery, ms(due))])
            await pipe.execute()

    def transaction(self) -> Pipeline:
        return self._redis.pipeline(transaction=True)

    async def ended(
        self,
        pipe: Pipeline,
        ended: Sequence[tuple[Delivery, Outbox]],
        inbox: Mapping[str, list[list[str]]],
        counters: Sequence[tuple[str, str]],
    ) -> None:
        """Record how deliveries ended, with their events (published next, again if the process dies first), the
        in-app messages they put in inboxes (`InboxStore.writes`), and their counts: one command."""
        batch = {
            "e": [
                [self._k.delivery(d.member_id, d.message_id), codec.delivery_value(d), codec.outbox_value(outbox)]
                for d, outbox in ended
            ],
            "t": inbox.get("t", []),
            "i": inbox.get("i", []),
            "c": [[self._k.results(c), counter, n] for (c, counter), n in Counter(counters).items()],
        }
        await self._end(keys=[], args=[codec.dumps(batch)], client=pipe)

    async def forget(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(*(self._k.delivery(member_id, message_id) for member_id, message_id in entries))
            pipe.zrem(self._k.due, *(f"{member_id}|{message_id}" for member_id, message_id in entries))
            await pipe.execute()
