"""Sending refuses an empty placeholder too, not only the preview (issue 16): a message that would write out an
empty value for a particular delivery (a library without opening hours, a recipient without a name) is not
rendered; the renderer says which part and which placeholders, and the log says so without any member's data."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from services.notifications.campaign_store import CampaignStore
from services.notifications.campaigns import Campaign, CampaignDefinition
from services.notifications.catalogue_store import CatalogueStore
from services.notifications.contacts import Contact
from services.notifications.rendering import EmptyPlaceholders, Rendered, Renderer
from services.notifications.settings import NotificationsSettings
from services.notifications.state import Delivery
from services.notifications.templates import LibraryInfo, PropositionInfo

LIBRARIES = {
    "oba": LibraryInfo(
        "oba", "OBA", "https://www.oba.nl", {"oosterdok": "OBA Oosterdok"}, {"oosterdok": "ma-zo 10-22"}
    ),
    "kleinstad": LibraryInfo("kleinstad", "Bibliotheek Kleinstad", "https://kleinstad.nl", {"markt": "Markt"}),
}
DEFINITION = CampaignDefinition.model_validate(
    {
        "name": "Welkom",
        "purpose": "service",
        "trigger": {"event_types": ["nl.bibliotheek.member.signed_up.v1"]},
        "channels": ["email", "in_app"],
        "messages": {
            "email": {"nl": {"subject": "Welkom bij {{ library.name }}",
                             "body": "Beste {{ recipient.name }}, we zijn open {{ library.opening_hours }}."}},
            "in_app": {"nl": {"title": "Welkom", "body": "Open: {{ library.opening_hours }}."}},
        },
    }
)  # fmt: skip


class Campaigns:
    async def campaign(self, campaign_id: str) -> Campaign | None:
        return Campaign(campaign_id, 1, "active", DEFINITION)

    async def campaign_version(self, campaign_id: str, version: int) -> CampaignDefinition | None:
        return DEFINITION


class Catalogue:
    async def library(self, code: str | None) -> LibraryInfo | None:
        return LIBRARIES.get(code or "")

    async def proposition(self, slug: str, library: str | None, locale: str = "nl") -> PropositionInfo:
        return PropositionInfo(slug, slug)


def renderer() -> Renderer:
    settings = NotificationsSettings()
    return Renderer(cast(CampaignStore, Campaigns()), cast(CatalogueStore, Catalogue()), settings)


def delivery(library: str) -> Delivery:
    now = datetime(2026, 12, 6, 12, tzinfo=UTC)
    return Delivery(
        member_id="m-1", message_id="msg-1", campaign_id="c-1", version=1, purpose="service", media=("email",),
        locale="nl", library=library, branch=None, trigger_event_id="e-1",
        trigger_type="nl.bibliotheek.member.signed_up.v1", trigger_rule=None, trigger_time=now, friction_id=None,
        created_at=now,
    )  # fmt: skip


async def test_a_message_with_every_value_renders() -> None:
    rendered = await renderer().render(delivery("oba"), "email", Contact("member", "s@example.nl", "Sanne"), "member")
    assert isinstance(rendered, Rendered)
    assert rendered.body == "Beste Sanne, we zijn open ma-zo 10-22."


async def test_a_library_without_opening_hours_is_not_rendered_and_the_log_names_the_placeholder(
    caplog: pytest.LogCaptureFixture,
) -> None:
    contact = Contact("member", "sanne@example.nl", "Sanne Visser")
    with caplog.at_level(logging.WARNING, logger="services.notifications.rendering"):
        refused = await renderer().render(delivery("kleinstad"), "email", contact, "member")
        in_app = await renderer().render(delivery("kleinstad"), "in_app", None, "member")

    assert refused == EmptyPlaceholders("email.nl.body", ("library.opening_hours",))
    assert in_app == EmptyPlaceholders("in_app.nl.body", ("library.opening_hours",))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "message msg-1 of campaign c-1 (version 1, library kleinstad) not sent" in logged
    assert "email.nl.body would show library.opening_hours empty" in logged
    assert "Sanne" not in logged and "sanne@example.nl" not in logged  # no member's data


async def test_a_recipient_without_a_name_is_a_missing_value_too() -> None:
    refused: Any = await renderer().render(
        delivery("oba"), "email", Contact("guardian", "x@example.nl", ""), "guardian"
    )
    assert refused == EmptyPlaceholders("email.nl.body", ("recipient.name",))
