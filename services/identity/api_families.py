"""identity's route for families: children signed up with their guardian in one request."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.identity.families import Families, Family
from services.identity.members import Person
from services.identity.routing import FrontOfficeKey, touch_at
from services.identity.schemas import FamilyAccepted, FamilySignUp
from shared.auth import AUTH_RESPONSES
from shared.failed_items import item_route
from shared.idempotency import Ids, Write


def families_router(families: Families) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["members"], responses=AUTH_RESPONSES)

    @router.post(
        "/families",
        status_code=202,
        response_model=FamilyAccepted,
        summary="Sign up children with their guardian (a member, or signed up with them) at a partner, desk or online",
        description="For BoekStart at the consultatiebureau, childcare or school: the children need no contact "
        "details; the guardian gives consent for them and receives their messages, in the guardian's language. "
        "Children under 16 only (from 16 a member manages their own consent). Publishes a new guardian's "
        "`signed_up`, the guardian's `consent_changed`, and per child `guardian_set` then `signed_up`. 202 means "
        "Kafka acknowledged them all.",
        responses={404: {"description": "guardian_id unknown"}},
        openapi_extra=item_route("ingest", "member-data"),
    )
    async def sign_up_family(body: FamilySignUp, caller: FrontOfficeKey, write: Write) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            guardian = body.guardian
            postcode = guardian.postcode if guardian is not None else None
            family = Family(
                guardian_id=body.guardian_id,
                guardian=Person(guardian.name, guardian.email, guardian.phone, guardian.birth_date, guardian.postcode)
                if guardian is not None
                else None,
                language=guardian.language if guardian is not None else "nl",
                children=[
                    Person(child.name, None, None, child.birth_date, child.postcode or postcode or "")
                    for child in body.children
                ],
                consents=[(c.medium, c.purpose) for c in body.consents],
            )
            signed_up = await families.sign_up(
                family,
                touch_at(body.home_library, body.platform),
                source=body.source,
                proposition=body.proposition,
                caller=caller,
                ids=ids,
            )
            return 202, FamilyAccepted(
                guardian_id=signed_up.guardian_id, children=signed_up.children, event_ids=signed_up.event_ids
            ).model_dump()

        return await write(caller, body, run)

    return router
