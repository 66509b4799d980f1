"""What notifications knows of members, projected from identity's and propositions' events; merge and erasure.

Writes come in batches from the members and usage consumers: one pipeline per batch. How far the members
projection got (the next offset per partition) is stored with the batch's effects, so deciding can wait for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from msgspec import msgpack
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from services.notifications import codec
from services.notifications.keys import Keys
from services.notifications.state import MemberRecord, MemberState, Profile, ms
from shared.settings import Settings

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

# Merge: the merged member's inbox, claims, cap window and wards move to the survivor (claims and inbox items the
# survivor has already win); the merged id becomes an alias. KEYS: merged hash, survivor hash, alias, library set.
_MERGE = """
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local kind = string.sub(fields[i], 1, 1)
  if kind == 'i' or kind == 'k' or kind == 'w' or kind == 'f' or kind == 'e' or kind == 'd' then
    redis.call('HSETNX', KEYS[2], fields[i], fields[i + 1])
  end
end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class Projected:
    """Wards of a merged or erased member whose guardian link changes (their hashes are other keys)."""

    wards: tuple[str, ...] = ()


# Members' states in one command: per member the survivor's id when it was merged, else whether it was erased and
# its hash. ARGV: the alias, erased and member keys' prefixes, the member ids (msgpack, one argument: packing three
# key arguments per member took a tenth of a broadcast's CPU time); the keys are built here, as one Redis allows.
_STATES = """
local found = {}
for i, id in ipairs(cmsgpack.unpack(ARGV[4])) do
  local survivor = redis.call('GET', ARGV[1] .. id)
  if survivor then
    found[i] = {survivor}
  else
    found[i] = {'', redis.call('EXISTS', ARGV[2] .. id), redis.call('HGETALL', ARGV[3] .. '{' .. id .. '}')}
  end
end
return found
"""


class ProjectionStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._k = Keys(settings)
        self._set_consent = redis.register_script(_SET_CONSENT)
        self._merge = redis.register_script(_MERGE)
        self._states = redis.register_script(_STATES)

    # ----------------------------------------------------------------------------------------- reads

    async def resolve(self, member_id: str) -> str:
        return (await self.resolve_all([member_id]))[member_id]

    async def resolve_all(self, member_ids: Iterable[str]) -> dict[str, str]:
        """The member each id means now: the survivor when it was merged into another (merges of merges too)."""
        resolved = {m: m for m in member_ids}
        pending = list(resolved)
        for _ in range(5):  # never loop for ever
            if not pending:
                break
            async with self._redis.pipeline(transaction=False) as pipe:
                for original in pending:
                    pipe.get(self._k.alias(resolved[original]))
                found = cast(list[str | None], await pipe.execute())
            following = []
            for original, survivor in zip(pending, found, strict=True):
                if survivor:
                    resolved[original] = survivor
                    following.append(original)
            pending = following
        return resolved

    async def states(self, member_ids: Sequence[str]) -> dict[str, MemberState]:
        """Each member's state, every member in one round trip (ids as they are: see `resolved_states`)."""
        found = await self._read(member_ids)
        return {m: state for m, (_, state) in found.items() if state is not None} | {
            m: codec.member_state(m, {}, False) for m, (_, state) in found.items() if state is None
        }

    async def resolved_states(self, member_ids: Iterable[str]) -> tuple[dict[str, str], dict[str, MemberState]]:
        """The member each id means now (the survivor of merges) and the survivors' states: one round trip, and
        one more per merge followed."""
        resolved = {m: m for m in member_ids}
        states: dict[str, MemberState] = {}
        pending = list(dict.fromkeys(resolved.values()))
        for _ in range(5):  # merges of merges; never loop for ever
            if not pending:
                break
            found = await self._read(pending)
            pending = []
            for member_id, (survivor, state) in found.items():
                if state is not None:
                    states[member_id] = state
                elif survivor is not None:
                    for original, now in resolved.items():
                        if now == member_id:
                            resolved[original] = survivor
                    if survivor not in states:
                        pending.append(survivor)
        for member_id in set(resolved.values()) - states.keys():
            states[member_id] = codec.member_state(member_id, {}, False)
        return resolved, states

    async def _read(self, member_ids: Sequence[str]) -> dict[str, tuple[str | None, MemberState | None]]:
        unique = list(dict.fromkeys(member_ids))
        if not unique:
            return {}
        prefixes = [self._k.alias(""), self._k.erased(""), self._k("m", "")]
        found = cast(list[list[Any]], await self._states(args=[*prefixes, msgpack.encode(unique)]))
        read: dict[str, tuple[str | None, MemberState | None]] = {}
        for member_id, answer in zip(unique, found, strict=True):
            if answer[0]:
                read[member_id] = (cast(str, answer[0]), None)
            else:
                raw = answer[2]
                fields = raw if isinstance(raw, dict) else dict(zip(raw[::2], raw[1::2], strict=True))
                read[member_id] = (None, codec.member_state(member_id, fields, bool(answer[1])))
        return read

    async def member(self, member_id: str) -> MemberRecord:
        return (await self.states([member_id]))[member_id].record

    async def consents(self, member_id: str) -> dict[str, bool]:
        return (await self.member(member_id)).consents

    async def consent_stamp(self, member_id: str, medium: str, purpose: str) -> str:
        """The consent as stored (`1|<ms>` granted, `0|<ms>` withdrawn at that event time), "" when never given."""
        stamp = await self._redis.hget(self._k.member(member_id), codec.consent_field(medium, purpose))
        return str(stamp or "")

    async def is_erased(self, member_id: str) -> bool:
        return bool(await self._redis.exists(self._k.erased(member_id)))

    async def libraries(self) -> list[str]:
        return sorted(cast(set[str], await self._redis.smembers(self._k("libraries"))))

    async def library_members(self, library: str, cursor: int, count: int = 1000) -> tuple[int, list[str]]:
        next_cursor, members = await self._redis.sscan(self._k.library_members(library), cursor, count=count)
        return int(next_cursor), sorted(cast(list[str], members))

    async def members_progress(self) -> dict[int, int]:
        """How far the members projection got: partition → the next offset it will apply."""
        raw = cast(dict[str, str], await self._redis.hgetall(self._k("members-progress")))
        return {int(p): int(o) for p, o in raw.items()}

    # ---------------------------------------------------------------------------------------- writes

    def batch(self) -> Pipeline:
        """A pipeline for one consumer batch's projection writes (`signed_up`, `consent`…), run with `apply`."""
        return self._redis.pipeline(transaction=False)

    async def apply(self, pipe: Pipeline, progress: Mapping[int, int] | None = None) -> None:
        """Run a batch's writes; `progress` (partition → next offset of the members topic) is written last."""
        if progress:
            pipe.hset(self._k("members-progress"), mapping={str(p): str(o) for p, o in progress.items()})
        await pipe.execute()

    def signed_up(self, pipe: Pipeline, member_id: str, profile: Profile, proposition: str | None) -> None:
        key = self._k.member(member_id)
        pipe.hset(key, codec.PROFILE, codec.profile_value(profile))
        pipe.sadd(self._k.library_members(profile.library), member_id)
        pipe.sadd(self._k("libraries"), profile.library)
        if proposition:
            pipe.hset(key, codec.PROPOSITION + proposition, "1")

    def language(self, pipe: Pipeline, member_id: str, language: str) -> None:
        pipe.hset(self._k.member(member_id), codec.LANGUAGE, language)

    def took_part(self, pipe: Pipeline, member_id: str, proposition: str) -> None:
        pipe.hset(self._k.member(member_id), codec.PROPOSITION + proposition, "1")

    async def consent(
        self, pipe: Pipeline, member_id: str, medium: str, purpose: str, granted: bool, at: datetime
    ) -> None:
        args = [codec.consent_field(medium, purpose), "1" if granted else "0", ms(at)]
        await self._set_consent(keys=[self._k.member(member_id)], args=args, client=pipe)

    def guardian(self, pipe: Pipeline, member_id: str, guardian_id: str, previous: str | None) -> None:
        if previous and previous != guardian_id:
            pipe.hdel(self._k.member(previous), codec.WARD + member_id)
        pipe.hset(self._k.member(member_id), codec.GUARDIAN, guardian_id)
        pipe.hset(self._k.member(guardian_id), codec.WARD + member_id, "1")

    async def merge(self, merged_id: str, survivor_id: str) -> None:
        """The merged id becomes an alias: its inbox, claims, cap window and wards move to the survivor."""
        state = (await self.states([merged_id]))[merged_id]
        wards = await self._wards(merged_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            for ward in wards:
                pipe.hset(self._k.member(ward), codec.GUARDIAN, survivor_id)
            keys = [
                self._k.member(merged_id),
                self._k.member(survivor_id),
                self._k.alias(merged_id),
                self._k.library_members(state.record.profile.library),
            ]
            await self._merge(keys=keys, args=[survivor_id, merged_id], client=pipe)
            await pipe.execute()

    async def erase(self, member_id: str) -> None:
        """Every notifications state of the member goes; a tombstone holding only the id stays."""
        raw = cast(dict[str, str], await self._redis.hgetall(self._k.member(member_id)))
        profile = codec.member_state(member_id, raw, erased=False).record.profile
        waiting = [
            cast(str, entry)
            async for entry, _ in self._redis.zscan_iter(self._k.due, match=f"{member_id}|*", count=1000)
        ]
        async with self._redis.pipeline(transaction=True) as pipe:
            for name in raw:
                if name.startswith(codec.WARD):
                    pipe.hdel(self._k.member(name[1:]), codec.GUARDIAN)
            for entry in waiting:
                pipe.delete(self._k.delivery(member_id, entry.split("|", 1)[1]))
                pipe.zrem(self._k.due, entry)
            if profile.guardian_id:
                pipe.hdel(self._k.member(profile.guardian_id), codec.WARD + member_id)
            if profile.library:
                pipe.srem(self._k.library_members(profile.library), member_id)
            pipe.delete(self._k.member(member_id))
            pipe.set(self._k.erased(member_id), "1")
            await pipe.execute()

    async def _wards(self, member_id: str) -> list[str]:
        names = cast(list[str], await self._redis.hkeys(self._k.member(member_id)))
        return [name[1:] for name in names if name.startswith(codec.WARD)]

    async def guardian_of(self, member_ids: Sequence[str]) -> dict[str, str | None]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for member_id in member_ids:
                pipe.hget(self._k.member(member_id), codec.GUARDIAN)
            found = cast(list[str | None], await pipe.execute())
        return {m: g or None for m, g in zip(member_ids, found, strict=True)}

    # ------------------------------------------------------------------------------------ inspection

    async def keys_of(self, member_id: str) -> list[str]:
        """Every key naming the member (for erasure tests and operators; scans, so not for hot paths)."""
        pattern = self._k("*" + member_id + "*")
        return sorted([cast(str, k) async for k in self._redis.scan_iter(match=pattern, count=1000)])
