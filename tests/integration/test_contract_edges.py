"""Input a person never means is refused with 422 naming the field, on the real Redis (where the key is checked):
a number for a day (`?to=0` would be 1 January 1970) and control or private-use characters in names."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from services.analytics.app import create_app as analytics_app
from services.analytics.settings import AnalyticsSettings
from services.propositions.app import create_app as propositions_app
from shared.settings import Settings
from tests.integration.conftest import MakeKey
from tests.integration.test_propositions_catalogue import OBA

pytestmark = pytest.mark.integration


async def client_of(app: FastAPI, key: str) -> AsyncIterator[httpx.AsyncClient]:
    # Not started: validation answers before anything is asked of Kafka; the key is checked in Redis.
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as client:
        yield client


@pytest.fixture
async def analytics(settings: Settings, make_key: MakeKey, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = analytics_app(AnalyticsSettings(**settings.model_dump(), analytics_path=tmp_path))
    async for client in client_of(app, await make_key("analyst")):
        yield client


@pytest.fixture
async def propositions(settings: Settings, make_key: MakeKey) -> AsyncIterator[httpx.AsyncClient]:
    async for client in client_of(propositions_app(settings), await make_key("admin")):
        yield client


def named_fields(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return [error["field"] for error in response.json()["errors"]]


@pytest.mark.parametrize("query", [{"to": "0"}, {"from": "1700000000"}, {"to": "31-03-2025"}])
async def test_a_report_asked_for_a_day_that_is_not_an_iso_date_is_refused_naming_the_parameter(
    analytics: httpx.AsyncClient, query: dict[str, str]
) -> None:
    response = await analytics.get("/v1/reports/frictions", params=query)

    assert named_fields(response) == [f"query.{next(iter(query))}"]
    assert "ISO 8601" in response.json()["detail"]


@pytest.mark.parametrize("name", ["OBA\x07Oosterdok", "OBA\ue000", "OBA\nOosterdok"])
async def test_a_library_or_branch_name_with_control_or_private_use_characters_is_refused_naming_the_field(
    propositions: httpx.AsyncClient, name: str
) -> None:
    library = await propositions.put("/v1/libraries/oba", json={**OBA, "name": name})
    branch = await propositions.put(
        "/v1/libraries/oba", json={**OBA, "branches": [{"code": "oosterdok", "name": name}]}
    )

    assert named_fields(library) == ["body.name"]
    assert named_fields(branch) == ["body.branches.0.name"]


async def test_activities_from_a_number_are_refused_naming_the_parameter(propositions: httpx.AsyncClient) -> None:
    response = await propositions.get("/v1/activities", params={"from": "0"})

    assert named_fields(response) == ["query.from"]
