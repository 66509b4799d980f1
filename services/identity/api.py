"""identity's HTTP API for members: registration, sign-up, the member's data, card activation, erasure; what the
front office does for a member (referral, consent, guardian); and where to deliver a message (service role). Thin
routes over `Members`; every write takes an Idempotency-Key. Accounts, duplicates and families have route modules
of their own (api_*.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from services.identity.members import Members, Person
from services.identity.records import Recipient
from services.identity.routing import FrontOfficeKey, ServiceKey, touch_at
from services.identity.schemas import (
    Accepted,
    CardActivation,
    Consent,
    Contact,
    Contacts,
    ContactsWanted,
    Guardian,
    MemberView,
    Referral,
    RegistrationAccepted,
    RegistrationStart,
    SignUp,
)
from services.identity.store import MemberStore
from shared.auth import AUTH_RESPONSES, IngestKey, MemberDataKey
from shared.events.types import Medium, Purpose
from shared.failed_items import item_route
from shared.idempotency import Ids, Write
from shared.problems import Problem


def members_router(members: Members, store: MemberStore) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["members"], responses=AUTH_RESPONSES)

    @router.post(
        "/registrations",
        status_code=202,
        response_model=RegistrationAccepted,
        summary="Start a registration (publishes registration_started)",
        description="Its id becomes the member id when the sign-up completes it (`registration_id`); a registration "
        "not completed in time is a friction (registration abandoned).",
        openapi_extra=item_route("ingest"),
    )
    async def start_registration(body: RegistrationStart, caller: IngestKey, write: Write) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            touch = touch_at(body.home_library, body.platform)
            return 202, {"registration_id": await members.start_registration(touch, body.source, caller, ids)}

        return await write(caller, body, run)

    @router.post(
        "/members",
        status_code=202,
        response_model=Accepted,
        summary="Sign up a member online, at a desk or via a partner",
        description="Stores the person's data here and publishes a pseudonymous `member.signed_up` (and "
        "`duplicate_suspected` for members sharing the e-mail address or phone number). 202 means Kafka "
        "acknowledged the events.",
        responses={404: {"description": "registration_id unknown or completed already"}},
        openapi_extra=item_route("ingest"),
    )
    async def sign_up(body: SignUp, caller: IngestKey, write: Write) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            person = Person(body.name, body.email, body.phone, body.birth_date, body.postcode)
            touch = touch_at(body.home_library, body.platform)
            member_id, event_id = await members.sign_up(
                person,
                touch,
                source=body.source,
                proposition=body.proposition,
                registration_id=body.registration_id,
                language=body.language,
                caller=caller,
                ids=ids,
            )
            return 202, {"member_id": member_id, "event_id": event_id}

        return await write(caller, body, run)

    @router.get(
        "/members/{member_id}",
        summary="One member's data (member-data role)",
        responses={404: {"description": "unknown or erased"}},
    )
    async def get_member(member_id: str, caller: MemberDataKey) -> MemberView:
        resolved, record = await members.member(member_id, caller)
        return MemberView(
            member_id=resolved,
            name=record.name,
            email=record.email,
            phone=record.phone,
            birth_date=record.birth_date,
            postcode=record.postcode,
            home_library=record.home_library,
            signed_up_at=record.signed_up_at.isoformat(),
            channel=record.channel,
            platform=record.platform,
            language=record.language,
            card_activated_at=record.card_activated_at.isoformat() if record.card_activated_at else None,
            guardian_id=record.guardian_id,
            accounts=sorted(await store.accounts(resolved)),
            consents=await store.consents(resolved),
        )

    @router.delete(
        "/members/{member_id}",
        status_code=202,
        response_model=Accepted,
        summary="Erase a member: every personal datum and index entry goes; `erased` tells the other services",
        description="Works for any member id: one identity knows (a key of their library, or the whole network), "
        "and one it holds nothing of (erased before, or known only from events produced straight to Kafka: a "
        "network-wide key), so that every service deletes what it holds. 202 means Kafka acknowledged "
        "`member.erased`; erasing again publishes it again (docs/identity.md).",
        responses={403: {"description": "another library's member, or one unknown here and a one-library key"}},
    )
    async def erase(
        member_id: Annotated[str, Path(min_length=1, max_length=64)], caller: MemberDataKey, write: Write
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            erased, event_id = await members.erase(member_id, caller, ids)
            return 202, {"member_id": erased, "event_id": event_id}

        return await write(caller, None, run)

    @router.post(
        "/members/{member_id}/card-activation",
        status_code=202,
        response_model=Accepted,
        summary="Activate the member's card at a branch",
        responses={404: {"description": "no such member"}},
        openapi_extra=item_route("ingest"),
    )
    async def activate_card(
        member_id: str,
        body: CardActivation,
        caller: IngestKey,
        write: Write,
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            touch = touch_at(body.library, body.platform, body.time)
            resolved, event_id = await members.activate_card(member_id, touch, body.branch, caller, ids)
            return 202, {"member_id": resolved, "event_id": event_id}

        return await write(caller, body, run)

    return router


def front_office_router(members: Members) -> APIRouter:
    """What staff at the desk (or a desk system) do for a member they have found: refer them onward, record their
    consent, name a minor's guardian."""
    router = APIRouter(prefix="/v1", tags=["members"], responses=AUTH_RESPONSES)

    @router.post(
        "/members/{member_id}/referrals",
        status_code=202,
        response_model=Accepted,
        tags=["front office"],
        summary="Refer the member onward to a proposition (a course, the digiTaalhuis…): publishes `referred`",
        description="Reports follow whether the member took part within 30 days (analytics "
        "`/v1/reports/referrals`). The library must be in the catalogue (422 naming the field).",
        responses={404: {"description": "no such member"}},
        openapi_extra=item_route("ingest", "member-data"),
    )
    async def refer(
        member_id: str,
        body: Referral,
        caller: FrontOfficeKey,
        write: Write,
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            resolved, event_id = await members.refer(
                member_id, body.proposition, body.library, body.platform, caller, ids
            )
            return 202, {"member_id": resolved, "event_id": event_id}

        return await write(caller, body, run)

    @router.put(
        "/members/{member_id}/consents/{medium}/{purpose}",
        status_code=202,
        response_model=Accepted,
        tags=["consent"],
        summary="Give or withdraw consent for a channel and purpose",
        openapi_extra=item_route("ingest", "member-data"),
    )
    async def consent(
        member_id: str,
        medium: Medium,
        purpose: Purpose,
        body: Consent,
        caller: FrontOfficeKey,
        write: Write,
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            resolved, event_id = await members.change_consent(member_id, medium, purpose, body.granted, caller, ids)
            return 202, {"member_id": resolved, "event_id": event_id}

        return await write(caller, body, run)

    @router.put(
        "/members/{member_id}/guardian",
        status_code=202,
        response_model=Accepted,
        tags=["consent"],
        summary="Set the guardian of a minor (under 16): messages for the minor go to them",
        responses={404: {"description": "member or guardian unknown"}, 422: {"description": "not a minor"}},
        openapi_extra=item_route("ingest", "member-data"),
    )
    async def guardian(
        member_id: str,
        body: Guardian,
        caller: FrontOfficeKey,
        write: Write,
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            return 202, {
                "member_id": member_id,
                "event_id": await members.set_guardian(member_id, body.guardian_id, caller, ids),
            }

        return await write(caller, body, run)

    return router


def contact_router(members: Members) -> APIRouter:
    router = APIRouter(prefix="/internal/v1", tags=["internal"], responses=AUTH_RESPONSES)

    @router.get(
        "/members/{member_id}/contact",
        summary="Where to deliver a message now (service role): the guardian's address for a minor",
        description="For notifications at send time, so that no other service stores an address.",
        responses={404: {"description": "unknown or erased"}, 409: {"description": "no address for this medium"}},
    )
    async def contact(member_id: str, caller: ServiceKey, medium: Medium) -> Contact:
        return _contact(await members.contact(member_id, medium, caller))

    @router.post("/contacts", summary="Where to deliver a batch of messages now (service role)")
    async def contacts(body: ContactsWanted, caller: ServiceKey) -> Contacts:
        found: list[Contact | None] = []
        for wanted in body.wanted:
            try:
                found.append(_contact(await members.contact(wanted.member_id, wanted.medium, caller)))
            except Problem as problem:
                if problem.status not in (404, 409):
                    raise
                found.append(None)
        return Contacts(contacts=found)

    return router


def _contact(recipient: Recipient) -> Contact:
    return Contact.model_validate(recipient, from_attributes=True)
