"""What deciding remembers per member: the cap window, the once-per-trigger claims, the triggers decided (for
redeliveries) and the frictions a campaign acted on (for its effect). All in the member's hash (keys.py).

A batch of triggers is written by one script (atomic, one command): its decisions, claims, cap window,
deliveries, the in-app messages deciding delivered at once, the frictions entering an effect, and counters.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from services.notifications import codec
from services.notifications.campaign_store import CampaignStore
from services.notifications.delivery_queue import DeliveryQueue
from services.notifications.inbox_store import InboxStore
from services.notifications.keys import Keys, tag
from services.notifications.results import detection_day
from services.notifications.state import Claim, DecisionMemory, Delivery, InboxMessage
from shared.settings import Settings

# A friction's record (codec.friction_value): `<detected>|<decided - detected>|<resolved - detected>|<outcomes>`,
# times in base-36 milliseconds, an outcome `<campaign[:8]>,<version>,<code>[,<group>]` with the group once the
# friction is in that campaign's effect. The campaigns' short names resolve through `effect-campaigns`.
_FRICTIONS = """
local DIGITS = '0123456789abcdefghijklmnopqrstuvwxyz'
local GROUPS = {m = 'messaged', h = 'holdout'}
local function b36(n)
  local s = ''
  repeat
    local r = n % 36
    s = string.sub(DIGITS, r + 1, r + 1) .. s
    n = math.floor(n / 36)
  until n == 0
  return s
end
-- The UTC day (YYYY-MM-DD) of a time in ms: days since 1970 to a civil date (Howard Hinnant's algorithm).
local function day_of(at)
  local z = math.floor(at / 86400000) + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02d', y, m, d)
end
local function parts(value)
  return string.match(value, '^([^|]*)|([^|]*)|([^|]*)|(.*)$')
end
-- Before friction records: the friction's field "<detected ms>|<day>|<resolved ms>" and a field per campaign
-- ("e<friction tag><campaign>" → group). Still resolved and entered, for frictions decided before.
local function legacy_effect(member, effect, friction_field, effect_field, group, detected_ms, day)
  if redis.call('HSETNX', member, effect_field, group) == 0 then return 0 end
  redis.call('HSETNX', member, friction_field, detected_ms .. '|' .. day .. '|')
  local detected, on, resolved = string.match(redis.call('HGET', member, friction_field), '^(%d+)|([^|]*)|(%d*)$')
  redis.call('HINCRBY', effect, group .. ':' .. on .. ':total', 1)
  if resolved ~= '' then
    local taken = math.floor(math.max(0, tonumber(resolved) - tonumber(detected)) / 86400000)
    redis.call('HINCRBY', effect, group .. ':' .. on .. ':resolved:' .. taken, 1)
  end
  return 1
end
"""

# A message that went out later (the delivery loop) puts its friction in the campaign's effect, once; a resolution
# that came first counts at once. KEYS: member hash, effect hash, effect-campaigns; ARGV: the record's field, the
# campaign, its group letter, the group, the day of detection, and the legacy friction and effect fields.
_ENTER_EFFECT = (
    _FRICTIONS
    + """
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then
  if redis.call('HEXISTS', KEYS[1], ARGV[6]) == 0 then return 0 end
  local detected = string.match(redis.call('HGET', KEYS[1], ARGV[6]), '^(%d+)|')
  return legacy_effect(KEYS[1], KEYS[2], ARGV[6], ARGV[7], ARGV[4], detected, ARGV[5])
end
local detected, decided, resolved, outcomes = parts(value)
local short = string.sub(ARGV[2], 1, 8) .. ','
local entries, found = {}, false
for entry in string.gmatch(outcomes, '[^;]+') do
  if not found and string.sub(entry, 1, #short) == short then
    if select(2, string.gsub(entry, ',', ',')) > 2 then return 0 end  -- in the effect already
    entry = entry .. ',' .. ARGV[3]
    found = true
  end
  table.insert(entries, entry)
end
if not found then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], detected .. '|' .. decided .. '|' .. resolved .. '|' .. table.concat(entries, ';'))
redis.call('HSETNX', KEYS[3], string.sub(ARGV[2], 1, 8), ARGV[2])
redis.call('HINCRBY', KEYS[2], ARGV[4] .. ':' .. ARGV[5] .. ':total', 1)
if resolved ~= '' then
  local taken = math.floor(tonumber(resolved, 36) / 86400000)
  redis.call('HINCRBY', KEYS[2], ARGV[4] .. ':' .. ARGV[5] .. ':resolved:' .. taken, 1)
end
return 1
"""
)

# A resolution counts for every campaign whose effect the friction is in, once; frictions no campaign acted on are
# ignored. KEYS: member hash; ARGV: the record's field, resolved ms, the effect keys' prefix, effect-campaigns, and
# the legacy friction field and effect fields' prefix.
_RESOLVE_FRICTION = (
    _FRICTIONS
    + """
local value = redis.call('HGET', KEYS[1], ARGV[1])
if value then
  local detected, decided, resolved, outcomes = parts(value)
  if resolved ~= '' then return 0 end
  local at = tonumber(detected, 36)
  local taken = math.max(0, tonumber(ARGV[2]) - at)
  redis.call('HSET', KEYS[1], ARGV[1], detected .. '|' .. decided .. '|' .. b36(taken) .. '|' .. outcomes)
  local day = day_of(at)
  for entry in string.gmatch(outcomes, '[^;]+') do
    local short, group = string.match(entry, '^([^,]*),[^,]*,[^,]*,(%a)$')
    local campaign = group and redis.call('HGET', ARGV[4], short)
    if campaign then
      local counter = GROUPS[group] .. ':' .. day .. ':resolved:' .. math.floor(taken / 86400000)
      redis.call('HINCRBY', ARGV[3] .. campaign, counter, 1)
    end
  end
  return 1
end
local current = redis.call('HGET', KEYS[1], ARGV[5])
if not current then return 0 end
local detected, day, resolved = string.match(current, '^(%d+)|([^|]*)|(%d*)$')
if resolved ~= '' then return 0 end
redis.call('HSET', KEYS[1], ARGV[5], detected .. '|' .. day .. '|' .. ARGV[2])
local taken = math.floor(math.max(0, tonumber(ARGV[2]) - tonumber(detected)) / 86400000)
local fields = redis.call('HGETALL', KEYS[1])
local prefix = ARGV[6]
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, #prefix) == prefix then
    local campaign = string.sub(fields[i], #prefix + 1)
    redis.call('HINCRBY', ARGV[3] .. campaign, fields[i + 1] .. ':' .. day .. ':resolved:' .. taken, 1)
  end
end
return 1
"""
)

# A message that did not go out gives its slot in the frequency cap back; the claim stays. KEYS: member hash.
_RELEASE = """
local claim = redis.call('HGET', KEYS[1], ARGV[1])
if claim then redis.call('HSET', KEYS[1], ARGV[1], string.match(claim, '^[^|]*') .. '|') end
return 1
"""


# A batch's decisions in one command. ARGV[1]: JSON {h: [[member hash, [field, value, …], [stale field, …]], …],
# d: [[delivery key, delivery], …], z: [[due ms, entry], …], t: [[text key, text], …], i: [[member hash, field,
# item], …] (InboxStore.writes), x: [[member hash, field, friction record, [[effect hash, counter, campaign[:8],
# campaign], …]], …] (frictions decided: their record, set once, and the effects they enter), c: [[results key,
# counter, n], …]}; KEYS[1]: due, KEYS[2]: effect-campaigns.
_WRITE = """
local w = cjson.decode(ARGV[1])
for _, h in ipairs(w.h) do
  if #h[2] > 0 then redis.call('HSET', h[1], unpack(h[2])) end
  if #h[3] > 0 then redis.call('HDEL', h[1], unpack(h[3])) end
end
for _, d in ipairs(w.d) do redis.call('HSET', d[1], 'd', d[2]) end
for _, z in ipairs(w.z) do redis.call('ZADD', KEYS[1], z[1], z[2]) end
for _, t in ipairs(w.t) do redis.call('SET', t[1], t[2], 'NX') end
for _, i in ipairs(w.i) do redis.call('HSETNX', i[1], i[2], i[3]) end
for _, x in ipairs(w.x) do
  if redis.call('HSETNX', x[1], x[2], x[3]) == 1 then
    for _, e in ipairs(x[4]) do
      redis.call('HSETNX', KEYS[2], e[3], e[4])
      redis.call('HINCRBY', e[1], e[2], 1)
    end
  end
end
for _, c in ipairs(w.c) do redis.call('HINCRBY', c[1], c[2], c[3]) end
return 1
"""


def marker_field(event_id: str, friction_id: str | None) -> str:
    """The field that remembers a decided trigger (a friction's: its record, which also holds its effect)."""
    return codec.marker_field(event_id, friction_id)


def legacy_friction_field(friction_id: str) -> str:
    """Where a friction was recorded before friction records (with an `effect_field` per campaign)."""
    return codec.FRICTION + tag(friction_id)


def legacy_effect_field(friction_id: str, campaign_id: str = "") -> str:
    return codec.EFFECT + tag(friction_id) + campaign_id


def claim_field(campaign_id: str, trigger_key: str) -> str:
    return codec.CLAIM + tag(campaign_id, trigger_key)


@dataclass
class DecisionWrite:
    """Everything one trigger's decisions for one member change."""

    member_id: str
    marker: str  # the field remembering the trigger (`marker_field`)
    memory: DecisionMemory
    erased: bool = False
    # The decided marker; a broadcast's decision that took its claim needs none (the claim says it was decided).
    remembered: bool = True
    counters: list[tuple[str, str]] = field(default_factory=list)  # (campaign id, counter)
    claims: dict[str, Claim] = field(default_factory=dict)  # by claim tag
    deliveries: list[tuple[Delivery, int]] = field(default_factory=list)  # (delivery, due ms)
    # In-app messages deciding delivered at once (owner, message): no delivery waits for them.
    inbox: list[tuple[str, InboxMessage]] = field(default_factory=list)
    # A friction trigger's detection (ms): its record is the marker, and holds its effect.
    detected_ms: int | None = None
    # Campaigns whose effect the friction enters now: (campaign, group: messaged or holdout).
    effects: list[tuple[str, str]] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # fields no longer needed: decided markers past the TTL


class DecisionLog:
    def __init__(
        self, redis: Redis, settings: Settings, campaigns: CampaignStore, queue: DeliveryQueue, inbox: InboxStore
    ) -> None:
        self._redis = redis
        self._k = Keys(settings)
        self._campaigns = campaigns
        self._queue = queue
        self._inbox = inbox
        self._enter_effect = redis.register_script(_ENTER_EFFECT)
        self._resolve_friction = redis.register_script(_RESOLVE_FRICTION)
        self._release = redis.register_script(_RELEASE)
        self._write = redis.register_script(_WRITE)

    async def write(self, writes: list[DecisionWrite]) -> None:
        """A whole batch of triggers in one command (a script: atomic). Nothing is kept under an erased member's
        id: only the counts (which name nobody)."""
        if not writes:
            return
        hashes, deliveries, due, frictions = [], [], [], []
        for write in writes:
            if write.erased:
                continue
            member = self._k.member(write.member_id)
            fields = {}
            if write.detected_ms is not None:
                detected_ms = write.detected_ms
                groups = {campaign: codec.GROUPS[group] for campaign, group in write.effects}
                day = detection_day(detected_ms)
                entered = [
                    [self._k.effect(c), f"{group}:{day}:total", c[: codec.CAMPAIGN_PREFIX], c]
                    for c, group in write.effects
                ]
                record = codec.friction_value(detected_ms, write.memory, groups)
                frictions.append([member, write.marker, record, entered])
            elif write.remembered:
                fields[write.marker] = codec.decided_value(write.memory)
            fields.update({codec.CLAIM + t: codec.claim_value(c) for t, c in write.claims.items()})
            flat = [item for pair in fields.items() for item in pair]
            hashes.append([member, flat, write.stale])
            for delivery, due_ms in write.deliveries:
                deliveries.append(
                    [self._k.delivery(delivery.member_id, delivery.message_id), codec.delivery_value(delivery)]
                )
                due.append([str(due_ms), f"{delivery.member_id}|{delivery.message_id}"])
        counters = Counter(c for write in writes for c in write.counters)
        counted = [[self._k.results(campaign), counter, n] for (campaign, counter), n in counters.items()]
        inbox = self._inbox.writes([item for write in writes if not write.erased for item in write.inbox])
        batch = codec.batch_json({"h": hashes, "d": deliveries, "z": due, **inbox, "x": frictions, "c": counted})
        await self._write(keys=[self._k.due, self._k.effect_campaigns], args=[batch])

    async def release_cap(self, pipe: Pipeline, member_id: str, campaign_id: str, trigger_key: str) -> None:
        """A message that did not go out gives its slot in the frequency cap back."""
        await self._release(keys=[self._k.member(member_id)], args=[claim_field(campaign_id, trigger_key)], client=pipe)

    async def effect_in(
        self, pipe: Pipeline, member_id: str, campaign_id: str, friction_id: str, group: str, detected_ms: int
    ) -> None:
        """The friction enters the campaign's effect in `group` (once), now that its message went out."""
        keys = [self._k.member(member_id), self._k.effect(campaign_id), self._k.effect_campaigns]
        args = [
            marker_field("", friction_id), campaign_id, codec.GROUPS[group], group, detection_day(detected_ms),
            legacy_friction_field(friction_id), legacy_effect_field(friction_id, campaign_id),
        ]  # fmt: skip
        # Queued on the pipeline (its script is loaded before the transaction runs).
        await self._enter_effect(keys=keys, args=args, client=pipe)

    async def friction_resolved(self, pipe: Pipeline, member_id: str, friction_id: str, resolved_ms: int) -> None:
        args: list[str | int] = [
            marker_field("", friction_id), resolved_ms, self._k.effect(""), self._k.effect_campaigns,
            legacy_friction_field(friction_id), legacy_effect_field(friction_id),
        ]  # fmt: skip
        await self._resolve_friction(keys=[self._k.member(member_id)], args=args, client=pipe)

    def pipeline(self) -> Pipeline:
        return self._redis.pipeline(transaction=False)
