"""Refused requests handed to the service's keeping before they are answered (shared/problems.py), without I/O:
a body refused by its schema and a refusal in the route both reach it, with the field errors; while Kafka is away
the answer is 503 "post it again", so that nothing refused is lost unkept."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import httpx
from aiokafka.errors import KafkaConnectionError
from fastapi import FastAPI, Request
from pydantic import BaseModel

from shared.events import FieldError
from shared.problems import Problem, install_problem_handlers


class Report(BaseModel):
    item_id: str


def app_keeping(kept: list[tuple[str, int, list[str]]], *, kafka_away: bool = False) -> FastAPI:
    async def keep(
        request: Request, status: int, errors: Sequence[FieldError], headers: Mapping[str, str] | None
    ) -> None:
        if kafka_away:
            raise KafkaConnectionError()
        kept.append((request.url.path, status, [e.field for e in errors]))

    app = FastAPI()
    install_problem_handlers(app, keep)

    @app.post("/reports")
    async def report(body: Report) -> dict[str, str]:
        raise Problem(404, "Not Found", "no such item", errors=[FieldError("body.item_id", "no such item")])

    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_a_body_refused_by_its_schema_and_a_refusal_in_the_route_are_both_handed_over_with_their_fields() -> None:
    kept: list[tuple[str, int, list[str]]] = []
    async with client(app_keeping(kept)) as http:
        assert (await http.post("/reports", json={"item": 1})).status_code == 422
        assert (await http.post("/reports", json={"item_id": "9789021416011"})).status_code == 404
    assert kept == [("/reports", 422, ["body.item_id"]), ("/reports", 404, ["body.item_id"])]


async def test_while_kafka_is_away_a_refusal_that_cannot_be_kept_is_answered_503_post_it_again() -> None:
    async with client(app_keeping([], kafka_away=True)) as http:
        answer = await http.post("/reports", json={"item": 1})
    assert answer.status_code == 503
    assert answer.headers["Retry-After"]
