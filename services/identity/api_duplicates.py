"""identity's routes for duplicate suspicions: list, confirm (merge), dismiss."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.identity.duplicates import Duplicates
from services.identity.routing import FrontOfficeKey
from services.identity.schemas import (
    Confirmation,
    Suspicion,
)
from shared.auth import AUTH_RESPONSES, MemberDataKey
from shared.idempotency import Ids, Write

SUSPICION = {
    "id": "s-1",
    "member_id": "cc02c620-5a1b-4e0f-9d51-2f3b8f6f0e11",
    "other_member_id": "4c1d2a4e-0c59-4f0e-9a55-5d8c1b2f7e10",
    "library": "oba",
    "other_library": "oba",
    "matched_on": ["email"],
    "created_at": "2026-11-23T10:00:00+00:00",
}


def duplicates_router(duplicates: Duplicates) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["duplicates"], responses=AUTH_RESPONSES)

    @router.get(
        "/duplicates",
        tags=["duplicates"],
        summary="Duplicate suspicions awaiting confirmation",
        responses={200: {"content": {"application/json": {"example": [SUSPICION]}}}},
    )
    async def pending(caller: MemberDataKey) -> list[Suspicion]:
        return [Suspicion.model_validate(s, from_attributes=True) for s in await duplicates.suspicions(caller)]

    @router.post(
        "/duplicates/{suspicion_id}/confirm",
        status_code=202,
        tags=["duplicates"],
        summary="Confirm a duplicate (at the desk or by the member): the other record merges into the survivor",
        responses={
            202: {
                "content": {
                    "application/json": {
                        "example": {
                            "merged_id": "4c1d2a4e-0c59-4f0e-9a55-5d8c1b2f7e10",
                            "survivor_id": "cc02c620-5a1b-4e0f-9d51-2f3b8f6f0e11",
                        }
                    }
                }
            },
            404: {"description": "no such suspicion"},
            409: {"description": "closed already, or a merge that must not happen (a child into their guardian)"},
        },
    )
    async def confirm(
        suspicion_id: str,
        body: Confirmation,
        caller: FrontOfficeKey,
        write: Write,
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            merged = await duplicates.confirm(suspicion_id, body.survivor_id, body.confirmed_by, caller, ids)
            return 202, {"merged_id": merged, "survivor_id": body.survivor_id}

        return await write(caller, body, run)

    @router.post(
        "/duplicates/{suspicion_id}/dismiss",
        status_code=200,
        tags=["duplicates"],
        summary="Not the same person: close the suspicion without merging",
        response_model=dict[str, str],
        responses={200: {"content": {"application/json": {"example": {"id": "s-1", "status": "dismissed"}}}}},
    )
    async def dismiss(suspicion_id: str, caller: FrontOfficeKey, write: Write) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            await duplicates.dismiss(suspicion_id, caller)
            return 200, {"id": suspicion_id, "status": "dismissed"}

        return await write(caller, None, run)

    return router
