"""What deciding remembers per member: the cap window, the once-per-trigger claims, the triggers decided (for
redeliveries) and the frictions a campaign acted on (for its effect). All in the member's hash (keys.py).

A batch of triggers is written in one transaction: its decisions, claims, cap window, deliveries and counters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from services.notifications import codec
from services.notifications.campaign_store import CampaignStore
from services.notifications.delivery_queue import DeliveryQueue
from services.notifications.keys import Keys, tag
from services.notifications.results import detection_day
from services.notifications.state import Claim, DecisionMemory, Delivery
from shared.settings import Settings

# A friction of a messaged or held-out member enters the campaign's effect once; if it was resolved already, the
# resolution counts at once. KEYS: member hash, effect hash; ARGV: field, campaign, group, detected ms, day.
_RECORD_EFFECT = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local f
if raw then f = cjson.decode(raw) else f = {d = tonumber(ARGV[4]), y = ARGV[5], c = {}} end
if type(f.c) ~= 'table' then f.c = {} end
if f.c[ARGV[2]] then return 0 end
f.c[ARGV[2]] = ARGV[3]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(f))
redis.call('HINCRBY', KEYS[2], ARGV[3] .. ':' .. f.y .. ':total', 1)
if f.r then
  local taken = math.floor(math.max(0, f.r - f.d) / 86400000)
  redis.call('HINCRBY', KEYS[2], ARGV[3] .. ':' .. f.y .. ':resolved:' .. taken, 1)
end
return 1
"""

# A resolution counts for every campaign the friction is in, once; frictions no campaign acted on are ignored.
# KEYS: member hash; ARGV: field, resolved ms, the effect keys' prefix.
_RESOLVE_FRICTION = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local f = cjson.decode(raw)
if f.r then return 0 end
f.r = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(f))
local taken = math.floor(math.max(0, f.r - f.d) / 86400000)
if type(f.c) == 'table' then
  for campaign, group in pairs(f.c) do
    redis.call('HINCRBY', ARGV[3] .. campaign, group .. ':' .. f.y .. ':resolved:' .. taken, 1)
  end
end
return 1
"""


def friction_field(friction_id: str) -> str:
    return codec.FRICTION + tag(friction_id)


@dataclass
class DecisionWrite:
    """Everything one trigger's decisions for one member change."""

    member_id: str
    trigger_tag: str
    memory: DecisionMemory
    erased: bool = False
    counters: list[tuple[str, str]] = field(default_factory=list)  # (campaign id, counter)
    claims: dict[str, Claim] = field(default_factory=dict)  # by claim tag
    sent: list[tuple[str, int]] = field(default_factory=list)  # (message tag, ms)
    deliveries: list[tuple[Delivery, int]] = field(default_factory=list)  # (delivery, due ms)
    frictions: list[tuple[str, int]] = field(default_factory=list)  # (friction id, detected ms)
    holdouts: list[tuple[str, str, int]] = field(default_factory=list)  # (campaign, friction id, detected ms)
    stale: list[str] = field(default_factory=list)  # fields no longer needed: out of the window, past the TTL


class DecisionLog:
    def __init__(self, redis: Redis, settings: Settings, campaigns: CampaignStore, queue: DeliveryQueue) -> None:
        self._redis = redis
        self._k = Keys(settings)
        self._campaigns = campaigns
        self._queue = queue
        self._record_effect = redis.register_script(_RECORD_EFFECT)
        self._resolve_friction = redis.register_script(_RESOLVE_FRICTION)

    async def write(self, writes: list[DecisionWrite]) -> None:
        """One transaction for a whole batch of triggers. Nothing is kept under an erased member's id: only the
        counts (which name nobody)."""
        if not writes:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            for write in writes:
                self._campaigns.count_in(pipe, write.counters)
                if write.erased:
                    continue
                key = self._k.member(write.member_id)
                fields = {codec.DECIDED + write.trigger_tag: codec.decided_value(write.memory)}
                fields.update({codec.CLAIM + t: codec.claim_value(c) for t, c in write.claims.items()})
                fields.update({codec.SENT + t: str(at) for t, at in write.sent})
                pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
                if write.stale:
                    pipe.hdel(key, *write.stale)
                for delivery, due_ms in write.deliveries:
                    self._queue.enqueue(pipe, delivery, due_ms)
                for friction_id, detected_ms in write.frictions:
                    record = codec.dumps({"d": detected_ms, "y": detection_day(detected_ms), "c": {}})
                    pipe.hsetnx(key, friction_field(friction_id), record)
                for campaign_id, friction_id, detected_ms in write.holdouts:
                    await self.effect_in(pipe, write.member_id, campaign_id, friction_id, "holdout", detected_ms)
            await pipe.execute()

    def release_cap(self, pipe: Pipeline, member_id: str, message_id: str) -> None:
        """A message that did not go out gives its slot in the frequency cap back."""
        pipe.hdel(self._k.member(member_id), codec.SENT + codec.message_tag(message_id))

    async def effect_in(
        self, pipe: Pipeline, member_id: str, campaign_id: str, friction_id: str, group: str, detected_ms: int
    ) -> None:
        keys = [self._k.member(member_id), self._k.effect(campaign_id)]
        args: list[str | int] = [
            friction_field(friction_id),
            campaign_id,
            group,
            detected_ms,
            detection_day(detected_ms),
        ]
        # Queued on the pipeline (its script is loaded before the transaction runs).
        await self._record_effect(keys=keys, args=args, client=pipe)

    async def friction_resolved(self, pipe: Pipeline, member_id: str, friction_id: str, resolved_ms: int) -> None:
        args: list[str | int] = [friction_field(friction_id), resolved_ms, self._k.effect("")]
        await self._resolve_friction(keys=[self._k.member(member_id)], args=args, client=pipe)

    def pipeline(self) -> Pipeline:
        return self._redis.pipeline(transaction=False)
