"""Campaigns in Redis: their versions, which are active, their counters and effect, and broadcast runs."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from services.notifications.campaigns import BUILT_IN, Campaign, CampaignDefinition, Status
from services.notifications.keys import Keys
from services.notifications.state import BroadcastProgress, BroadcastStatus, ms
from shared.settings import Settings

DRAFT_ID = "draft-preview"


class CampaignStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._k = Keys(settings)

    async def save_campaign(self, campaign: Campaign) -> None:
        """Store the campaign's current state and its version's definition; deciders see it at once."""
        definition = campaign.definition.model_dump_json()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._k("campaign", campaign.id), mapping=cast(Any, self._campaign_fields(campaign)))
            pipe.hset(self._k("campaign-versions", campaign.id), str(campaign.version), definition)
            pipe.zadd(self._k("campaigns"), {campaign.id: ms(datetime.fromisoformat(campaign.created_at))}, nx=True)
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
        return CampaignDefinition.model_validate_json(cast(str, raw))

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

    def count_in(self, pipe: Pipeline, counters: Iterable[tuple[str, str]]) -> None:
        """Queue counter increments on a caller's pipeline (written with the decisions they count), one command per
        campaign and counter."""
        for (campaign_id, counter), count in Counter(counters).items():
            pipe.hincrby(self._k.results(campaign_id), counter, count)

    # ------------------------------------------------------------------------------------ broadcasts

    async def broadcast_progress(self, campaign_id: str) -> BroadcastProgress:
        stored = cast(dict[str, str], await self._redis.hgetall(self._k("broadcast", campaign_id)))
        return BroadcastProgress(
            status=cast(BroadcastStatus, stored.get("status", "")), library=stored.get("library", ""),
            cursor=int(stored.get("cursor", "0")), looked_at=int(stored.get("looked_at", "0")),
            started_at=stored.get("started_at", ""), updated_at=stored.get("updated_at", ""),
            finished_at=stored.get("finished_at", ""),
        )  # fmt: skip

    async def save_broadcast_progress(self, campaign_id: str, progress: BroadcastProgress) -> None:
        # One hash per broadcast, its fields as text; empty ones are not written (a finished broadcast keeps where
        # it last was, which tells an operator where it ended).
        stored = {name: str(value) for name, value in vars(progress).items() if value != ""}
        await self._redis.hset(self._k("broadcast", campaign_id), mapping=cast(Any, stored))


class DraftStore(CampaignStore):
    """The campaign store, with one more campaign: the draft being edited, under `DRAFT_ID` (for previews)."""

    def __init__(self, redis: Redis, settings: Settings, draft: CampaignDefinition) -> None:
        super().__init__(redis, settings)
        self._draft = Campaign(DRAFT_ID, 1, "draft", draft)

    async def campaign(self, campaign_id: str) -> Campaign | None:
        return self._draft if campaign_id == DRAFT_ID else await super().campaign(campaign_id)

    async def campaign_version(self, campaign_id: str, version: int) -> CampaignDefinition | None:
        if campaign_id == DRAFT_ID:
            return self._draft.definition
        return await super().campaign_version(campaign_id, version)
