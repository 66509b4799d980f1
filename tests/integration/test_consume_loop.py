"""The batch consume loop on the real broker (`shared.kafka.subscribe_batches`, `shared.fetching`): the next batch
is fetched and decoded while the handler of the one before runs, and nothing is lost or doubled for it — offsets
are committed after each batch's own handler returned, a rebalance and a stop wait for the handler in flight, and
a record whose handling fails for good is the only one dead-lettered."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from faststream.kafka import KafkaRouter

from shared.events import CloudEvent, EventData
from shared.events.journey import FrictionDetected
from shared.kafka import Received, subscribe_batches
from shared.service import ServiceParts, build_app
from shared.settings import Settings
from shared.topics import FRICTIONS
from tests.support import committed_and_ends, eventually, header, read_to_end, running

pytestmark = pytest.mark.integration

GROUP = "ledger"


def friction() -> CloudEvent:
    now = datetime.now(UTC)
    data: EventData = FrictionDetected(
        friction_id=str(uuid.uuid4()), rule="online-signup-not-activated", start_event_id=str(uuid.uuid4()),
        started_at=now - timedelta(days=14), due_at=now, library="oba", age_band="18-64",
    )  # fmt: skip
    return CloudEvent.create(data, subject=str(uuid.uuid4()), source="/journey", library="oba", time=now)


@dataclass
class Ledger:
    """What every instance of the consumer under test handled (event ids, in order); the first batch it is given
    is held in the handler until `release` is set, and an event in `poison` fails every time."""

    handled: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    holding: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    poison: set[str] = field(default_factory=set)

    async def handle(self, batch: list[Received], ends: dict[tuple[str, int], int]) -> None:
        ids = [r.event.id for r in batch]
        if not self.holding.is_set():
            self.held = ids
            self.holding.set()
            await self.release.wait()
        if self.poison & set(ids):
            raise ValueError("this version cannot handle that friction")
        self.handled.extend(ids)


@asynccontextmanager
async def instance(settings: Settings, ledger: Ledger, name: str) -> AsyncIterator[tuple[ServiceParts, Any]]:
    """One instance of a batch consumer of the frictions topic in group `GROUP`, running."""
    parts = ServiceParts.connect(name, settings)
    router = KafkaRouter()
    subscriber = subscribe_batches(
        router, settings, parts.publisher, topics=[FRICTIONS], group=GROUP, handler=ledger.handle, max_records=5
    )
    async with running(build_app(parts, title=name, description="a batch consumer under test", kafka=router)):
        yield parts, subscriber


async def ledger_offsets(settings: Settings) -> tuple[dict[int, int], dict[int, int]]:
    """The ledger group's committed offset and the end offset of every partition of the frictions topic."""
    return await committed_and_ends(settings.kafka_bootstrap, settings.group(GROUP), settings.topic(FRICTIONS.name))


async def fetched(subscriber: Any) -> int:
    """How many records the instance has fetched (its positions, from offset 0 on)."""
    consumer: AIOKafkaConsumer = subscriber.consumer
    return sum([await consumer.position(tp) for tp in consumer.assignment()])


async def rebalancing(settings: Settings) -> bool:
    """Whether the group waits for its members to join again (the first instance's revocation is under way)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([settings.group(GROUP)])
    finally:
        await admin.close()
    # DescribeGroups: (error_code, group_id, state, ...) per group.
    return any(group[2] == "PreparingRebalance" for response in responses for group in response.groups)


async def held_while_the_next_is_fetched(
    parts: ServiceParts, subscriber: Any, ledger: Ledger, first: list[CloudEvent], later: list[CloudEvent]
) -> None:
    """`first` published and its batch held in the handler; then `later` published and fetched ahead meanwhile."""
    await parts.publisher.publish_many(first)
    await eventually(lambda: asyncio.sleep(0, result=ledger.holding.is_set()))
    await parts.publisher.publish_many(later)
    await eventually(lambda: _more_than(fetched(subscriber), len(ledger.held)))


async def all_committed(settings: Settings) -> bool:
    committed, ends = await ledger_offsets(settings)
    return committed == ends


async def test_records_arriving_while_a_slow_handler_runs_are_fetched_ahead_and_each_handled_once(
    settings: Settings,
) -> None:
    ledger = Ledger()
    first, later = [friction() for _ in range(4)], [friction() for _ in range(12)]
    async with instance(settings, ledger, "ahead") as (parts, subscriber):
        # The next batch is fetched (and decoded) while the first one's handler is still running …
        await held_while_the_next_is_fetched(parts, subscriber, ledger, first, later)
        # … but nothing is committed before that handler returned, though the consumer's position is past it.
        committed, _ = await ledger_offsets(settings)
        assert sum(committed.values()) == 0
        ledger.release.set()
        await eventually(lambda: asyncio.sleep(0, result=len(ledger.handled) >= 16))
        await eventually(lambda: all_committed(settings))
    assert Counter(ledger.handled) == Counter(e.id for e in first + later)
    assert ledger.handled[: len(ledger.held)] == ledger.held  # in order: the held batch first


async def test_a_rebalance_while_a_handler_runs_waits_for_it_and_loses_and_doubles_nothing(settings: Settings) -> None:
    ledger, joining = Ledger(), Ledger()
    joining.holding.set()  # the second instance holds nothing
    first, later, last = [friction() for _ in range(6)], [friction() for _ in range(12)], [friction() for _ in range(8)]
    joined, leave = asyncio.Event(), asyncio.Event()

    async def second_instance() -> None:
        async with instance(settings, joining, "two"):  # its start waits for the group to settle
            joined.set()
            await leave.wait()

    async with instance(settings, ledger, "one") as (parts, subscriber):
        await held_while_the_next_is_fetched(parts, subscriber, ledger, first, later)
        # A second instance joins: the first one's partitions are revoked while its handler is held; the revocation
        # waits for it (and its commit), and the batch fetched ahead is read again by whoever owns its partition next.
        second = asyncio.create_task(second_instance())
        await eventually(lambda: rebalancing(settings))
        ledger.release.set()
        await joined.wait()
        await eventually(lambda: asyncio.sleep(0, result=len(ledger.handled) + len(joining.handled) >= 18))
        await parts.publisher.publish_many(last)
        await eventually(lambda: asyncio.sleep(0, result=len(ledger.handled) + len(joining.handled) >= 26))
        await eventually(lambda: all_committed(settings))
        leave.set()
        await second
    everything = ledger.handled + joining.handled
    assert Counter(everything) == Counter(e.id for e in first + later + last)  # each once
    assert ledger.handled[: len(ledger.held)] == ledger.held


async def test_a_stop_while_a_handler_runs_waits_for_it_and_the_next_start_goes_on_from_its_commit(
    settings: Settings,
) -> None:
    ledger = Ledger()
    first, later = [friction() for _ in range(4)], [friction() for _ in range(12)]
    async with instance(settings, ledger, "stopping") as (parts, subscriber):
        await held_while_the_next_is_fetched(parts, subscriber, ledger, first, later)
        # The stop begins while the handler is held; the handler is released a moment later.
        asyncio.get_running_loop().call_later(1.0, ledger.release.set)
    assert ledger.handled[: len(ledger.held)] == ledger.held
    committed, _ = await ledger_offsets(settings)
    assert sum(committed.values()) == len(ledger.handled)  # committed: what was handled, not what was fetched

    async with instance(settings, ledger, "started again"):
        await eventually(lambda: asyncio.sleep(0, result=len(ledger.handled) >= 16))
        await eventually(lambda: all_committed(settings))
    assert Counter(ledger.handled) == Counter(e.id for e in first + later)


async def test_a_record_whose_handling_fails_for_good_is_the_only_one_dead_lettered(settings: Settings) -> None:
    ledger = Ledger()
    ledger.release.set()
    events = [friction() for _ in range(10)]
    poison = events[3]
    ledger.poison = {poison.id}
    async with instance(settings, ledger, "poisoned") as (parts, _):
        await parts.publisher.publish_many(events)
        await eventually(lambda: asyncio.sleep(0, result=len(ledger.handled) >= 9))
        await eventually(lambda: all_committed(settings))
    assert Counter(ledger.handled) == Counter(e.id for e in events if e is not poison)
    dead = await read_to_end(settings.kafka_bootstrap, settings.topic(FRICTIONS.dead_letters))
    assert [header(r, "ce_id") for r in dead] == [poison.id]
    assert [header(r, "dlq_reason") for r in dead] == ["handler_error"]


async def _more_than(count: Any, at_least: int) -> bool:
    return bool(await count > at_least)
