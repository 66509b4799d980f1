"""Conventions for the JSON bodies the services' HTTP APIs take."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def example_body(**example: Any) -> ConfigDict:
    """A request body that refuses unknown fields (a typo is a 422 naming it) and shows `example` in the OpenAPI."""
    return ConfigDict(extra="forbid", json_schema_extra={"examples": [example]})


class BatchAnswer(BaseModel):
    """A batch's answer: 202 when any item was accepted, 422 when none was."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "accepted": ["0c6a1f0e-8a4d-4a52-9f0e-6b1d2f3a4c51"],
                    "rejected": [
                        {"index": 1, "id": "5d0e", "status": 422,
                         "errors": [{"field": "data.age_band", "message": "Input should be '0-3', '4-11', …"}]}
                    ],
                }
            ]
        }
    )  # fmt: skip

    accepted: list[str] = Field(description="event ids of the accepted items, in order")
    rejected: list[dict[str, Any]] = Field(description="`{index, id, status, errors: [{field, message}]}` each")


def example_answer(**example: Any) -> ConfigDict:
    """A response body that shows `example` in the OpenAPI (extra fields are not refused: it is ours to send)."""
    return ConfigDict(json_schema_extra={"examples": [example]})


def example_of(model: type[BaseModel]) -> Any:
    """The example a model shows (`example_answer`, `example_body`), to show it again inside another."""
    extra = model.model_config.get("json_schema_extra")
    examples = extra.get("examples") if isinstance(extra, dict) else None
    assert isinstance(examples, list) and examples, f"{model.__name__} shows no example"
    return examples[0]
