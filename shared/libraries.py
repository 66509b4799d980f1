"""The network's one list of libraries, as every service knows it: the `library_changed` records of the catalogue's
compacted topic (propositions owns the catalogue), read from the start and held in memory.

A library code that enters the platform (a sign-up, a posted event, a campaign, an API key) must be in this list,
else it is refused with a 422 naming the field; so is a library the network retired (`retired: true`): what named
it before stays, nothing new may (within 10 s in every process). Looking a code up costs nothing while it is known
and the last read is recent; a code not known yet, or a read older than 10 s, makes the directory read the topic up
to its end offsets of that moment first (one read at a time, shared by every request waiting for it), so a library
added a moment ago is found and an unknown code is refused only after the catalogue was read to its end. Libraries
are never removed from the catalogue (a retired one is put again to restore it), so a known code stays known. While
Kafka does not answer within the publish deadline the lookup fails as a publish would (503).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaTimeoutError

from shared.events import FieldError, InvalidEvent, from_kafka, structured_mode
from shared.problems import Problem
from shared.settings import Settings
from shared.topics import CATALOG

log = logging.getLogger(__name__)

LIBRARY_CHANGED = "nl.bibliotheek.catalog.library_changed.v1"
_AREA_RANGE = re.compile(r"^([1-9][0-9]{3})(?:-([1-9][0-9]{3}))?$")


def area_range(text: str) -> tuple[int, int]:
    """`1000-1109` → (1000, 1109); `1034` → (1034, 1034)."""
    match = _AREA_RANGE.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a postcode area (1034) or a range of them (1000-1109)")
    first = int(match.group(1))
    last = int(match.group(2) or first)
    if last < first:
        raise ValueError(f"{text!r} runs backwards")
    return first, last


@dataclass(frozen=True)
class KnownLibrary:
    """A library of the catalogue: its code, name, the 4-digit postcode areas it serves and its websites' origins."""

    code: str
    name: str
    areas: tuple[tuple[int, int], ...] = ()
    retired: bool = False
    origins: frozenset[str] = frozenset()

    def serves(self, area: str) -> bool:
        number = int(area)
        return any(first <= number <= last for first, last in self.areas)


def known_library(data: Mapping[str, object]) -> KnownLibrary:
    """A `library_changed` record's body as the directory keeps it."""
    areas = data.get("postcode_areas") or []
    origins = data.get("website_origins") or []
    assert isinstance(areas, list) and isinstance(origins, list)
    return KnownLibrary(
        code=str(data["library"]),
        name=str(data.get("name") or data["library"]),
        areas=tuple(area_range(str(a)) for a in areas),
        retired=data.get("retired") is True,
        origins=frozenset(str(o) for o in origins),
    )


def unknown_library(fields: Iterable[str], retired: Iterable[str] = ()) -> Problem:
    errors = [FieldError(field, "no such library in the catalogue") for field in fields]
    errors += [FieldError(field, "the library is retired") for field in retired]
    return Problem(422, "Unprocessable Content", "; ".join(f"{e.field}: {e.message}" for e in errors), errors=errors)


class LibraryDirectory:
    # A known code is looked up without reading, yet the catalogue is read again when the last read is older than
    # this: a library retired meanwhile is refused in every process within this time.
    RETIREMENT_SECONDS = 10.0

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = settings.topic(CATALOG.name)
        self._libraries: dict[str, KnownLibrary] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._lock = asyncio.Lock()
        self._read_since = float("-inf")  # monotonic time at which the last completed read to the end began

    # ------------------------------------------------------------------------------------------ lookups

    def known(self, code: str) -> bool:
        """Known already and not retired, without reading anything (a code not known yet may still be in the topic,
        a retired one restored there)."""
        found = self._libraries.get(code)
        return found is not None and not found.retired

    async def unknown(self, codes: Iterable[str]) -> list[str]:
        """The codes that are not libraries of the catalogue, or retired ones, in order, each once."""
        asked = list(dict.fromkeys(codes))
        missing = [code for code in asked if not self.known(code)]
        if missing or time.monotonic() - self._read_since > self.RETIREMENT_SECONDS:
            await self.catch_up()
            missing = [code for code in asked if not self.known(code)]
        return missing

    async def allows_origin(self, code: str, origin: str) -> bool:
        """Is `origin` one of the library's website origins? (the catalogue read to its end first when not yet)"""
        library = self._libraries.get(code)
        if library is None or origin not in library.origins:
            await self.catch_up()
            library = self._libraries.get(code)
        return library is not None and origin in library.origins

    async def require(self, fields: Mapping[str, str | None]) -> None:
        """Raise a 422 naming every field (field → code) whose code is not a library of the catalogue, or a retired
        one."""
        wanted = {field: code for field, code in fields.items() if code is not None}
        missing = set(await self.unknown(wanted.values()))
        if missing:
            retired = {code for code in missing if code in self._libraries}
            raise unknown_library(
                (field for field, code in wanted.items() if code in missing - retired),
                (field for field, code in wanted.items() if code in retired),
            )

    async def libraries(self) -> dict[str, KnownLibrary]:
        """Every library of the catalogue as it stands now (read to the end first)."""
        await self.catch_up()
        return dict(self._libraries)

    # ------------------------------------------------------------------------------------------ reading

    async def catch_up(self) -> None:
        """Read the topic up to its end offsets of now. A read that began after this call was made serves it."""
        asked = time.monotonic()
        async with self._lock:
            if self._read_since >= asked:
                return
            began = time.monotonic()
            try:
                await asyncio.wait_for(self._read_to_end(), timeout=self._settings.publish_timeout)
            except TimeoutError:
                raise KafkaTimeoutError("the catalogue topic could not be read in time") from None
            self._read_since = began

    async def _read_to_end(self) -> None:
        consumer = await self._started()
        if not self._partitions:
            # The cluster's metadata as the broker has it now (topics() fetches it without updating the client's).
            cluster = await consumer._client.fetch_all_metadata()
            numbers = cluster.partitions_for_topic(self._topic) or set()
            self._partitions = [TopicPartition(self._topic, p) for p in sorted(numbers)]
            if not self._partitions:
                return  # no catalogue yet: nothing is known
            consumer.assign(self._partitions)
            await consumer.seek_to_beginning(*self._partitions)
        ends = await consumer.end_offsets(self._partitions)
        while any([await consumer.position(tp) < end for tp, end in ends.items()]):
            for records in (await consumer.getmany(*self._partitions, timeout_ms=200)).values():
                for record in records:
                    self._read(record.headers, record.value)

    def _read(self, headers: Sequence[tuple[str, bytes]], value: bytes | None) -> None:
        data: object = None
        if structured_mode(headers):
            try:
                event = from_kafka(value, headers)
            except InvalidEvent:
                return  # the catalogue's consumers dead-letter it; the directory only looks for libraries
            if event.type != LIBRARY_CHANGED:
                return
            data = event.data
        else:
            kind = next((v.decode() for k, v in headers if k == "ce_type"), None)
            if kind != LIBRARY_CHANGED or not value:
                return
            with contextlib.suppress(ValueError):
                data = json.loads(value)
        try:
            if not isinstance(data, Mapping):
                raise ValueError("not an object")
            library = known_library(data)
        except (ValueError, KeyError, AssertionError):
            log.warning("catalogue: a library_changed record that is not one; skipped")
            return
        self._libraries[library.code] = library

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._settings.kafka_bootstrap,
                group_id=None,
                enable_auto_commit=False,
                **self._settings.kafka_security(),
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            self._partitions = []
            await consumer.stop()
