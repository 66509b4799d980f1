"""Deciding, in batches: triggers turned into decisions.

A batch of triggers (a consumer batch, or a page of a broadcast's audience) costs a fixed number of Redis round
trips, whatever its size: aliases, then every member's hash (profile, consents, cap window, claims, decided
triggers) and the guardians' consents, pipelined; then one script (atomic) stores every decision with its claims,
cap window, deliveries and counters; then the decision events go to Kafka together. For each trigger the live
campaigns it triggers are decided in priority order (so that, near the cap, the higher priority gets the slot).
A redelivered trigger finds its decided marker and only publishes its events again, under the same ids.

An in-app message to an adult that may go now is delivered by deciding itself: consent and the campaign were
checked a moment ago and the inbox needs no address, so it is rendered (once for all alike), put in the inbox in
the decisions' transaction and its `message.sent` published with the decision events. No delivery waits for it:
no second read of the member, no queue round trips, and a friction's message is in the inbox one hop earlier.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import NamedTuple

from opentelemetry import trace
from opentelemetry.context import Context

from services.notifications.campaign_store import CampaignStore
from services.notifications.campaigns import BROADCAST, AudienceFacts, Campaign, TriggerEvent, triggered_by
from services.notifications.catalogue_store import CatalogueStore
from services.notifications.decision_events import MessageEvent, decision_event, message_sent
from services.notifications.decision_log import DecisionLog, DecisionWrite, marker_field
from services.notifications.keys import tag
from services.notifications.projection_store import ProjectionStore
from services.notifications.rendering import Rendered, Renderer
from services.notifications.rules import Circumstances, Decision, MemberFacts, Policy, decide, message_id, quiet_until
from services.notifications.settings import NotificationsSettings
from services.notifications.state import Claim, DecisionMemory, Delivery, MemberState, ms
from shared import telemetry
from shared.events import CloudEvent
from shared.events.notifications import MessageDeferred, MessageSuppressed, SuppressionReason
from shared.events.types import Medium
from shared.kafka import EventPublisher

Clock = Callable[[], datetime]
MEDIUM_CODES: dict[str, Medium] = {"e": "email", "s": "sms", "p": "push", "i": "in_app"}
IN_APP_SENT = "i"  # the outcome code of an in-app message deciding delivered itself: "i<locale>"
CODES_OF_MEDIA = {v: k for k, v in MEDIUM_CODES.items()}


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


def facts_of(trigger: TriggerEvent, state: MemberState, guardian: MemberState | None) -> MemberFacts:
    """What deciding knows of the member; what the trigger says fills in what the projection lacks."""
    record = state.record
    profile = record.profile
    age_band = profile.age_band or trigger.data.get("age_band")
    audience = AudienceFacts(
        library=profile.library or trigger.library,
        age_band=str(age_band) if age_band else None,
        origin=profile.origin or None,
        propositions=record.propositions,
    )
    # A minor's messages go to the guardian, so the guardian's consent is the one that counts.
    consents = guardian.record.consents if guardian is not None else record.consents
    guardian_id = profile.guardian_id or None
    return MemberFacts(state.member_id, audience, guardian_id, consents, record.erased, profile.language or "nl")


class _Moment(NamedTuple):
    """A batch's time, and what follows from it for every decision of the batch."""

    now: datetime
    now_ms: int
    window_start_ms: int  # the frequency cap's window
    ttl_ms: int  # decided markers older than this are dropped


@dataclass
class _Member:
    """One member's state during a batch: what earlier triggers of the batch changed counts for later ones."""

    state: MemberState
    facts_guardian: MemberState | None
    sent: list[int] = field(default_factory=list)  # ms
    claims: dict[str, Claim] = field(default_factory=dict)
    decided: set[str] = field(default_factory=set)


class Decider:
    def __init__(
        self,
        campaigns: CampaignStore,
        projections: ProjectionStore,
        catalogue: CatalogueStore,
        log: DecisionLog,
        publisher: EventPublisher,
        settings: NotificationsSettings,
        clock: Clock,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self._campaigns = campaigns
        self._projections = projections
        self._catalogue = catalogue
        self._log = log
        self._publisher = publisher
        self._settings = settings
        self._clock = clock
        self._wake = wake
        self._policy = Policy.from_settings(settings)
        self._cache: tuple[int, list[Campaign]] | None = None
        self._renderer = Renderer(campaigns, catalogue, settings)

    async def live_campaigns(self, now: datetime) -> list[Campaign]:
        """Active campaigns inside their schedule, highest priority first. Cached until any campaign changes."""
        revision = await self._campaigns.revision()
        if self._cache is None or self._cache[0] != revision:
            self._cache = (revision, await self._campaigns.active_campaigns())
        live = [c for c in self._cache[1] if c.live(now)]
        return sorted(live, key=lambda c: (-c.definition.priority, c.id))

    async def on_triggers(
        self, events: Sequence[CloudEvent], traceparents: Mapping[str, str | None] | None = None
    ) -> int:
        """Decide every event of a batch that triggers a live campaign; returns how many triggers were decided.
        `traceparents`: the sampled trace each event carried (by event id), which its decision continues."""
        now = self._clock()
        live = await self.live_campaigns(now)
        pending = []
        for event in events:
            if event.subject is None:
                continue
            trigger = trigger_of(event)
            campaigns = [c for c in live if triggered_by(c.definition, trigger)]
            if campaigns:
                pending.append((trigger, campaigns))
        if not pending:
            return 0
        resolved, states = await self._projections.resolved_states(t.member_id for t, _ in pending)
        states = await self._with_guardians(states)
        resolved_pending = [(replace(t, member_id=resolved[t.member_id]), cs) for t, cs in pending]
        return await self.decide(resolved_pending, now, states, traceparents)

    async def states(self, member_ids: Sequence[str]) -> dict[str, MemberState]:
        """Members' states and, for minors, their guardians' (under the guardian's id)."""
        return await self._with_guardians(await self._projections.states(member_ids))

    async def _with_guardians(self, states: dict[str, MemberState]) -> dict[str, MemberState]:
        guardians = [s.record.profile.guardian_id for s in states.values() if s.record.profile.guardian_id]
        missing = [g for g in guardians if g not in states]
        return {**states, **(await self._projections.states(missing))} if missing else states

    async def decide(
        self,
        pending: Sequence[tuple[TriggerEvent, Sequence[Campaign]]],
        now: datetime,
        states: dict[str, MemberState] | None = None,
        traceparents: Mapping[str, str | None] | None = None,
        *,
        publish_first: bool = False,
    ) -> int:
        """Decide resolved triggers (a member's id is the survivor's); `states` when the caller read them.

        `publish_first` (a broadcast's pages, which no Kafka record redelivers): the events are acknowledged before
        the decisions are stored, so that a process dying in between decides the page again (the same ids) rather
        than leave members decided whose events were never published."""
        traceparents = traceparents or {}
        contexts: dict[str, Context] = {}
        states = states if states is not None else await self.states([t.member_id for t, _ in pending])
        offered = await self._offered(c for _, cs in pending for c in cs)
        members: dict[str, _Member] = {}
        moment = self._moment(now)
        decided: list[tuple[TriggerEvent, Sequence[Campaign], MemberFacts, DecisionWrite, Context | None]] = []
        events: list[CloudEvent] = []
        for trigger, campaigns in pending:
            state = states[trigger.member_id]
            guardian_id = state.record.profile.guardian_id
            member = members.setdefault(
                trigger.member_id, _Member(state, states.get(guardian_id) if guardian_id else None)
            )
            marker = marker_field(trigger.event_id, trigger.friction_id)
            facts = facts_of(trigger, state, member.facts_guardian)
            earlier = state.decided.get(marker)
            if earlier is not None or marker in member.decided:
                # Handled before (a redelivery, or a crash before the commit): the same events again, nothing else.
                if earlier is not None:
                    events.extend(self._remembered(trigger, earlier, campaigns, facts))
                continue
            member.decided.add(marker)
            with self._span(trigger, traceparents.get(trigger.event_id)) as context:
                write = self._decide_one(trigger, campaigns, moment, facts, member, offered, marker)
            decided.append((trigger, campaigns, facts, write, context))
        writes = [write for _, _, _, write, _ in decided]
        await self._deliver_in_app(writes, states, now)
        for trigger, campaigns, facts, write, context in decided:
            found = self._remembered(trigger, write.memory, campaigns, facts)
            events.extend(found)
            if context is not None:
                contexts.update((e.id, context) for e in found)
        now_ms = ms(now)
        due_now = any(due <= now_ms for write in writes for _, due in write.deliveries)
        if events and publish_first:
            await self._publisher.publish_many(events, contexts=contexts)
        await self._log.write(writes)
        self._publisher.metrics.messages(c for w in writes for _, c in w.counters if c != "triggered")
        if events and not publish_first:
            # A trigger redelivered after a crash here finds its decided marker and publishes its events again.
            await self._publisher.publish_many(events, contexts=contexts)
        if due_now:
            self._wake()
        return len(writes)

    async def _deliver_in_app(
        self, writes: Sequence[DecisionWrite], states: dict[str, MemberState], now: datetime
    ) -> None:
        """Deliver at once what goes now into an adult's own inbox; the rest waits for the delivery loop. A minor's
        message goes where identity says (maybe the guardian's inbox), so it takes the loop's way."""
        now_ms = ms(now)
        at_once = [
            (write, delivery, due)
            for write in writes
            for delivery, due in write.deliveries
            if due <= now_ms
            and delivery.media[0] == "in_app"
            and not states[delivery.member_id].record.profile.guardian_id
        ]
        if not at_once:
            return
        await self._renderer.begin([delivery for _, delivery, _ in at_once], campaigns_now=False)
        for write, delivery, due in at_once:
            rendered = await self._renderer.render(delivery, "in_app", None, "member")
            if not isinstance(rendered, Rendered):
                continue  # the delivery loop fails or suppresses it
            write.deliveries.remove((delivery, due))
            write.inbox.append((delivery.member_id, rendered.in_inbox(delivery, now)))
            write.counters.append((delivery.campaign_id, "sent"))
            if delivery.friction_id:
                write.effects.append((delivery.campaign_id, "messaged"))
            # Remembered as delivered in the app (with its locale), so that a redelivery publishes it again.
            write.memory = DecisionMemory(
                write.memory.decided_ms,
                tuple(
                    (c, v, f"{IN_APP_SENT}{delivery.locale}" if c == delivery.campaign_id else code)
                    for c, v, code in write.memory.outcomes
                ),
            )

    @contextlib.contextmanager
    def _span(self, trigger: TriggerEvent, traceparent: str | None) -> Iterator[Context | None]:
        """A sampled trigger's decision is a span of its trace (the delivery and the events carry it on)."""
        if traceparent is None:
            yield None
            return
        attributes = telemetry.span_attributes(member_id=trigger.member_id, event_id=trigger.event_id)
        with telemetry.tracer().start_as_current_span(
            "decide", context=telemetry.context_from(traceparent), attributes=attributes
        ) as span:
            yield trace.set_span_in_context(span)

    async def _offered(self, campaigns: object) -> dict[str, frozenset[str]]:
        slugs = {c.definition.proposition for c in campaigns if c.definition.proposition}  # type: ignore[attr-defined]
        return {slug: await self._catalogue.offered_by(slug) for slug in sorted(slugs)}

    def _moment(self, now: datetime) -> _Moment:
        window = self._settings.notifications_frequency_window
        ttl = self._settings.notifications_decision_ttl
        return _Moment(now, ms(now), ms(now - window), ms(now) - int(ttl.total_seconds() * 1000))

    def _decide_one(
        self,
        trigger: TriggerEvent,
        campaigns: Sequence[Campaign],
        moment: _Moment,
        facts: MemberFacts,
        member: _Member,
        offered: dict[str, frozenset[str]],
        marker: str,
    ) -> DecisionWrite:
        now, now_ms = moment.now, moment.now_ms
        state = member.state
        sent = state.sent_since(moment.window_start_ms) + len(member.sent)
        outcomes: list[tuple[str, int, str]] = []
        write = DecisionWrite(trigger.member_id, marker, DecisionMemory(now_ms, ()), facts.erased)
        if trigger.friction_id:
            write.detected_ms = ms(trigger.time)
        for campaign in campaigns:
            claim_tag = tag(campaign.id, trigger.key)
            claim = member.claims.get(claim_tag) or state.claims.get(claim_tag)
            if claim is not None and claim.expires_ms is not None and claim.expires_ms <= now_ms:
                claim = None
            proposition = campaign.definition.proposition
            # Taken by another trigger (this one, decided before, was recognised by its decided marker).
            claimed_by = None if claim is None else "another trigger"
            circumstances = Circumstances(now, sent, claimed_by, offered.get(proposition) if proposition else None)
            decision = decide(campaign, trigger, facts, circumstances, self._policy)
            outcomes.append((campaign.id, campaign.version, outcome_code(decision)))
            self._take(write, campaign, trigger, facts, decision, now, now_ms, claim_tag, member)
            if decision.counts_toward_cap:
                sent += 1
        write.memory = DecisionMemory(now_ms, tuple(outcomes))
        # A broadcast is no Kafka record, so nothing redelivers it: its claim (sent, deferred or held out) is enough
        # to recognise a member decided before; only its suppressions are remembered as such.
        write.remembered = trigger.type != BROADCAST or len(write.claims) < len(campaigns)
        write.stale = [
            name for name, memory in state.decided.items() if memory.decided_ms < moment.ttl_ms and not memory.lasting
        ]
        return write

    def _take(
        self,
        write: DecisionWrite,
        campaign: Campaign,
        trigger: TriggerEvent,
        facts: MemberFacts,
        decision: Decision,
        now: datetime,
        now_ms: int,
        claim_tag: str,
        member: _Member,
    ) -> None:
        write.counters.append((campaign.id, "triggered"))
        if decision.claims:
            renotify = campaign.definition.renotify_after
            sent = now_ms if decision.counts_toward_cap else None
            claim = Claim(ms(now + renotify) if renotify is not None else None, sent)
            write.claims[claim_tag] = member.claims[claim_tag] = claim
        friction_id = trigger.friction_id
        if decision.outcome == "suppress":
            write.counters.append((campaign.id, f"suppressed:{decision.reason}"))
            if decision.reason == "holdout" and friction_id:
                write.effects.append((campaign.id, "holdout"))
            return
        member.sent.append(now_ms)
        library = campaign.definition.library or facts.audience.library
        delivery = Delivery(
            member_id=trigger.member_id, message_id=decision.message_id, campaign_id=campaign.id,
            version=campaign.version, purpose=campaign.definition.purpose, media=decision.media,
            locale=decision.locale, library=library, branch=trigger.branch, trigger_event_id=trigger.event_id,
            trigger_type=trigger.type, trigger_rule=trigger.rule, trigger_time=trigger.time, friction_id=friction_id,
            created_at=now, traceparent=telemetry.current_traceparent(),
        )  # fmt: skip
        write.deliveries.append((delivery, ms(decision.until) if decision.until else now_ms))
        if decision.outcome == "defer":
            write.counters.append((campaign.id, "deferred"))

    def _remembered(
        self, trigger: TriggerEvent, memory: DecisionMemory, campaigns: Sequence[Campaign], facts: MemberFacts
    ) -> list[CloudEvent]:
        """The decision events of a trigger decided before, rebuilt from what was remembered of it."""
        decided_at = datetime.fromtimestamp(memory.decided_ms / 1000, tz=trigger.time.tzinfo)
        found = []
        for named, version, code in memory.outcomes:
            # Remembered by the first characters of its id: one of the campaigns this trigger triggers.
            campaign = next((c for c in campaigns if c.id.startswith(named)), None)
            if campaign is None:
                continue  # no longer live: its events went out when it was
            campaign_id = campaign.id
            library = campaign.definition.library or facts.audience.library
            mid = message_id(campaign_id, trigger.member_id, trigger.event_id)
            data: MessageEvent
            if code.startswith("x"):
                reason: SuppressionReason = code[1:]  # type: ignore[assignment]
                data = MessageSuppressed(
                    campaign_id=campaign_id, trigger_event_id=trigger.event_id, reason=reason, message_id=mid,
                    campaign_version=version,
                )  # fmt: skip
                found.append(decision_event(data, mid, "suppressed", trigger.member_id, library, decided_at))
            elif code.startswith(IN_APP_SENT):
                sent = message_sent(
                    message_id=mid, campaign_id=campaign_id, version=version, member_id=trigger.member_id,
                    medium="in_app", trigger_event_id=trigger.event_id, locale=code[1:], recipient="member",
                    library=library, at=decided_at,
                )  # fmt: skip
                found.append(sent)
            elif code.startswith("d"):
                until = quiet_until(decided_at, self._policy) or decided_at
                data = MessageDeferred(
                    message_id=mid, campaign_id=campaign_id, medium=MEDIUM_CODES[code[1]],
                    trigger_event_id=trigger.event_id, until=until, campaign_version=version,
                )  # fmt: skip
                found.append(decision_event(data, mid, "deferred", trigger.member_id, library, decided_at))
        return found


def outcome_code(decision: Decision) -> str:
    if decision.outcome == "suppress":
        return f"x{decision.reason}"
    return f"d{CODES_OF_MEDIA[decision.medium]}" if decision.outcome == "defer" else "s"
