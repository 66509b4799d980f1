"""Every producer of the platform puts a key on the partition Kafka's Java clients would: journey's co-partitioning
of a member's events across topics depends on it."""

from __future__ import annotations

import uuid

from aiokafka.partitioner import DefaultPartitioner

from shared.kafka import partition_for_key


def test_a_key_goes_where_the_default_partitioner_puts_it_every_time() -> None:
    keys = [str(uuid.UUID(int=i * 7919)).encode() for i in range(500)] + [b"", b"m-1", "é→".encode()]
    for partitions in ([0], [0, 1, 2], list(range(12))):
        for key in keys:
            expected = DefaultPartitioner()(key, partitions, partitions)
            assert partition_for_key(key, partitions, partitions) == expected
            assert partition_for_key(key, partitions, partitions) == expected  # remembered, still the same


def test_a_known_key_lands_on_the_partition_the_java_client_gives_it() -> None:
    # murmur2 of b"m-1" as Kafka's Utils.murmur2 computes it, masked positive, modulo 12 (a known answer: the
    # comparison above alone would pass if aiokafka's partitioner and ours drifted together)
    assert partition_for_key(b"m-1", list(range(12)), []) == 5


def test_records_without_a_key_are_spread_over_the_available_partitions() -> None:
    assert {partition_for_key(None, [0, 1, 2], [2]) for _ in range(20)} == {2}
