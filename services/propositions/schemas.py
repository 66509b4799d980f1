"""propositions' request and reply bodies, the reading views of its entities, and the path and query types its
routes share."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, Path, Query
from pydantic import BaseModel, Field, ValidationInfo, field_validator

from services.propositions import domain
from services.propositions.activities import Session
from services.propositions.catalogue import OfferingDetail
from services.propositions.domain import (
    Library,
    Proposition,
    shown,
)
from services.propositions.usage import LOAN_EXAMPLE, MAX_BATCH
from shared.auth import Principal, require
from shared.events.propositions import (
    ActivityId,
    Branch,
    OfferChannel,
    OfferingId,
    PropositionDescription,
    TargetGroup,
    Theme,
)
from shared.events.types import Channel, IsoDateTime, LibraryCode, MemberId, Name, Platform, Slug, WebOrigin
from shared.schemas import BatchAnswer, example_answer, example_body, example_of

# Reading the catalogue needs a valid key of any role.
ReaderKey = Annotated[Principal, Depends(require())]
SlugPath = Annotated[Slug, Path(description="the proposition's slug, e.g. boekstart")]
OfferingPath = Annotated[OfferingId, Path(description="`<library>.<proposition>`, e.g. oba.boekstart")]
ActivityPath = Annotated[ActivityId, Path(description="e.g. oba.taalcafe.3f9a1c2e7d4b")]
Limit = Annotated[int, Query(ge=1, le=500, description="at most this many items")]
Cursor = Annotated[str | None, Query(max_length=300, description="`next_cursor` of the previous page")]


# ------------------------------------------------------------------------------------------------ models


class PropositionBody(PropositionDescription):
    model_config = example_body(
        name_nl="BoekStart",
        name_en="BookStart",
        description_nl="Voorlezen aan baby's en peuters: een gratis BoekStartkoffertje bij het lidmaatschap.",
        description_en="Reading to babies and toddlers: a free BookStart case with the membership.",
        theme="reading-and-language",
        target_groups=["babies-and-toddlers", "parents"],
        channels="both",
        programme="Kunst van Lezen",
    )


class PropositionView(BaseModel):
    model_config = example_answer(
        slug="boekstart",
        name_nl="BoekStart",
        name_en="BookStart",
        description_nl="Samen lezen met baby's en peuters.",
        description_en="Reading with babies and toddlers.",
        theme="reading-and-language",
        target_groups=["babies-and-toddlers", "parents"],
        channels="both",
        programme="Kunst van Lezen",
        status="active",
        updated_at="2026-11-23T10:00:00+00:00",
    )

    slug: str
    name_nl: str
    name_en: str
    description_nl: str
    description_en: str
    theme: Theme
    target_groups: list[TargetGroup]
    channels: OfferChannel
    programme: str | None
    status: Literal["active", "retired"]
    updated_at: str


class PropositionPage(BaseModel):
    model_config = example_answer(items=[example_of(PropositionView)], next_cursor=None)

    items: list[PropositionView]
    next_cursor: str | None


class LibraryBody(BaseModel):
    model_config = example_body(
        name="OBA Openbare Bibliotheek Amsterdam",
        website="https://www.oba.nl",
        website_origins=["https://www.oba.nl"],
        postcode_areas=["1000-1109"],
        branches=[{"code": "oosterdok", "name": "OBA Oosterdok"}, {"code": "banne", "name": "OBA Banne"}],
    )

    name: Name = Field(min_length=1, max_length=120)
    website: str | None = Field(default=None, max_length=300, pattern=r"^https?://")
    website_origins: list[WebOrigin] = Field(
        default_factory=list, max_length=20, description="the origins its web tracker posts from (CORS)"
    )
    postcode_areas: list[str] = Field(
        default_factory=list, max_length=500, description="4-digit areas (1034) or ranges (1000-1109) it serves"
    )
    branches: list[Branch] = Field(default_factory=list, max_length=200)

    @field_validator("postcode_areas")
    @classmethod
    def _areas(cls, value: list[str]) -> list[str]:
        for text in value:
            domain.area_range(text)  # ValueError names what is wrong
        return value

    @field_validator("branches")
    @classmethod
    def _unique_branches(cls, value: list[Branch]) -> list[Branch]:
        codes = [b.code for b in value]
        repeated = sorted({c for c in codes if codes.count(c) > 1})
        if repeated:
            raise ValueError(f"branch codes appear twice: {', '.join(repeated)}")
        return value


class LibraryView(BaseModel):
    model_config = example_answer(
        library="oba",
        name="OBA Openbare Bibliotheek Amsterdam",
        website="https://www.oba.nl",
        website_origins=["https://www.oba.nl"],
        postcode_areas=["1000-1109"],
        branches=[{"code": "oosterdok", "name": "OBA Oosterdok"}],
        retired=False,
        updated_at="2026-11-23T10:00:00+00:00",
    )

    library: str
    name: str
    website: str | None
    website_origins: list[str]
    postcode_areas: list[str]
    branches: list[Branch]
    retired: bool = Field(description="retired by the network: kept readable, offers nothing, named by nothing new")
    updated_at: str


class LibraryPage(BaseModel):
    model_config = example_answer(items=[example_of(LibraryView)], next_cursor=None)

    items: list[LibraryView]
    next_cursor: str | None


class OfferingBody(BaseModel):
    model_config = example_body(
        local_name="BoekStart in de OBA",
        branches=["banne", "waterlandplein"],
        channels=["offline", "online"],
        url="https://www.oba.nl/boekstart",
    )

    local_name: Name | None = Field(default=None, min_length=1, max_length=120, description="none: the national name")
    branches: list[Slug] = Field(default_factory=list, max_length=200, description="branch codes of the library")
    channels: list[Channel] = Field(min_length=1, max_length=2)
    url: str | None = Field(default=None, max_length=300, pattern=r"^https?://")


class BranchView(BaseModel):
    code: str
    name: str


class OfferingView(BaseModel):
    model_config = example_answer(
        offering_id="oba.boekstart",
        library="oba",
        library_name="OBA Openbare Bibliotheek Amsterdam",
        proposition="boekstart",
        proposition_name_nl="BoekStart",
        proposition_name_en="BookStart",
        name="BoekStart in de OBA",
        local_name="BoekStart in de OBA",
        branches=[{"code": "oosterdok", "name": "OBA Oosterdok"}],
        channels=["offline", "online"],
        url="https://www.oba.nl/boekstart",
        active=True,
        available=True,
        updated_at="2026-11-23T10:00:00+00:00",
    )

    offering_id: str
    library: str
    library_name: str | None
    proposition: str
    proposition_name_nl: str | None
    proposition_name_en: str | None
    name: str = Field(description="what the library calls it: the local name, else the national name")
    local_name: str | None
    branches: list[BranchView]
    channels: list[Channel]
    url: str | None
    active: bool = Field(description="false: the library withdrew it")
    available: bool = Field(description="active, and neither the proposition nor the library is retired")
    updated_at: str


class OfferingPage(BaseModel):
    model_config = example_answer(items=[example_of(OfferingView)], next_cursor=None)

    items: list[OfferingView]
    next_cursor: str | None


class Changed(BaseModel):
    event_id: str | None = Field(description="the catalogue event published; null when nothing changed")
    changed: bool


class PropositionChanged(Changed):
    model_config = example_answer(slug="boekstart", event_id="5b0e7f3c-2d7a-4d0c-9b1e-2f8a0c9d4e11", changed=True)

    slug: str


class LibraryChange(Changed):
    model_config = example_answer(library="oba", event_id="5b0e7f3c-2d7a-4d0c-9b1e-2f8a0c9d4e11", changed=True)

    library: str


class OfferingChange(Changed):
    model_config = example_answer(
        offering_id="oba.boekstart", event_id="5b0e7f3c-2d7a-4d0c-9b1e-2f8a0c9d4e11", changed=True
    )

    offering_id: str


class ActivityChange(Changed):
    model_config = example_answer(
        activity_id="oba.taalcafe.de2a68bd1aa8", event_id="5b0e7f3c-2d7a-4d0c-9b1e-2f8a0c9d4e11", changed=True
    )

    activity_id: str


class ScheduleBody(BaseModel):
    model_config = example_body(
        proposition="taalcafe",
        library="oba",
        branch="banne",
        title="Taalcafé Noord",
        starts_at="2026-12-03T14:00:00+01:00",
        ends_at="2026-12-03T16:00:00+01:00",
        capacity=12,
    )

    proposition: Slug
    library: LibraryCode
    branch: Slug
    title: Name | None = Field(default=None, max_length=160)
    starts_at: IsoDateTime
    ends_at: IsoDateTime
    capacity: int = Field(ge=1, le=10_000)

    @field_validator("ends_at")
    @classmethod
    def _ends_after_start(cls, value: datetime, info: ValidationInfo) -> datetime:
        starts_at = info.data.get("starts_at")
        if starts_at is not None and value <= starts_at:
            raise ValueError("must lie after starts_at")
        return value


class ActivityView(BaseModel):
    model_config = example_answer(
        activity_id="oba.taalcafe.de2a68bd1aa8",
        proposition="taalcafe",
        library="oba",
        branch="banne",
        title="Taalcafé",
        starts_at="2026-12-08T14:00:00+01:00",
        ends_at="2026-12-08T16:00:00+01:00",
        capacity=12,
        registered=3,
        places_left=9,
        status="scheduled",
        updated_at="2026-11-23T10:00:00+00:00",
    )

    activity_id: str
    proposition: str
    library: str
    branch: str
    title: str | None
    starts_at: str
    ends_at: str
    capacity: int
    registered: int
    places_left: int
    status: Literal["scheduled", "cancelled"]
    updated_at: str


class ActivityPage(BaseModel):
    model_config = example_answer(items=[example_of(ActivityView)], next_cursor=None)

    items: list[ActivityView]
    next_cursor: str | None


class Participation(BaseModel):
    model_config = example_body(member_id="cc02c620-5a1b-4e0f-9d51-2f3b8f6f0e11", platform="website", channel="online")

    member_id: MemberId
    platform: Platform = Field(default="website", description="where the member did it: website, app, desk, kiosk…")
    channel: Channel | None = Field(default=None, description="default: online for website, app and ebook")
    time: IsoDateTime | None = Field(default=None, description="when; default now")


class Registered(BaseModel):
    model_config = example_answer(
        activity_id="oba.taalcafe.de2a68bd1aa8",
        member_id="cc02c620-5a1b-4e0f-9d51-2f3b8f6f0e11",
        event_id="5b0e7f3c-2d7a-4d0c-9b1e-2f8a0c9d4e11",
    )

    activity_id: str
    member_id: str
    event_id: str


class Attended(Registered):
    model_config = example_answer(
        activity_id="oba.taalcafe.de2a68bd1aa8",
        member_id="cc02c620-5a1b-4e0f-9d51-2f3b8f6f0e11",
        event_id="5b0e7f3c-2d7a-4d0c-9b1e-2f8a0c9d4e11",
        walk_in=False,
    )

    walk_in: bool


class LoanAccepted(BaseModel):
    model_config = example_answer(event_id="ils-oba-20261123-000187")

    event_id: str


class LoanBatch(BaseModel):
    model_config = example_body(loans=[LOAN_EXAMPLE])

    loans: list[Any] = Field(
        min_length=1, max_length=MAX_BATCH, description=f"up to {MAX_BATCH:,} loan reports (see LoanReport)"
    )


BatchReply = BatchAnswer


# ------------------------------------------------------------------------------------------------- views


def proposition_view(proposition: Proposition) -> PropositionView:
    return PropositionView(
        **proposition.data.model_dump(),
        status="retired" if proposition.retired else "active",
        updated_at=shown(proposition.updated_at),
    )


def library_view(library: Library) -> LibraryView:
    data = library.data
    return LibraryView(
        library=data.library,
        name=data.name,
        website=data.website,
        website_origins=data.website_origins,
        postcode_areas=data.postcode_areas,
        branches=data.branches,
        retired=library.retired,
        updated_at=shown(library.updated_at),
    )


def offering_view(detail: OfferingDetail) -> OfferingView:
    data, library, proposition = detail.offering.data, detail.library, detail.proposition
    names = library.branch_names if library else {}
    national = proposition.data.name_nl if proposition else data.proposition
    return OfferingView(
        offering_id=data.offering_id,
        library=data.library,
        library_name=library.data.name if library else None,
        proposition=data.proposition,
        proposition_name_nl=proposition.data.name_nl if proposition else None,
        proposition_name_en=proposition.data.name_en if proposition else None,
        name=data.local_name or national,
        local_name=data.local_name,
        branches=[BranchView(code=b, name=names.get(b, b)) for b in data.branches],
        channels=data.channels,
        url=data.url,
        active=data.active,
        available=domain.offering_available(detail.offering, proposition, library),
        updated_at=shown(detail.offering.updated_at),
    )


def activity_view(session: Session) -> ActivityView:
    data = session.activity.data
    return ActivityView(
        activity_id=data.activity_id,
        proposition=data.proposition,
        library=data.library,
        branch=data.branch,
        title=data.title,
        starts_at=shown(data.starts_at),
        ends_at=shown(data.ends_at),
        capacity=data.capacity,
        registered=session.registered,
        places_left=session.places_left,
        status="cancelled" if session.activity.cancelled else "scheduled",
        updated_at=shown(session.activity.updated_at),
    )
