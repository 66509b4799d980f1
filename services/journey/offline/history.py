"""Loading a history of CloudEvents into the platform (replay, the simulator), with progress and a summary, and
reading the platform's topics back.

Each line of a JSON-lines file is one CloudEvent in structured form. A line that is not a valid event of a known
type is skipped and reported with its number and reason. The valid ones go either straight to Kafka (the topic
their type belongs to, keyed by subject, in batches that wait for Kafka's acknowledgement once per batch) or
through the `POST /v1/events` ingest endpoint of the service that owns their topic, in batches, where the service
checks each event and may refuse some (reported like the lines that were not events at all).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shared.consumers import batches_to_end
from shared.events import BATCH as CLOUDEVENTS_BATCH
from shared.events import (
    CloudEvent,
    InvalidEvent,
    from_kafka,
    from_structured,
    to_structured,
    typed_data,
    validated,
)
from shared.kafka import EventPublisher

BATCH = 5000
HTTP_BATCH = 1000
LINES_SHOWN = 5  # line numbers shown per reason


@dataclass
class Loaded:
    produced: int = 0  # events now on the topics (over HTTP: accepted by the services)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)
    seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return self.produced / self.seconds if self.seconds else 0.0

    def extend(self, other: Loaded) -> None:
        self.produced += other.produced
        self.rejected += other.rejected
        self.seconds += other.seconds

    def reasons(self) -> list[tuple[str, int, list[int]]]:
        """(reason, how many lines, the first line numbers), the most frequent reason first."""
        grouped: dict[str, list[int]] = {}
        for number, reason in self.rejected:
            grouped.setdefault(reason, []).append(number)
        ranked = sorted(grouped.items(), key=lambda kv: (-len(kv[1]), min(kv[1])))
        return [(reason, len(numbers), sorted(numbers)[:LINES_SHOWN]) for reason, numbers in ranked]

    def summary(self, into: str = "Kafka") -> str:
        lines = [
            f"{self.produced:,} events loaded into {into} in {self.seconds:.1f} s: {self.per_second:,.0f} events/s",
            f"{len(self.rejected):,} lines rejected" + (":" if self.rejected else ""),
        ]
        for reason, count, numbers in self.reasons():
            where = ", ".join(str(n) for n in numbers) + (", …" if count > len(numbers) else "")
            lines.append(f"  {count:>7,} x {reason}  (line{'s' if count > 1 else ''} {where})")
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


async def load(
    numbered: Iterable[tuple[int, CloudEvent | str]],
    publisher: EventPublisher,
    progress: Callable[[int], None] | None = None,
) -> Loaded:
    """Straight to Kafka, in batches of `BATCH` (one round of acks each)."""
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
                progress(loaded.produced + len(loaded.rejected))
    if batch:
        await publisher.publish_many(batch)
        loaded.produced += len(batch)
    if progress:
        progress(loaded.produced + len(loaded.rejected))
    loaded.seconds = time.perf_counter() - started
    return loaded


class IngestRefused(Exception):
    """A service refused a whole batch (a key without the ingest role, another library's key…)."""


async def post(
    numbered: Iterable[tuple[int, CloudEvent | str]],
    client: httpx.AsyncClient,
    ingest_urls: Mapping[str, str],
    progress: Callable[[int], None] | None = None,
    batch_size: int = HTTP_BATCH,
) -> Loaded:
    """Through the ingest endpoints: each event to `POST /v1/events` of the service whose topic its type belongs
    to (`ingest_urls`: logical topic name → service URL), in batches of `batch_size`. What a service refuses is
    reported per line with the service's reasons."""
    loaded = Loaded()
    started = time.perf_counter()
    pending: dict[str, list[tuple[int, CloudEvent]]] = {}

    async def flush(url: str) -> None:
        items = pending.pop(url, [])
        if items:
            await _post_batch(client, url, items, loaded)
            if progress:
                progress(loaded.produced + len(loaded.rejected))

    for number, item in numbered:
        if isinstance(item, str):
            loaded.rejected.append((number, item))
            continue
        topic = typed_data(item).topic
        url = ingest_urls.get(topic)
        if url is None:
            loaded.rejected.append((number, f"type: no service takes {item.type} over HTTP (topic {topic})"))
            continue
        pending.setdefault(url, []).append((number, item))
        if len(pending[url]) >= batch_size:
            await flush(url)
    for url in list(pending):
        await flush(url)
    loaded.seconds = time.perf_counter() - started
    return loaded


async def _post_batch(
    client: httpx.AsyncClient, url: str, items: Sequence[tuple[int, CloudEvent]], loaded: Loaded
) -> None:
    body = json.dumps([to_structured(event) for _, event in items], separators=(",", ":"))
    response = await client.post(
        url.rstrip("/") + "/v1/events",
        content=body,
        headers={"Content-Type": CLOUDEVENTS_BATCH},
    )
    if response.status_code not in (202, 422):
        raise IngestRefused(f"{url} answered {response.status_code}: {_problem(response)}")
    answer = response.json()
    if "rejected" not in answer:  # a 422 about the request as a whole
        raise IngestRefused(f"{url} answered {response.status_code}: {_problem(response)}")
    refused = {int(r["index"]): _refusal(r) for r in answer["rejected"]}
    loaded.produced += len(items) - len(refused)
    loaded.rejected += [(items[index][0], reason) for index, reason in refused.items()]


def _refusal(rejected: Mapping[str, Any]) -> str:
    errors = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in rejected.get("errors", []))
    status = rejected.get("status")
    return f"{status} {errors}" if status and status != 422 else errors


def _problem(response: httpx.Response) -> str:
    try:
        problem = response.json()
    except ValueError:
        return response.text[:200]
    return str(problem.get("detail") or problem.get("title") or problem)[:200]


def count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


# ---------------------------------------------------------------------------------------------- reading back


@dataclass
class Read:
    events: list[CloudEvent] = field(default_factory=list)
    undecodable: int = 0  # records that are no valid CloudEvent (the consumers dead-letter those)


async def read_topics(
    bootstrap: str,
    topics: Sequence[str],
    progress: Callable[[int], None] | None = None,
    security: Mapping[str, Any] | None = None,
) -> Read:
    """Every record of `topics` as they stand now, from the start up to their end offsets, decoded. No consumer
    group: nothing is committed and no running consumer is disturbed (`shared.consumers.batches_to_end`)."""
    read = Read()
    async for batch in batches_to_end(bootstrap, *topics, security=security):
        for record in batch:
            try:
                event = from_kafka(record.value, record.headers)
                typed_data(event)
                read.events.append(event)
            except InvalidEvent:
                read.undecodable += 1
        if progress:
            progress(len(read.events) + read.undecodable)
    return read
