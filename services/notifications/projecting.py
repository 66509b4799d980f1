"""notifications' consumers, in batches: projections of what other services publish, and triggers.

Members and usage events are projected a whole consumer batch at a time (one pipeline), then the batch's triggers
are decided together. Frictions are decided a batch at a time too, but only once the members projection has
caught up (see `MembersCaughtUp`): a decision never uses older consent or erasure state than the friction it
answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from tenacity import wait_fixed

from services.notifications.catalogue_store import CatalogueStore, Offering
from services.notifications.deciding import Decider
from services.notifications.decision_log import DecisionLog
from services.notifications.projection_store import ProjectionStore
from services.notifications.state import Profile, ms
from shared.consumers import end_offsets
from shared.events import CloudEvent, EventData
from shared.events.journey import FrictionResolved
from shared.events.members import (
    ConsentChanged,
    GuardianSet,
    LanguageChanged,
    MemberErased,
    MemberMerged,
    MemberSignedUp,
)
from shared.kafka import Received
from shared.retrying import waiting_out
from shared.settings import Settings

log = logging.getLogger(__name__)

CATALOG_PREFIX = "nl.bibliotheek.catalog."
PARTICIPATION = frozenset({"nl.bibliotheek.usage.activity_registered.v1", "nl.bibliotheek.usage.activity_attended.v1"})
Ends = dict[tuple[str, int], int]


class MembersCaughtUp:
    """The ordering guarantee: before a batch of frictions is decided, the members projection must have applied
    every record the members topic held when the batch was read.

    A consent withdrawal acknowledged by Kafka before journey even produced the friction is then at an offset below
    the end offset asked here (after the friction was read), and the members consumer stores how far it got with
    the effects of each batch (`members-progress`). So the decision waits, typically for one members batch, and
    never decides on consent or erasure state older than the friction.

    The end offsets are asked over a connection of their own (`run` keeps it open): on a consumer's connection the
    request would queue behind its long-polling fetch (up to half a second).
    """

    def __init__(self, projections: ProjectionStore, settings: Settings, topic: str) -> None:
        self._projections = projections
        self._settings = settings
        self._topic = topic
        self._offsets: AIOKafkaConsumer | None = None
        self._started = asyncio.Event()
        self.waited_seconds = 0.0
        self.asked_seconds = 0.0

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            **self._settings.kafka_security(),
        )
        await consumer.start()
        try:
            await consumer.topics()  # the cluster's metadata, so that the members topic's partitions are known
            self._offsets = consumer
            self._started.set()
            await asyncio.Event().wait()
        finally:
            self._started.clear()
            self._offsets = None
            await consumer.stop()

    async def wait(self) -> None:
        await self._started.wait()
        assert self._offsets is not None
        known = self._offsets.partitions_for_topic(self._topic) or range(self._settings.partitions)
        partitions = [TopicPartition(self._topic, p) for p in sorted(known)]
        started = time.monotonic()
        ends = {tp.partition: offset for tp, offset in (await self._end_offsets(partitions)).items()}
        self.asked_seconds += time.monotonic() - started
        warned = started
        while True:
            progress = await self._projections.members_progress()
            if all(progress.get(p, 0) >= end for p, end in ends.items()):
                break
            if time.monotonic() - warned > 30:
                warned = time.monotonic()
                log.warning("frictions wait for the members projection to catch up (%s of %s)", progress, ends)
            await asyncio.sleep(0.002)
        self.waited_seconds += time.monotonic() - started

    async def _end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Asked until Kafka answers: Kafka away is waited for, never a reason to dead-letter the frictions."""
        assert self._offsets is not None
        what = "members topic's end offsets not known yet; frictions wait"
        async for attempt in waiting_out((TimeoutError, KafkaError), wait=wait_fixed(0.5), log=log, what=what,
                                         log_every=20):  # fmt: skip
            with attempt:
                found = await end_offsets(self._offsets, partitions)
        return found


class Projector:
    def __init__(
        self,
        projections: ProjectionStore,
        catalogue: CatalogueStore,
        log_: DecisionLog,
        decider: Decider,
        members_topic: str,
    ) -> None:
        self._projections = projections
        self._catalogue = catalogue
        self._log = log_
        self._decider = decider
        self._members_topic = members_topic
        self.caught_up: MembersCaughtUp | None = None

    async def on_members(self, batch: list[Received], ends: Ends) -> None:
        """Project a batch of member events in topic order, then decide the ones that trigger campaigns."""
        pipe = self._projections.batch()
        resolved = await self._projections.resolve_all(r.event.subject for r in batch if r.event.subject)
        guardians = await self._projections.guardian_of(list(resolved.values()))
        triggers: list[CloudEvent] = []
        for received in batch:
            event, data = received.event, received.data
            if event.subject is None:
                continue
            member_id = resolved[event.subject]
            if isinstance(data, MemberMerged | MemberErased):
                # These read what the projection holds: everything before them is written first.
                await self._projections.apply(pipe)
                pipe = self._projections.batch()
                if isinstance(data, MemberMerged):
                    await self._projections.merge(member_id, data.survivor_id)
                else:
                    await self._projections.erase(member_id)
                resolved = await self._projections.resolve_all(resolved)
                continue
            if isinstance(data, MemberSignedUp):
                profile = Profile(data.age_band, data.home_library, event.channel or "", data.language)
                self._projections.signed_up(pipe, member_id, profile, data.proposition)
            elif isinstance(data, ConsentChanged):
                await self._projections.consent(
                    pipe, member_id, data.medium, data.purpose, data.granted, event.utc_time
                )
            elif isinstance(data, LanguageChanged):
                self._projections.language(pipe, member_id, data.language)
            elif isinstance(data, GuardianSet):
                guardian = (await self._projections.resolve_all([data.guardian_id]))[data.guardian_id]
                self._projections.guardian(pipe, member_id, guardian, guardians.get(member_id))
                guardians[member_id] = guardian
            triggers.append(event)
        progress = {p: end + 1 for (topic, p), end in ends.items() if topic == self._members_topic}
        await self._projections.apply(pipe, progress)
        await self._decider.on_triggers(triggers, {r.event.id: r.traceparent for r in batch})

    async def on_usage(self, batch: list[Received], ends: Ends) -> None:
        pipe = self._projections.batch()
        resolved = await self._projections.resolve_all(r.event.subject for r in batch if r.event.subject)
        for received in batch:
            event = received.event
            proposition = event.data.get("proposition")
            if event.subject and event.type in PARTICIPATION and isinstance(proposition, str):
                self._projections.took_part(pipe, resolved[event.subject], proposition)
        await self._projections.apply(pipe)
        await self._decider.on_triggers([r.event for r in batch], {r.event.id: r.traceparent for r in batch})

    async def on_frictions(self, batch: list[Received], ends: Ends) -> None:
        if not batch:
            return
        if self.caught_up is not None:
            await self.caught_up.wait()
        resolutions = [(r.event, r.data) for r in batch if isinstance(r.data, FrictionResolved) and r.event.subject]
        if resolutions:
            resolved = await self._projections.resolve_all(e.subject or "" for e, _ in resolutions)
            pipe = self._log.pipeline()
            for event, data in resolutions:
                assert isinstance(data, FrictionResolved)
                member_id = resolved[event.subject or ""]
                await self._log.friction_resolved(pipe, member_id, data.friction_id, ms(data.resolved_at))
            await pipe.execute()
        detected = [r for r in batch if not isinstance(r.data, FrictionResolved)]
        await self._decider.on_triggers([r.event for r in detected], {r.event.id: r.traceparent for r in detected})

    async def on_catalog(self, event: CloudEvent, data: EventData) -> None:
        """The catalogue, read by field name only: propositions is extending its models, and notifications
        needs no more than names, which library offers what, and branches."""
        kind = event.type.removeprefix(CATALOG_PREFIX).rsplit(".", 1)[0]
        d = event.data
        if kind in ("proposition_published", "proposition_retired"):
            retired = kind == "proposition_retired"
            await self._catalogue.set_proposition(d["slug"], d.get("name_nl", ""), d.get("name_en", ""), retired)
        elif kind == "offering_changed":
            offering = Offering(d.get("local_name"), d.get("branches") or [], d.get("url"))
            active = d.get("active", True) is not False
            await self._catalogue.set_offering(d["proposition"], d["library"], offering if active else None)
        elif kind == "library_changed":
            raw_branches = d.get("branches") or []
            await self._catalogue.set_library(
                d["library"], d.get("name", ""), d.get("website") or "", _branches(raw_branches), _hours(raw_branches)
            )


def _branches(raw: list[Any]) -> dict[str, str]:
    branches = {}
    for branch in raw:
        if isinstance(branch, Mapping) and "code" in branch:
            branches[str(branch["code"])] = str(branch.get("name") or branch["code"])
        elif isinstance(branch, str):
            branches[branch] = branch
    return branches


def _hours(raw: list[Any]) -> dict[str, str]:
    """Opening hours per branch code, of the branches that give them."""
    return {
        str(b["code"]): str(b["opening_hours"])
        for b in raw
        if isinstance(b, Mapping) and "code" in b and b.get("opening_hours")
    }
