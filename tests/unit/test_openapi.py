"""Every endpoint is documented: a summary, and an example for every request body."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI

from services.analytics.app import create_app as analytics_app
from services.identity.app import create_app as identity_app
from services.identity.settings import IdentitySettings
from services.journey.app import create_app as journey_app
from services.notifications.app import create_app as notifications_app
from services.propositions.app import create_app as propositions_app


def apps() -> list[FastAPI]:
    # Building an app connects to nothing: the OpenAPI document needs no Kafka or Redis.
    return [identity_app(IdentitySettings()), propositions_app(), journey_app(), notifications_app(), analytics_app()]


def operations(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in app.openapi()["paths"].items() for method, op in item.items()]


@pytest.mark.parametrize("app", apps(), ids=lambda app: app.title)
def test_every_operation_has_a_summary(app: FastAPI) -> None:
    missing = [f"{method.upper()} {path}" for path, method, op in operations(app) if not op.get("summary")]
    assert missing == []


@pytest.mark.parametrize("app", apps(), ids=lambda app: app.title)
def test_every_request_body_has_an_example(app: FastAPI) -> None:
    schemas = app.openapi().get("components", {}).get("schemas", {})
    missing = []
    for path, method, op in operations(app):
        for content in op.get("requestBody", {}).get("content", {}).values():
            schema = content.get("schema", {})
            ref = schema.get("$ref", "").rsplit("/", 1)[-1]
            if not (content.get("example") or content.get("examples") or schemas.get(ref, {}).get("examples")):
                missing.append(f"{method.upper()} {path}")
    assert missing == []


def test_identity_documents_401_and_403_on_its_protected_routes() -> None:
    for path, method, op in operations(identity_app(IdentitySettings())):
        if path.startswith(("/v1", "/internal")):
            assert {"401", "403"} <= set(op["responses"]), f"{method.upper()} {path}"
