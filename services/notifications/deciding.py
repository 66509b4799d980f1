"""Deciding: projections of what other services publish, and triggers turned into decisions.

For each trigger, the live campaigns it triggers are decided in priority order (so that, near the frequency
cap, the higher priority gets the slot). One Redis transaction stores every decision of the trigger with its
events (the `decided` marker), the claims, the cap window, the deliveries to make and the counters; then the
events are published; then the consumer commits. A redelivered trigger finds the marker and only publishes its
events again, under the same ids.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from services.notifications.campaigns import (
    BROADCAST,
    AudienceFacts,
    Campaign,
    TriggerEvent,
    in_audience,
    triggered_by,
)
from services.notifications.rules import Circumstances, Decision, MemberFacts, Policy, decide
from services.notifications.settings import NotificationsSettings
from services.notifications.store import DecisionWrite, NotificationStore, stop_if_cancelled
from shared import telemetry
from shared.events import CloudEvent, EventData, deterministic_id, from_structured, to_structured
from shared.events.journey import FrictionResolved
from shared.events.members import ConsentChanged, GuardianSet, MemberErased, MemberMerged, MemberSignedUp
from shared.events.notifications import MessageDeferred, MessageSuppressed
from shared.kafka import EventPublisher

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
SOURCE = "/notifications"
CATALOG_PREFIX = "nl.bibliotheek.catalog."
PARTICIPATION = frozenset({"nl.bibliotheek.usage.activity_registered.v1", "nl.bibliotheek.usage.activity_attended.v1"})


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def campaign_source(campaign_id: str) -> str:
    return f"{SOURCE}/campaigns/{campaign_id}"


def trigger_of(event: CloudEvent) -> TriggerEvent:
    attributes = {"library": event.library, "channel": event.channel, "platform": event.platform}
    return TriggerEvent(
        event_id=event.id,
        type=event.type,
        member_id=event.subject or "",
        time=event.utc_time,
        attributes={**attributes, "source": event.source},
        data=event.data,
    )


class Decider:
    def __init__(
        self,
        store: NotificationStore,
        publisher: EventPublisher,
        settings: NotificationsSettings,
        clock: Clock,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._settings = settings
        self._clock = clock
        self._wake = wake
        self._policy = Policy.from_settings(settings)
        self._cache: tuple[int, list[Campaign]] | None = None

    async def _live_campaigns(self, now: datetime) -> list[Campaign]:
        """Active campaigns inside their schedule, highest priority first. Cached until any campaign changes."""
        revision = await self._store.revision()
        if self._cache is None or self._cache[0] != revision:
            self._cache = (revision, await self._store.active_campaigns())
        live = [c for c in self._cache[1] if c.live(now)]
        return sorted(live, key=lambda c: (-c.definition.priority, c.id))

    # ---------------------------------------------------------------------------------- projections

    async def on_member_event(self, event: CloudEvent, data: EventData) -> None:
        if event.subject is None:
            return
        member_id = await self._store.resolve(event.subject)
        if isinstance(data, MemberSignedUp):
            profile = {
                "age_band": data.age_band,
                "library": data.home_library,
                "origin": event.channel or "",
                "platform": event.platform or "",
                "language": data.language,
            }
            await self._store.signed_up(member_id, profile, data.proposition)
        elif isinstance(data, ConsentChanged):
            await self._store.set_consent(member_id, data.medium, data.purpose, data.granted, event.utc_time)
        elif isinstance(data, GuardianSet):
            await self._store.set_guardian(member_id, await self._store.resolve(data.guardian_id))
        elif isinstance(data, MemberMerged):
            await self._store.merge(member_id, data.survivor_id)
            return
        elif isinstance(data, MemberErased):
            await self._store.erase(member_id)
            return
        await self.on_trigger(event)

    async def on_usage_event(self, event: CloudEvent, data: EventData) -> None:
        proposition = event.data.get("proposition")
        if event.subject and event.type in PARTICIPATION and isinstance(proposition, str):
            await self._store.took_part(await self._store.resolve(event.subject), proposition)
        await self.on_trigger(event)

    async def on_friction(self, event: CloudEvent, data: EventData) -> None:
        if isinstance(data, FrictionResolved):
            if event.subject:
                member_id = await self._store.resolve(event.subject)
                await self._store.friction_resolved(member_id, data.friction_id, data.resolved_at)
            return
        await self.on_trigger(event)

    async def on_catalog(self, event: CloudEvent, data: EventData) -> None:
        """The catalogue, read by field name only: propositions is extending its models, and notifications
        needs no more than names, which library offers what, and branches."""
        kind = event.type.removeprefix(CATALOG_PREFIX).rsplit(".", 1)[0]
        d = event.data
        if kind in ("proposition_published", "proposition_retired"):
            retired = kind == "proposition_retired"
            await self._store.set_proposition(d["slug"], d.get("name_nl", ""), d.get("name_en", ""), retired)
        elif kind == "offering_changed":
            offering = {"local_name": d.get("local_name"), "branches": d.get("branches") or [], "url": d.get("url")}
            active = d.get("active", True) is not False
            await self._store.set_offering(d["proposition"], d["library"], offering if active else None)
        elif kind == "library_changed":
            raw_branches = d.get("branches") or []
            await self._store.set_library(
                d["library"], d.get("name", ""), d.get("website") or "", _branches(raw_branches), _hours(raw_branches)
            )

    # ------------------------------------------------------------------------------------- triggers

    async def on_trigger(self, event: CloudEvent) -> None:
        if event.subject is None:
            return
        now = self._clock()
        trigger = trigger_of(event)
        campaigns = [c for c in await self._live_campaigns(now) if triggered_by(c.definition, trigger)]
        if not campaigns:
            return
        trigger = replace(trigger, member_id=await self._store.resolve(event.subject))
        earlier = await self._store.decided(trigger.member_id, trigger.event_id)
        if earlier is not None:
            # Handled before (a redelivery, or a crash before the commit): the same events again, nothing else.
            await self._publisher.publish_many([from_structured(e) for e in earlier])
            return
        await self._decide(trigger, campaigns, now, await self.facts(trigger))

    async def facts(self, trigger: TriggerEvent) -> MemberFacts:
        """What deciding knows of the member; what the trigger says fills in what the projection lacks."""
        record = await self._store.member(trigger.member_id)
        profile = record.profile
        guardian = profile.get("guardian_id") or None
        age_band = profile.get("age_band") or trigger.data.get("age_band")
        audience = AudienceFacts(
            library=profile.get("library") or trigger.library,
            age_band=str(age_band) if age_band else None,
            origin=profile.get("origin") or None,
            propositions=record.propositions,
        )
        # A minor's messages go to the guardian, so the guardian's consent is the one that counts.
        consents = await self._store.consents(guardian) if guardian else record.consents
        language = str(profile.get("language") or "nl")
        return MemberFacts(trigger.member_id, audience, guardian, consents, record.erased, language)

    async def _decide(
        self, trigger: TriggerEvent, campaigns: list[Campaign], now: datetime, facts: MemberFacts
    ) -> None:
        member_id = trigger.member_id
        window = self._settings.notifications_frequency_window
        claim_names = {c.id: f"{c.id}|{trigger.key}" for c in campaigns}
        held = await self._store.claims(member_id, list(claim_names.values()), now)
        sent = await self._store.sent_in_window(member_id, now - window)
        write = DecisionWrite(member_id, trigger.event_id)
        due_now = False
        for campaign in campaigns:
            proposition = campaign.definition.proposition
            offered = await self._store.offered_by(proposition) if proposition else None
            circumstances = Circumstances(now, sent, held.get(claim_names[campaign.id]), offered)
            decision = decide(campaign, trigger, facts, circumstances, self._policy)
            self._take(write, campaign, trigger, facts, decision, now, claim_names[campaign.id])
            if decision.counts_toward_cap:
                sent += 1
                due_now = due_now or decision.outcome == "send"
        if facts.erased:
            # Nothing may be kept under an erased member's id: only the counts (which name nobody).
            await self._store.count_all(write.counters)
        else:
            ttl = int(self._settings.notifications_decision_ttl.total_seconds())
            await self._store.write_decisions(write, ttl, trim_before=now - window)
        self._publisher.metrics.messages(outcome for _, outcome in write.counters if outcome != "triggered")
        if write.outbox:
            await self._publisher.publish_many([from_structured(e) for e in write.outbox])
        if due_now:
            self._wake()

    def _take(
        self,
        write: DecisionWrite,
        campaign: Campaign,
        trigger: TriggerEvent,
        facts: MemberFacts,
        decision: Decision,
        now: datetime,
        claim: str,
    ) -> None:
        definition = campaign.definition
        library = definition.library or facts.audience.library
        write.counters.append((campaign.id, "triggered"))
        if decision.claims:
            renotify = definition.renotify_after
            expires = ms(now + renotify) if renotify is not None else 0
            write.claims[claim] = f"{decision.message_id}|{expires}"
        friction_id = trigger.friction_id
        if decision.outcome == "suppress":
            assert decision.reason is not None
            write.counters.append((campaign.id, f"suppressed:{decision.reason}"))
            data = MessageSuppressed(
                campaign_id=campaign.id,
                trigger_event_id=trigger.event_id,
                reason=decision.reason,
                message_id=decision.message_id,
                campaign_version=campaign.version,
            )
            write.outbox.append(self._event(data, decision.message_id, "suppressed", trigger, library, now))
            if decision.reason == "holdout" and friction_id:
                write.holdouts.append((campaign.id, friction_id, ms(trigger.time)))
            return
        write.sent_log.append((decision.message_id, ms(now)))
        due = decision.until or now
        write.jobs.append((decision.message_id, self._job(campaign, trigger, facts, decision, library, now), ms(due)))
        if friction_id:
            write.frictions.append((friction_id, ms(trigger.time)))
        if decision.outcome == "defer":
            assert decision.until is not None
            write.counters.append((campaign.id, "deferred"))
            deferred = MessageDeferred(
                message_id=decision.message_id,
                campaign_id=campaign.id,
                medium=decision.medium,
                trigger_event_id=trigger.event_id,
                until=decision.until,
                campaign_version=campaign.version,
            )
            write.outbox.append(self._event(deferred, decision.message_id, "deferred", trigger, library, now))

    @staticmethod
    def _job(
        campaign: Campaign,
        trigger: TriggerEvent,
        facts: MemberFacts,
        decision: Decision,
        library: str | None,
        now: datetime,
    ) -> dict[str, str]:
        """A delivery to make: what to render and for whom; never an address."""
        return {
            "member_id": trigger.member_id,
            "message_id": decision.message_id,
            "campaign_id": campaign.id,
            "version": str(campaign.version),
            "purpose": campaign.definition.purpose,
            "media": ",".join(decision.media),
            "locale": decision.locale,
            "library": library or "",
            "branch": trigger.branch or "",
            "trigger_event_id": trigger.event_id,
            "trigger_type": trigger.type,
            "trigger_rule": trigger.rule or "",
            "trigger_time": trigger.time.isoformat(),
            "friction_id": trigger.friction_id or "",
            "detected_ms": str(ms(trigger.time)),
            "attempts": "0",
            "status": "pending",
            "created_at": now.isoformat(),
            # The delivery, made later by the delivery loop, carries on this trace.
            "traceparent": telemetry.current_traceparent() or "",
        }

    @staticmethod
    def _event(
        data: EventData, message_id: str, kind: str, trigger: TriggerEvent, library: str | None, now: datetime
    ) -> dict[str, Any]:
        campaign_id = str(data.model_dump()["campaign_id"])
        event = CloudEvent.create(
            data,
            id=deterministic_id(kind, message_id),
            subject=trigger.member_id,
            source=campaign_source(campaign_id),
            library=library,
            time=now,
        )
        return to_structured(event)

    # ------------------------------------------------------------------------------------ broadcasts

    async def run_broadcasts(self) -> None:
        while True:
            await self.broadcast_due()
            stop_if_cancelled()
            await asyncio.sleep(self._settings.notifications_broadcast_tick_seconds)

    async def broadcast_due(self) -> int:
        """Send every active broadcast whose time has come and that has not finished; returns how many ran."""
        now = self._clock()
        ran = 0
        for campaign in await self._live_campaigns(now):
            send_at = campaign.definition.schedule.send_at
            if campaign.definition.kind != "broadcast" or send_at is None or send_at > now:
                continue
            state = await self._store.broadcast_state(campaign.id)
            if state.get("status") == "done":
                continue
            await self._broadcast(campaign, state, send_at)
            ran += 1
        return ran

    async def _broadcast(self, campaign: Campaign, state: dict[str, str], send_at: datetime) -> None:
        """Every member of the audience's libraries, in batches; the position is saved after each batch, so a
        restart carries on where it stopped (and members decided before find their claim and marker)."""
        libraries = campaign.definition.audience_libraries or await self._store.libraries()
        event_id = deterministic_id("broadcast", campaign.id)
        position = state.get("library", "")
        cursor = int(state.get("cursor", "0"))
        for library in sorted(libraries):
            if library < position:
                continue
            if library != position:
                cursor = 0
            while True:
                cursor, members = await self._store.library_members(library, cursor)
                for member_id in members:
                    await self._broadcast_to(campaign, member_id, event_id, send_at, library)
                await self._store.save_broadcast_state(
                    campaign.id, {"status": "running", "library": library, "cursor": str(cursor)}
                )
                if cursor == 0:
                    break
        await self._store.save_broadcast_state(
            campaign.id, {"status": "done", "finished_at": self._clock().isoformat()}
        )
        log.info("broadcast %s done", campaign.id)

    async def _broadcast_to(
        self, campaign: Campaign, member_id: str, event_id: str, send_at: datetime, library: str
    ) -> None:
        trigger = TriggerEvent(event_id, BROADCAST, member_id, send_at, {"library": library})
        facts = await self.facts(trigger)
        # A broadcast counts the members of its audience only, not everyone it looked at.
        if not in_audience(campaign.definition, facts.audience) or facts.erased:
            return
        if await self._store.decided(member_id, event_id) is not None:
            return
        await self._decide(trigger, [campaign], self._clock(), facts)


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
