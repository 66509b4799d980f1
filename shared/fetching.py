"""A batch subscriber's poll, one batch ahead of its handler (`shared.kafka.subscribe_batches`).

While batch N's handler runs (its store's work mostly waits on other threads or the network), batch N+1 is fetched
(polling until records arrive) and decoded; it is handed to the consume loop when N's handler returned and N's
offsets were committed. One handler at a time, batches in order. Offsets are committed explicitly, per batch,
never the consumer's position (which is already past the batch fetched ahead).

A rebalance waits for the handler in flight and its commit before the partitions are let go (the listener holds
the same lock as the handler); a batch whose fetch began before the revocation is then dropped, not handled, and
read again from the committed offsets by the partitions' next owner (this instance again, perhaps). A stop waits
for the handler in flight (FastStream's graceful stop waits for the consume call it is in) and cancels the fetch
ahead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from faststream.kafka.message import KafkaAckableMessage, KafkaMessage

from shared.telemetry import expected_retry, sampled_traceparent

P = TypeVar("P")  # what the consume loop makes of a batch's records ahead of time (its decoding)
Records = tuple[Any, ...]


class FetchAhead(ConsumerRebalanceListener, Generic[P]):  # type: ignore[misc]
    """The poll (`get_msg`) and the rebalance listener of one batch subscriber; `prepare` is the CPU part of
    handling a batch (decoding), done ahead of the handler."""

    def __init__(self, max_records: int, prepare: Callable[[Records], Awaitable[P]]) -> None:
        self._max_records = max_records
        self._prepare = prepare
        self._handling = asyncio.Lock()  # a batch's handler and its commit; a revocation waits for it
        self._revocations = 0
        self._ahead: asyncio.Task[tuple[Records, P | None, int]] | None = None
        # The batch last handed out: its records, what was prepared of them and the revocations before its fetch.
        self._out: tuple[Records, P | None, int] = ((), None, 0)
        self.consumer: AIOKafkaConsumer | None = None
        self._fetched_ahead: Records = ()  # what the fetch ahead took, until the poll hands it out

    async def get_msg(self, consumer: AIOKafkaConsumer) -> Records:
        """The next batch: the one fetched ahead, else a poll that waits for records up to 200 ms and returns as
        soon as one arrives (FastStream's own sleeps `batch_timeout_ms` after an empty poll: a latency floor)."""
        self.consumer = consumer
        ahead, self._ahead = self._ahead, None
        self._out = await ahead if ahead is not None else await self._fetch(consumer, ahead=False)
        self._fetched_ahead = ()
        return self._out[0]

    async def _fetch(self, consumer: AIOKafkaConsumer, *, ahead: bool) -> tuple[Records, P | None, int]:
        """A poll; ahead of the handler, polls until records arrive, and prepares them."""
        while True:
            revocations = self._revocations
            fetched = await consumer.getmany(timeout_ms=200, max_records=self._max_records)
            records = tuple(record for batch in fetched.values() for record in batch)
            if records or not ahead:
                break
        prepared = None
        if ahead:
            self._fetched_ahead = records  # the consumer's position is past them from now on
            try:
                prepared = await self._prepare(records)
            except Exception:  # the handling of the batch meets it again and goes the failure's way (rewinds)
                prepared = None
        return records, prepared, revocations

    async def parse(self, records: Records) -> KafkaMessage:
        """FastStream's message for a batch (the subscriber's `parser`): the records as they are, and for the batch
        span's links (FastStream's telemetry) the `traceparent` of each record whose trace is sampled. FastStream's
        own parsing makes a dict of every record's headers, and its telemetry reads baggage from each of them: as
        much CPU as decoding the batch, for links to spans that were mostly never recorded."""
        first, last = records[0], records[-1]
        links = [
            {"traceparent": traceparent, "correlation_id": traceparent}
            for record in records
            if (traceparent := sampled_traceparent(record.headers)) is not None
        ]
        return KafkaAckableMessage(
            body=[record.value or b"" for record in records],
            headers={},
            batch_headers=links,
            message_id=f"{first.offset}-{last.offset}-{first.timestamp}",
            raw_message=records,
            consumer=self.consumer,
        )

    def prepared(self, records: Records) -> P | None:
        """What was prepared of `records` while the batch before was handled (None if nothing was)."""
        return self._out[1] if self._out[0] is records else None

    @asynccontextmanager
    async def handling(self, consumer: AIOKafkaConsumer) -> AsyncIterator[bool]:
        """Around a batch's handler and its commit: yields False when the partitions were revoked since the batch
        was fetched (drop it: it is read again from the committed offsets), else fetches the next batch ahead."""
        async with self._handling:
            current = self._out[2] == self._revocations
            if not current:
                await _read_again(consumer, self._out[0])
            elif self._ahead is None:
                self._ahead = asyncio.ensure_future(self._fetch(consumer, ahead=True))
                # A stop may leave it unawaited (the consumer stopped under it): its failure is no news then.
                self._ahead.add_done_callback(_seen)
            yield current

    async def rewind(self, consumer: AIOKafkaConsumer, records: Records) -> None:
        """Read `records` again (their handler could not finish): the batch fetched ahead is dropped and every
        partition of both is sought back to its earliest record."""
        if self._ahead is not None:
            self._ahead.cancel()  # it may be waiting for records that do not come
            self._ahead = None
        later, self._fetched_ahead = self._fetched_ahead, ()
        earliest: dict[TopicPartition, int] = {}
        for record in (*later, *records):
            tp = TopicPartition(record.topic, record.partition)
            earliest[tp] = min(record.offset, earliest.get(tp, record.offset))
        for tp, offset in earliest.items():
            consumer.seek(tp, offset)

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._handling:
            self._revocations += 1

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        pass


async def _read_again(consumer: AIOKafkaConsumer, records: Records) -> None:
    """Seek the partitions of `records` this instance still owns back to their committed offsets (the beginning
    where none was committed: the group's reset policy). The fetch may have begun before a revocation and ended after
    the partitions came back: the position is then past records nobody handled."""
    owned = consumer.assignment()
    for tp in {TopicPartition(r.topic, r.partition) for r in records} & owned:
        committed = await consumer.committed(tp)
        if committed is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, committed)


def _seen(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


@contextmanager
def rebalance_tolerated() -> Iterator[None]:
    """Around a commit: a rebalance that moved a partition meanwhile is expected, not a failure; its new owner
    handles the uncommitted records again (effects are idempotent by event id)."""
    try:
        yield
    except (CommitFailedError, IllegalStateError) as exc:
        expected_retry("rebalance: the partition moved before the commit; its new owner handles it again", exc, 1)


async def commit(consumer: AIOKafkaConsumer, ends: dict[tuple[str, int], int]) -> None:
    """Commit past the last record of every partition in `ends` (`rebalance_tolerated`)."""
    with rebalance_tolerated():
        await consumer.commit({TopicPartition(topic, partition): end + 1 for (topic, partition), end in ends.items()})


def positions(records: Sequence[Any]) -> dict[tuple[str, int], int]:
    """The last offset of every partition in `records` (a partition's records come in offset order, as Kafka hands
    them out)."""
    return {(record.topic, record.partition): record.offset for record in records}
