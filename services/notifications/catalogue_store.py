"""The catalogue as notifications needs it: proposition names, which library offers what, libraries' names,
branches and opening hours."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, cast

from redis.asyncio import Redis

from services.notifications.keys import Keys
from services.notifications.templates import LibraryInfo, PropositionInfo
from shared.settings import Settings


@dataclass(frozen=True)
class Offering:
    """A library's offering of a proposition, as far as messages need it."""

    local_name: str | None
    branches: list[str]
    url: str | None


class CatalogueStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._k = Keys(settings)

    async def set_proposition(self, slug: str, name_nl: str, name_en: str, retired: bool) -> None:
        fields = {"name_nl": name_nl, "name_en": name_en, "retired": "1" if retired else "0"}
        await self._redis.hset(self._k("catalog", "proposition", slug), mapping=cast(Any, fields))

    async def set_offering(self, proposition: str, library: str, offering: Offering | None) -> None:
        """What the library offers of the proposition; None: not offered (any more)."""
        key = self._k("catalog", "offers", proposition)
        if offering is None:
            await self._redis.hdel(key, library)
        else:
            await self._redis.hset(key, library, json.dumps(asdict(offering)))

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
