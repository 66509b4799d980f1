"""The campaign pages for marketing staff: the list with status and results, an editor (trigger, audience,
messages per channel and locale) with a live preview, activate / pause / archive / restore, and the measured effect.

Everything goes through `CampaignManagement` in-process, with the signed-in key as the caller: the same checks
(templates, library scope, versions, status changes) and the same events as the API. The live preview of an
edit that is not saved yet renders it with `CampaignManagement.preview` too, over a store that answers the draft
for one campaign id (`DraftStore`), so that a preview shows exactly what the saved campaign will send. The form
itself, read and written back, is campaign_form.py.
(No `from __future__ import annotations`: FastAPI reads the routes' `Annotated` dependencies, defined locally.)
"""

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from services.notifications.campaign_form import (
    CHANNEL_SLOTS,
    LOCALES,
    MEDIA,
    SUBJECT_MEDIA,
    TITLE_MEDIA,
    form_values,
    posted_values,
    read_definition,
)
from services.notifications.campaign_store import DRAFT_ID, DraftStore
from services.notifications.campaigns import EDITABLE, Campaign, CampaignDefinition, Change, Status, next_status
from services.notifications.catalogue_store import CatalogueStore
from services.notifications.management import CampaignManagement, PreviewSample
from services.notifications.settings import NotificationsSettings
from shared.auth import Principal
from shared.events.types import AGE_BANDS
from shared.idempotency import Ids
from shared.service import ServiceParts
from shared.web.charts import Bar, bar_chart
from shared.web.site import CAMPAIGNS, Form, Site, Visitor

TEMPLATES = Path(__file__).parent / "templates"
STATUSES: tuple[Status, ...] = get_args(Status)
CHANGES: tuple[Change, ...] = ("activate", "pause", "archive", "restore")


# ----------------------------------------------------------------------------------------- preview


def _now() -> datetime:
    return datetime.now(UTC)


def _summary(definition: CampaignDefinition) -> dict[str, Any]:
    trigger = definition.trigger
    return {
        "rules": list(trigger.friction_rules) if trigger else [],
        "event_types": list(trigger.event_types) if trigger else [],
    }


# ------------------------------------------------------------------------------------------- routes


def pages_router(parts: ServiceParts, settings: NotificationsSettings, management: CampaignManagement) -> APIRouter:
    site = Site("notifications", parts, TEMPLATES)
    router = site.router
    Marketing = Annotated[Visitor, Depends(site.guard(CAMPAIGNS))]

    def caller(visitor: Visitor) -> Principal:
        assert visitor.principal is not None  # guard() checked it
        return visitor.principal

    async def preview_of(visitor: Visitor, definition: CampaignDefinition, library: str | None) -> dict[str, Any]:
        drafts = DraftStore(parts.redis, settings, definition)
        catalogue = CatalogueStore(parts.redis, settings)
        draft = CampaignManagement(drafts, catalogue, parts.publisher, settings, _now, management.libraries)
        return await draft.preview(DRAFT_ID, PreviewSample(library=library), caller(visitor))

    def editor(
        request: Request,
        visitor: Visitor,
        *,
        campaign: Campaign | None,
        values: Mapping[str, Any],
        errors: Mapping[str, str],
        preview: dict[str, Any] | None,
        status: int = 200,
    ) -> Response:
        return site.render(
            request,
            visitor,
            "campaign_edit.html",
            status=status,
            campaign=campaign,
            values=values,
            errors=errors,
            preview=preview,
            media=MEDIA,
            locales=LOCALES,
            slots=range(CHANNEL_SLOTS),
            age_bands=AGE_BANDS,
            subject_media=SUBJECT_MEDIA,
            title_media=TITLE_MEDIA,
        )

    async def submitted(
        request: Request, visitor: Visitor, campaign: Campaign | None
    ) -> tuple[Form, CampaignDefinition | None, dict[str, str], Response | None]:
        """Read a posted editor; answer the page again when it is only a preview or has errors."""
        form = await site.form(request, visitor)
        definition, errors = read_definition(form)
        values = posted_values(form)
        preview_library = form.get("preview_library") or None
        if definition is not None and form.get("action") == "preview":
            preview = await preview_of(visitor, definition, preview_library)
            return (
                form,
                None,
                {},
                editor(request, visitor, campaign=campaign, values=values, errors={}, preview=preview),
            )
        if definition is None:
            page = editor(request, visitor, campaign=campaign, values=values, errors=errors, preview=None, status=422)
            return form, None, errors, page
        return form, definition, {}, None

    @router.get("/")
    async def root() -> Response:
        return RedirectResponse(CAMPAIGNS.path, 303)

    @router.get("/pages/campaigns")
    async def campaigns(request: Request, visitor: Marketing, status: str = "") -> Response:
        found = await management.campaigns(caller(visitor))
        if status in STATUSES:
            found = [c for c in found if c.status == status]
        rows = []
        for campaign in found:
            results = await management.results(campaign.id, None, caller(visitor))
            rows.append({"campaign": campaign, "results": results, **_summary(campaign.definition)})
        return site.render(
            request,
            visitor,
            "campaigns.html",
            rows=rows,
            chosen=status if status in STATUSES else "",
            statuses=STATUSES,
        )

    @router.get("/pages/campaigns/new")
    async def new(request: Request, visitor: Marketing) -> Response:
        values = form_values(None)
        if visitor.library:
            values["library"] = visitor.library
        return editor(request, visitor, campaign=None, values=values, errors={}, preview=None)

    @router.post("/pages/campaigns/new")
    async def create(request: Request, visitor: Marketing) -> Response:
        _, definition, _, page = await submitted(request, visitor, None)
        if page is not None:
            return page
        assert definition is not None
        created = await management.create(definition, caller(visitor), Ids(None))
        return RedirectResponse(f"/pages/campaigns/{created.id}?done=created", 303)

    @router.post("/pages/campaigns/preview")
    async def live_preview(request: Request, visitor: Marketing) -> Response:
        """The editor's live preview: the posted (unsaved) form rendered as it would be sent, or what is wrong."""
        form = await site.form(request, visitor)
        definition, errors = read_definition(form)
        preview = None
        if definition is not None:
            preview = await preview_of(visitor, definition, form.get("preview_library") or None)
        return site.fragment(visitor, "_preview.html", preview=preview, errors=errors)

    @router.get("/pages/campaigns/{campaign_id}")
    async def campaign_page(request: Request, campaign_id: str, visitor: Marketing, library: str = "") -> Response:
        campaign = await management.campaign(campaign_id, caller(visitor))
        sample = library if re.fullmatch(r"[a-z][a-z0-9-]{1,39}", library) else None
        preview = await management.preview(campaign_id, PreviewSample(library=sample), caller(visitor))
        results = await management.results(campaign_id, None, caller(visitor))
        versions = await management.versions(campaign_id, caller(visitor))
        effect = results.effect
        effect_chart = bar_chart(
            [
                Bar(visitor.t("results.messaged"), effect.messaged.share),
                Bar(visitor.t("results.holdout"), effect.holdout.share),
            ],
            chart_id="chart-effect",
            title=visitor.t("results.effect", days=effect.within_days),
            shown=lambda share: visitor.t.percent(share),
            empty="",
            maximum=1.0,
        )
        return site.render(
            request,
            visitor,
            "campaign.html",
            campaign=campaign,
            preview=preview,
            results=results,
            effect_chart=effect_chart,
            versions=versions,
            editable=campaign.status in EDITABLE,
            changes=[c for c in CHANGES if next_status(campaign.status, c) is not None],
            done=request.query_params.get("done", ""),
            sample=sample or "",
            **_summary(campaign.definition),
        )

    @router.get("/pages/campaigns/{campaign_id}/edit")
    async def edit_form(request: Request, campaign_id: str, visitor: Marketing) -> Response:
        campaign = await management.campaign(campaign_id, caller(visitor))
        values = {**form_values(campaign.definition), "version": str(campaign.version)}
        preview = await management.preview(campaign_id, PreviewSample(), caller(visitor))
        return editor(request, visitor, campaign=campaign, values=values, errors={}, preview=preview)

    @router.post("/pages/campaigns/{campaign_id}/edit")
    async def edit(request: Request, campaign_id: str, visitor: Marketing) -> Response:
        campaign = await management.campaign(campaign_id, caller(visitor))
        form, definition, _, page = await submitted(request, visitor, campaign)
        if page is not None:
            return page
        assert definition is not None
        version = int(form.get("version")) if form.get("version").isdigit() else 0
        await management.edit(campaign_id, version, definition, caller(visitor), Ids(None))
        return RedirectResponse(f"/pages/campaigns/{campaign_id}?done=edited", 303)

    @router.post("/pages/campaigns/{campaign_id}/{change}")
    async def change_status(request: Request, campaign_id: str, change: str, visitor: Marketing) -> Response:
        form = await site.form(request, visitor)
        if change not in CHANGES:
            return Response(status_code=404)
        # The form names the status it was shown in: a second click (or a stale tab) changes nothing twice.
        current = await management.campaign(campaign_id, caller(visitor))
        if form.get("from_status") and form.get("from_status") != current.status:
            return RedirectResponse(f"/pages/campaigns/{campaign_id}?done=unchanged", 303)
        await management.change(campaign_id, change, caller(visitor), Ids(None))
        return RedirectResponse(f"/pages/campaigns/{campaign_id}?done={change}", 303)

    return router
