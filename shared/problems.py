"""Errors as RFC 9457 problem details (`application/problem+json`), the same in every service."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.availability import Availability
from shared.events import FieldError, InvalidEvent

# Called with every 4xx a request is answered with (status, field errors, headers) before it is answered: the
# service keeps refused items there (`shared.failed_items.FailedItems.keep_request`).
KeepRefused = Callable[[Request, int, Sequence[FieldError], Mapping[str, str] | None], Awaitable[None]]
PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_SECONDS = "5"
log = logging.getLogger(__name__)


class Problem(Exception):
    """Raise from a route to answer with a problem document."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        errors: list[FieldError] | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status, self.title, self.detail = status, title, detail
        self.errors = errors or []
        self.headers = headers
        self.extra = extra


def not_found(what: str) -> Problem:
    return Problem(404, "Not Found", f"{what} does not exist")


def problem_response(request: Request, problem: Problem) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": problem.title, "status": problem.status}
    if problem.detail:
        body["detail"] = problem.detail
    body["instance"] = request.url.path
    if problem.errors:
        body["errors"] = [e.as_dict() for e in problem.errors]
    body.update(problem.extra)
    return JSONResponse(body, status_code=problem.status, media_type=PROBLEM_JSON, headers=problem.headers)


def _request_errors(exc: RequestValidationError) -> list[FieldError]:
    errors = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        # FastAPI prefixes body fields with "body"; keep it, it tells the client where to look.
        errors.append(FieldError(".".join(loc) or "body", str(err.get("msg", "invalid"))))
    return errors


def install_problem_handlers(app: FastAPI, keep_refused: KeepRefused | None = None) -> None:
    async def kept(
        request: Request, status: int, errors: Sequence[FieldError], headers: Mapping[str, str] | None
    ) -> JSONResponse | None:
        """None once a refusal is kept (when it is an item's); else the answer to give instead: Kafka or Redis
        away, 503 (the client posts again), as a route that keeps refused items itself answers."""
        if keep_refused is None or status >= 500:
            return None
        try:
            await keep_refused(request, status, errors, headers)
        except KafkaError as exc:
            return await _kafka(request, exc)
        except RedisError as exc:
            return await _redis(request, exc)
        return None

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        about = exc.errors or [FieldError("body", exc.detail or exc.title)]
        return await kept(request, exc.status, about, exc.headers) or problem_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _request_errors(exc)
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
        return await kept(request, 422, errors, None) or problem_response(
            request, Problem(422, "Unprocessable Content", detail, errors=errors)
        )

    @app.exception_handler(InvalidEvent)
    async def _invalid_event(request: Request, exc: InvalidEvent) -> JSONResponse:
        return await kept(request, 422, exc.errors, None) or problem_response(
            request, Problem(422, "Unprocessable Content", str(exc), errors=exc.errors)
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's own answers keep their headers: a 405 says in Allow which methods the path takes.
        about = [FieldError("body", str(exc.detail or _title(exc.status_code)))]
        return await kept(request, exc.status_code, about, exc.headers) or problem_response(
            request, Problem(exc.status_code, _title(exc.status_code), str(exc.detail or ""), headers=exc.headers)
        )

    @app.exception_handler(KafkaError)
    async def _kafka(request: Request, exc: KafkaError) -> JSONResponse:
        _unavailable(request, "kafka", exc)
        return problem_response(
            request,
            Problem(
                503,
                "Service Unavailable",
                "the event log did not acknowledge in time, so nothing is accepted: retry later with the same "
                "Idempotency-Key or event ids (a retry has one effect, whether or not this attempt reaches the log)",
                headers={"Retry-After": RETRY_AFTER_SECONDS},
            ),
        )

    @app.exception_handler(RedisError)
    async def _redis(request: Request, exc: RedisError) -> JSONResponse:
        _unavailable(request, "redis", exc)
        unavailable = Problem(
            503,
            "Service Unavailable",
            "state store unavailable, retry later",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
        return problem_response(request, unavailable)


def _unavailable(request: Request, dependency: str, exc: Exception) -> None:
    """One log line per outage, not one per request: the service's `Availability` of the dependency logs it."""
    watched: Availability | None = getattr(request.app.state, "availability", {}).get(dependency)
    if watched is not None:
        watched.failed(type(exc).__name__)
    else:
        log.error("%s unavailable for %s %s: %s", dependency, request.method, request.url.path, type(exc).__name__)


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
