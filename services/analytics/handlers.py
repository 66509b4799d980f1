"""analytics' Kafka side: member, usage, friction and delivery events in, one row each into the store.

One batch is one insert (after one look-up of ids already stored), one derivation of the absence windows its
events start (the friction rates' denominators) and one of its frictions (a row per detection or resolution).
Merges and erasures in the batch are applied after it, in order, so an event that came before or after its
member's merge or erasure in the same batch ends up where it belongs. Offsets are committed by
`subscribe_batches` after the handler returned: after the insert.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from faststream.kafka import KafkaRouter

from services.analytics.decoding import decode_facts
from services.analytics.facts import DETECTED, ERASED, MERGED, RESOLVED, Fact
from services.analytics.family import Families
from services.analytics.queries import Window, derive_frictions, derive_windows, derived
from services.analytics.settings import AnalyticsSettings
from services.analytics.store import AnalyticsStore
from services.analytics.tables import keys
from shared.kafka import EventPublisher, subscribe_batches
from shared.topics import DELIVERIES, FRICTIONS, MEMBERS, USAGE

log = logging.getLogger(__name__)

INPUTS = (MEMBERS, USAGE, FRICTIONS, DELIVERIES)
GROUP = "analytics"


class FactWriter:
    def __init__(self, store: AnalyticsStore, windows: Sequence[Window]) -> None:
        self._store = store
        self._windows = list(windows)
        self._families = Families(store)
        self.inserted = 0
        self.handled = 0
        self.batches = 0
        self.seconds = 0.0  # spent writing

    async def write(self, batch: list[Fact], ends: dict[tuple[str, int], int]) -> None:
        started = time.perf_counter()
        self.inserted += await self._store.add(batch)
        # The absence windows and frictions these events start: derived from what was stored (a redelivery derives
        # nothing new).
        members = keys(member_id=list({r.member_id: None for r in batch}))
        await self._store.command(*derive_windows(self._windows, in_batch=True), batch=members)
        with_frictions = list({r.member_id: None for r in batch if r.type in (DETECTED, RESOLVED)})
        if with_frictions:
            await self._store.command(*derive_frictions(in_batch=True), batch=keys(member_id=with_frictions))
        for row in batch:
            if row.type == MERGED and row.survivor_id is not None:
                await self._store.merge(row.member_id, row.survivor_id)
                for statement in derived(self._windows, [row.survivor_id]):
                    await self._store.command(*statement)
            elif row.type == ERASED:
                await self._store.erase(row.member_id)
        await self._families.write(batch)  # guardians, birth years: after merges
        self.handled += len(batch)
        self.batches += 1
        self.seconds += time.perf_counter() - started


def analytics_router(writer: FactWriter, settings: AnalyticsSettings, publisher: EventPublisher) -> KafkaRouter:
    router = KafkaRouter()
    subscribe_batches(
        router,
        settings,
        publisher,
        topics=INPUTS,
        group=GROUP,
        handler=writer.write,
        decode=decode_facts,
        max_records=settings.analytics_batch_size,
        # A fetch brings up to this much of each partition: a batch of 20,000 records (about 10 MB) in one or two.
        max_partition_fetch_bytes=8 * 1024 * 1024,
        description="Member, usage, friction and delivery events: one pseudonymous row each in the analytics store.",
    )
    return router
