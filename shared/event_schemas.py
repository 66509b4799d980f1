"""The published JSON Schemas of the event types (`GET /schemas`, `GET /schemas/{type}`), generated from the payload
models: for each type, the structured CloudEvent (the envelope, `type` fixed, `data` the payload's schema), as a
poster sends it to `POST /v1/events` and as a consumer reads it. Every service serves them; the AsyncAPI document
links each message to its schema."""

from __future__ import annotations

import functools
from typing import Any

from fastapi import APIRouter

from shared.events import CloudEvent, InvalidEvent, event_types, model_for
from shared.problems import not_found

DIALECT = "https://json-schema.org/draft/2020-12/schema"
PATH = "/schemas"


def schema_path(type_name: str) -> str:
    return f"{PATH}/{type_name}"


@functools.cache
def event_schema(type_name: str) -> dict[str, Any]:
    """The JSON Schema of a structured CloudEvent of `type_name` (InvalidEvent for an unknown type)."""
    model = model_for(type_name)
    envelope = CloudEvent.model_json_schema()
    data = model.model_json_schema()
    definitions = {**envelope.pop("$defs", {}), **data.pop("$defs", {})}
    envelope["properties"]["type"] = {"const": type_name, "title": "Type"}
    envelope["properties"]["subject"] = {"type": "string", "minLength": 1, "maxLength": 200, "title": "Subject"}
    envelope["properties"]["data"] = data
    envelope["required"] = sorted({*envelope.get("required", ()), "subject", "data"})
    schema = {
        "$schema": DIALECT,
        "$id": schema_path(type_name),
        **envelope,
        "title": type_name,
        "description": (model.__doc__ or "").strip() or f"a {type_name} event",
        "x-topic": model.topic,
    }
    if definitions:
        schema["$defs"] = definitions
    return schema


def schemas_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get(PATH, summary="The JSON Schema of every event type, by type")
    async def schemas() -> dict[str, dict[str, Any]]:
        return {type_name: event_schema(type_name) for type_name in sorted(event_types())}

    @router.get(
        PATH + "/{type_name}",
        summary="The JSON Schema of one event type (a structured CloudEvent)",
        responses={404: {"description": "no such event type"}},
    )
    async def schema(type_name: str) -> dict[str, Any]:
        try:
            return event_schema(type_name)
        except InvalidEvent:
            raise not_found("event type") from None

    return router


def link_schemas(document: dict[str, Any]) -> dict[str, Any]:
    """An AsyncAPI document whose messages each link (externalDocs) to their event type's schema."""
    known = event_types()
    for message in document.get("components", {}).get("messages", {}).values():
        # FastStream titles a message `<its publisher's title>:Message`; a publisher's title is its event type.
        type_name = str(message.get("title", "")).removesuffix(":Message")
        if type_name in known:
            message["externalDocs"] = {"description": "JSON Schema", "url": schema_path(type_name)}
    return document
