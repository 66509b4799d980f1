"""identity's request and reply bodies: what its routes accept and answer."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from services.identity import domain
from shared.events.members import LoginFailure
from shared.events.types import IsoDate, IsoDateTime, Language, LibraryCode, Medium, Name, Purpose, Slug
from shared.schemas import example_answer, example_body

SignUpPlatform = Literal["website", "app", "desk", "kiosk", "partner", "school"]
AccountPlatform = Literal["website", "app", "ebook", "ils"]
FamilyPlatform = Literal["partner", "desk", "school", "website", "app"]


def _valid_email(value: str) -> str:
    if not domain.EMAIL.match(value.strip()):
        raise ValueError("not an e-mail address")
    return value.strip()


def _past(value: date) -> date:
    if value > datetime.now(UTC).date():
        raise ValueError("birth date lies in the future")
    return value


Email = Annotated[str, Field(max_length=254), AfterValidator(_valid_email)]
Postcode = Annotated[str, Field(description="Dutch postcode, 1234 AB"), AfterValidator(domain.normalise_postcode)]
BirthDate = Annotated[IsoDate, AfterValidator(_past)]


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

    name: Name = Field(min_length=1, max_length=200)
    email: Email
    phone: str | None = Field(default=None, max_length=20, pattern=r"^\+?[0-9 ()-]{6,20}$")
    birth_date: BirthDate
    postcode: Postcode
    home_library: LibraryCode
    platform: SignUpPlatform = Field(
        default="website", description="website and app are online; desk, kiosk, partner and school are offline"
    )
    source: str | None = Field(default=None, max_length=80, description="e.g. consultatiebureau or a school")
    proposition: str | None = Field(default=None, max_length=80, description="e.g. boekstart")
    registration_id: str | None = Field(default=None, description="completes a registration started before")
    language: Language = Field(default="nl", description="the language messages are sent in: nl or en")


class RegistrationStart(BaseModel):
    model_config = example_body(home_library="oba", platform="website", source="consultatiebureau")

    home_library: LibraryCode
    platform: SignUpPlatform = "website"
    source: str | None = Field(default=None, max_length=80)


class Accepted(BaseModel):
    model_config = example_answer(
        member_id="cc02c620-5a1b-4e0f-9d51-2f3b8f6f0e11", event_id="5b0e7f3c-2d7a-4d0c-9b1e-2f8a0c9d4e11"
    )

    member_id: str
    event_id: str


class RegistrationAccepted(BaseModel):
    model_config = example_answer(registration_id="r-7f3a9c2e")

    registration_id: str


class CardActivation(BaseModel):
    model_config = example_body(library="oba", branch="oosterdok")

    library: LibraryCode
    branch: str | None = Field(default=None, max_length=80)
    platform: Literal["desk", "kiosk"] = "desk"
    time: IsoDateTime | None = Field(default=None, description="when the card was activated; default now")


class AccountLink(BaseModel):
    model_config = example_body(platform="ebook", external_id="eb-449120")

    platform: AccountPlatform
    external_id: str = Field(min_length=1, max_length=200, description="the account's id on that platform")


class LinkedAccount(BaseModel):
    model_config = example_answer(
        member_id="cc02c620-5a1b-4e0f-9d51-2f3b8f6f0e11", platform="ebook", account_ref="acc-3e9f1c0b"
    )

    member_id: str
    platform: str
    account_ref: str = Field(description="pseudonymous reference to the account, as published in events")


class Login(BaseModel):
    model_config = example_body(platform="ebook", external_id="eb-449120", outcome="failed", reason="bad_credentials")

    platform: AccountPlatform
    external_id: str = Field(min_length=1, max_length=200)
    outcome: Literal["succeeded", "failed"]
    reason: LoginFailure | None = Field(default=None, description="required when the login failed")
    time: IsoDateTime | None = None

    @model_validator(mode="after")
    def _reason_with_failure(self) -> Login:
        if self.outcome == "failed" and self.reason is None:
            raise ValueError("reason is required when the login failed")
        return self


class Referral(BaseModel):
    model_config = example_body(proposition="digitaalhuis")

    proposition: Slug = Field(description="the proposition the member is referred to, e.g. digitaalhuis")
    library: LibraryCode | None = Field(default=None, description="where the referral is made; default the member's")
    platform: Literal["desk", "kiosk"] = "desk"


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

    model_config = example_answer(
        member_id="cc02c620-5a1b-4e0f-9d51-2f3b8f6f0e11",
        name="Sanne de Vries",
        email="sanne@example.nl",
        phone="06 1234 5678",
        birth_date="1991-04-12",
        postcode="1034 AB",
        home_library="oba",
        signed_up_at="2026-11-23T10:00:00+00:00",
        channel="online",
        platform="website",
        language="nl",
        card_activated_at=None,
        guardian_id=None,
        accounts=[],
        consents={},
    )

    member_id: str
    name: str
    email: str | None = Field(description="none for a child signed up with a family: messages go to the guardian")
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
    model_config = example_answer(
        member_id="cc02c620-5a1b-4e0f-9d51-2f3b8f6f0e11",
        medium="email",
        recipient="member",
        address="sanne@example.nl",
        name="Sanne de Vries",
    )

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
    model_config = example_answer(
        contacts=[
            {
                "member_id": "cc02c620-5a1b-4e0f-9d51-2f3b8f6f0e11",
                "medium": "email",
                "recipient": "member",
                "address": "sanne@example.nl",
                "name": "Sanne de Vries",
            },
            None,
        ]
    )

    contacts: list[Contact | None] = Field(description="in the order asked; null: unknown, erased or no address")


class IngestResult(BaseModel):
    accepted: list[str]
    rejected: list[dict[str, Any]]


class NewGuardian(BaseModel):
    """A guardian who is not a member yet: signed up in the same request."""

    name: Name = Field(min_length=1, max_length=200)
    email: Email
    phone: str | None = Field(default=None, max_length=20, pattern=r"^\+?[0-9 ()-]{6,20}$")
    birth_date: BirthDate
    postcode: Postcode
    language: Language = Field(default="nl", description="the language messages (for the children too) are sent in")


class Child(BaseModel):
    """A child: no contact details of their own."""

    name: Name = Field(min_length=1, max_length=200)
    birth_date: BirthDate
    postcode: Postcode | None = Field(default=None, description="default: the guardian's")


class ConsentGiven(BaseModel):
    medium: Medium
    purpose: Purpose


class FamilySignUp(BaseModel):
    model_config = example_body(
        guardian={
            "name": "Fatima el Amrani",
            "email": "fatima@example.nl",
            "birth_date": "1994-02-03",
            "postcode": "1034 AB",
            "language": "nl",
        },
        children=[{"name": "Noor el Amrani", "birth_date": "2026-09-01"}],
        home_library="oba",
        platform="partner",
        source="consultatiebureau",
        proposition="boekstart",
        consents=[{"medium": "email", "purpose": "service"}, {"medium": "email", "purpose": "marketing"}],
    )

    guardian_id: str | None = Field(default=None, max_length=64, description="a member already: their id")
    guardian: NewGuardian | None = Field(default=None, description="not a member yet: signed up with the children")
    children: list[Child] = Field(min_length=1, max_length=10)
    home_library: LibraryCode
    platform: FamilyPlatform = Field(default="partner", description="partner and school: the first contact's place")
    source: str | None = Field(
        default=None, max_length=80, description="the first contact: consultatiebureau, kinderopvang, school…"
    )
    proposition: str | None = Field(default=None, max_length=80, description="e.g. boekstart")
    consents: list[ConsentGiven] = Field(default_factory=list, max_length=8, description="given by the guardian")

    @model_validator(mode="after")
    def _one_guardian(self) -> FamilySignUp:
        if (self.guardian_id is None) == (self.guardian is None):
            raise ValueError("give either guardian_id (a member) or guardian (a new member), not both")
        return self


class FamilyAccepted(BaseModel):
    model_config = example_answer(
        guardian_id="cc02c620-5a1b-4e0f-9d51-2f3b8f6f0e11",
        children=["4c1d2a4e-0c59-4f0e-9a55-5d8c1b2f7e10"],
        event_ids=["5b0e7f3c-2d7a-4d0c-9b1e-2f8a0c9d4e11"],
    )

    guardian_id: str
    children: list[str] = Field(description="the children's member ids, in the order given")
    event_ids: list[str]
