"""A consumer that owns partitions across topics, for services that keep state per partition (journey).

Co-partitioning, as in Kafka Streams: the instance that is assigned partition p of one input topic is assigned
partition p of every input topic (`CoPartitionedAssignor`; the topics must have the same number of partitions,
checked at start), so a member's events from every topic meet in one place. The owner of the state is told when
partitions arrive (restore, and where to resume) and leave (store and let go), always between two batches: a
rebalance waits for the batch in hand. Empty polls do not sleep: a record is handled as soon as it arrives.
Python's cyclic garbage collector is paused from a fetch until its batch is decided (`collector_paused`).

Pipelined, one batch deep: an owner's `process` may decide a batch and return the storing of its effects (an
awaitable) instead of storing them itself. That write runs while the next batch is fetched and decided; it is
awaited before the next batch's write starts (writes stay in order), and only then are its batch's offsets
committed (explicit offsets, never the consumer's position, which is already past the next batch). A rebalance
and a stop wait for the write in flight before partitions are let go.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
from collections.abc import Awaitable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata
from aiokafka.errors import KafkaError

from shared.settings import Settings

log = logging.getLogger(__name__)

STOP_SECONDS = 4.0  # a graceful stop finishes within 5 s, always

_paused = 0  # consumers of this process with a batch in hand (tests and benchmarks run several in one process)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection from a fetch until its batch is decided. A batch allocates hundreds of
    thousands of objects that live until it is stored (records and their headers, events, derived records), so
    without this they set off full collections, each walking the state of every member the partitions hold: a
    quarter of journey's CPU in the batch, and as much again in the fetch (bench/journey_throughput.py). Nearly
    all of it is freed by reference counting when the batch ends; the collector runs again from then on, so
    cycles (a traceback, a task) are still collected, a batch later."""
    global _paused
    if _paused == 0 and not gc.isenabled():
        yield  # someone else turned it off: leave it so
        return
    _paused += 1
    gc.disable()
    try:
        yield
    finally:
        _paused -= 1
        if _paused == 0:
            gc.enable()


class CoPartitionedAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """Partition p of every subscribed topic to the same member: p goes to the (p mod n)-th member, sorted."""

    name = "klantreis-copartitioned"
    version = 0

    @classmethod
    def assign(
        cls, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        topics = sorted({t for m in members.values() for t in m.subscription})
        numbers = sorted(set().union(*(cluster.partitions_for_topic(t) or set() for t in topics)))
        ordered = sorted(members)
        assignment: dict[str, dict[str, list[int]]] = collections.defaultdict(dict)
        for index, number in enumerate(numbers):
            member = ordered[index % len(ordered)]
            for topic in topics:
                if number in (cluster.partitions_for_topic(topic) or set()) and topic in members[member].subscription:
                    assignment[member].setdefault(topic, []).append(number)
        return {
            member: ConsumerProtocolMemberAssignment(cls.version, sorted(assignment[member].items()), b"")
            for member in members
        }

    @classmethod
    def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(cls.version, list(topics), b"")

    @classmethod
    def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
        pass


class PartitionOwner(Protocol):
    async def assigned(self, partitions: list[int]) -> dict[TopicPartition, int]:
        """Restore the partitions' state; returns where to resume (the next offset) per input topic partition."""

    async def revoked(self, partitions: list[int]) -> None:
        """Store what the partitions hold and forget them."""

    async def process(self, batch: dict[TopicPartition, list[Any]]) -> Awaitable[None] | None:
        """Apply a batch; store its effects (waiting for Redis or Kafka, however long), or return what stores them,
        to be run while the next batch is decided (what it writes must be taken from the state before returning)."""

    async def idle(self) -> Awaitable[None] | None:
        """Nothing arrived: time may still decide something (timers by the wall clock). Returns as `process`."""


class TopicsNotCoPartitioned(RuntimeError):
    pass


class PartitionedConsumer:
    def __init__(
        self,
        settings: Settings,
        *,
        topics: Sequence[str],
        group_id: str,
        owner: PartitionOwner,
        max_records: int = 5000,
        poll_ms: int = 100,
        client_id: str = "klantreis",
    ) -> None:
        self._settings = settings
        self.topics = list(topics)
        self.group_id = group_id
        self._owner = owner
        self._max_records = max_records
        self._poll_ms = poll_ms
        self._client_id = client_id
        self.consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self.owned: set[int] = set()
        # The write of the batch decided last, still running, and the offsets to commit once it is done.
        self._writing: tuple[asyncio.Future[None], dict[TopicPartition, int]] | None = None

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.kafka_bootstrap,
            group_id=self.group_id,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            partition_assignment_strategy=(CoPartitionedAssignor,),
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            **self._settings.kafka_security(),
        )
        while not self._stopping.is_set():
            try:
                await consumer.start()
                break
            except KafkaError as exc:
                log.warning("%s: Kafka not reachable (%s); trying again", self.group_id, type(exc).__name__)
                await asyncio.sleep(1)
        self.consumer = consumer
        try:
            await self._check_partition_counts(consumer)
            consumer.subscribe(self.topics, listener=_Listener(self))
            while not self._stopping.is_set():
                await self._step(consumer)
        finally:
            await self._leave(consumer)

    async def _step(self, consumer: AIOKafkaConsumer) -> None:
        with collector_paused():
            # The batch's records are gone once `_take` returns, before the collector runs again.
            await self._take(consumer)

    async def _take(self, consumer: AIOKafkaConsumer) -> None:
        """Fetch a batch, have it decided, and start storing its effects once the previous batch's are stored."""
        try:
            batch = await consumer.getmany(timeout_ms=self._poll_ms, max_records=self._max_records)
        except KafkaError as exc:
            log.warning("%s: fetch failed (%s); trying again", self.group_id, type(exc).__name__)
            await asyncio.sleep(0.5)
            return
        async with self._lock:
            batch = {tp: records for tp, records in batch.items() if tp.partition in self.owned}
            effect = await self._owner.process(batch) if batch else await self._owner.idle()
            await self._written()
            offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
            if effect is not None:
                self._writing = (asyncio.ensure_future(effect), offsets)
            elif offsets:
                await self._commit(offsets)

    async def _check_partition_counts(self, consumer: AIOKafkaConsumer) -> None:
        counts = {}
        for topic in self.topics:
            for _ in range(50):
                found = consumer.partitions_for_topic(topic) or await _fetch_partitions(consumer, topic)
                if found:
                    counts[topic] = len(found)
                    break
                await asyncio.sleep(0.1)
        if len(set(counts.values())) > 1:
            raise TopicsNotCoPartitioned(
                f"{self.group_id} needs the same number of partitions on every input topic, found {counts}"
            )

    def writing(self) -> bool:
        """Whether a batch's effects are still being stored (its offsets are committed after the next batch)."""
        return self._writing is not None and not self._writing[0].done()

    async def _written(self) -> None:
        """Wait for the write in flight, then commit its batch's offsets."""
        if self._writing is None:
            return
        write, offsets = self._writing
        try:
            await write
        finally:
            self._writing = None
        if offsets:
            await self._commit(offsets)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        # The state store holds the truth (offsets are stored with the state); the commit is for lag and tools.
        assert self.consumer is not None
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:
            log.info("%s: commit deferred (%s)", self.group_id, type(exc).__name__)

    async def stop(self) -> None:
        self._stopping.set()

    async def _leave(self, consumer: AIOKafkaConsumer) -> None:
        """Store and let go of what this instance owns, then leave the group, within STOP_SECONDS."""
        try:
            async with asyncio.timeout(STOP_SECONDS):
                async with self._lock:
                    await self._written()
                    owned, self.owned = sorted(self.owned), set()
                    if owned:
                        await self._owner.revoked(owned)
        except TimeoutError:
            if self._writing is not None:
                self._writing[0].cancel()
            log.warning("%s: state not stored within %.0f s at stop; the next owner resumes from the store",
                        self.group_id, STOP_SECONDS)  # fmt: skip
        try:
            async with asyncio.timeout(1.0):
                await consumer.stop()
        except TimeoutError:
            log.warning("%s: consumer did not leave the group in time", self.group_id)

    # Called by the listener, on the consumer's coordination task, between batches (the lock).
    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:
            await self._written()
            numbers = sorted({tp.partition for tp in revoked} & self.owned)
            if numbers:
                await self._owner.revoked(numbers)
                self.owned -= set(numbers)

    async def _assigned(self, assigned: set[TopicPartition]) -> None:
        async with self._lock:
            numbers = sorted({tp.partition for tp in assigned} - self.owned)
            mine = {tp.partition for tp in assigned}
            lonely = sorted(
                tp for tp in assigned if any(TopicPartition(t, tp.partition) not in assigned for t in self.topics)
            )
            if lonely:
                log.error("%s: partitions without their co-partitions: %s", self.group_id, sorted(lonely))
            if not numbers:
                return
            resume = await self._owner.assigned(numbers)
            self.owned |= mine
            assert self.consumer is not None
            for tp, offset in resume.items():
                if tp in assigned:
                    self.consumer.seek(tp, offset)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: PartitionedConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._consumer._revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._consumer._assigned(assigned)


async def _fetch_partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int] | None:
    client = consumer._client  # aiokafka has no public metadata refresh
    await client.force_metadata_update()
    found: set[int] | None = client.cluster.partitions_for_topic(topic)
    return found
