"""The campaign editor's form, pure: a posted form read as a `CampaignDefinition` (and the errors at its fields),
and a definition written back as the form's values. Used by the campaign pages (pages.py)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, get_args
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from services.notifications.campaigns import CampaignDefinition, Locale
from services.notifications.management import CampaignManagement
from shared.events.types import Medium
from shared.problems import Problem
from shared.web.site import Form

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
MEDIA: tuple[Medium, ...] = get_args(Medium)
LOCALES: tuple[Locale, ...] = get_args(Locale)
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
