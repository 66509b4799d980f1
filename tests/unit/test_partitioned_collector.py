"""The partitioned consumer (journey's) pauses the cyclic garbage collector from a fetch until its batch is decided,
and always turns it back on: a process whose collector stayed off would keep every reference cycle it ever made."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import TopicPartition

from shared.partitioned import PartitionedConsumer, collector_paused
from shared.settings import Settings


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    gc.enable()
    yield
    gc.enable()


def test_the_collector_is_off_during_a_batch_and_on_again_after_it_even_when_it_fails() -> None:
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("Redis went away")
    assert gc.isenabled()


def test_two_consumers_in_one_process_turn_it_on_only_when_both_batches_are_done() -> None:
    with collector_paused():
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_collector_someone_else_turned_off_stays_off() -> None:
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()  # the tests after this one in the worker run with the collector on, as they expect


class _Record:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class _Fetching:
    """What the consumer's loop asks of aiokafka in one step; notes whether the collector was on meanwhile."""

    def __init__(self) -> None:
        self.collector_on_while_fetching: bool | None = None

    async def getmany(self, **_: Any) -> dict[TopicPartition, list[_Record]]:
        self.collector_on_while_fetching = gc.isenabled()
        return {TopicPartition("members", 0): [_Record(7), _Record(8)]}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.committed = offsets


class _Owner:
    def __init__(self) -> None:
        self.collector_on_while_deciding: bool | None = None
        self.decided: list[int] = []

    async def process(self, batch: dict[TopicPartition, list[_Record]]) -> None:
        self.collector_on_while_deciding = gc.isenabled()
        self.decided = [r.offset for records in batch.values() for r in records]


async def test_a_step_fetches_and_decides_its_batch_with_the_collector_off_and_turns_it_on_after() -> None:
    owner, fetching = _Owner(), _Fetching()
    consumer = PartitionedConsumer(Settings(), topics=["members"], group_id="g", owner=owner)  # type: ignore[arg-type]
    consumer.owned = {0}
    consumer.consumer = fetching
    await consumer._step(fetching)
    assert fetching.collector_on_while_fetching is False
    assert owner.collector_on_while_deciding is False
    assert owner.decided == [7, 8]
    assert fetching.committed == {TopicPartition("members", 0): 9}  # nothing to store: committed at once
    assert gc.isenabled()
