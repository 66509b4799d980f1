"""The OpenAPI document every service publishes, made to say what the service answers.

FastAPI's own document says every error is `application/json` and knows only the 422 of request validation. The
services answer every error as an RFC 9457 problem (`shared.problems`), so the document is completed here, by
rules that follow from how the services are built, on top of what each route declares:

- a route behind an API key (it has `security`) can answer 401 (no key, unknown or revoked) and 403 (role or
  library scope);
- a route with parameters or a body can answer 422 naming the field, and one with a body 400 when the body cannot
  be read at all (bytes that are not UTF-8);
- a route with a path parameter can answer 404 (nothing by that id);
- a route that takes an `Idempotency-Key` can answer 409 (the same key with another body, or still running);
- a route behind an API key can answer 503 with Retry-After while Redis (where keys are) or Kafka is away.

Every 4xx and 5xx is then `application/problem+json` with the `Problem` schema and an example, besides any body
of its own a route declares for that status (a batch's 422 lists each rejected item), unless the route says that
status is never a problem (`x-problem: false`: `/readyz`'s 503 has the shape of its 200).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from shared.problems import PROBLEM_JSON

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details. `errors` names each field that is wrong (values are never echoed).",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "example": "about:blank"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "the path that was asked"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
    "additionalProperties": True,
}

_EXAMPLES: dict[int, tuple[str, str, str]] = {
    400: ("Bad Request", "the request cannot be read", "a malformed request"),
    401: ("Unauthorized", "send an API key: Authorization: Bearer <key>", "no API key, or an unknown or revoked one"),
    403: (
        "Forbidden",
        "this key is scoped to library 'oba'",
        "the key lacks the role, or is scoped to another library",
    ),
    404: ("Not Found", "campaign does not exist", "nothing by that id"),
    405: ("Method Not Allowed", "Method Not Allowed", "the path does not take this method (see the Allow header)"),
    409: (
        "Conflict",
        "a request with this Idempotency-Key just finished; retry it",
        "conflicts with the current state",
    ),
    413: ("Content Too Large", "at most 5,000 events in one batch", "too large"),
    422: (
        "Unprocessable Content",
        "body.name: holds a control or private-use character (U+0007 at 3)",
        "a field is wrong: `errors` names each",
    ),
    503: (
        "Service Unavailable",
        "state store unavailable, retry later",
        "Kafka or Redis is away: nothing was done; retry after Retry-After seconds",
    ),
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
_WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}}
_ALLOW = {"Allow": {"description": "the methods the path takes", "schema": {"type": "string"}}}


def problem_example(status: int, path: str = "/v1/campaigns/c-1") -> dict[str, Any]:
    title, detail, _ = _EXAMPLES.get(status, ("Error", "", ""))
    example: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    example["instance"] = path
    if status == 422:
        example["errors"] = [{"field": "body.name", "message": "holds a control or private-use character"}]
    return example


def _problem_response(status: int, path: str, described: str | None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": described or _EXAMPLES.get(status, ("", "", "an error"))[2],
        "content": {PROBLEM_JSON: {"schema": PROBLEM_REF, "example": problem_example(status, path)}},
    }
    headers = {**(_RETRY_AFTER if status == 503 else {}), **(_WWW_AUTHENTICATE if status == 401 else {})}
    if status == 405:
        headers = _ALLOW
    if headers:
        response["headers"] = headers
    return response


def _error_response(status: int, path: str, declared: dict[str, Any]) -> dict[str, Any]:
    """A problem, and the body a route declares of its own for that status besides (a batch's 422 lists every
    rejected item), unless the route says it never answers a problem there (`x-problem: false`)."""
    own = {
        media: content
        for media, content in declared.get("content", {}).items()
        if content.get("schema") not in (None, {}, _FASTAPI_VALIDATION_ERROR)
    }
    if declared.get("x-problem") is False:
        return {"description": declared.get("description", ""), "content": own}
    response = _problem_response(status, path, declared.get("description"))
    response["content"] = {**own, **response["content"]}
    return response


_FASTAPI_VALIDATION_ERROR = {"$ref": "#/components/schemas/HTTPValidationError"}


def _statuses(path: str, operation: dict[str, Any]) -> set[int]:
    """The errors a route answers by how it is built (module docstring)."""
    parameters = operation.get("parameters", [])
    found: set[int] = set()
    if operation.get("security"):
        found |= {401, 403}
    if parameters or "requestBody" in operation:
        found.add(422)
    if "requestBody" in operation:
        found.add(400)  # a body that cannot be read at all (not UTF-8): FastAPI's own answer
    if any(p.get("in") == "path" for p in parameters):
        found.add(404)
    if any(p.get("in") == "header" and p.get("name", "").lower() == "idempotency-key" for p in parameters):
        found.add(409)
    if operation.get("security") or path.startswith("/v1/events"):
        found.add(503)  # the key is looked up in Redis; writes wait for Kafka
    return found


def completed(document: dict[str, Any]) -> dict[str, Any]:
    """The document with every error a problem, and the errors each route answers declared (module docstring)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method not in ("get", "put", "post", "delete", "patch"):
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            for status in _statuses(path, operation):
                responses.setdefault(str(status), {})
            for code, response in list(responses.items()):
                if code.isdigit() and int(code) >= 400:
                    responses[code] = _error_response(int(code), path, response)
    return document


def install_contract(app: FastAPI) -> None:
    """Serve the completed document at /openapi.json (built once, on the first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = completed(
                get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
