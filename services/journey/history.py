"""Loading a history of CloudEvents into Kafka (replay, the simulator), with progress and a summary.

Each line of a JSON-lines file is one CloudEvent in structured form. A line that is not a valid event of a known
type is skipped and reported with its number and reason; the valid ones go to the topic their type belongs to,
keyed by subject, in batches that wait for Kafka's acknowledgement once per batch.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from shared.events import CloudEvent, InvalidEvent, from_structured, validated
from shared.kafka import EventPublisher

BATCH = 5000


@dataclass
class Loaded:
    produced: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)
    seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return self.produced / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        lines = [
            f"{self.produced:,} events produced in {self.seconds:.1f} s ({self.per_second:,.0f}/s); "
            f"{len(self.rejected):,} lines rejected"
        ]
        reasons: dict[str, int] = {}
        for _, reason in self.rejected:
            reasons[reason.split(":")[0]] = reasons.get(reason.split(":")[0], 0) + 1
        lines += [f"  {count:>6,} x {reason}" for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1])]
        lines += [f"  line {number}: {reason}" for number, reason in self.rejected[:5]]
        return "\n".join(lines)


def parse_lines(lines: Iterable[str]) -> Iterator[tuple[int, CloudEvent | str]]:
    """(line number, event) for each valid line, (line number, reason) for each other."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, validated(from_structured(json.loads(line)))
        except json.JSONDecodeError:
            yield number, "body: not JSON"
        except InvalidEvent as exc:
            yield number, str(exc)


class Progress:
    """A one-line progress bar on a terminal (stderr); silent when not a terminal, except for the end."""

    def __init__(self, total: int | None, out: TextIO = sys.stderr) -> None:
        self.total, self.out, self.started = total, out, time.perf_counter()
        self.tty = out.isatty()

    def update(self, done: int) -> None:
        if not self.tty:
            return
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        if self.total:
            filled = int(30 * done / self.total)
            bar = "█" * filled + "·" * (30 - filled)
            self.out.write(f"\r{bar} {done:,}/{self.total:,} events  {rate:,.0f}/s ")
        else:
            self.out.write(f"\r{done:,} events  {rate:,.0f}/s ")
        self.out.flush()

    def close(self) -> None:
        if self.tty:
            self.out.write("\n")


async def load(
    numbered: Iterable[tuple[int, CloudEvent | str]],
    publisher: EventPublisher,
    progress: Callable[[int], None] | None = None,
) -> Loaded:
    loaded = Loaded()
    started = time.perf_counter()
    batch: list[CloudEvent] = []
    for number, item in numbered:
        if isinstance(item, str):
            loaded.rejected.append((number, item))
            continue
        batch.append(item)
        if len(batch) >= BATCH:
            await publisher.publish_many(batch)
            loaded.produced += len(batch)
            batch = []
            if progress:
                progress(loaded.produced)
    if batch:
        await publisher.publish_many(batch)
        loaded.produced += len(batch)
        if progress:
            progress(loaded.produced)
    loaded.seconds = time.perf_counter() - started
    return loaded


def count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())
