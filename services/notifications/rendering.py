"""A delivery's message rendered for one medium: the campaign's version it was decided with, the catalogue's
library and proposition, the recipient's name (never stored).

A message that would write out an empty value for this delivery (the opening hours of a library that gives none,
a branch without a name, a recipient without a name) is not rendered: `EmptyPlaceholders` says which, the delivery
is suppressed `empty_placeholder`, and the log names the campaign, the part and the placeholders (no member's
data). The preview refuses the same (management.py); this catches what only a particular member meets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from jinja2 import TemplateError

from services.notifications import templates
from services.notifications.campaign_store import CampaignStore
from services.notifications.campaigns import Campaign, CampaignDefinition, MessageTemplate
from services.notifications.catalogue_store import CatalogueStore
from services.notifications.contacts import Contact
from services.notifications.settings import NotificationsSettings
from services.notifications.state import Delivery, InboxMessage
from services.notifications.templates import LibraryInfo
from shared.events.notifications import Recipient
from shared.events.types import Medium

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmptyPlaceholders:
    """Why a message is not sent: its `part` (`email.nl.body`) would show these placeholders empty."""

    part: str
    placeholders: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.part} would show {', '.join(self.placeholders)} empty"


@dataclass(frozen=True)
class Rendered:
    """A message rendered for one medium: its body, the sender's name, and a subject or title where the medium has
    them."""

    body: str
    sender: str
    subject: str | None = None
    title: str | None = None

    def in_inbox(self, delivery: Delivery, created_at: datetime, about_member_id: str | None = None) -> InboxMessage:
        """The message as it goes into an in-app inbox."""
        return InboxMessage(
            message_id=delivery.message_id, campaign_id=delivery.campaign_id, title=self.title or "", body=self.body,
            locale=delivery.locale, library=delivery.library, created_at=created_at, about_member_id=about_member_id,
        )  # fmt: skip


def render_message(template: MessageTemplate, context: Mapping[str, Any]) -> Rendered:
    """The message written out with the placeholders' values (`templates.context`); raises jinja2.TemplateError."""
    return Rendered(
        body=templates.render(template.body, context),
        sender=str(context["library"]["name"]),
        subject=templates.one_line(templates.render(template.subject, context)) if template.subject else None,
        title=templates.one_line(templates.render(template.title, context)) if template.title else None,
    )


class Renderer:
    def __init__(self, campaigns: CampaignStore, catalogue: CatalogueStore, settings: NotificationsSettings) -> None:
        self._campaigns = campaigns
        self._catalogue = catalogue
        self._settings = settings
        self._versions: dict[tuple[str, int], CampaignDefinition] = {}  # a saved version never changes
        # Read once per delivery batch (`begin`): the campaigns' status now, the libraries of the catalogue.
        self._current: dict[str, Campaign | None] = {}
        self._libraries: dict[str, LibraryInfo | None] = {}
        # Messages that name nobody (the in-app inbox) come out the same for every delivery alike: rendered once a
        # batch (a broadcast's page renders one message).
        self._rendered: dict[tuple[object, ...], Rendered | EmptyPlaceholders | None] = {}

    async def begin(self, deliveries: Sequence[Delivery], *, campaigns_now: bool = True) -> None:
        """Read what the batch's deliveries share once, at the same time: their libraries and (unless the caller
        just read them: `campaigns_now=False`) their campaigns as they are now."""
        campaign_ids = sorted({d.campaign_id for d in deliveries}) if campaigns_now else []
        codes = sorted({d.library for d in deliveries if d.library})
        found = await asyncio.gather(
            *(self._campaigns.campaign(c) for c in campaign_ids), *(self._catalogue.library(c) for c in codes)
        )
        self._current = dict(zip(campaign_ids, cast(list[Campaign | None], found[: len(campaign_ids)]), strict=True))
        self._libraries = dict(zip(codes, cast(list[LibraryInfo | None], found[len(campaign_ids) :]), strict=True))
        self._rendered = {}

    async def campaign(self, campaign_id: str) -> Campaign | None:
        if campaign_id not in self._current:
            self._current[campaign_id] = await self._campaigns.campaign(campaign_id)
        return self._current[campaign_id]

    async def _definition(self, delivery: Delivery) -> CampaignDefinition | None:
        key = (delivery.campaign_id, delivery.version)
        if key not in self._versions:
            found = await self._campaigns.campaign_version(*key)
            if found is None:
                current = await self.campaign(delivery.campaign_id)
                return current.definition if current else None
            self._versions[key] = found
        return self._versions[key]

    async def render(
        self, delivery: Delivery, medium: Medium, contact: Contact | None, recipient: Recipient
    ) -> Rendered | EmptyPlaceholders | None:
        """The message; EmptyPlaceholders when it would show an empty value; None when the template fails."""
        rendered = await self._render_alike(delivery, medium, contact, recipient)
        if isinstance(rendered, EmptyPlaceholders):
            log.warning(
                "message %s of campaign %s (version %d, library %s) not sent: %s",
                delivery.message_id, delivery.campaign_id, delivery.version, delivery.library or "-", rendered,
            )  # fmt: skip
        return rendered

    async def _render_alike(
        self, delivery: Delivery, medium: Medium, contact: Contact | None, recipient: Recipient
    ) -> Rendered | EmptyPlaceholders | None:
        if contact is not None:
            return await self._render(delivery, medium, contact, recipient)
        definition = await self._definition(delivery)
        if definition is None:
            return None
        # Alike: the same message, and the same values of the placeholders it names (most name no trigger time).
        named = templates.placeholders(definition.message(medium, delivery.locale))
        branch = delivery.branch if "branch" in named else None
        trigger = (delivery.trigger_type, delivery.trigger_rule, delivery.trigger_time) if "trigger" in named else None
        alike = (delivery.campaign_id, delivery.version, medium, delivery.locale, delivery.library, branch, trigger,
                 recipient)  # fmt: skip
        if alike not in self._rendered:
            self._rendered[alike] = await self._render(delivery, medium, contact, recipient)
        return self._rendered[alike]

    async def _render(
        self, delivery: Delivery, medium: Medium, contact: Contact | None, recipient: Recipient
    ) -> Rendered | EmptyPlaceholders | None:
        definition = await self._definition(delivery)
        if definition is None:
            return None
        library_code = delivery.library
        if library_code and library_code not in self._libraries:
            self._libraries[library_code] = await self._catalogue.library(library_code)
        library = self._libraries.get(library_code or "")
        proposition = None
        if definition.proposition:
            proposition = await self._catalogue.proposition(definition.proposition, library_code, delivery.locale)
        sample = templates.Sample(
            library=library,
            library_code=library_code,
            branch=delivery.branch,
            proposition=proposition,
            trigger_type=delivery.trigger_type,
            trigger_rule=delivery.trigger_rule or "",
            trigger_time=delivery.trigger_time,
            recipient_name=contact.name if contact else "",
            is_guardian=recipient == "guardian",
        )
        try:
            context = templates.context(definition, medium, sample, app_link=self._settings.notifications_app_link)
            template = definition.message(medium, delivery.locale)
            if empty := templates.unfilled_parts(template, context):
                part, names = empty[0]
                return EmptyPlaceholders(f"{medium}.{delivery.locale}.{part}", tuple(names))
            return render_message(template, context)
        except TemplateError:
            return None
