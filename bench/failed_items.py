"""What keeping refused items costs (`shared/failed_items.py`): identity's `POST /v1/events` with a batch whose every
item is refused (card activations of members identity does not know: 404 each), with the refused items kept on
`ingest.failed.v1`, next to the same batch with keeping switched off, in the same run on the same broker.

    .venv/bin/python bench/failed_items.py [--items 5000] [--rounds 7]

Uses the Kafka and Redis named by KLANTREIS_KAFKA_BOOTSTRAP and KLANTREIS_REDIS_URL when both are set (under a
prefix of its own); otherwise starts both on free ports (deploy/runtime.py). Each round posts a fresh batch with
keeping on, then one with it off (a no-op `FailedItems.keep`), each after a garbage collection; the figures are the
medians of the rounds, the ratio the median of the rounds' ratios. A first round warms up and is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import api_key, namespaced
from deploy import runtime
from services.identity.app import create_app as identity_app
from services.identity.settings import IdentitySettings
from shared.events import BATCH
from shared.failed_items import FailedItems
from shared.topics import ensure_topics
from tests.support import publish_seed_libraries


def refused_item(now: str) -> dict[str, Any]:
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "/libraries/oba/kiosk",
            "type": "nl.bibliotheek.member.card_activated.v1", "time": now, "subject": str(uuid.uuid4()),
            "library": "oba", "channel": "offline", "platform": "kiosk", "data": {}}  # fmt: skip


def refused_batch(count: int) -> bytes:
    now = datetime.now(UTC).isoformat()
    return json.dumps([refused_item(now) for _ in range(count)]).encode()


async def post(client: httpx.AsyncClient, count: int) -> float:
    body = refused_batch(count)
    gc.collect()
    started = time.perf_counter()
    answer = await client.post("/v1/events", content=body, headers={"Content-Type": BATCH})
    seconds = time.perf_counter() - started
    assert answer.status_code == 422 and len(answer.json()["rejected"]) == count, answer.text[:300]
    return seconds


async def bench(kafka: str, redis_url: str, items: int, rounds: int) -> None:
    settings = namespaced(IdentitySettings, kafka_bootstrap=kafka, redis_url=redis_url, publish_timeout=60.0)
    await ensure_topics(settings)
    await publish_seed_libraries(settings)
    key = await api_key(settings, ["ingest"], "oba")
    keep = FailedItems.keep

    async def nothing(self: FailedItems, *args: Any, **kwargs: Any) -> None:
        return None

    kept: list[float] = []
    bare: list[float] = []
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        runtime.serving(identity_app(settings), lifespan="on") as url,
        httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client,
    ):
        for number in range(rounds + 1):
            FailedItems.keep = keep  # type: ignore[method-assign]
            with_keeping = await post(client, items)
            FailedItems.keep = nothing  # type: ignore[method-assign]
            without = await post(client, items)
            FailedItems.keep = keep  # type: ignore[method-assign]
            if number:
                kept.append(with_keeping)
                bare.append(without)
    ratio = statistics.median(k / b for k, b in zip(kept, bare, strict=True))
    extra = (statistics.median(kept) - statistics.median(bare)) / items * 1e6
    print(f"{items:,} refused items per batch, median of {rounds} rounds:")
    print(f"  kept on ingest.failed.v1: {statistics.median(kept) * 1000:,.0f} ms")
    print(f"  not kept:                 {statistics.median(bare) * 1000:,.0f} ms")
    print(f"  ratio kept/not kept: {ratio:.2f}; about {extra:,.0f} µs more per refused item")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with runtime.local_infrastructure() as (kafka, redis_url):
        asyncio.run(bench(kafka, redis_url, args.items, args.rounds))


if __name__ == "__main__":
    main()
