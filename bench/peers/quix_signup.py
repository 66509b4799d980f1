"""A peer for the journey benchmark: the online-sign-up absence rule as a Quix Streams app.

Same topic, same events, same semantics as journey's `online-signup-not-activated`: an online sign-up starts a
window; a card activation within it (or within the allowed lateness after it) meets it; when the event-time
clock (the latest `ce_time` seen on the partition) passes the due time plus the lateness, an unmet window is a
friction. Per-member state in Quix's RocksDB store (the sign-up's start, the activation), an in-memory timer heap
per partition, event time from the `ce_time` header. Frictions are collected in memory as (member, start event id).
"""

from __future__ import annotations

import heapq
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from quixstreams import Application, State, message_context
from quixstreams.models import TimestampType

SIGNED_UP = b"nl.bibliotheek.member.signed_up.v1"
ACTIVATED = b"nl.bibliotheek.member.card_activated.v1"


@dataclass
class PeerRun:
    seconds: float = 0.0
    records: int = 0
    frictions: set[tuple[str, str]] = field(default_factory=set)


def _headers(headers: Any) -> dict[str, bytes]:
    return {name: value for name, value in headers or ()}


def _event_time(value: Any, headers: Any, timestamp: int, timestamp_type: TimestampType) -> int:
    raw = _headers(headers).get("ce_time")
    return int(datetime.fromisoformat(raw.decode()).timestamp() * 1000) if raw else timestamp


def run(
    bootstrap: str, topic: str, group: str, state_dir: Path, *, records: int, window_ms: int, lateness_ms: int
) -> PeerRun:
    """Consume `records` records of `topic` from the start; returns the time from the first record and the
    frictions, decided with the timers the clock has passed by the last record (and the rest at the end)."""
    app = Application(
        broker_address=bootstrap, consumer_group=group, auto_offset_reset="earliest", state_dir=str(state_dir),
        processing_guarantee="at-least-once", loglevel="WARNING",
    )  # fmt: skip
    source = app.topic(topic, value_deserializer="bytes", key_deserializer="str", timestamp_extractor=_event_time)
    result = PeerRun()
    timers: dict[int, list[tuple[int, str, str]]] = {}  # partition → heap of (due, member, start event id)
    activated_at: dict[str, int] = {}  # mirror of the store for timers firing under another key
    clocks: dict[int, int] = {}
    started = 0.0

    def fire(partition: int, until: int) -> None:
        heap = timers.get(partition, [])
        while heap and heap[0][0] <= until:
            due, member, start_id = heapq.heappop(heap)
            at = activated_at.get(member)
            if at is None or at > due + lateness_ms:
                result.frictions.add((member, start_id))

    def process(value: bytes, key: str, timestamp: int, headers: Any, state: State[Any, Any]) -> None:
        nonlocal started
        if not started:
            started = time.perf_counter()
        found = _headers(headers)
        kind = found.get("ce_type")
        partition = message_context().partition
        if timestamp > clocks.get(partition, 0):
            clocks[partition] = timestamp
            fire(partition, timestamp - lateness_ms)
        if kind == SIGNED_UP and found.get("ce_channel") == b"online":
            state.set("start", [timestamp, found["ce_id"].decode()])
            heapq.heappush(timers.setdefault(partition, []), (timestamp + window_ms, key, found["ce_id"].decode()))
        elif kind == ACTIVATED:
            start = state.get("start")
            if start is not None and timestamp >= start[0]:
                state.set("activated", timestamp)
                previous = activated_at.get(key)
                activated_at[key] = timestamp if previous is None else min(previous, timestamp)
        result.records += 1
        if result.records >= records:
            result.seconds = time.perf_counter() - started
            app.stop()

    sdf = app.dataframe(source)
    sdf.update(process, stateful=True, metadata=True)
    app.run()
    for partition in list(timers):
        fire(partition, clocks.get(partition, 0) - lateness_ms)
    return result


def main() -> None:
    """`python -m bench.peers.quix_signup BOOTSTRAP TOPIC GROUP STATE_DIR RECORDS WINDOW_MS LATENESS_MS`: prints
    the run as JSON (Quix wants the main thread for its signal handlers: the bench runs it as a child process)."""
    bootstrap, topic, group, state_dir, records, window_ms, lateness_ms = sys.argv[1:8]
    result = run(bootstrap, topic, group, Path(state_dir), records=int(records), window_ms=int(window_ms),
                 lateness_ms=int(lateness_ms))  # fmt: skip
    print(json.dumps({"seconds": result.seconds, "records": result.records, "frictions": sorted(result.frictions)}))


if __name__ == "__main__":
    main()
