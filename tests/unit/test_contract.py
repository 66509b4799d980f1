"""The OpenAPI documents say what the services answer: the bearer scheme and each route's security, every error a
problem (`application/problem+json`) with an example; and the value types that refuse what a person would never
mean (a number for a day, a control character in a name)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import TypeAdapter, ValidationError

from shared.events.types import IsoDate, IsoDateTime, Name
from tests.unit.test_openapi import apps, operations

APPS = apps()  # built once for every test here: building the five takes seconds


@pytest.mark.parametrize("app", APPS, ids=lambda app: app.title)
def test_the_bearer_scheme_is_declared_and_every_v1_route_requires_it(app: FastAPI) -> None:
    document = app.openapi()

    assert document["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "kr_<key id>_<secret>",
        "description": "An API key (`klantreis keys create`): `Authorization: Bearer kr_<key id>_<secret>`.",
    }
    unprotected = [
        f"{m} {p}"
        for p, m, op in operations(app)
        if p.startswith("/v1/") and not op.get("security") and "307" not in op["responses"]  # journey's moved URLs
    ]
    assert unprotected == []


@pytest.mark.parametrize("app", APPS, ids=lambda app: app.title)
def test_every_error_is_a_problem_document_with_an_example(app: FastAPI) -> None:
    wrong = []
    for path, method, op in operations(app):
        for status, response in op["responses"].items():
            if int(status) < 400 or path == "/readyz":
                continue
            problem: dict[str, Any] = response.get("content", {}).get("application/problem+json", {})
            if problem.get("schema") != {"$ref": "#/components/schemas/Problem"} or problem["example"]["status"] != int(
                status
            ):
                wrong.append(f"{method.upper()} {path} {status}")
    assert wrong == []


@pytest.mark.parametrize("app", APPS, ids=lambda app: app.title)
def test_a_route_behind_a_key_declares_401_403_and_503_and_a_write_with_an_idempotency_key_409(app: FastAPI) -> None:
    for path, method, op in operations(app):
        declared = set(op["responses"])
        if op.get("security"):
            assert {"401", "403"} <= declared, f"{method.upper()} {path}"
        if op.get("security"):
            assert "503" in declared and "Retry-After" in op["responses"]["503"]["headers"]
        if any(p["name"] == "Idempotency-Key" for p in op.get("parameters", [])):
            assert "409" in declared, f"{method.upper()} {path}"


@pytest.mark.parametrize("text", ["OBA Oosterdok", "Bibliotheek Zuid-Kennemerland", "Café Ñandú", "图书馆"])
def test_a_name_of_printable_text_is_taken(text: str) -> None:
    assert TypeAdapter(Name).validate_python(text) == text


@pytest.mark.parametrize("text", ["OBA\x07", "Oost\ndok", "Bieb\ue000", "tab\there", "\U000f0000"])
def test_a_name_with_a_control_or_private_use_character_is_refused_saying_which(text: str) -> None:
    with pytest.raises(ValidationError, match="control or private-use character"):
        TypeAdapter(Name).validate_python(text)


@pytest.mark.parametrize("value", [0, "0", "1700000000", 20250331, "31-03-2025", "2025-3-1"])
def test_a_day_is_iso_text_never_a_number_read_as_seconds_since_1970(value: object) -> None:
    with pytest.raises(ValidationError, match="ISO 8601"):
        TypeAdapter(IsoDate).validate_python(value)


def test_an_iso_day_and_moment_are_taken() -> None:
    assert str(TypeAdapter(IsoDate).validate_python("2025-03-31")) == "2025-03-31"
    moment = TypeAdapter(IsoDateTime).validate_python("2025-03-31T09:30:00+02:00")
    assert moment.utcoffset() is not None
    with pytest.raises(ValidationError):
        TypeAdapter(IsoDateTime).validate_python(0)


@pytest.mark.parametrize("app", APPS, ids=lambda app: app.title)
async def test_a_method_the_path_does_not_take_is_a_405_problem_saying_in_allow_which_it_takes(app: FastAPI) -> None:
    # Routing answers before anything is asked of Kafka or Redis: the app need not be started.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.delete("/healthz")

    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["title"] == "Method Not Allowed"


@pytest.mark.parametrize("app", APPS, ids=lambda app: app.title)
def test_every_successful_answer_shows_an_example(app: FastAPI) -> None:
    schemas = app.openapi()["components"]["schemas"]
    missing = []
    for path, method, op in operations(app):
        for status, response in op["responses"].items():
            for content in response.get("content", {}).values() if status.startswith("2") else ():
                ref = content.get("schema", {}).get("$ref", "").rsplit("/", 1)[-1]
                if not (content.get("example") or schemas.get(ref, {}).get("examples")):
                    missing.append(f"{method} {path}")
    assert missing == []
