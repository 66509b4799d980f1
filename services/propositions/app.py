"""Wiring of the propositions service (the catalogue and usage APIs land with their issue)."""

from __future__ import annotations

from fastapi import FastAPI

from shared.service import ServiceParts, build_app
from shared.settings import Settings


def create_app(settings: Settings | None = None, *, parts: ServiceParts | None = None) -> FastAPI:
    settings = settings or Settings()
    parts = parts or ServiceParts.connect("propositions", settings)
    return build_app(
        parts,
        title="klantreis propositions",
        description="The network's catalogue of propositions, which library offers what, activities and usage.",
    )
