"""notifications' Redis: campaigns, the projections deciding needs, decisions, deliveries, the inbox, results.

No address and no name is ever stored here: identity gives them at send time.

Keys (prefix `notifications:`; a member's keys carry the `{member_id}` hash tag):
  campaign:<id>                   hash: id, status, version, library, created_at, updated_at, overlaps (JSON)
  campaign-versions:<id>          hash: version → definition (JSON): every version ever saved
  campaigns                       sorted set: campaign id → created (ms), for listing
  campaigns:active                set: ids of active campaigns
  campaigns:revision              counter bumped by every campaign change (deciders reload their cache)
  results:<campaign>              hash: triggered, sent, failed, deferred, suppressed:<reason> → count
  effect:<campaign>               hash: `<group>:<day>:total`, `<group>:<day>:resolved:<days>` → count (results.py)
  broadcast:<campaign>            hash: a broadcast's run: status, library, cursor
  due                             sorted set: `<member>|<message id>` → when (ms): deliveries to make, including
                                  quiet-hours deferrals and retries; a claimed one is leased (moved later)
  catalog:proposition:<slug>      hash: name_nl, name_en, retired
  catalog:offers:<slug>           hash: library → JSON {local_name, branches, url}: libraries offering it now
  catalog:library:<code>          hash: name, website, branches (JSON code → name), hours (JSON code → hours)
  libraries                       set: library codes members signed up at
  library-members:<code>          set: members whose home library it is (broadcast audiences)
  alias:<old id>                  string: the member a merged id now is
  erased:<id>                     string: "1", so a late trigger for an erased member sends nothing (no data)
  profile:{m}                     hash: age_band, library, origin, platform, guardian_id
  propositions:{m}                set: propositions the member signed up through or took part in
  wards:{m}                       set: members this member is the guardian of
  consent:{m}                     hash: "<medium>:<purpose>" → "granted|<ms>" or "withdrawn|<ms>" (event time)
  claims:{m}                      hash: "<campaign>|<trigger key>" → "<message id>|<expires ms, 0: never>"
  sent:{m}                        sorted set: message id → when (ms): the frequency cap's window
  inbox:{m}                       sorted set: message id → created (ms)
  message:{m}:<message id>        hash: an in-app message as the apps show it, and `read`
  decided:{m}:<event id>          string: the decision events of a trigger (JSON), for redeliveries (TTL)
  job:{m}:<message id>            hash: a delivery to make or just made (see Job)
  friction:{m}:<friction id>      hash: detected (ms), day, resolved (ms), c:<campaign> → messaged | holdout
  index:{m}                       set: the member's decided, job and friction keys, so erasure finds them
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from services.notifications.campaigns import BUILT_IN, Campaign, CampaignDefinition, Status
from services.notifications.results import detection_day
from services.notifications.templates import LibraryInfo, PropositionInfo
from shared.settings import Settings

FRICTION_TTL_SECONDS = 400 * 24 * 3600  # longer than any effect window

_CLAIM_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local lease = tonumber(ARGV[1]) + tonumber(ARGV[2])
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], lease, member) end
return due
"""

# Consent events may arrive out of order: the latest by event time wins.
_SET_CONSENT = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local at = tonumber(string.match(current, '|(%d+)$'))
  if at and at > tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3])
return 1
"""

# Only a message not yet in the inbox is added: a second delivery of it changes nothing.
_DELIVER = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[2], unpack(ARGV, 3))
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
"""

# A friction of a messaged or held-out member enters the campaign's effect once; if it was resolved already,
# the resolution counts at once. KEYS: friction hash, effect hash, member index.
_RECORD_EFFECT = """
if redis.call('HSETNX', KEYS[1], 'c:' .. ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HSETNX', KEYS[1], 'detected', ARGV[3])
redis.call('HSETNX', KEYS[1], 'day', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('SADD', KEYS[3], KEYS[1])
local day = redis.call('HGET', KEYS[1], 'day')
redis.call('HINCRBY', KEYS[2], ARGV[2] .. ':' .. day .. ':total', 1)
local resolved = redis.call('HGET', KEYS[1], 'resolved')
if resolved then
  local detected = tonumber(redis.call('HGET', KEYS[1], 'detected'))
  local taken = math.floor(math.max(0, tonumber(resolved) - detected) / 86400000)
  redis.call('HINCRBY', KEYS[2], ARGV[2] .. ':' .. day .. ':resolved:' .. taken, 1)
end
return 1
"""

# A resolution counts for every campaign the friction is in, once; frictions no campaign acted on are ignored.
_RESOLVE_FRICTION = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HSETNX', KEYS[1], 'resolved', ARGV[1]) == 0 then return 0 end
local detected = redis.call('HGET', KEYS[1], 'detected')
local day = redis.call('HGET', KEYS[1], 'day')
local taken = math.floor(math.max(0, tonumber(ARGV[1]) - tonumber(detected)) / 86400000)
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 2) == 'c:' then
    local effect = ARGV[2] .. string.sub(fields[i], 3)
    redis.call('HINCRBY', effect, fields[i + 1] .. ':' .. day .. ':resolved:' .. taken, 1)
  end
end
return 1
"""


def stop_if_cancelled() -> None:
    """Raise CancelledError when the current task was asked to stop.

    redis-py 8.1's asyncio client often swallows a cancellation that arrives while a command runs; a loop that
    then waits again would keep the process from shutting down. Background loops call this between rounds.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _s(value: Any) -> str:
    return cast(str, value)


@dataclass
class DecisionWrite:
    """Everything one trigger's decisions change, written in one transaction with the decided marker."""

    member_id: str
    event_id: str
    outbox: list[dict[str, Any]] = field(default_factory=list)  # structured CloudEvents
    counters: list[tuple[str, str]] = field(default_factory=list)  # (campaign id, counter)
    claims: dict[str, str] = field(default_factory=dict)
    sent_log: list[tuple[str, int]] = field(default_factory=list)  # (message id, ms)
    jobs: list[tuple[str, dict[str, str], int]] = field(default_factory=list)  # (message id, job, due ms)
    frictions: list[tuple[str, int]] = field(default_factory=list)  # (friction id, detected ms)
    holdouts: list[tuple[str, str, int]] = field(default_factory=list)  # (campaign, friction id, detected ms)


@dataclass(frozen=True)
class MemberRecord:
    profile: dict[str, str]
    propositions: frozenset[str]
    consents: dict[str, bool]  # the member's own
    erased: bool


def parse_consents(raw: Mapping[str, str]) -> dict[str, bool]:
    return {name: value.split("|", 1)[0] == "granted" for name, value in raw.items()}


class NotificationStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self._claim_due = redis.register_script(_CLAIM_DUE)
        self._set_consent = redis.register_script(_SET_CONSENT)
        self._deliver = redis.register_script(_DELIVER)
        self._record_effect = redis.register_script(_RECORD_EFFECT)
        self._resolve_friction = redis.register_script(_RESOLVE_FRICTION)

    # ------------------------------------------------------------------------------------------ keys

    def _k(self, *parts: str) -> str:
        return self._settings.key("notifications", *parts)

    def _m(self, kind: str, member_id: str, *rest: str) -> str:
        return self._k(kind, "{" + member_id + "}", *rest)

    @property
    def _due(self) -> str:
        return self._k("due")

    # ------------------------------------------------------------------------------------- campaigns

    async def save_campaign(self, campaign: Campaign) -> None:
        """Store the campaign's current state and its version's definition; deciders see it at once."""
        definition = campaign.definition.model_dump_json()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._k("campaign", campaign.id), mapping=cast(Any, self._campaign_fields(campaign)))
            pipe.hset(self._k("campaign-versions", campaign.id), str(campaign.version), definition)
            pipe.zadd(self._k("campaigns"), {campaign.id: _ms(datetime.fromisoformat(campaign.created_at))}, nx=True)
            if campaign.status == "active":
                pipe.sadd(self._k("campaigns", "active"), campaign.id)
            else:
                pipe.srem(self._k("campaigns", "active"), campaign.id)
            pipe.incr(self._k("campaigns", "revision"))
            await pipe.execute()

    async def restore_campaign(self, previous: Campaign | None, failed: Campaign) -> None:
        """Undo `save_campaign(failed)` (its event could not be published)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            if previous is None or previous.built_in:
                pipe.delete(self._k("campaign", failed.id), self._k("campaign-versions", failed.id))
                pipe.zrem(self._k("campaigns"), failed.id)
                pipe.srem(self._k("campaigns", "active"), failed.id)
            else:
                pipe.hset(self._k("campaign", previous.id), mapping=cast(Any, self._campaign_fields(previous)))
                if failed.version != previous.version:
                    pipe.hdel(self._k("campaign-versions", failed.id), str(failed.version))
                if previous.status == "active":
                    pipe.sadd(self._k("campaigns", "active"), previous.id)
                else:
                    pipe.srem(self._k("campaigns", "active"), previous.id)
            pipe.incr(self._k("campaigns", "revision"))
            await pipe.execute()

    @staticmethod
    def _campaign_fields(campaign: Campaign) -> dict[str, str]:
        return {
            "id": campaign.id,
            "status": campaign.status,
            "version": str(campaign.version),
            "library": campaign.definition.library or "",
            "created_at": campaign.created_at,
            "updated_at": campaign.updated_at,
            "overlaps": json.dumps(list(campaign.overlaps)),
        }

    async def campaign(self, campaign_id: str) -> Campaign | None:
        """The stored campaign; a built-in one nobody changed yet is there too."""
        raw = cast(dict[str, str], await self._redis.hgetall(self._k("campaign", campaign_id)))
        if not raw:
            return next((c for c in BUILT_IN if c.id == campaign_id), None)
        definition = await self.campaign_version(campaign_id, int(raw["version"]))
        assert definition is not None, f"campaign {campaign_id} lost its current version"
        return self._campaign(raw, definition)

    @staticmethod
    def _campaign(raw: dict[str, str], definition: CampaignDefinition) -> Campaign:
        return Campaign(
            id=raw["id"],
            version=int(raw["version"]),
            status=cast(Status, raw["status"]),
            definition=definition,
            created_at=raw["created_at"],
            updated_at=raw["updated_at"],
            overlaps=tuple(json.loads(raw.get("overlaps") or "[]")),
        )

    async def campaign_version(self, campaign_id: str, version: int) -> CampaignDefinition | None:
        raw = await self._redis.hget(self._k("campaign-versions", campaign_id), str(version))
        if raw is None:
            built_in = next((c for c in BUILT_IN if c.id == campaign_id and c.version == version), None)
            return built_in.definition if built_in else None
        return CampaignDefinition.model_validate_json(_s(raw))

    async def versions(self, campaign_id: str) -> list[tuple[int, CampaignDefinition]]:
        raw = cast(dict[str, str], await self._redis.hgetall(self._k("campaign-versions", campaign_id)))
        found = {int(v): CampaignDefinition.model_validate_json(d) for v, d in raw.items()}
        for built_in in BUILT_IN:
            if built_in.id == campaign_id:
                found.setdefault(built_in.version, built_in.definition)
        return sorted(found.items())

    async def campaigns(self) -> list[Campaign]:
        """Every campaign, in the order they were created (built-in ones first)."""
        ids = cast(list[str], await self._redis.zrange(self._k("campaigns"), 0, -1))
        found = [c for c in await self._campaigns(ids) if c is not None]
        stored = {c.id for c in found}
        return [c for c in BUILT_IN if c.id not in stored] + found

    async def _campaigns(self, ids: Sequence[str]) -> list[Campaign | None]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for campaign_id in ids:
                pipe.hgetall(self._k("campaign", campaign_id))
            raws = cast(list[dict[str, str]], await pipe.execute())
        async with self._redis.pipeline(transaction=False) as pipe:
            for raw in raws:
                pipe.hget(self._k("campaign-versions", raw.get("id", "")), raw.get("version", "0"))
            definitions = cast(list[str | None], await pipe.execute())
        return [
            self._campaign(raw, CampaignDefinition.model_validate_json(definition)) if raw and definition else None
            for raw, definition in zip(raws, definitions, strict=True)
        ]

    async def revision(self) -> int:
        return int(await self._redis.get(self._k("campaigns", "revision")) or 0)

    async def active_campaigns(self) -> list[Campaign]:
        ids = sorted(cast(set[str], await self._redis.smembers(self._k("campaigns", "active"))))
        stored = {
            c.id: c
            for c in await self._campaigns(ids)
            if c is not None
        }  # fmt: skip
        overridden = set(await self._stored_ids(c.id for c in BUILT_IN))
        built_in = [c for c in BUILT_IN if c.id not in overridden and c.status == "active"]
        return built_in + list(stored.values())

    async def _stored_ids(self, ids: Iterable[str]) -> list[str]:
        ids = list(ids)
        async with self._redis.pipeline(transaction=False) as pipe:
            for campaign_id in ids:
                pipe.exists(self._k("campaign", campaign_id))
            found = await pipe.execute()
        return [campaign_id for campaign_id, exists in zip(ids, found, strict=True) if exists]

    async def results(self, campaign_id: str) -> dict[str, str]:
        return cast(dict[str, str], await self._redis.hgetall(self._k("results", campaign_id)))

    async def effect(self, campaign_id: str) -> dict[str, str]:
        return cast(dict[str, str], await self._redis.hgetall(self._k("effect", campaign_id)))

    async def count_all(self, counters: Iterable[tuple[str, str]]) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            for campaign_id, counter in counters:
                pipe.hincrby(self._k("results", campaign_id), counter, 1)
            await pipe.execute()

    # ------------------------------------------------------------------------------------ catalogue

    async def set_proposition(self, slug: str, name_nl: str, name_en: str, retired: bool) -> None:
        fields = {"name_nl": name_nl, "name_en": name_en, "retired": "1" if retired else "0"}
        await self._redis.hset(self._k("catalog", "proposition", slug), mapping=cast(Any, fields))

    async def set_offering(self, proposition: str, library: str, offering: dict[str, Any] | None) -> None:
        key = self._k("catalog", "offers", proposition)
        if offering is None:
            await self._redis.hdel(key, library)
        else:
            await self._redis.hset(key, library, json.dumps(offering))

    async def set_library(
        self, code: str, name: str, website: str, branches: dict[str, str], branch_hours: dict[str, str]
    ) -> None:
        fields = {"name": name, "website": website, "branches": json.dumps(branches), "hours": json.dumps(branch_hours)}
        await self._redis.hset(self._k("catalog", "library", code), mapping=cast(Any, fields))

    async def library(self, code: str | None) -> LibraryInfo | None:
        if not code:
            return None
        raw = cast(dict[str, str], await self._redis.hgetall(self._k("catalog", "library", code)))
        if not raw:
            return None
        return LibraryInfo(
            code=code,
            name=raw.get("name", ""),
            website=raw.get("website", ""),
            branches=json.loads(raw.get("branches") or "{}"),
            branch_hours=json.loads(raw.get("hours") or "{}"),
        )

    async def offered_by(self, proposition: str) -> frozenset[str]:
        """Libraries offering the proposition now (none when the network retired it)."""
        retired = await self._redis.hget(self._k("catalog", "proposition", proposition), "retired")
        if retired == "1":
            return frozenset()
        return frozenset(cast(list[str], await self._redis.hkeys(self._k("catalog", "offers", proposition))))

    async def proposition(self, slug: str, library: str | None, locale: str = "nl") -> PropositionInfo:
        """The proposition as the library offers it: its local name when it has one, else the national name."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._k("catalog", "proposition", slug))
            pipe.hget(self._k("catalog", "offers", slug), library or "")
            names, offering_raw = cast(tuple[dict[str, str], str | None], await pipe.execute())
        offering = json.loads(offering_raw) if offering_raw else {}
        national = names.get("name_en" if locale == "en" else "name_nl") or names.get("name_nl") or slug
        return PropositionInfo(slug=slug, name=offering.get("local_name") or national, url=offering.get("url") or "")

    # ---------------------------------------------------------------------------------- projections

    async def resolve(self, member_id: str) -> str:
        """The member an id means now: the survivor when it was merged into another."""
        for _ in range(5):  # merges of merges; never loop for ever
            survivor = await self._redis.get(self._k("alias", member_id))
            if survivor is None:
                return member_id
            member_id = _s(survivor)
        return member_id

    async def signed_up(self, member_id: str, profile: dict[str, str], proposition: str | None) -> None:
        library = profile["library"]
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._m("profile", member_id), mapping=cast(Any, profile))
            pipe.sadd(self._k("library-members", library), member_id)
            pipe.sadd(self._k("libraries"), library)
            if proposition:
                pipe.sadd(self._m("propositions", member_id), proposition)
            await pipe.execute()

    async def took_part(self, member_id: str, proposition: str) -> None:
        await self._redis.sadd(self._m("propositions", member_id), proposition)

    async def set_consent(self, member_id: str, medium: str, purpose: str, granted: bool, at: datetime) -> None:
        state = "granted" if granted else "withdrawn"
        await self._set_consent(keys=[self._m("consent", member_id)], args=[f"{medium}:{purpose}", state, _ms(at)])

    async def set_guardian(self, member_id: str, guardian_id: str) -> None:
        previous = await self._redis.hget(self._m("profile", member_id), "guardian_id")
        async with self._redis.pipeline(transaction=True) as pipe:
            if previous and previous != guardian_id:
                pipe.srem(self._m("wards", _s(previous)), member_id)
            pipe.hset(self._m("profile", member_id), "guardian_id", guardian_id)
            pipe.sadd(self._m("wards", guardian_id), member_id)
            await pipe.execute()

    async def member(self, member_id: str) -> MemberRecord:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._m("profile", member_id))
            pipe.smembers(self._m("propositions", member_id))
            pipe.hgetall(self._m("consent", member_id))
            pipe.exists(self._k("erased", member_id))
            profile, propositions, consents, erased = await pipe.execute()
        return MemberRecord(profile, frozenset(propositions), parse_consents(consents), bool(erased))

    async def consents(self, member_id: str) -> dict[str, bool]:
        return parse_consents(cast(dict[str, str], await self._redis.hgetall(self._m("consent", member_id))))

    async def is_erased(self, member_id: str) -> bool:
        return bool(await self._redis.exists(self._k("erased", member_id)))

    async def merge(self, merged_id: str, survivor_id: str) -> None:
        """The merged id becomes an alias: its inbox, claims, cap window and wards move to the survivor."""
        inbox = cast(
            list[tuple[str, float]], await self._redis.zrange(self._m("inbox", merged_id), 0, -1, withscores=True)
        )
        async with self._redis.pipeline(transaction=False) as pipe:
            for message_id, _ in inbox:
                pipe.hgetall(self._m("message", merged_id, message_id))
            messages = cast(list[dict[str, str]], await pipe.execute())
        claims = cast(dict[str, str], await self._redis.hgetall(self._m("claims", merged_id)))
        sent = cast(
            list[tuple[str, float]], await self._redis.zrange(self._m("sent", merged_id), 0, -1, withscores=True)
        )
        wards = cast(set[str], await self._redis.smembers(self._m("wards", merged_id)))
        profile = cast(dict[str, str], await self._redis.hgetall(self._m("profile", merged_id)))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._k("alias", merged_id), survivor_id)
            for (message_id, created), message in zip(inbox, messages, strict=True):
                if message:
                    pipe.hset(self._m("message", survivor_id, message_id), mapping=cast(Any, message))
                    pipe.zadd(self._m("inbox", survivor_id), {message_id: created})
                pipe.delete(self._m("message", merged_id, message_id))
            for name, value in claims.items():
                pipe.hsetnx(self._m("claims", survivor_id), name, value)
            if sent:
                pipe.zadd(self._m("sent", survivor_id), dict(sent))
            for ward in wards:
                pipe.hset(self._m("profile", ward), "guardian_id", survivor_id)
                pipe.sadd(self._m("wards", survivor_id), ward)
            if profile.get("library"):
                pipe.srem(self._k("library-members", profile["library"]), merged_id)
            pipe.delete(
                self._m("inbox", merged_id),
                self._m("claims", merged_id),
                self._m("sent", merged_id),
                self._m("wards", merged_id),
                self._m("profile", merged_id),
                self._m("propositions", merged_id),
                self._m("consent", merged_id),
            )
            await pipe.execute()

    async def erase(self, member_id: str) -> None:
        """Every notifications state of the member goes; a tombstone holding only the id stays."""
        indexed = cast(set[str], await self._redis.smembers(self._m("index", member_id)))
        inbox = cast(list[str], await self._redis.zrange(self._m("inbox", member_id), 0, -1))
        wards = cast(set[str], await self._redis.smembers(self._m("wards", member_id)))
        profile = cast(dict[str, str], await self._redis.hgetall(self._m("profile", member_id)))
        job_prefix = self._m("job", member_id, "")
        async with self._redis.pipeline(transaction=True) as pipe:
            for key in indexed:
                pipe.delete(key)
                if key.startswith(job_prefix):
                    pipe.zrem(self._due, f"{member_id}|{key.removeprefix(job_prefix)}")
            for message_id in inbox:
                pipe.delete(self._m("message", member_id, message_id))
            for ward in wards:
                pipe.hdel(self._m("profile", ward), "guardian_id")
            if profile.get("guardian_id"):
                pipe.srem(self._m("wards", profile["guardian_id"]), member_id)
            if profile.get("library"):
                pipe.srem(self._k("library-members", profile["library"]), member_id)
            pipe.delete(
                *(
                    self._m(kind, member_id)
                    for kind in ("profile", "propositions", "wards", "consent", "claims", "sent", "inbox", "index")
                )
            )
            pipe.set(self._k("erased", member_id), "1")
            await pipe.execute()

    # ------------------------------------------------------------------------------------- deciding

    async def decided(self, member_id: str, event_id: str) -> list[dict[str, Any]] | None:
        """The decision events of a trigger handled before, or None."""
        raw = await self._redis.get(self._m("decided", member_id, event_id))
        return None if raw is None else cast(list[dict[str, Any]], json.loads(_s(raw)))

    async def claims(self, member_id: str, names: Sequence[str], now: datetime) -> dict[str, str]:
        """The message holding each (campaign, trigger) claim, leaving out claims that expired."""
        if not names:
            return {}
        values = cast(list[str | None], await self._redis.hmget(self._m("claims", member_id), list(names)))
        held = {}
        for name, value in zip(names, values, strict=True):
            if value:
                message_id, _, expires = value.partition("|")
                if not expires or int(expires) == 0 or int(expires) > _ms(now):
                    held[name] = message_id
        return held

    async def sent_in_window(self, member_id: str, since: datetime) -> int:
        return int(await self._redis.zcount(self._m("sent", member_id), _ms(since), "+inf"))

    async def write_decisions(self, write: DecisionWrite, ttl_seconds: int, trim_before: datetime) -> None:
        m = write.member_id
        index = self._m("index", m)
        async with self._redis.pipeline(transaction=True) as pipe:
            decided = self._m("decided", m, write.event_id)
            pipe.set(decided, json.dumps(write.outbox), ex=ttl_seconds)
            pipe.sadd(index, decided)
            for campaign_id, counter in write.counters:
                pipe.hincrby(self._k("results", campaign_id), counter, 1)
            if write.claims:
                pipe.hset(self._m("claims", m), mapping=cast(Any, write.claims))
            if write.sent_log:
                pipe.zadd(self._m("sent", m), dict(write.sent_log))
                pipe.zremrangebyscore(self._m("sent", m), "-inf", _ms(trim_before))
            for message_id, job, due_ms in write.jobs:
                key = self._m("job", m, message_id)
                pipe.hset(key, mapping=cast(Any, job))
                pipe.sadd(index, key)
                pipe.zadd(self._due, {f"{m}|{message_id}": due_ms})
            for friction_id, detected_ms in write.frictions:
                key = self._m("friction", m, friction_id)
                pipe.hsetnx(key, "detected", str(detected_ms))
                pipe.hsetnx(key, "day", detection_day(detected_ms))
                pipe.expire(key, FRICTION_TTL_SECONDS)
                pipe.sadd(index, key)
            for campaign_id, friction_id, detected_ms in write.holdouts:
                await self._effect_in(pipe, m, campaign_id, friction_id, "holdout", detected_ms)
            await pipe.execute()

    async def _effect_in(
        self, pipe: Pipeline, member_id: str, campaign_id: str, friction_id: str, group: str, detected_ms: int
    ) -> None:
        keys = [
            self._m("friction", member_id, friction_id),
            self._k("effect", campaign_id),
            self._m("index", member_id),
        ]
        args: list[str | int] = [campaign_id, group, detected_ms, detection_day(detected_ms), FRICTION_TTL_SECONDS]
        # Queued on the pipeline (its script is loaded before the transaction runs).
        await self._record_effect(keys=keys, args=args, client=pipe)

    async def friction_resolved(self, member_id: str, friction_id: str, resolved_at: datetime) -> None:
        await self._resolve_friction(
            keys=[self._m("friction", member_id, friction_id)], args=[_ms(resolved_at), self._k("effect", "")]
        )

    # ----------------------------------------------------------------------------------- deliveries

    async def claim_due(self, now: datetime, lease_seconds: float, limit: int) -> list[tuple[str, str]]:
        """Deliveries due by `now`, leased to the caller: another claim gets them only after the lease."""
        found = cast(
            list[str], await self._claim_due(keys=[self._due], args=[_ms(now), int(lease_seconds * 1000), limit])
        )
        return [cast(tuple[str, str], tuple(entry.split("|", 1))) for entry in found]

    async def next_due(self) -> float | None:
        first = cast(list[tuple[str, float]], await self._redis.zrange(self._due, 0, 0, withscores=True))
        return first[0][1] if first else None

    async def due_at(self, member_id: str, message_id: str) -> datetime | None:
        score = await self._redis.zscore(self._due, f"{member_id}|{message_id}")
        return None if score is None else datetime.fromtimestamp(score / 1000, UTC)

    async def job(self, member_id: str, message_id: str) -> dict[str, str] | None:
        found = cast(dict[str, str], await self._redis.hgetall(self._m("job", member_id, message_id)))
        return found or None

    async def retry_later(self, member_id: str, message_id: str, attempts: int, error: str, due: datetime) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._m("job", member_id, message_id), mapping={"attempts": str(attempts), "last_error": error})
            pipe.zadd(self._due, {f"{member_id}|{message_id}": _ms(due)})
            await pipe.execute()

    async def finish(
        self,
        member_id: str,
        message_id: str,
        *,
        status: str,
        outbox: list[dict[str, Any]],
        campaign_id: str,
        counter: str,
        release_cap: bool,
        messaged_friction: tuple[str, int] | None = None,
    ) -> None:
        """Record how a delivery ended, with its events (published next, again if the process dies first)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            fields = {"status": status, "outbox": json.dumps(outbox)}
            pipe.hset(self._m("job", member_id, message_id), mapping=cast(Any, fields))
            pipe.hincrby(self._k("results", campaign_id), counter, 1)
            if release_cap:
                pipe.zrem(self._m("sent", member_id), message_id)
            if messaged_friction is not None:
                friction_id, detected_ms = messaged_friction
                await self._effect_in(pipe, member_id, campaign_id, friction_id, "messaged", detected_ms)
            await pipe.execute()

    async def forget(self, member_id: str, message_id: str) -> None:
        key = self._m("job", member_id, message_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.srem(self._m("index", member_id), key)
            pipe.zrem(self._due, f"{member_id}|{message_id}")
            await pipe.execute()

    # ----------------------------------------------------------------------------------------- inbox

    async def deliver(self, member_id: str, message_id: str, fields: dict[str, str], at: datetime) -> bool:
        """Put the message in the member's inbox unless it is there already; True when it was new."""
        flat: list[str] = [item for pair in fields.items() for item in pair]
        added = await self._deliver(
            keys=[self._m("inbox", member_id), self._m("message", member_id, message_id)],
            args=[message_id, _ms(at), *flat],
        )
        return bool(added)

    async def inbox(self, member_id: str, limit: int = 50, unread_only: bool = False) -> list[dict[str, Any]]:
        ids = cast(
            list[str], await self._redis.zrevrange(self._m("inbox", member_id), 0, -1 if unread_only else limit - 1)
        )
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for message_id in ids:
                pipe.hgetall(self._m("message", member_id, message_id))
            found = cast(list[dict[str, str]], await pipe.execute())
        messages = [{**m, "read": m.get("read") == "1"} for m in found if m]
        if unread_only:
            messages = [m for m in messages if not m["read"]]
        return messages[:limit]

    async def message(self, member_id: str, message_id: str) -> dict[str, str] | None:
        found = cast(dict[str, str], await self._redis.hgetall(self._m("message", member_id, message_id)))
        return found or None

    async def mark_read(self, member_id: str, message_id: str, read: bool) -> None:
        await self._redis.hset(self._m("message", member_id, message_id), "read", "1" if read else "0")

    # ------------------------------------------------------------------------------------ broadcasts

    async def broadcast_state(self, campaign_id: str) -> dict[str, str]:
        return cast(dict[str, str], await self._redis.hgetall(self._k("broadcast", campaign_id)))

    async def save_broadcast_state(self, campaign_id: str, state: dict[str, str]) -> None:
        await self._redis.hset(self._k("broadcast", campaign_id), mapping=cast(Any, state))

    async def libraries(self) -> list[str]:
        return sorted(cast(set[str], await self._redis.smembers(self._k("libraries"))))

    async def library_members(self, library: str, cursor: int, count: int = 200) -> tuple[int, list[str]]:
        next_cursor, members = await self._redis.sscan(self._k("library-members", library), cursor, count=count)
        return int(next_cursor), sorted(cast(list[str], members))

    # ------------------------------------------------------------------------------------ inspection

    async def keys_of(self, member_id: str) -> list[str]:
        """Every key naming the member (for erasure tests and operators; scans, so not for hot paths)."""
        pattern = self._k("*" + member_id + "*")
        return sorted([_s(k) async for k in self._redis.scan_iter(match=pattern, count=1000)])
