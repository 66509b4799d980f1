"""identity's HTTP API."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime
from typing import Literal

from fastapi import APIRouter, Response, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from services.identity import domain
from services.identity.store import MemberStore
from shared.auth import AUTH_RESPONSES, IngestKey, forbid_other_library
from shared.events import CloudEvent
from shared.events.members import CardActivated, MemberSignedUp
from shared.events.types import LibraryCode
from shared.kafka import EventPublisher
from shared.problems import not_found

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class OnlineSignUp(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Sanne de Vries",
                    "email": "sanne@example.nl",
                    "birth_date": "1991-04-12",
                    "postcode": "1034 AB",
                    "home_library": "oba",
                    "platform": "website",
                }
            ]
        },
    )

    name: str = Field(min_length=1, max_length=200)
    email: str = Field(max_length=254)
    phone: str | None = Field(default=None, max_length=20, pattern=r"^\+?[0-9 ()-]{6,20}$")
    birth_date: date
    postcode: str = Field(description="Dutch postcode, 1234 AB")
    home_library: LibraryCode
    platform: Literal["website", "app"] = "website"
    source: str | None = Field(default=None, max_length=80, description="e.g. consultatiebureau or a school")
    proposition: str | None = Field(default=None, max_length=80, description="e.g. boekstart")

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        if not EMAIL.match(value.strip()):
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


class Accepted(BaseModel):
    member_id: str
    event_id: str


class CardActivation(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"library": "oba", "branch": "oosterdok"}]}
    )

    library: LibraryCode
    branch: str | None = Field(default=None, max_length=80)
    time: AwareDatetime | None = Field(default=None, description="when the card was activated; default now")


def members_router(store: MemberStore, publisher: EventPublisher) -> APIRouter:
    router = APIRouter(prefix="/v1/members", tags=["members"], responses=AUTH_RESPONSES)

    @router.post(
        "",
        status_code=status.HTTP_202_ACCEPTED,
        summary="Sign up online",
        description="Stores the person's data here and publishes a pseudonymous `member.signed_up`. "
        "202 means Kafka acknowledged the event.",
    )
    async def sign_up(body: OnlineSignUp, response: Response, caller: IngestKey) -> Accepted:
        forbid_other_library(caller, body.home_library)
        member_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        event = CloudEvent.create(
            MemberSignedUp(
                age_band=domain.member_age_band(body.birth_date, now.date()),
                home_library=body.home_library,
                postcode_area=domain.postcode_area(body.postcode),
                source=body.source,
                proposition=body.proposition,
            ),
            subject=member_id,
            source=f"/libraries/{body.home_library}/{body.platform}",
            library=body.home_library,
            channel="online",
            platform=body.platform,
            time=now,
        )
        await store.create(
            member_id,
            {
                "name": body.name,
                "email": domain.normalise_email(body.email),
                "phone": body.phone or "",
                "birth_date": body.birth_date.isoformat(),
                "postcode": body.postcode,
                "home_library": body.home_library,
                "signed_up_at": now.isoformat(),
            },
        )
        try:
            await publisher.publish(event)
        except Exception:
            # Not acknowledged means not signed up: leave no personal data behind for a member nobody knows.
            await store.delete(member_id)
            raise
        response.headers["Location"] = f"/v1/members/{member_id}"
        return Accepted(member_id=member_id, event_id=event.id)

    @router.post(
        "/{member_id}/card-activation",
        status_code=status.HTTP_202_ACCEPTED,
        summary="Activate the member's card at a branch",
        responses={404: {"description": "no such member"}},
    )
    async def activate_card(member_id: str, body: CardActivation, caller: IngestKey) -> Accepted:
        forbid_other_library(caller, body.library)
        if not await store.exists(member_id):
            raise not_found("member")
        event = CloudEvent.create(
            CardActivated(branch=body.branch),
            subject=member_id,
            source=f"/libraries/{body.library}/desk",
            library=body.library,
            channel="offline",
            platform="desk",
            time=body.time,
        )
        await publisher.publish(event)
        return Accepted(member_id=member_id, event_id=event.id)

    return router
