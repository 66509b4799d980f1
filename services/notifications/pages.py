"""The campaign pages for marketing staff: the list with status and results, an editor (trigger, audience,
messages per channel and locale) with a live preview, activate / pause / archive / restore, and the measured effect.

Everything goes through `CampaignManagement` in-process, with the signed-in key as the caller: the same checks
(templates, library scope, versions, status changes) and the same events as the API. The live preview of an
edit that is not saved yet renders it with `CampaignManagement.preview` too, over a store that answers the draft
for one campaign id (`DraftStore`), so that a preview shows exactly what the saved campaign will send.
(No `from __future__ import annotations`: FastAPI reads the routes' `Annotated` dependencies, defined locally.)
"""

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, get_args
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from services.notifications.campaign_store import DRAFT_ID, DraftStore
from services.notifications.campaigns import EDITABLE, Campaign, CampaignDefinition, Change, Locale, Status, next_status
from services.notifications.catalogue_store import CatalogueStore
from services.notifications.management import CampaignManagement, PreviewSample
from services.notifications.settings import NotificationsSettings
from shared.auth import Principal
from shared.events.types import AGE_BANDS, Medium
from shared.idempotency import Ids
from shared.problems import Problem
from shared.service import ServiceParts
from shared.web.charts import Bar, bar_chart
from shared.web.site import CAMPAIGNS, Form, Site, Visitor

TEMPLATES = Path(__file__).parent / "templates"
AMSTERDAM = ZoneInfo("Europe/Amsterdam")
MEDIA: tuple[Medium, ...] = get_args(Medium)
LOCALES: tuple[Locale, ...] = get_args(Locale)
STATUSES: tuple[Status, ...] = get_args(Status)
CHANGES: tuple[Change, ...] = ("activate", "pause", "archive", "restore")
SUBJECT_MEDIA = frozenset({"email"})
TITLE_MEDIA = frozenset({"push", "in_app"})
CHANNEL_SLOTS = 4
# Fields whose errors show at a group of the form rather than at one field.
GROUPS = ("trigger", "audience", "schedule", "channels", *(f"messages.{m}" for m in MEDIA), "messages")


# ------------------------------------------------------------------------------------ the form, pure


def _split(text: str) -> list[str]:
    return [value.strip() for value in text.replace("\n", ",").split(",") if value.strip()]


def _filter_value(text: str) -> str | int | bool:
    if text in ("true", "false"):
        return text == "true"
    return int(text) if re.fullmatch(r"-?\d{1,12}", text) else text


def _local(value: str) -> str | None:
    """A `datetime-local` field, read in Europe/Amsterdam, as RFC 3339."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=AMSTERDAM).isoformat()
    except ValueError:
        return value  # the model names the field


def _local_field(value: datetime | None) -> str:
    return value.astimezone(AMSTERDAM).strftime("%Y-%m-%dT%H:%M") if value else ""


def definition_data(form: Form) -> tuple[dict[str, Any], dict[str, str]]:
    """The campaign definition a posted editor form describes (to be validated by the model), and the errors of
    fields that could not even be read."""
    errors: dict[str, str] = {}
    filters: dict[str, list[str | int | bool]] = {}
    for number, line in enumerate(form.get("trigger.filters").splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, values = line.partition("=")
        if not sep or not name.strip():
            errors["trigger.filters"] = f"line {number}: write field = value, value"
            continue
        filters[name.strip()] = [_filter_value(v) for v in _split(values)]
    kind = form.get("kind", "triggered")
    trigger = None
    if kind != "broadcast":
        trigger = {
            "event_types": _split(form.get("trigger.event_types")),
            "friction_rules": _split(form.get("trigger.friction_rules")),
            "filters": filters,
        }
    messages: dict[str, dict[str, dict[str, str]]] = {}
    for medium in MEDIA:
        for locale in LOCALES:
            prefix = f"messages.{medium}.{locale}"
            body = form.get(f"{prefix}.body")
            subject = form.get(f"{prefix}.subject") if medium in SUBJECT_MEDIA else ""
            title = form.get(f"{prefix}.title") if medium in TITLE_MEDIA else ""
            if not (body or subject or title):
                continue
            message: dict[str, str] = {"body": body}
            if medium in SUBJECT_MEDIA:
                message["subject"] = subject
            if medium in TITLE_MEDIA:
                message["title"] = title
            messages.setdefault(medium, {})[locale] = message
    data: dict[str, Any] = {
        "name": form.get("name"),
        "library": form.get("library") or None,
        "kind": kind,
        "purpose": form.get("purpose", "marketing"),
        "proposition": form.get("proposition") or None,
        "trigger": trigger,
        "audience": {
            "libraries": _split(form.get("audience.libraries")),
            "age_bands": form.all("audience.age_bands"),
            "propositions": _split(form.get("audience.propositions")),
            "channels_of_origin": form.all("audience.channels_of_origin"),
        },
        "channels": [c for c in (form.get(f"channels.{i}") for i in range(CHANNEL_SLOTS)) if c],
        "messages": messages,
        "schedule": {
            "starts_at": _local(form.get("schedule.starts_at")),
            "ends_at": _local(form.get("schedule.ends_at")),
            "send_at": _local(form.get("schedule.send_at")),
        },
        "priority": form.get("priority") or 50,
        "holdout_percent": (form.get("holdout_percent") or "0").replace(",", "."),
    }
    days = form.get("renotify_after_days")
    if days:
        if days.isdigit() and int(days) > 0:
            data["renotify_after"] = timedelta(days=int(days))
        else:
            errors["renotify_after_days"] = "a whole number of days, 1 or more"
    return data, errors


def form_values(definition: CampaignDefinition | None) -> dict[str, Any]:
    """An editor form filled with a definition (a new campaign: sensible defaults)."""
    if definition is None:
        return {"kind": "triggered", "purpose": "marketing", "channels.0": "in_app", "priority": "50",
                "holdout_percent": "10", "audience.age_bands": [], "audience.channels_of_origin": []}  # fmt: skip
    values: dict[str, Any] = {
        "name": definition.name,
        "library": definition.library or "",
        "kind": definition.kind,
        "purpose": definition.purpose,
        "proposition": definition.proposition or "",
        "audience.libraries": ", ".join(definition.audience.libraries),
        "audience.age_bands": list(definition.audience.age_bands),
        "audience.propositions": ", ".join(definition.audience.propositions),
        "audience.channels_of_origin": list(definition.audience.channels_of_origin),
        "schedule.starts_at": _local_field(definition.schedule.starts_at),
        "schedule.ends_at": _local_field(definition.schedule.ends_at),
        "schedule.send_at": _local_field(definition.schedule.send_at),
        "priority": str(definition.priority),
        "holdout_percent": f"{definition.holdout_percent:g}",
        "renotify_after_days": str(definition.renotify_after.days) if definition.renotify_after else "",
    }
    if definition.trigger is not None:
        values["trigger.event_types"] = ", ".join(definition.trigger.event_types)
        values["trigger.friction_rules"] = ", ".join(definition.trigger.friction_rules)
        values["trigger.filters"] = "\n".join(
            f"{name} = {', '.join(str(v).lower() if isinstance(v, bool) else str(v) for v in allowed)}"
            for name, allowed in definition.trigger.filters.items()
        )
    for i, medium in enumerate(definition.channels):
        values[f"channels.{i}"] = medium
    for medium, by_locale in definition.messages.items():
        for locale, template in by_locale.items():
            prefix = f"messages.{medium}.{locale}"
            values[f"{prefix}.body"] = template.body
            values[f"{prefix}.subject"] = template.subject or ""
            values[f"{prefix}.title"] = template.title or ""
    return values


def posted_values(form: Form) -> dict[str, Any]:
    """What the visitor typed, to show again next to the errors."""
    values: dict[str, Any] = {name: value for name, value in form.items()}
    values["audience.age_bands"] = form.all("audience.age_bands")
    values["audience.channels_of_origin"] = form.all("audience.channels_of_origin")
    return values


def field_of(path: str, fields: Iterable[str]) -> str:
    """The form field (or group) an error path belongs to: `messages.email.nl.body` is its own field,
    `trigger.event_types.0` the event types field, `messages.sms` the SMS group; '' when none."""
    known = set(fields) | set(GROUPS)
    parts = path.removeprefix("body.").split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return ""


def editor_fields() -> list[str]:
    names = [
        "name", "library", "kind", "purpose", "proposition", "trigger.event_types", "trigger.friction_rules",
        "trigger.filters", "audience.libraries", "audience.age_bands", "audience.propositions",
        "audience.channels_of_origin", "schedule.starts_at", "schedule.ends_at", "schedule.send_at", "priority",
        "holdout_percent", "renotify_after_days",
    ]  # fmt: skip
    names += [f"channels.{i}" for i in range(CHANNEL_SLOTS)]
    names += [f"messages.{m}.{loc}.{part}" for m in MEDIA for loc in LOCALES for part in ("subject", "title", "body")]
    return names


def model_errors(error: ValidationError) -> dict[str, str]:
    """pydantic's errors by form field (the first one per field)."""
    found: dict[str, str] = {}
    fields = editor_fields()
    for item in error.errors():
        path = ".".join(str(p) for p in item.get("loc", ()))
        name = field_of(path, fields) or path
        if name in ("channels", *(f"channels.{i}" for i in range(CHANNEL_SLOTS))):
            name = "channels"
        found.setdefault(name, str(item.get("msg", "invalid")))
    return found


def problem_errors(problem: Problem) -> dict[str, str]:
    found: dict[str, str] = {}
    fields = editor_fields()
    for error in problem.errors:
        name = field_of(error.field, fields) or error.field.removeprefix("body.")
        if name.startswith("channels."):
            name = "channels"
        found.setdefault(name, error.message)
    return found


def read_definition(form: Form) -> tuple[CampaignDefinition | None, dict[str, str]]:
    """The definition in a posted form, checked like the API checks it (types, then `validate`)."""
    data, errors = definition_data(form)
    try:
        definition = CampaignDefinition.model_validate(data)
    except ValidationError as invalid:
        return None, {**model_errors(invalid), **errors}
    if errors:
        return None, errors
    try:
        CampaignManagement.validate(definition)
    except Problem as problem:
        return None, problem_errors(problem)
    return definition, {}


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
