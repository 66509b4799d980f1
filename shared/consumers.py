"""Questions to a running Kafka consumer about its partitions, each bounded in time.

An offsets request that meets a rebalance or a closing connection can wait for an answer that never comes (seen
with aiokafka: a timer loop stuck for good in `end_offsets`, and a service that could not stop). Every caller asks
through here, so such a request fails with TimeoutError after a few seconds and the caller tries again later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import TopicPartition

OFFSETS_TIMEOUT = 5.0


async def end_offsets(
    consumer: Any, partitions: Sequence[TopicPartition], within_seconds: float = OFFSETS_TIMEOUT
) -> dict[TopicPartition, int]:
    """The broker's end offsets (the next record's offset) of `partitions`."""
    if not partitions:
        return {}
    ends: dict[TopicPartition, int] = await asyncio.wait_for(consumer.end_offsets(list(partitions)), within_seconds)
    return ends


async def position(consumer: Any, partition: TopicPartition, within_seconds: float = OFFSETS_TIMEOUT) -> int:
    """The consumer's position on `partition`: the offset of the next record it will fetch."""
    found: int = await asyncio.wait_for(consumer.position(partition), within_seconds)
    return found
