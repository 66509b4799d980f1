"""Delivering: the background loop that makes the deliveries deciding stored.

Deliveries wait in one sorted set by due time: now, the end of quiet hours, or the next retry. The loop claims
the due ones with a lease (a crashed instance's claims come back after it), asks identity where to deliver
(never stored), checks the recipient's consent again, renders the campaign's version, and sends:

- sent: `message.sent`, the effect of the campaign counts the member's friction as messaged;
- transient failure (identity away, SMTP 4xx, webhook 5xx): tried again after backoff * 2^(attempt-1), up to
  `notifications_delivery_retries` times, then failed;
- failed (retries exhausted, or refused for good): `message.failed` and the delivery, without any address, on
  `notifications.deliveries.v1.dlq` with the reason;
- nothing to deliver to (no address on any consented medium, consent withdrawn meanwhile, member erased,
  campaign paused): `message.suppressed` with the reason.

How a delivery ended is stored with its events before they are published, so a crash in between publishes
them on the next claim instead of delivering again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast

from jinja2 import TemplateError

from services.notifications import templates
from services.notifications.campaigns import CampaignDefinition
from services.notifications.contacts import Contact, ContactDirectory, ContactUnavailable
from services.notifications.deciding import campaign_source
from services.notifications.rules import consented
from services.notifications.senders import Attempt, EmailSender, Outgoing, WebhookSender
from services.notifications.settings import NotificationsSettings
from services.notifications.store import NotificationStore, stop_if_cancelled
from shared import telemetry
from shared.events import CloudEvent, EventData, deterministic_id, from_structured, to_structured
from shared.events.notifications import MessageFailed, MessageSent, MessageSuppressed, Recipient, SuppressionReason
from shared.events.types import Medium, Purpose
from shared.kafka import EventPublisher
from shared.topics import DELIVERIES

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
DELIVERY_GROUP = "notifications.deliveries"


class Deliverer:
    def __init__(
        self,
        store: NotificationStore,
        publisher: EventPublisher,
        settings: NotificationsSettings,
        clock: Clock,
        contacts: ContactDirectory,
        email: EmailSender,
        webhooks: WebhookSender,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._settings = settings
        self._clock = clock
        self._contacts = contacts
        self._email = email
        self._webhooks = webhooks
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
                stop_if_cancelled()
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
        claimed = await self._store.claim_due(
            self._clock(), s.notifications_delivery_lease_seconds, s.notifications_delivery_batch
        )
        limit = asyncio.Semaphore(s.notifications_delivery_concurrency)

        async def guarded(member_id: str, message_id: str) -> None:
            async with limit:
                try:
                    await self.deliver(member_id, message_id)
                except Exception:
                    # Left claimed: the lease runs out and the delivery is tried again.
                    log.exception("delivery %s interrupted; it is tried again after the lease", message_id)

        await asyncio.gather(*(guarded(member, message) for member, message in claimed))
        return len(claimed)

    async def deliver(self, member_id: str, message_id: str) -> None:
        job = await self._store.job(member_id, message_id)
        if job is None:
            await self._store.forget(member_id, message_id)  # erased meanwhile
            return
        # The delivery carries on the trace of the decision that asked for it (its traceparent is in the job).
        with telemetry.tracer().start_as_current_span(
            "deliver",
            context=telemetry.context_from(job.get("traceparent")),
            attributes=telemetry.span_attributes(
                message_id=message_id, campaign_id=job.get("campaign_id"), member_id=member_id
            ),
        ):
            await self._deliver(member_id, job)

    async def _deliver(self, member_id: str, job: dict[str, str]) -> None:
        if job["status"] != "pending":
            await self._publish_ending(job)
            return
        campaign = await self._store.campaign(job["campaign_id"])
        if await self._store.is_erased(member_id):
            await self._suppress(job, "erased")
            return
        if campaign is None or campaign.status != "active":
            await self._suppress(job, "campaign_inactive")
            return
        definition = await self._store.campaign_version(campaign.id, int(job["version"])) or campaign.definition
        guardian = (await self._store.member(member_id)).profile.get("guardian_id") or None
        no_contact = False
        for medium in cast(list[Medium], job["media"].split(",")):
            try:
                route = await self._route(member_id, guardian, medium)
            except ContactUnavailable as exc:
                await self._retry_or_fail(job, medium, str(exc))
                return
            if route is None:
                no_contact = True
                continue
            recipient, contact = route
            holder = guardian if recipient == "guardian" else member_id
            consents = await self._store.consents(holder) if holder else {}
            if not consented(consents, medium, cast(Purpose, job["purpose"])):
                continue  # withdrawn since the decision, or the guardian's consent differs
            await self._attempt(job, definition, medium, recipient, contact, guardian)
            return
        await self._suppress(job, "no_contact" if no_contact else "no_consent")

    async def _route(
        self, member_id: str, guardian: str | None, medium: Medium
    ) -> tuple[Recipient, Contact | None] | None:
        """Who receives the message and where; None when identity has no address for this medium."""
        if medium == "in_app" and guardian is None:
            return "member", None  # the member's own inbox: no address to ask for
        contact = await self._contacts.contact(member_id, medium)
        if contact is None:
            return None
        return contact.recipient, contact

    async def _attempt(
        self,
        job: dict[str, str],
        definition: CampaignDefinition,
        medium: Medium,
        recipient: Recipient,
        contact: Contact | None,
        guardian: str | None,
    ) -> None:
        try:
            rendered = await self._render(job, definition, medium, contact, recipient)
        except TemplateError as exc:
            # Checked when the campaign was saved; a failure here is a bug, not something retrying fixes.
            await self._fail(job, medium, f"template failed: {type(exc).__name__}", "render_failed")
            return
        if medium == "in_app":
            owner = guardian if recipient == "guardian" and guardian else job["member_id"]
            await self._store.deliver(owner, job["message_id"], self._inbox_fields(job, rendered, owner), self._clock())
            attempt = Attempt("delivered")
        else:
            assert contact is not None
            outgoing = Outgoing(
                message_id=job["message_id"],
                medium=medium,
                address=contact.address,
                sender_name=rendered["sender"],
                subject=rendered.get("subject", ""),
                title=rendered.get("title", ""),
                body=rendered["body"],
                link=self._settings.notifications_app_link,
            )
            sender = self._email if medium == "email" else self._webhooks
            attempt = await sender.send(outgoing)
        if attempt.outcome == "delivered":
            await self._sent(job, medium, recipient)
        elif attempt.outcome == "retry":
            await self._retry_or_fail(job, medium, attempt.error)
        else:
            await self._fail(job, medium, attempt.error, "rejected", attempts=int(job["attempts"]) + 1)

    async def _render(
        self,
        job: dict[str, str],
        definition: CampaignDefinition,
        medium: Medium,
        contact: Contact | None,
        recipient: Recipient,
    ) -> dict[str, str]:
        library_code = job["library"] or None
        library = await self._store.library(library_code)
        proposition = None
        if definition.proposition:
            proposition = await self._store.proposition(definition.proposition, library_code, job["locale"])
        sample = templates.Sample(
            library=library,
            library_code=library_code,
            branch=job["branch"] or None,
            proposition=proposition,
            trigger_type=job["trigger_type"],
            trigger_rule=job["trigger_rule"],
            trigger_time=datetime.fromisoformat(job["trigger_time"]),
            recipient_name=contact.name if contact else "",
            is_guardian=recipient == "guardian",
        )
        context = templates.context(definition, medium, sample, app_link=self._settings.notifications_app_link)
        template = definition.message(medium, job["locale"])
        rendered = {
            "body": templates.render(template.body, context),
            "sender": str(context["library"]["name"]),
        }
        if template.subject:
            rendered["subject"] = templates.one_line(templates.render(template.subject, context))
        if template.title:
            rendered["title"] = templates.one_line(templates.render(template.title, context))
        return rendered

    def _inbox_fields(self, job: dict[str, str], rendered: dict[str, str], owner: str) -> dict[str, str]:
        fields = {
            "message_id": job["message_id"],
            "campaign_id": job["campaign_id"],
            "title": rendered.get("title", ""),
            "body": rendered["body"],
            "locale": job["locale"],
            "library": job["library"],
            "created_at": self._clock().isoformat(),
        }
        if owner != job["member_id"]:
            fields["about_member_id"] = job["member_id"]
        return fields

    # ------------------------------------------------------------------------------------- endings

    async def _sent(self, job: dict[str, str], medium: Medium, recipient: Recipient) -> None:
        data = MessageSent(
            message_id=job["message_id"],
            campaign_id=job["campaign_id"],
            medium=medium,
            trigger_event_id=job["trigger_event_id"],
            locale=job["locale"],
            campaign_version=int(job["version"]),
            recipient=recipient,
            library=job["library"] or None,
        )
        friction = (job["friction_id"], int(job["detected_ms"])) if job["friction_id"] else None
        event = self._event(job, data, job["message_id"])
        await self._end(job, "sent", [event], "sent", release_cap=False, messaged_friction=friction)

    async def _suppress(self, job: dict[str, str], reason: SuppressionReason) -> None:
        data = MessageSuppressed(
            campaign_id=job["campaign_id"],
            trigger_event_id=job["trigger_event_id"],
            reason=reason,
            message_id=job["message_id"],
            campaign_version=int(job["version"]),
        )
        event = self._event(job, data, deterministic_id("suppressed", job["message_id"]))
        await self._end(job, "suppressed", [event], f"suppressed:{reason}", release_cap=True)

    async def _retry_or_fail(self, job: dict[str, str], medium: Medium, error: str) -> None:
        attempts = int(job["attempts"]) + 1
        if attempts > self._settings.notifications_delivery_retries:
            await self._fail(job, medium, error, "retries_exhausted", attempts=attempts)
            return
        delay = self._settings.notifications_delivery_backoff_seconds * 2 ** (attempts - 1)
        due = self._clock() + timedelta(seconds=delay)
        log.warning(
            "delivery %s by %s failed (%s); attempt %d in %.1f s", job["message_id"], medium, error, attempts + 1, delay
        )
        await self._store.retry_later(job["member_id"], job["message_id"], attempts, error, due)

    async def _fail(self, job: dict[str, str], medium: Medium, error: str, reason: str, attempts: int = 1) -> None:
        data = MessageFailed(
            campaign_id=job["campaign_id"],
            medium=medium,
            trigger_event_id=job["trigger_event_id"],
            error=error[:500],
            message_id=job["message_id"],
            attempts=max(1, attempts),
            campaign_version=int(job["version"]),
        )
        event = self._event(job, data, deterministic_id("failed", job["message_id"]))
        dead_letter = {
            "value": {
                "message_id": job["message_id"],
                "campaign_id": job["campaign_id"],
                "campaign_version": int(job["version"]),
                "member_id": job["member_id"],
                "medium": medium,
                "trigger_event_id": job["trigger_event_id"],
                "attempts": max(1, attempts),
            },
            "headers": {
                "content-type": "application/json",
                "dlq_reason": reason,
                "dlq_error": error[:500],
                "dlq_topic": self._settings.topic(DELIVERIES.name),
                "dlq_group": self._settings.group(DELIVERY_GROUP),
                "dlq_at": self._clock().isoformat(),
            },
        }
        log.warning("delivery %s by %s failed for good: %s (%s)", job["message_id"], medium, reason, error)
        await self._end(job, "failed", [event], "failed", release_cap=True, dead_letter=dead_letter)

    async def _end(
        self,
        job: dict[str, str],
        status: str,
        outbox: list[dict[str, Any]],
        counter: str,
        *,
        release_cap: bool,
        messaged_friction: tuple[str, int] | None = None,
        dead_letter: dict[str, Any] | None = None,
    ) -> None:
        if dead_letter is not None:
            outbox = [*outbox, {"dead_letter": dead_letter}]
        await self._store.finish(
            job["member_id"],
            job["message_id"],
            status=status,
            outbox=outbox,
            campaign_id=job["campaign_id"],
            counter=counter,
            # A message that did not go out does not count toward the member's cap.
            release_cap=release_cap,
            messaged_friction=messaged_friction,
        )
        self._publisher.metrics.messages([counter])
        await self._publish_ending({**job, "outbox": json.dumps(outbox)})

    async def _publish_ending(self, job: dict[str, str]) -> None:
        outbox = cast(list[dict[str, Any]], json.loads(job.get("outbox") or "[]"))
        events = [from_structured(item) for item in outbox if "dead_letter" not in item]
        for item in outbox:
            if "dead_letter" in item:
                letter = item["dead_letter"]
                await self._publisher.publish_dead_letter(
                    topic=self._settings.topic(DELIVERIES.dead_letters),
                    key=job["member_id"].encode(),
                    value=json.dumps(letter["value"]).encode(),
                    headers=letter["headers"],
                )
        if events:
            await self._publisher.publish_many(events)
        await self._store.forget(job["member_id"], job["message_id"])

    def _event(self, job: dict[str, str], data: EventData, event_id: str) -> dict[str, Any]:
        event = CloudEvent.create(
            data,
            id=event_id,
            subject=job["member_id"],
            source=campaign_source(job["campaign_id"]),
            library=job["library"] or None,
            time=self._clock(),
        )
        return to_structured(event)
