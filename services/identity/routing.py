"""What identity's route modules share: who may call them, and where a touch through them comes from."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends

from services.identity.touches import Touch
from shared.auth import Principal, require

# Desk systems and front-office staff write as well as platforms do.
FrontOfficeKey = Annotated[Principal, Depends(require("ingest", "member-data"))]
ServiceKey = Annotated[Principal, Depends(require("service"))]


def touch_at(library: str, platform: str, time: datetime | None = None) -> Touch:
    """A touch reported through the API: at `time` (default now), from the library's platform."""
    return Touch(library, platform, time or datetime.now(UTC), f"/libraries/{library}/{platform}")
