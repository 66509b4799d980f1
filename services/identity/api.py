"""identity's HTTP API: thin routes over `Members`. Every write takes an Idempotency-Key."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from services.identity import domain
from services.identity.members import Members, Person, Touch
from services.identity.store import MemberStore
from shared.auth import AUTH_RESPONSES, IngestKey, MemberDataKey, Principal, require
from shared.events.members import LoginFailure
from shared.events.types import Language, LibraryCode, Medium, Purpose
from shared.idempotency import IdempotencyKey, Ids, Replies
from shared.problems import Problem
from shared.schemas import example_body

# Desk systems and front-office staff write as well as platforms do.
FrontOfficeKey = Annotated[Principal, Depends(require("ingest", "member-data"))]
ServiceKey = Annotated[Principal, Depends(require("service"))]

SignUpPlatform = Literal["website", "app", "desk", "kiosk", "partner", "school"]
AccountPlatform = Literal["website", "app", "ebook", "ils"]


class SignUp(BaseModel):
    model_config = example_body(
        name="Sanne de Vries",
        email="sanne@example.nl",
        phone="06 1234 5678",
        birth_date="1991-04-12",
        postcode="1034 AB",
        home_library="oba",
        platform="website",
    )

    name: str = Field(min_length=1, max_length=200)
    email: str = Field(max_length=254)
    phone: str | None = Field(default=None, max_length=20, pattern=r"^\+?[0-9 ()-]{6,20}$")
    birth_date: date
    postcode: str = Field(description="Dutch postcode, 1234 AB")
    home_library: LibraryCode
    platform: SignUpPlatform = Field(
        default="website", description="website and app are online; desk, kiosk, partner and school are offline"
    )
    source: str | None = Field(default=None, max_length=80, description="e.g. consultatiebureau or a school")
    proposition: str | None = Field(default=None, max_length=80, description="e.g. boekstart")
    registration_id: str | None = Field(default=None, description="completes a registration started before")
    language: Language = Field(default="nl", description="the language messages are sent in: nl or en")

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        if not domain.EMAIL.match(value.strip()):
            raise ValueError("not an e-mail address")
        return value.strip()

    @field_validator("postcode")
    @classmethod
    def _postcode(cls, value: str) -> str:
        return domain.normalise_postcode(value)

    @field_validator("birth_date")
    @classmethod
    def _birth_date(cls, value: date) -> date:
        if value > datetime.now(UTC).date():
            raise ValueError("birth date lies in the future")
        return value


class RegistrationStart(BaseModel):
    model_config = example_body(home_library="oba", platform="website", source="consultatiebureau")

    home_library: LibraryCode
    platform: SignUpPlatform = "website"
    source: str | None = Field(default=None, max_length=80)


class Accepted(BaseModel):
    member_id: str
    event_id: str


class RegistrationAccepted(BaseModel):
    registration_id: str


class CardActivation(BaseModel):
    model_config = example_body(library="oba", branch="oosterdok")

    library: LibraryCode
    branch: str | None = Field(default=None, max_length=80)
    platform: Literal["desk", "kiosk"] = "desk"
    time: AwareDatetime | None = Field(default=None, description="when the card was activated; default now")


class AccountLink(BaseModel):
    model_config = example_body(platform="ebook", external_id="eb-449120")

    platform: AccountPlatform
    external_id: str = Field(min_length=1, max_length=200, description="the account's id on that platform")


class LinkedAccount(BaseModel):
    member_id: str
    platform: str
    account_ref: str = Field(description="pseudonymous reference to the account, as published in events")


class Login(BaseModel):
    model_config = example_body(platform="ebook", external_id="eb-449120", outcome="failed", reason="bad_credentials")

    platform: AccountPlatform
    external_id: str = Field(min_length=1, max_length=200)
    outcome: Literal["succeeded", "failed"]
    reason: LoginFailure | None = Field(default=None, description="required when the login failed")
    time: AwareDatetime | None = None

    @model_validator(mode="after")
    def _reason_with_failure(self) -> Login:
        if self.outcome == "failed" and self.reason is None:
            raise ValueError("reason is required when the login failed")
        return self


class Consent(BaseModel):
    model_config = example_body(granted=True)

    granted: bool


class Guardian(BaseModel):
    model_config = example_body(guardian_id="4c1d2a4e-0c59-4f0e-9a55-5d8c1b2f7e10")

    guardian_id: str = Field(min_length=1, max_length=64)


class Confirmation(BaseModel):
    model_config = example_body(survivor_id="4c1d2a4e-0c59-4f0e-9a55-5d8c1b2f7e10", confirmed_by="desk")

    survivor_id: str
    confirmed_by: Literal["desk", "member"]


class MemberView(BaseModel):
    """The member as front-office staff see them: personal data, only through the member-data role."""

    member_id: str
    name: str
    email: str
    phone: str | None
    birth_date: date
    postcode: str
    home_library: str
    signed_up_at: str
    channel: str
    platform: str
    language: Language
    card_activated_at: str | None
    guardian_id: str | None
    accounts: list[str]
    consents: dict[str, str]


class Suspicion(BaseModel):
    id: str
    member_id: str
    other_member_id: str
    library: str
    other_library: str
    matched_on: list[str]
    created_at: str


class Contact(BaseModel):
    member_id: str
    medium: Medium
    recipient: Literal["member", "guardian"]
    address: str
    name: str


class ContactWanted(BaseModel):
    member_id: str
    medium: Medium


class ContactsWanted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"wanted": [{"member_id": "3f6c0a52-2d4e-4c1b-9a57-5e0d7c1f2b9a", "medium": "email"}]}]
        }
    )

    wanted: list[ContactWanted] = Field(max_length=1000)


class Contacts(BaseModel):
    contacts: list[Contact | None] = Field(description="in the order asked; null: unknown, erased or no address")


class IngestResult(BaseModel):
    accepted: list[str]
    rejected: list[dict[str, Any]]


def members_router(members: Members, store: MemberStore) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["members"], responses=AUTH_RESPONSES)

    @router.post(
        "/registrations",
        status_code=202,
        response_model=RegistrationAccepted,
        summary="Start a registration (publishes registration_started)",
        description="Its id becomes the member id when the sign-up completes it (`registration_id`); a registration "
        "not completed in time is a friction (registration abandoned).",
    )
    async def start_registration(
        body: RegistrationStart, request: Request, caller: IngestKey, replies: Replies, key: IdempotencyKey = None
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            touch = Touch(
                body.home_library, body.platform, datetime.now(UTC), _source(body.home_library, body.platform)
            )
            return 202, {"registration_id": await members.start_registration(touch, body.source, caller, ids)}

        return await replies.once(request, caller, key, body.model_dump(mode="json"), run)

    @router.post(
        "/members",
        status_code=202,
        response_model=Accepted,
        summary="Sign up a member online, at a desk or via a partner",
        description="Stores the person's data here and publishes a pseudonymous `member.signed_up` (and "
        "`duplicate_suspected` for members sharing the e-mail address or phone number). 202 means Kafka "
        "acknowledged the events.",
        responses={404: {"description": "registration_id unknown or completed already"}},
    )
    async def sign_up(
        body: SignUp, request: Request, caller: IngestKey, replies: Replies, key: IdempotencyKey = None
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            person = Person(body.name, body.email, body.phone, body.birth_date, body.postcode)
            touch = Touch(
                body.home_library, body.platform, datetime.now(UTC), _source(body.home_library, body.platform)
            )
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

        return await replies.once(request, caller, key, body.model_dump(mode="json"), run)

    @router.get(
        "/members/{member_id}",
        summary="One member's data (member-data role)",
        responses={404: {"description": "unknown or erased"}},
    )
    async def get_member(member_id: str, caller: MemberDataKey) -> MemberView:
        resolved, record = await members.member(member_id, caller)
        return MemberView(
            member_id=resolved,
            name=record["name"],
            email=record["email"],
            phone=record.get("phone") or None,
            birth_date=date.fromisoformat(record["birth_date"]),
            postcode=record["postcode"],
            home_library=record["home_library"],
            signed_up_at=record["signed_up_at"],
            channel=record["channel"],
            platform=record["platform"],
            language=record.get("language") or "nl",
            card_activated_at=record.get("card_activated_at") or None,
            guardian_id=record.get("guardian_id") or None,
            accounts=sorted(await store.accounts(resolved)),
            consents=await store.consents(resolved),
        )

    @router.delete(
        "/members/{member_id}",
        status_code=202,
        response_model=Accepted,
        summary="Erase a member: every personal datum and index entry goes; `erased` tells the other services",
        responses={404: {"description": "unknown or erased already"}},
    )
    async def erase(
        member_id: str, request: Request, caller: MemberDataKey, replies: Replies, key: IdempotencyKey = None
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            erased, event_id = await members.erase(member_id, caller, ids)
            return 202, {"member_id": erased, "event_id": event_id}

        return await replies.once(request, caller, key, None, run)

    @router.post(
        "/members/{member_id}/card-activation",
        status_code=202,
        response_model=Accepted,
        summary="Activate the member's card at a branch",
        responses={404: {"description": "no such member"}},
    )
    async def activate_card(
        member_id: str,
        body: CardActivation,
        request: Request,
        caller: IngestKey,
        replies: Replies,
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            touch = Touch(
                body.library, body.platform, body.time or datetime.now(UTC), _source(body.library, body.platform)
            )
            resolved, event_id = await members.activate_card(member_id, touch, body.branch, caller, ids)
            return 202, {"member_id": resolved, "event_id": event_id}

        return await replies.once(request, caller, key, body.model_dump(mode="json"), run)

    @router.post(
        "/members/{member_id}/accounts",
        status_code=202,
        response_model=LinkedAccount,
        tags=["accounts"],
        summary="Link a platform account (website, app, e-book platform, ILS card) to the member",
        responses={
            404: {"description": "no such member"},
            409: {
                "description": "the account belongs to another "
                "member, or the member has another account on that platform"
            },
        },
    )
    async def link_account(
        member_id: str,
        body: AccountLink,
        request: Request,
        caller: FrontOfficeKey,
        replies: Replies,
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            resolved, ref = await members.link_account(member_id, body.platform, body.external_id, caller, ids)
            return 202, {"member_id": resolved, "platform": body.platform, "account_ref": ref}

        return await replies.once(request, caller, key, body.model_dump(mode="json"), run)

    @router.delete(
        "/members/{member_id}/accounts/{platform}",
        status_code=202,
        response_model=Accepted,
        tags=["accounts"],
        summary="Unlink the member's account on a platform",
        responses={404: {"description": "nothing linked"}},
    )
    async def unlink_account(
        member_id: str,
        platform: AccountPlatform,
        request: Request,
        caller: FrontOfficeKey,
        replies: Replies,
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            return 202, {
                "member_id": member_id,
                "event_id": await members.unlink_account(member_id, platform, caller, ids),
            }

        return await replies.once(request, caller, key, None, run)

    @router.post(
        "/logins",
        status_code=202,
        response_model=Accepted,
        tags=["accounts"],
        summary="A platform reports a login outcome by external account",
        description="Publishes `login_succeeded` or `login_failed` (with the reason), and `channel_switched` when "
        "the member's previous touch was on another channel or platform.",
        responses={404: {"description": "no member has this account linked"}},
    )
    async def login(
        body: Login, request: Request, caller: IngestKey, replies: Replies, key: IdempotencyKey = None
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            member_id, event_id = await members.record_login(
                body.platform, body.external_id, body.outcome, body.reason, body.time or datetime.now(UTC), caller, ids
            )
            return 202, {"member_id": member_id, "event_id": event_id}

        return await replies.once(request, caller, key, body.model_dump(mode="json"), run)

    @router.put(
        "/members/{member_id}/consents/{medium}/{purpose}",
        status_code=202,
        response_model=Accepted,
        tags=["consent"],
        summary="Give or withdraw consent for a channel and purpose",
    )
    async def consent(
        member_id: str,
        medium: Medium,
        purpose: Purpose,
        body: Consent,
        request: Request,
        caller: FrontOfficeKey,
        replies: Replies,
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            resolved, event_id = await members.change_consent(member_id, medium, purpose, body.granted, caller, ids)
            return 202, {"member_id": resolved, "event_id": event_id}

        return await replies.once(request, caller, key, body.model_dump(mode="json"), run)

    @router.put(
        "/members/{member_id}/guardian",
        status_code=202,
        response_model=Accepted,
        tags=["consent"],
        summary="Set the guardian of a minor (under 16): messages for the minor go to them",
        responses={404: {"description": "member or guardian unknown"}, 422: {"description": "not a minor"}},
    )
    async def guardian(
        member_id: str,
        body: Guardian,
        request: Request,
        caller: FrontOfficeKey,
        replies: Replies,
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            return 202, {
                "member_id": member_id,
                "event_id": await members.set_guardian(member_id, body.guardian_id, caller, ids),
            }

        return await replies.once(request, caller, key, body.model_dump(mode="json"), run)

    @router.get("/duplicates", tags=["duplicates"], summary="Duplicate suspicions awaiting confirmation")
    async def duplicates(caller: MemberDataKey) -> list[Suspicion]:
        return [
            Suspicion(
                id=s["id"],
                member_id=s["member_id"],
                other_member_id=s["other_member_id"],
                library=s["library"],
                other_library=s["other_library"],
                matched_on=s["matched_on"].split(","),
                created_at=s["created_at"],
            )
            for s in await members.suspicions(caller)
        ]

    @router.post(
        "/duplicates/{suspicion_id}/confirm",
        status_code=202,
        tags=["duplicates"],
        summary="Confirm a duplicate (at the desk or by the member): the other record merges into the survivor",
        responses={
            404: {"description": "no such suspicion"},
            409: {"description": "closed already, or a merge that must not happen (a child into their guardian)"},
        },
    )
    async def confirm(
        suspicion_id: str,
        body: Confirmation,
        request: Request,
        caller: FrontOfficeKey,
        replies: Replies,
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        async def run(ids: Ids) -> tuple[int, Any]:
            merged = await members.confirm(suspicion_id, body.survivor_id, body.confirmed_by, caller, ids)
            return 202, {"merged_id": merged, "survivor_id": body.survivor_id}

        return await replies.once(request, caller, key, body.model_dump(mode="json"), run)

    @router.post(
        "/duplicates/{suspicion_id}/dismiss",
        status_code=200,
        tags=["duplicates"],
        summary="Not the same person: close the suspicion without merging",
    )
    async def dismiss(suspicion_id: str, caller: FrontOfficeKey) -> dict[str, str]:
        await members.dismiss(suspicion_id, caller)
        return {"id": suspicion_id, "status": "dismissed"}

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
        return Contact.model_validate(await members.contact(member_id, medium, caller))

    @router.post("/contacts", summary="Where to deliver a batch of messages now (service role)")
    async def contacts(body: ContactsWanted, caller: ServiceKey) -> Contacts:
        found: list[Contact | None] = []
        for wanted in body.wanted:
            try:
                found.append(Contact.model_validate(await members.contact(wanted.member_id, wanted.medium, caller)))
            except Problem as problem:
                if problem.status not in (404, 409):
                    raise
                found.append(None)
        return Contacts(contacts=found)

    return router


def _source(library: str, platform: str) -> str:
    return f"/libraries/{library}/{platform}"
