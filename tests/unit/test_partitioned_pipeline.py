"""A partition owner's write runs while the next batch is decided: its batch's offsets are committed only once it is
done, and a rebalance lets no partition go while it is under way (shared/partitioned.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from aiokafka import TopicPartition

from shared.partitioned import PartitionedConsumer
from shared.settings import Settings

TOPIC = "identity.members.v1"


class Recorded:
    def __init__(self) -> None:
        self.steps: list[str] = []
        self.release = asyncio.Event()

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.steps.append(f"commit {sorted((tp.partition, o) for tp, o in offsets.items())}")

    async def assigned(self, partitions: list[int]) -> dict[TopicPartition, int]:
        return {}

    async def revoked(self, partitions: list[int]) -> None:
        self.steps.append(f"revoked {partitions}")

    async def process(self, batch: dict[TopicPartition, list[Any]]) -> Awaitable[None] | None:
        return self._write()

    async def idle(self) -> Awaitable[None] | None:
        return None

    async def _write(self) -> None:
        await self.release.wait()
        self.steps.append("written")


async def test_a_revoke_waits_for_the_write_in_flight_and_commits_its_offsets_before_letting_go() -> None:
    owner = Recorded()
    consumer = PartitionedConsumer(Settings(), topics=[TOPIC], group_id="g", owner=owner)
    consumer.consumer = owner  # only its commit is used here
    consumer.owned = {0}
    effect = await owner.process({})
    assert effect is not None
    consumer._writing = (asyncio.ensure_future(effect), {TopicPartition(TOPIC, 0): 42})
    revoking = asyncio.create_task(consumer._revoked({TopicPartition(TOPIC, 0)}))
    await asyncio.sleep(0.01)
    assert consumer.writing() and owner.steps == []  # nothing committed, nothing let go while the write is open

    owner.release.set()
    await revoking
    assert owner.steps == ["written", "commit [(0, 42)]", "revoked [0]"]
    assert not consumer.writing() and consumer.owned == set()
