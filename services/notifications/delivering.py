"""Delivering: the background loop that makes the deliveries deciding stored, a batch at a time.

The loop claims the due deliveries with a lease (a crashed instance's claims come back after it), reads them,
their members and the guardians in one pipeline, asks identity where to deliver for the whole batch in one call
(never stored), checks the recipient's consent again, renders the campaign's version, and sends:

- sent: `message.sent`, the effect of the campaign counts the member's friction as messaged;
- transient failure (identity away, SMTP 4xx, webhook 5xx): tried again after backoff * 2^(attempt-1), up to
  `notifications_delivery_retries` times, then failed;
- failed (retries exhausted, or refused for good): `message.failed` and the delivery, without any address, on
  `notifications.deliveries.v1.dlq` with the reason;
- nothing to deliver to (no address on any consented medium, consent withdrawn meanwhile, member erased,
  campaign paused, the e-mail address bounced before: `undeliverable`): `message.suppressed` with the reason.

An e-mail goes as text and HTML from the one rendered template, with the recipient's own links (`links.py`,
`mail.py`): one-click unsubscribe under marketing, the preference centre under every message. A hard bounce at
send time marks the address undeliverable (`bounces.py`).

How the batch's deliveries ended (and in-app messages themselves) are stored in one transaction with their
events before these are published, so a crash in between publishes them again instead of delivering again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from services.notifications.bounces import Bounces, SentTo
from services.notifications.campaign_store import CampaignStore
from services.notifications.catalogue_store import CatalogueStore
from services.notifications.contacts import Contact, ContactDirectory, ContactUnavailable, Wanted
from services.notifications.decision_log import DecisionLog
from services.notifications.delivery_queue import DeliveryQueue, Entry
from services.notifications.ending import Ending, Endings
from services.notifications.inbox_store import InboxStore
from services.notifications.links import member_links, sign
from services.notifications.mail import email_parts
from services.notifications.projection_store import ProjectionStore
from services.notifications.rendering import EmptyPlaceholders, Renderer
from services.notifications.rules import consented
from services.notifications.senders import Attempt, EmailSender, Outgoing, WebhookSender
from services.notifications.settings import NotificationsSettings
from services.notifications.state import Delivery, MemberState
from shared import telemetry
from shared.events.notifications import Recipient
from shared.events.types import Medium
from shared.kafka import EventPublisher

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


class Deliverer:
    def __init__(
        self,
        queue: DeliveryQueue,
        campaigns: CampaignStore,
        projections: ProjectionStore,
        catalogue: CatalogueStore,
        inbox: InboxStore,
        log_: DecisionLog,
        publisher: EventPublisher,
        settings: NotificationsSettings,
        clock: Clock,
        contacts: ContactDirectory,
        email: EmailSender,
        webhooks: WebhookSender,
        bounces: Bounces,
    ) -> None:
        self._queue = queue
        self._campaigns = campaigns
        self._projections = projections
        self._renderer = Renderer(campaigns, catalogue, settings)
        self._endings = Endings(queue, campaigns, inbox, log_, publisher, settings, clock)
        self._settings = settings
        self._clock = clock
        self._contacts = contacts
        self._email = email
        self._webhooks = webhooks
        self._bounces = bounces
        self._wakeup: asyncio.Event | None = None

    def wake(self) -> None:
        """Deliver now rather than at the next tick (deciding just stored a delivery due now)."""
        if self._wakeup is not None:
            self._wakeup.set()

    async def run(self) -> None:
        self._wakeup = asyncio.Event()
        try:
            while True:
                self._wakeup.clear()
                claimed = await self.deliver_due()
                stop = asyncio.current_task()
                if stop is not None and stop.cancelling():
                    raise asyncio.CancelledError
                if claimed >= self._settings.notifications_delivery_batch:
                    continue
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a shutdown's cancellation that
                # races with its timeout, and the loop would never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._settings.notifications_delivery_tick_seconds):
                        await self._wakeup.wait()
        finally:
            await self._contacts.aclose()
            await self._webhooks.aclose()

    async def deliver_due(self) -> int:
        """One round: claim what is due and deliver it; returns how many were claimed."""
        s = self._settings
        claimed = await self._queue.claim_due(
            self._clock(), s.notifications_delivery_lease_seconds, s.notifications_delivery_batch
        )
        if not claimed:
            return 0
        try:
            await self._deliver_batch(claimed)
        except Exception:
            # Left claimed: the lease runs out and the deliveries are tried again.
            log.exception("a batch of %d deliveries was interrupted; tried again after the lease", len(claimed))
        return len(claimed)

    async def _deliver_batch(self, claimed: list[Entry]) -> None:
        loaded = await self._queue.deliveries(claimed)
        gone = [entry for entry, (delivery, _) in zip(claimed, loaded, strict=True) if delivery is None]
        await self._queue.forget(gone)  # erased meanwhile
        ended = [(d, outbox) for d, outbox in loaded if d is not None and outbox is not None]
        if ended:
            await self._endings.publish([(d, outbox) for d, outbox in ended if d is not None])
        pending = [d for d, outbox in loaded if d is not None and outbox is None and d.status == "pending"]
        if not pending:
            return
        await self._renderer.begin(pending)
        states = await self._projections.states([d.member_id for d in pending])
        guardians = [s.record.profile.guardian_id for s in states.values() if s.record.profile.guardian_id]
        states.update(await self._projections.states([g for g in guardians if g not in states]))
        try:
            first = await self._look_up([(d, w) for d in pending if (w := self._first_wanted(d, states[d.member_id]))])
        except ContactUnavailable as exc:
            await self._endings.write([await self._endings.retry_or_fail(d, d.media[0], str(exc)) for d in pending])
            return
        limit = asyncio.Semaphore(self._settings.notifications_delivery_concurrency)

        async def one(delivery: Delivery) -> Ending | None:
            async with limit:
                if delivery.traceparent is None:
                    return await self._deliver(delivery, states, first)
                # The delivery carries on the trace of the decision that asked for it.
                with telemetry.tracer().start_as_current_span(
                    "deliver",
                    context=telemetry.context_from(delivery.traceparent),
                    attributes=telemetry.span_attributes(
                        message_id=delivery.message_id, campaign_id=delivery.campaign_id, member_id=delivery.member_id
                    ),
                ):
                    return await self._deliver(delivery, states, first)

        endings = await asyncio.gather(*(one(d) for d in pending))
        await self._endings.write([e for e in endings if e is not None])

    async def _look_up(self, wanted: list[tuple[Delivery, Wanted]]) -> dict[Wanted, Contact | None]:
        """One call to identity for the batch, in the trace of its first sampled delivery (linked to the others)."""
        traced = [d.traceparent for d, _ in wanted if d.traceparent]
        links = [link for tp in traced[1:] for link in telemetry.link_to(tp)]
        with telemetry.tracer().start_as_current_span(
            "look up contacts",
            context=telemetry.context_from(traced[0] if traced else None),
            links=links,
            attributes={"klantreis.count": len(wanted)},
        ):
            return await self._contacts.contacts([w for _, w in wanted])

    def _first_wanted(self, delivery: Delivery, state: MemberState) -> Wanted | None:
        medium = delivery.media[0]
        if medium == "in_app" and not state.record.profile.guardian_id:
            return None
        return (delivery.member_id, medium)

    async def _deliver(
        self, delivery: Delivery, states: dict[str, MemberState], first: dict[Wanted, Contact | None]
    ) -> Ending | None:
        endings = self._endings
        state = states[delivery.member_id]
        if state.record.erased:
            return endings.suppressed(delivery, "erased")
        campaign = await self._renderer.campaign(delivery.campaign_id)
        if campaign is None or campaign.status != "active":
            return endings.suppressed(delivery, "campaign_inactive")
        guardian = state.record.profile.guardian_id or None
        no_contact = undeliverable = False
        for medium in delivery.media:
            try:
                route = await self._route(delivery.member_id, guardian, medium, first)
            except ContactUnavailable as exc:
                return await endings.retry_or_fail(delivery, medium, str(exc))
            if route is None:
                no_contact = True
                continue
            recipient, contact = route
            holder = guardian if recipient == "guardian" else delivery.member_id
            consents = (
                states[holder].record.consents if holder in states else await self._projections.consents(holder or "")
            )
            if not consented(consents, medium, delivery.purpose):
                continue  # withdrawn since the decision, or the guardian's consent differs
            if (
                medium == "email"
                and contact
                and await self._bounces.undeliverable(holder or "", medium, contact.address)
            ):
                undeliverable = True
                continue
            return await self._attempt(delivery, medium, recipient, contact, guardian)
        return endings.suppressed(
            delivery, "undeliverable" if undeliverable else "no_contact" if no_contact else "no_consent"
        )

    async def _route(
        self, member_id: str, guardian: str | None, medium: Medium, first: dict[Wanted, Contact | None]
    ) -> tuple[Recipient, Contact | None] | None:
        """Who receives the message and where; None when identity has no address for this medium."""
        if medium == "in_app" and guardian is None:
            return "member", None  # the member's own inbox: no address to ask for
        wanted = (member_id, medium)
        contact = first[wanted] if wanted in first else (await self._contacts.contacts([wanted]))[wanted]
        if contact is None:
            return None
        return contact.recipient, contact

    async def _attempt(
        self, delivery: Delivery, medium: Medium, recipient: Recipient, contact: Contact | None, guardian: str | None
    ) -> Ending | None:
        endings = self._endings
        rendered = await self._renderer.render(delivery, medium, contact, recipient)
        if isinstance(rendered, EmptyPlaceholders):
            return endings.suppressed(delivery, "empty_placeholder")  # not a template error: said in the log
        if rendered is None:
            # Checked when the campaign was saved; a failure here is a bug, not something retrying fixes.
            return endings.failed(delivery, medium, "template failed", "render_failed")
        if medium == "in_app":
            owner = guardian if recipient == "guardian" and guardian else delivery.member_id
            about = delivery.member_id if owner != delivery.member_id else None
            message = rendered.in_inbox(delivery, self._clock(), about)
            return endings.sent(delivery, medium, recipient, inbox=(owner, message))
        assert contact is not None
        holder = guardian if recipient == "guardian" and guardian else delivery.member_id
        outgoing = Outgoing(
            message_id=delivery.message_id,
            medium=medium,
            address=contact.address,
            sender_name=rendered.sender,
            subject=rendered.subject or "",
            title=rendered.title or "",
            body=rendered.body,
            link=self._settings.notifications_app_link,
        )
        if medium == "email":
            outgoing = self._with_member_links(outgoing, delivery, holder)
        sender = self._email if medium == "email" else self._webhooks
        attempt: Attempt = await sender.send(outgoing)
        if attempt.bounced:
            await self._bounces.mark(SentTo(holder, medium, self._bounces.digest(contact.address)))
        if attempt.outcome == "delivered":
            if medium == "email":
                await self._bounces.sent(delivery.message_id, holder, medium, contact.address)
            return endings.sent(delivery, medium, recipient)
        if attempt.outcome == "retry":
            return await endings.retry_or_fail(delivery, medium, attempt.error)
        return endings.failed(delivery, medium, attempt.error, "rejected", attempts=delivery.attempts + 1)

    def _with_member_links(self, outgoing: Outgoing, delivery: Delivery, holder: str) -> Outgoing:
        """The e-mail as text and HTML, with the recipient's links; marketing also gets List-Unsubscribe."""
        s = self._settings
        token = sign(
            holder, self._clock() + s.notifications_link_validity, s.notifications_link_secret.get_secret_value()
        )
        links = member_links(s.public_url, token, delivery.locale)
        parts = email_parts(outgoing.body, outgoing.subject, delivery.locale, delivery.purpose, links)
        unsubscribe = links.unsubscribe if delivery.purpose == "marketing" else ""
        return replace(outgoing, body=parts.text, html=parts.html, unsubscribe=unsubscribe)
