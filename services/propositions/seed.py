"""The seed catalogue (`seed.yaml`) and its loading through the API, as any client would: `klantreis seed`.

Loading is idempotent: an entry that is there already is answered 200 and publishes nothing, so a second load
changes nothing. Libraries and propositions go first, the offerings that name them after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field

from shared.events.propositions import Branch, OfferChannel, TargetGroup, Theme
from shared.events.types import Channel, LibraryCode, Slug, WebOrigin

SEED_FILE = Path(__file__).with_name("seed.yaml")
CONCURRENCY = 16


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SeedProposition(_Strict):
    slug: Slug
    name_nl: str
    name_en: str
    description_nl: str = ""
    description_en: str = ""
    theme: Theme
    target_groups: list[TargetGroup] = Field(min_length=1)
    channels: OfferChannel
    programme: str | None = None


class SeedOffering(_Strict):
    proposition: Slug
    local_name: str | None = None
    branches: list[Slug] = Field(default_factory=list)
    channels: list[Channel] = Field(min_length=1)
    url: str | None = None


class SeedLibrary(_Strict):
    code: LibraryCode
    name: str
    website: str | None = None
    website_origins: list[WebOrigin] = Field(default_factory=list)
    postcode_areas: list[str] = Field(default_factory=list)
    branches: list[Branch] = Field(default_factory=list)
    offerings: list[SeedOffering] = Field(default_factory=list)


class Seed(_Strict):
    propositions: list[SeedProposition]
    libraries: list[SeedLibrary]


def read_seed(path: Path = SEED_FILE) -> Seed:
    return Seed.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


class SeedFailed(Exception):
    """The service refused part of the seed; the message says what and why."""


@dataclass
class SeedReport:
    """Per kind of entry: how many changed (published) and how many were there already."""

    changed: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str, changed: bool) -> None:
        tally = self.changed if changed else self.unchanged
        tally[kind] = tally.get(kind, 0) + 1

    def summary(self, kind: str) -> str:
        return f"{kind}: {self.changed.get(kind, 0)} changed, {self.unchanged.get(kind, 0)} unchanged"


async def load_seed(
    client: httpx.AsyncClient, seed: Seed | None = None, progress: Callable[[str], None] = lambda _: None
) -> SeedReport:
    """PUT every library, proposition and offering of the seed through the API of `client` (base URL and key set)."""
    seed = seed or read_seed()
    report = SeedReport()
    gate = asyncio.Semaphore(CONCURRENCY)

    async def put(kind: str, path: str, body: dict[str, Any]) -> None:
        async with gate:
            response = await client.put(path, json=body)
        if response.status_code not in (200, 202):
            raise SeedFailed(f"PUT {path}: {response.status_code} {_detail(response)}")
        report.count(kind, response.status_code == 202)

    async def phase(kind: str, puts: list[Awaitable[None]]) -> None:
        await asyncio.gather(*puts)
        progress(report.summary(kind))

    await phase(
        "libraries",
        [
            put(
                "libraries",
                f"/v1/libraries/{library.code}",
                library.model_dump(mode="json", exclude={"code", "offerings"}),
            )
            for library in seed.libraries
        ],
    )
    await phase(
        "propositions",
        [
            put("propositions", f"/v1/propositions/{p.slug}", p.model_dump(mode="json", exclude={"slug"}))
            for p in seed.propositions
        ],
    )
    await phase(
        "offerings",
        [
            put(
                "offerings",
                f"/v1/offerings/{library.code}.{offering.proposition}",
                offering.model_dump(mode="json", exclude={"proposition"}),
            )
            for library in seed.libraries
            for offering in library.offerings
        ],
    )
    return report


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    return str(body.get("detail") or body.get("title") or body) if isinstance(body, dict) else str(body)[:300]
