"""Reading Kafka outside a consumer group: questions to a consumer about its partitions, bounded in time, and
a topic read from its start to its end.

An offsets request that meets a rebalance or a closing connection can wait for an answer that never comes (seen
with aiokafka: a timer loop stuck for good in `end_offsets`, and a service that could not stop). Every caller asks
through here, so such a request fails with TimeoutError after a few seconds and the caller tries again later.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

OFFSETS_TIMEOUT = 5.0
READ_POLL_MS = 500


async def end_offsets(
    consumer: Any, partitions: Sequence[TopicPartition], within_seconds: float = OFFSETS_TIMEOUT
) -> dict[TopicPartition, int]:
    """The broker's end offsets (the next record's offset) of `partitions`."""
    if not partitions:
        return {}
    ends: dict[TopicPartition, int] = await asyncio.wait_for(consumer.end_offsets(list(partitions)), within_seconds)
    return ends


async def beginning_offsets(
    consumer: Any, partitions: Sequence[TopicPartition], within_seconds: float = OFFSETS_TIMEOUT
) -> dict[TopicPartition, int]:
    """The broker's log start offsets (the first record still kept) of `partitions`."""
    if not partitions:
        return {}
    starts: dict[TopicPartition, int] = await asyncio.wait_for(
        consumer.beginning_offsets(list(partitions)), within_seconds
    )
    return starts


async def position(consumer: Any, partition: TopicPartition, within_seconds: float = OFFSETS_TIMEOUT) -> int:
    """The consumer's position on `partition`: the offset of the next record it will fetch."""
    found: int = await asyncio.wait_for(consumer.position(partition), within_seconds)
    return found


def admin_client(bootstrap: str, security: Mapping[str, Any] | None = None) -> AIOKafkaAdminClient:
    """An admin client for these questions; `security`: `Settings.kafka_security()`."""
    return AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="klantreis-reader", **(security or {}))


async def committed_offsets(
    admin: AIOKafkaAdminClient,
    group_id: str,
    partitions: Sequence[TopicPartition],
    within_seconds: float = OFFSETS_TIMEOUT,
) -> dict[TopicPartition, int]:
    """Consumer group `group_id`'s committed offsets of `partitions`, as the group coordinator holds them (what
    `kafka-consumer-groups --describe` shows as CURRENT-OFFSET); a partition the group never committed is left
    out. Asked with an admin client: the group's own consumers are not disturbed."""
    if not partitions:
        return {}
    found = await asyncio.wait_for(
        admin.list_consumer_group_offsets(group_id, partitions=list(partitions)), within_seconds
    )
    return {tp: meta.offset for tp, meta in found.items() if meta.offset >= 0}


async def partitions_of(
    bootstrap: str, topics: Sequence[str], security: Mapping[str, Any] | None = None
) -> list[TopicPartition]:
    """Every partition of `topics` (none of a topic that does not exist)."""
    admin = admin_client(bootstrap, security)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    return [TopicPartition(t["topic"], p["partition"]) for t in described for p in t.get("partitions") or ()]


async def batches_to_end(
    bootstrap: str, *topics: str, security: Mapping[str, Any] | None = None, since_ms: int | None = None
) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
    """The records of `topics` as they stand now, from the start of every partition (or, with `since_ms`, from its
    first record timestamped at or after then) up to its end offset at the call, in fetched batches (in offset order
    within a partition). No consumer group: nothing is committed and no running consumer is disturbed; records
    produced meanwhile are left out."""
    assigned = await partitions_of(bootstrap, topics, security)
    if not assigned:
        return
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        client_id="klantreis-reader",
        **(security or {}),
    )
    await consumer.start()
    try:
        consumer.assign(assigned)
        if since_ms is None:
            # Positions first: asked before them, the fetcher would start at the end (a group-less consumer's reset).
            await consumer.seek_to_beginning(*assigned)
            ends = await end_offsets(consumer, assigned)
            todo = {tp for tp, end in ends.items() if end > 0}
        else:
            ends = await end_offsets(consumer, assigned)
            found = await asyncio.wait_for(
                consumer.offsets_for_times(dict.fromkeys(assigned, since_ms)), OFFSETS_TIMEOUT
            )
            starts = {tp: at.offset for tp, at in found.items() if at is not None and at.offset < ends[tp]}
            for tp, offset in starts.items():
                consumer.seek(tp, offset)
            todo = set(starts)
        while todo:
            fetched = await consumer.getmany(*todo, timeout_ms=READ_POLL_MS)
            batch = [r for tp, records in fetched.items() for r in records if r.offset < ends[tp]]
            # The position, not the last record: a compacted or transactional partition ends past its last record.
            for tp in list(todo):
                if await position(consumer, tp) >= ends[tp]:
                    todo.discard(tp)
            if batch:
                yield batch
    finally:
        await consumer.stop()


async def event_ids_since(
    bootstrap: str, topics: Sequence[str], since_ms: int, security: Mapping[str, Any] | None = None
) -> set[str]:
    """The ids (`ce_id` header: binary mode) of the records on `topics` timestamped at or after `since_ms`, up to
    each partition's end at the call: what reached Kafka of events sent since then. For a producer that must not
    send an event twice after an attempt whose outcome it does not know (a time-out, an owner that stopped)."""
    return {
        value.decode()
        async for batch in batches_to_end(bootstrap, *topics, security=security, since_ms=since_ms)
        for record in batch
        for name, value in record.headers
        if name == "ce_id"
    }


async def read_to_end(
    bootstrap: str, *topics: str, security: Mapping[str, Any] | None = None
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of `topics` as they stand now (see `batches_to_end`)."""
    return [record async for batch in batches_to_end(bootstrap, *topics, security=security) for record in batch]
