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

# A friction of a messaged or held-out member enters the campaign's effect once; if it was resolved already, the
# resolution counts at once. The friction's field is "<detected ms>|<day>|<resolved ms>".
_EFFECT_FUNCTION = """
local function record_effect(member, effect, friction_field, effect_field, group, detected_ms, day)
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

# KEYS: member hash, effect hash; ARGV: friction field, effect field, group, detected ms, day.
_RECORD_EFFECT = (
    _EFFECT_FUNCTION + "return record_effect(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])"
)

# A resolution counts for every campaign the friction is in, once; frictions no campaign acted on are ignored.
# KEYS: member hash; ARGV: friction field, resolved ms, the effect keys' prefix, the effect fields' prefix.
_RESOLVE_FRICTION = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return 0 end
local detected, day, resolved = string.match(current, '^(%d+)|([^|]*)|(%d*)$')
if resolved ~= '' then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], detected .. '|' .. day .. '|' .. ARGV[2])
local taken = math.floor(math.max(0, tonumber(ARGV[2]) - tonumber(detected)) / 86400000)
local fields = redis.call('HGETALL', KEYS[1])
local prefix = ARGV[4]
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, #prefix) == prefix then
    local campaign = string.sub(fields[i], #prefix + 1)
    redis.call('HINCRBY', ARGV[3] .. campaign, fields[i + 1] .. ':' .. day .. ':resolved:' .. taken, 1)
  end
end
return 1
"""

# A message that did not go out gives its slot in the frequency cap back; the claim stays. KEYS: member hash.
_RELEASE = """
local claim = redis.call('HGET', KEYS[1], ARGV[1])
if claim then redis.call('HSET', KEYS[1], ARGV[1], string.match(claim, '^[^|]*') .. '|') end
return 1
"""


# A batch's decisions in one command. ARGV[1]: JSON {h: [[member hash, [field, value, …], [stale field, …]], …],
# d: [[delivery key, delivery], …], z: [[due ms, entry], …], t: [[text key, text], …], i: [[member hash, field,
# item], …] (InboxStore.writes), x: [[member hash, effect hash, friction field, effect field, group, detected ms,
# day], …] (frictions entering an effect), c: [[results key, counter, n], …]}; KEYS[1]: due.
_WRITE = (
    _EFFECT_FUNCTION
    + """
local w = cjson.decode(ARGV[1])
for _, h in ipairs(w.h) do
  redis.call('HSET', h[1], unpack(h[2]))
  if #h[3] > 0 then redis.call('HDEL', h[1], unpack(h[3])) end
end
for _, d in ipairs(w.d) do redis.call('HSET', d[1], 'd', d[2]) end
for _, z in ipairs(w.z) do redis.call('ZADD', KEYS[1], z[1], z[2]) end
for _, t in ipairs(w.t) do redis.call('SET', t[1], t[2], 'NX') end
for _, i in ipairs(w.i) do redis.call('HSETNX', i[1], i[2], i[3]) end
for _, x in ipairs(w.x) do record_effect(unpack(x)) end
for _, c in ipairs(w.c) do redis.call('HINCRBY', c[1], c[2], c[3]) end
return 1
"""
)


def friction_field(friction_id: str) -> str:
    return codec.FRICTION + tag(friction_id)


def effect_field(friction_id: str, campaign_id: str = "") -> str:
    return codec.EFFECT + tag(friction_id) + campaign_id


def claim_field(campaign_id: str, trigger_key: str) -> str:
    return codec.CLAIM + tag(campaign_id, trigger_key)


@dataclass
class DecisionWrite:
    """Everything one trigger's decisions for one member change."""

    member_id: str
    trigger_tag: str
    memory: DecisionMemory
    erased: bool = False
    # The decided marker; a broadcast's decision that took its claim needs none (the claim says it was decided).
    remembered: bool = True
    counters: list[tuple[str, str]] = field(default_factory=list)  # (campaign id, counter)
    claims: dict[str, Claim] = field(default_factory=dict)  # by claim tag
    deliveries: list[tuple[Delivery, int]] = field(default_factory=list)  # (delivery, due ms)
    # In-app messages deciding delivered at once (owner, message): no delivery waits for them.
    inbox: list[tuple[str, InboxMessage]] = field(default_factory=list)
    frictions: list[tuple[str, int]] = field(default_factory=list)  # (friction id, detected ms)
    # Frictions entering a campaign's effect: (campaign, friction id, detected ms, group: messaged or holdout).
    effects: list[tuple[str, str, int, str]] = field(default_factory=list)
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
        self._record_effect = redis.register_script(_RECORD_EFFECT)
        self._resolve_friction = redis.register_script(_RESOLVE_FRICTION)
        self._release = redis.register_script(_RELEASE)
        self._write = redis.register_script(_WRITE)

    async def write(self, writes: list[DecisionWrite]) -> None:
        """A whole batch of triggers in one command (a script: atomic). Nothing is kept under an erased member's
        id: only the counts (which name nobody)."""
        if not writes:
            return
        hashes, deliveries, due = [], [], []
        for write in writes:
            if write.erased:
                continue
            fields = {codec.DECIDED + write.trigger_tag: codec.decided_value(write.memory)} if write.remembered else {}
            fields.update({codec.CLAIM + t: codec.claim_value(c) for t, c in write.claims.items()})
            for friction_id, detected_ms in write.frictions:
                # A friction is decided once (a redelivery finds its decided marker): its record is new here.
                fields.setdefault(friction_field(friction_id), f"{detected_ms}|{detection_day(detected_ms)}|")
            flat = [item for pair in fields.items() for item in pair]
            hashes.append([self._k.member(write.member_id), flat, write.stale])
            for delivery, due_ms in write.deliveries:
                deliveries.append(
                    [self._k.delivery(delivery.member_id, delivery.message_id), codec.delivery_value(delivery)]
                )
                due.append([str(due_ms), f"{delivery.member_id}|{delivery.message_id}"])
        counters = Counter(c for write in writes for c in write.counters)
        counted = [[self._k.results(campaign), counter, n] for (campaign, counter), n in counters.items()]
        inbox = self._inbox.writes([item for write in writes if not write.erased for item in write.inbox])
        effects = [
            self._effect_args(write.member_id, *effect)
            for write in writes
            if not write.erased
            for effect in write.effects
        ]
        batch = codec.dumps({"h": hashes, "d": deliveries, "z": due, **inbox, "x": effects, "c": counted})
        await self._write(keys=[self._k.due], args=[batch])

    async def release_cap(self, pipe: Pipeline, member_id: str, campaign_id: str, trigger_key: str) -> None:
        """A message that did not go out gives its slot in the frequency cap back."""
        await self._release(keys=[self._k.member(member_id)], args=[claim_field(campaign_id, trigger_key)], client=pipe)

    async def effect_in(
        self, pipe: Pipeline, member_id: str, campaign_id: str, friction_id: str, group: str, detected_ms: int
    ) -> None:
        member, effect, *args = self._effect_args(member_id, campaign_id, friction_id, detected_ms, group)
        # Queued on the pipeline (its script is loaded before the transaction runs).
        await self._record_effect(keys=[member, effect], args=args, client=pipe)

    def _effect_args(
        self, member_id: str, campaign_id: str, friction_id: str, detected_ms: int, group: str
    ) -> list[str]:
        """record_effect's arguments: member hash, effect hash, friction field, effect field, group, detected, day."""
        return [
            self._k.member(member_id), self._k.effect(campaign_id), friction_field(friction_id),
            effect_field(friction_id, campaign_id), group, str(detected_ms), detection_day(detected_ms),
        ]  # fmt: skip

    async def friction_resolved(self, pipe: Pipeline, member_id: str, friction_id: str, resolved_ms: int) -> None:
        args: list[str | int] = [
            friction_field(friction_id),
            resolved_ms,
            self._k.effect(""),
            effect_field(friction_id),
        ]
        await self._resolve_friction(keys=[self._k.member(member_id)], args=args, client=pipe)

    def pipeline(self) -> Pipeline:
        return self._redis.pipeline(transaction=False)
