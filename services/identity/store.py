"""Identity's Redis: the only place personal data lives. AOF is on in every run configuration.

Keys (prefix `identity:`; a member's own keys carry the `{member_id}` hash tag):
  member:{id}              hash: a `MemberRecord` (member_form.py): `sealed` (name, email, phone, birth_date,
                           postcode, encrypted with the member's own key), `key` (that key, wrapped by a master
                           key), and in the clear the pseudonymous home_library, signed_up_at, channel, platform,
                           source, language, last_channel, last_platform, card_activated_at, guardian_id
  accounts:{id}            hash: platform → JSON {ref, index}: the member's linked platform accounts
  consent:{id}             hash: "<medium>:<purpose>" → granted | withdrawn
  wards:{id}               set: members this member is the guardian of
  aliases:{id}             set: ids merged into this member
  registration:<id>        hash: a started, not yet completed registration (expires after 30 days)
  account:<hmac>           string: the member an external account belongs to
  dup:<hmac>               set: members with this e-mail address or phone number (keyed hash)
  suspicion:<id>           hash: a duplicate suspicion awaiting confirmation
  suspicions:pending       set: ids of pending suspicions
  alias:<old id>           string: the member an old id was merged into, or a web visitor (`v-…`) was linked to
  erased:<id>              string: tombstone, so an erased member stays 404 (holds no personal data)
  ingested:<event id>      string: pending | done, a CloudEvent id posted to /v1/events (shared/ingest.py)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from redis.asyncio import Redis

from services.identity import member_form
from services.identity.records import LinkedAccount, MemberChange, MemberRecord, Registration, Suspicion
from services.identity.settings import IdentitySettings
from services.identity.vault import Vault

REGISTRATION_TTL_SECONDS = 30 * 24 * 3600

# Claim an external account for a member: only when nobody has it, or it is theirs already.
_CLAIM_ACCOUNT = """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return owner end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""


# Where each posted id leads (following merges, as `resolve` does) and what handling its events needs of that member:
# one round trip for a whole batch of posted events. ARGV: the alias and member key prefixes, then the ids.
_STANDINGS = """
local standings = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  for _ = 1, 5 do
    local survivor = redis.call('GET', ARGV[1] .. id)
    if not survivor then break end
    id = survivor
  end
  local fields = redis.call('HMGET', ARGV[2] .. '{' .. id .. '}', 'home_library', 'last_channel', 'last_platform')
  table.insert(standings, id)
  for _, value in ipairs(fields) do table.insert(standings, value or '') end
end
return standings
"""
# Fields set on many hashes at once (some with a time to live), atomically. ARGV[1]: JSON [[key, ttl (0: none),
# [field, value, field, value...]], ...]: one argument, as redis-py packs thousands of arguments slowly (2,000
# members' fields: 80-140 ms as arguments, 20-80 ms as JSON).
_SET_FIELDS = """
local writes = cjson.decode(ARGV[1])
for _, write in ipairs(writes) do
  redis.call('HSET', write[1], unpack(write[3]))
  if write[2] > 0 then redis.call('EXPIRE', write[1], write[2]) end
end
return #writes
"""
# Change a member hash only if one of its fields still has the value read (an upgrade racing a write or another
# upgrade changes nothing twice). ARGV: the field, its value read, JSON {"set": {field: value}, "delete": [fields]}.
_UPGRADE = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
local change = cjson.decode(ARGV[3])
for name, value in pairs(change['set']) do redis.call('HSET', KEYS[1], name, value) end
for _, name in ipairs(change['delete']) do redis.call('HDEL', KEYS[1], name) end
return 1
"""


@dataclass(frozen=True)
class Upgraded:
    """What `MemberStore.upgrade` did: members whose personal data it sealed, member keys it rewrapped to the
    current master key, and members already as they should be."""

    sealed: int = 0
    rewrapped: int = 0
    unchanged: int = 0


def _s(value: Any) -> str:
    return cast(str, value)


@dataclass(frozen=True)
class Standing:
    """What handling a posted event needs of a member: who they are now (after merges), their library and where
    they last were (channel, platform). `home_library` is None when there is no such member (or not any more)."""

    member_id: str
    home_library: str | None
    last_touch: tuple[str, str] | None


@dataclass
class IngestedChanges:
    """What handling a batch of posted events changes, written at once after Kafka acknowledged its events."""

    members: dict[str, MemberChange] = field(default_factory=dict)
    consents: dict[str, dict[str, bool]] = field(default_factory=dict)  # member → "<medium>:<purpose>" → granted
    registrations: dict[str, Registration] = field(default_factory=dict)


class MemberStore:
    def __init__(self, redis: Redis, settings: IdentitySettings) -> None:
        self._redis = redis
        self._settings = settings
        self._vault = Vault(settings.master_keys())
        self._claim_account = redis.register_script(_CLAIM_ACCOUNT)
        self._standings = redis.register_script(_STANDINGS)
        self._set_fields = redis.register_script(_SET_FIELDS)
        self._upgrade = redis.register_script(_UPGRADE)

    # ------------------------------------------------------------------------------------------ keys

    def _k(self, *parts: str) -> str:
        return self._settings.key("identity", *parts)

    def _member(self, member_id: str) -> str:
        return self._k("member", "{" + member_id + "}")

    def _accounts(self, member_id: str) -> str:
        return self._k("accounts", "{" + member_id + "}")

    def _consent(self, member_id: str) -> str:
        return self._k("consent", "{" + member_id + "}")

    def _wards(self, member_id: str) -> str:
        return self._k("wards", "{" + member_id + "}")

    def _aliases(self, member_id: str) -> str:
        return self._k("aliases", "{" + member_id + "}")

    # --------------------------------------------------------------------------------------- members

    async def create(self, member_id: str, record: MemberRecord, dup_hashes: Iterable[str]) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._member(member_id), mapping=cast(Any, member_form.stored(self._vault, member_id, record)))
            for digest in dup_hashes:
                pipe.sadd(self._k("dup", digest), member_id)
            pipe.delete(self._k("registration", member_id))
            await pipe.execute()

    async def get(self, member_id: str) -> MemberRecord | None:
        found = cast(dict[str, str], await self._redis.hgetall(self._member(member_id)))
        return member_form.record(self._vault, member_id, found) if found else None

    async def touched(
        self, member_id: str, channel: str, platform: str, card_activated_at: datetime | None = None
    ) -> None:
        """Where the member was last (and when their card was activated, if that was the touch)."""
        fields = member_form.change_fields(MemberChange(channel, platform, card_activated_at))
        await self._redis.hset(self._member(member_id), mapping=cast(Any, fields))

    async def resolve(self, member_id: str) -> str:
        """The id to use for `member_id`: the survivor when it was merged into another member."""
        seen = 0
        while seen < 5:  # merges of merges; a cycle cannot arise, but never loop for ever
            survivor = await self._redis.get(self._k("alias", member_id))
            if survivor is None:
                return member_id
            member_id, seen = _s(survivor), seen + 1
        return member_id

    async def standings(self, ids: Iterable[str]) -> dict[str, Standing]:
        """Each id's `Standing`, for a whole batch in one round trip."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        flat = await self._standings(args=[self._k("alias", ""), self._k("member", ""), *wanted])
        found = {}
        for index, asked in enumerate(wanted):
            member_id, library, channel, platform = flat[4 * index : 4 * index + 4]
            last = (channel, platform) if platform else None
            found[asked] = Standing(member_id, library or None, last)
        return found

    async def apply(self, changes: IngestedChanges) -> None:
        """Write what a batch of posted events changed, atomically, in one round trip."""
        writes: list[tuple[str, int, list[str]]] = []

        def put(key: str, fields: dict[str, str], ttl: int = 0) -> None:
            writes.append((key, ttl, [part for field_and_value in fields.items() for part in field_and_value]))

        for member_id, change in changes.members.items():
            put(self._member(member_id), member_form.change_fields(change))
        for member_id, consents in changes.consents.items():
            put(self._consent(member_id), {k: "granted" if v else "withdrawn" for k, v in consents.items()})
        for registration_id, registration in changes.registrations.items():
            put(
                self._k("registration", registration_id),
                member_form.registration_fields(registration),
                REGISTRATION_TTL_SECONDS,
            )
        if writes:
            await self._set_fields(args=[json.dumps(writes, ensure_ascii=False)])

    async def upgrade(self, chunk: int = 500) -> Upgraded:
        """Seal every member hash that holds personal data in the clear (written before sealing existed) and
        rewrap every member key wrapped by an older master key. Idempotent; safe beside running services."""
        prefix = self._k("member", "")
        sealed = rewrapped = unchanged = 0
        keys: list[str] = []

        async def handle(batch: list[str]) -> None:
            nonlocal sealed, rewrapped, unchanged
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in batch:
                    pipe.hgetall(key)
                found = cast(list[dict[str, str]], await pipe.execute())
            changes: list[tuple[str, str, str, dict[str, Any], str]] = []  # key, field, its value, change, kind
            for key, fields in zip(batch, found, strict=True):
                member_id = key[len(prefix) :].strip("{}")
                seal = member_form.sealing(self._vault, member_id, fields)
                rewrap = None if seal is not None else member_form.rewrapping(self._vault, member_id, fields)
                if seal is not None:
                    changes.append((key, "name", fields["name"], {"set": seal, "delete": member_form.PERSONAL}, "s"))
                elif rewrap is not None:
                    old = fields[member_form.KEY]
                    changes.append((key, member_form.KEY, old, {"set": {member_form.KEY: rewrap}, "delete": []}, "r"))
                else:
                    unchanged += 1
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, name, value, change, _ in changes:
                    await self._upgrade(keys=[key], args=[name, value, json.dumps(change)], client=pipe)
                done = await pipe.execute()
            sealed += sum(int(d) for d, c in zip(done, changes, strict=True) if c[4] == "s")
            rewrapped += sum(int(d) for d, c in zip(done, changes, strict=True) if c[4] == "r")

        async for key in self._redis.scan_iter(match=prefix + "*", count=1000, _type="HASH"):
            keys.append(_s(key))
            if len(keys) >= chunk:
                await handle(keys)
                keys = []
        if keys:
            await handle(keys)
        return Upgraded(sealed, rewrapped, unchanged)

    async def is_erased(self, member_id: str) -> bool:
        return bool(await self._redis.exists(self._k("erased", member_id)))

    async def members_with(self, digest: str) -> set[str]:
        return cast(set[str], await self._redis.smembers(self._k("dup", digest)))

    # --------------------------------------------------------------------------------- registrations

    async def start_registration(self, registration_id: str, registration: Registration) -> None:
        key = self._k("registration", registration_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=cast(Any, member_form.registration_fields(registration)))
            pipe.expire(key, REGISTRATION_TTL_SECONDS)
            await pipe.execute()

    async def registration(self, registration_id: str) -> Registration | None:
        key = self._k("registration", registration_id)
        found = cast(dict[str, str], await self._redis.hgetall(key))
        if not found:
            return None
        return member_form.registration(found)

    # -------------------------------------------------------------------------------------- accounts

    async def claim_account(self, index: str, member_id: str) -> str:
        """Make the external account (by its keyed hash) the member's; returns its owner afterwards."""
        return _s(await self._claim_account(keys=[self._k("account", index)], args=[member_id]))

    async def release_account(self, index: str, member_id: str) -> None:
        key = self._k("account", index)
        if await self._redis.get(key) == member_id:
            await self._redis.delete(key)

    async def account_owner(self, index: str) -> str | None:
        owner = await self._redis.get(self._k("account", index))
        return _s(owner) if owner is not None else None

    async def accounts(self, member_id: str) -> dict[str, LinkedAccount]:
        """The member's linked accounts by platform."""
        raw = cast(dict[str, str], await self._redis.hgetall(self._accounts(member_id)))
        return {platform: member_form.account(value) for platform, value in raw.items()}

    async def set_account(self, member_id: str, platform: str, account: LinkedAccount) -> None:
        await self._redis.hset(self._accounts(member_id), platform, member_form.account_value(account))

    async def remove_account(self, member_id: str, platform: str) -> None:
        await self._redis.hdel(self._accounts(member_id), platform)

    # ------------------------------------------------------------------------------ consent, guardian

    async def set_consent(self, member_id: str, medium: str, purpose: str, granted: bool) -> None:
        value = "granted" if granted else "withdrawn"
        await self._redis.hset(self._consent(member_id), f"{medium}:{purpose}", value)

    async def consents(self, member_id: str) -> dict[str, str]:
        return cast(dict[str, str], await self._redis.hgetall(self._consent(member_id)))

    async def set_guardian(self, member_id: str, guardian_id: str, previous: str | None) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            if previous:
                pipe.srem(self._wards(previous), member_id)
            pipe.hset(self._member(member_id), "guardian_id", guardian_id)
            pipe.sadd(self._wards(guardian_id), member_id)
            await pipe.execute()

    async def wards(self, member_id: str) -> set[str]:
        return cast(set[str], await self._redis.smembers(self._wards(member_id)))

    # ------------------------------------------------------------------------------------ duplicates

    async def add_suspicion(self, suspicion: Suspicion) -> bool:
        """Queue a suspicion once: False when this pair is already queued (by this or a simultaneous sign-up)."""
        key = self._k("suspicion", suspicion.id)
        if not await self._redis.hsetnx(key, "id", suspicion.id):
            return False
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=cast(Any, member_form.suspicion_fields(suspicion)))
            pipe.sadd(self._k("suspicions", "pending"), suspicion.id)
            await pipe.execute()
        return True

    async def drop_suspicions(self, suspicion_ids: Iterable[str]) -> None:
        """Forget suspicions queued for a sign-up that did not happen after all."""
        ids = list(suspicion_ids)
        if ids:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(*[self._k("suspicion", s) for s in ids])
                pipe.srem(self._k("suspicions", "pending"), *ids)
                await pipe.execute()

    async def suspicion(self, suspicion_id: str) -> Suspicion | None:
        found = cast(dict[str, str], await self._redis.hgetall(self._k("suspicion", suspicion_id)))
        return member_form.suspicion(found) if found else None

    async def pending_suspicions(self) -> list[Suspicion]:
        ids = sorted(cast(set[str], await self._redis.smembers(self._k("suspicions", "pending"))))
        async with self._redis.pipeline(transaction=False) as pipe:
            for suspicion_id in ids:
                pipe.hgetall(self._k("suspicion", suspicion_id))
            found = cast(list[dict[str, str]], await pipe.execute())
        return [member_form.suspicion(s) for s in found if s]

    async def close_suspicion(self, suspicion_id: str, status: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._k("suspicion", suspicion_id), "status", status)
            pipe.srem(self._k("suspicions", "pending"), suspicion_id)
            await pipe.execute()

    async def _suspicions_of(self, member_id: str) -> list[str]:
        return [s.id for s in await self.pending_suspicions() if s.names(member_id)]

    async def link_visitor(self, visitor_id: str, member_id: str) -> None:
        """The web tracker's visitor is this member from now on (an alias: merges move it, erasure removes it)."""
        earlier = await self._redis.get(self._k("alias", visitor_id))
        async with self._redis.pipeline(transaction=True) as pipe:
            if earlier is not None:
                pipe.srem(self._aliases(_s(earlier)), visitor_id)
            pipe.set(self._k("alias", visitor_id), member_id)
            pipe.sadd(self._aliases(member_id), visitor_id)
            await pipe.execute()

    # ------------------------------------------------------------------------------- merge, erasure

    async def merge(self, merged_id: str, survivor_id: str, dup_hashes: Iterable[str]) -> None:
        """Move what the merged record had to the survivor, forget its personal data, keep an alias."""
        merged_accounts = await self.accounts(merged_id)
        survivor_accounts = await self.accounts(survivor_id)
        suspicions = await self._suspicions_of(merged_id)
        wards = await self.wards(merged_id)
        aliases = cast(set[str], await self._redis.smembers(self._aliases(merged_id)))
        async with self._redis.pipeline(transaction=True) as pipe:
            for platform, account in merged_accounts.items():
                if platform in survivor_accounts:
                    pipe.delete(self._k("account", account.index))  # the survivor keeps its own account
                else:
                    pipe.set(self._k("account", account.index), survivor_id)
                    pipe.hset(self._accounts(survivor_id), platform, member_form.account_value(account))
            for ward in wards:
                pipe.hset(self._member(ward), "guardian_id", survivor_id)
                pipe.sadd(self._wards(survivor_id), ward)
            for digest in dup_hashes:
                pipe.srem(self._k("dup", digest), merged_id)
            for suspicion_id in suspicions:
                pipe.hset(self._k("suspicion", suspicion_id), "status", "merged")
                pipe.srem(self._k("suspicions", "pending"), suspicion_id)
            for old in (*aliases, merged_id):
                pipe.set(self._k("alias", old), survivor_id)
                pipe.sadd(self._aliases(survivor_id), old)
            pipe.delete(
                self._member(merged_id),
                self._accounts(merged_id),
                self._consent(merged_id),
                self._wards(merged_id),
                self._aliases(merged_id),
            )
            await pipe.execute()

    async def erase(self, member_id: str, dup_hashes: Iterable[str], guardian_id: str | None) -> None:
        """Remove every personal datum and every index entry of the member; leave a tombstone with the id."""
        accounts = await self.accounts(member_id)
        suspicions = await self._suspicions_of(member_id)
        wards = await self.wards(member_id)
        aliases = cast(set[str], await self._redis.smembers(self._aliases(member_id)))
        async with self._redis.pipeline(transaction=True) as pipe:
            for account in accounts.values():
                pipe.delete(self._k("account", account.index))
            for digest in dup_hashes:
                pipe.srem(self._k("dup", digest), member_id)
            for suspicion_id in suspicions:
                # The suspicion named this member: it goes entirely.
                pipe.delete(self._k("suspicion", suspicion_id))
                pipe.srem(self._k("suspicions", "pending"), suspicion_id)
            for ward in wards:
                pipe.hdel(self._member(ward), "guardian_id")
            if guardian_id:
                pipe.srem(self._wards(guardian_id), member_id)
            for old in aliases:
                pipe.delete(self._k("alias", old))
                pipe.set(self._k("erased", old), "1")
            pipe.delete(
                self._member(member_id),
                self._accounts(member_id),
                self._consent(member_id),
                self._wards(member_id),
                self._aliases(member_id),
                self._k("registration", member_id),
            )
            pipe.set(self._k("erased", member_id), "1")
            await pipe.execute()
