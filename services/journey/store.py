"""Journey state in Redis: timers of absence rules, open frictions, and the event-time clock.

Each event's effects are applied by one Lua script, together with a marker under the event id holding what
the event caused (resolutions to publish). A redelivered event changes nothing and gets the same outputs
back, so publishing them again is harmless: derived events have deterministic ids.

Keys (member keys carry the `{member_id}` hash tag):
  journey:seen:<event id>               outputs of an applied event (expires)
  journey:timers                        sorted set: timer key → due time (ms, event time)
  journey:claimed                       sorted set: timer key → lease expiry (ms, wall time)
  journey:timer:{member}:<rule>         hash: payload (the StartTimer), claimed, resolved_by, resolved_at
  journey:open:{member}:<rule>          an open friction (JSON), until the expected event arrives
  journey:clock                         the latest event time seen (ms)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from services.journey.rules import Effect
from shared.events import CloudEvent
from shared.settings import Settings

SEEN_TTL_SECONDS = 7 * 24 * 3600

_APPLY = """
local seen, timers, clock = KEYS[1], KEYS[2], KEYS[3]
local prior = redis.call('GET', seen)
if prior then return prior end
local prefix = ARGV[2]
local outputs = {}
for _, e in ipairs(cjson.decode(ARGV[1])) do
  local tkey = prefix .. 'timer:{' .. e.member_id .. '}:' .. e.rule
  local okey = prefix .. 'open:{' .. e.member_id .. '}:' .. e.rule
  if e.kind == 'expect' then
    if redis.call('EXISTS', tkey) == 1 then
      if redis.call('HEXISTS', tkey, 'claimed') == 1 then
        -- the timer is firing right now: let the firing publish the friction, then its resolution
        redis.call('HSET', tkey, 'resolved_by', e.event_id, 'resolved_at', e.at)
      else
        redis.call('DEL', tkey)
        redis.call('ZREM', timers, tkey)
      end
    end
    local open = redis.call('GET', okey)
    if open then
      redis.call('DEL', okey)
      table.insert(outputs, {friction = cjson.decode(open), by = e.event_id, at = e.at})
    end
  elseif e.kind == 'start' then
    if redis.call('EXISTS', tkey) == 0 and redis.call('EXISTS', okey) == 0 then
      redis.call('HSET', tkey, 'payload', cjson.encode(e))
      redis.call('ZADD', timers, e.due_ms, tkey)
    end
  end
end
local event_ms = tonumber(ARGV[3])
if event_ms > tonumber(redis.call('GET', clock) or '0') then redis.call('SET', clock, event_ms) end
local out = cjson.encode(outputs)
redis.call('SET', seen, out, 'EX', ARGV[4])
return out
"""

# Moves due timers (and claims whose lease ran out, after a crash) to `claimed` with a fresh lease.
_CLAIM = """
local timers, claimed = KEYS[1], KEYS[2]
local limit = tonumber(ARGV[4])
local out = {}
local function take(list)
  for _, tkey in ipairs(list) do
    local payload = redis.call('HGET', tkey, 'payload')
    redis.call('ZREM', timers, tkey)
    if payload then
      redis.call('ZADD', claimed, ARGV[3], tkey)
      redis.call('HSET', tkey, 'claimed', '1')
      table.insert(out, tkey)
      table.insert(out, payload)
    else
      redis.call('ZREM', claimed, tkey)
    end
  end
end
take(redis.call('ZRANGEBYSCORE', claimed, '-inf', ARGV[2], 'LIMIT', 0, limit))
take(redis.call('ZRANGEBYSCORE', timers, '-inf', ARGV[1], 'LIMIT', 0, limit))
return out
"""

# After the frictions were published: open them, or resolve at once those met while firing.
_COMPLETE = """
local claimed = KEYS[1]
local prefix = ARGV[1]
local outputs = {}
for _, f in ipairs(cjson.decode(ARGV[2])) do
  local tkey = prefix .. 'timer:{' .. f.member_id .. '}:' .. f.rule
  local okey = prefix .. 'open:{' .. f.member_id .. '}:' .. f.rule
  local by = redis.call('HGET', tkey, 'resolved_by')
  if by then
    table.insert(outputs, {friction = f, by = by, at = redis.call('HGET', tkey, 'resolved_at')})
  else
    redis.call('SET', okey, cjson.encode(f))
  end
  redis.call('DEL', tkey)
  redis.call('ZREM', claimed, tkey)
end
return cjson.encode(outputs)
"""


@dataclass(frozen=True)
class DueTimer:
    """A timer whose time has come: the friction it raises."""

    friction_id: str
    rule: str
    member_id: str
    start_event_id: str
    started_at: datetime
    due_at: datetime
    library: str | None
    channel_pair: str | None
    platform: str | None
    age_band: str | None


@dataclass(frozen=True)
class Resolution:
    friction: DueTimer
    event_id: str
    at: datetime


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _due_timer(raw: dict[str, Any]) -> DueTimer:
    return DueTimer(
        friction_id=raw["friction_id"],
        rule=raw["rule"],
        member_id=raw["member_id"],
        start_event_id=raw["start_event_id"],
        started_at=datetime.fromisoformat(raw["started_at"]),
        due_at=datetime.fromisoformat(raw["due_at"]),
        library=raw.get("library"),
        channel_pair=raw.get("channel_pair"),
        platform=raw.get("platform"),
        age_band=raw.get("age_band"),
    )


def _resolutions(raw: str) -> list[Resolution]:
    decoded = json.loads(raw)
    # cjson encodes an empty list as {}
    return [
        Resolution(_due_timer(item["friction"]), item["by"], datetime.fromisoformat(item["at"]))
        for item in (decoded if isinstance(decoded, list) else [])
    ]


def _timer_json(friction: DueTimer) -> dict[str, Any]:
    raw = asdict(friction)
    raw["started_at"] = friction.started_at.isoformat()
    raw["due_at"] = friction.due_at.isoformat()
    return raw


class JourneyStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._prefix = settings.key("journey", "")
        self._timers = settings.key("journey", "timers")
        self._claimed = settings.key("journey", "claimed")
        self._clock = settings.key("journey", "clock")
        self._seen = settings.key("journey", "seen", "")
        self._apply = redis.register_script(_APPLY)
        self._claim = redis.register_script(_CLAIM)
        self._complete = redis.register_script(_COMPLETE)

    async def apply(self, event: CloudEvent, effects: list[Effect]) -> list[Resolution]:
        """Apply an event's effects once; returns the frictions it resolves (again, on a redelivery)."""
        encoded = []
        for effect in effects:
            raw = asdict(effect)
            for name, value in raw.items():
                if isinstance(value, datetime):
                    raw[name] = value.astimezone(UTC).isoformat()
            if effect.kind == "start":
                raw["due_ms"] = _ms(effect.due_at)
            encoded.append(raw)
        out = await self._apply(
            keys=[self._seen + event.id, self._timers, self._clock],
            args=[json.dumps(encoded), self._prefix, _ms(event.utc_time), SEEN_TTL_SECONDS],
        )
        return _resolutions(out)

    async def claim_due(self, clock: datetime, wall: datetime, lease_seconds: float, limit: int) -> list[DueTimer]:
        flat = await self._claim(
            keys=[self._timers, self._claimed],
            args=[_ms(clock), _ms(wall), _ms(wall) + int(lease_seconds * 1000), limit],
        )
        return [_due_timer(json.loads(payload)) for payload in flat[1::2]]

    async def complete(self, fired: list[DueTimer]) -> list[Resolution]:
        out = await self._complete(
            keys=[self._claimed], args=[self._prefix, json.dumps([_timer_json(f) for f in fired])]
        )
        return _resolutions(out)

    async def event_clock(self) -> datetime | None:
        raw = await self._redis.get(self._clock)
        return datetime.fromtimestamp(int(raw) / 1000, UTC) if raw else None
