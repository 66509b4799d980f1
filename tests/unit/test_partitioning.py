"""The publisher picks a record's partition itself: it must be the one every Kafka client picks for that key."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner

from shared.publishing import partition_for


def test_a_keyed_record_goes_to_the_partition_kafka_s_default_partitioner_picks_for_its_key() -> None:
    draw = random.Random(7)
    keys = [bytes(draw.randrange(256) for _ in range(length)) for length in range(0, 41) for _ in range(25)]
    keys += [b"cc02c620-5a1b-4e0f-9d51-2f3b8f6f0e11", b"member-1", "lezer-é".encode()]
    for count in (1, 2, 3, 12):
        partitions = list(range(count))
        for key in keys:
            assert partition_for(key, partitions) == DefaultPartitioner()(key, partitions, partitions), (key, count)


def test_a_record_without_a_key_goes_to_one_of_the_partitions() -> None:
    assert {partition_for(None, [0, 1, 2]) for _ in range(200)} == {0, 1, 2}
