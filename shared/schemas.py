"""Conventions for the JSON bodies the services' HTTP APIs take."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict


def example_body(**example: Any) -> ConfigDict:
    """A request body that refuses unknown fields (a typo is a 422 naming it) and shows `example` in the OpenAPI."""
    return ConfigDict(extra="forbid", json_schema_extra={"examples": [example]})
