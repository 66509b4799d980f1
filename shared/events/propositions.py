"""Events propositions publishes.

`propositions.catalog.v1` is compacted: the record key (the subject) names one catalogue entity, and its latest
record is that entity's whole current state, so a consumer reading from the start holds the current catalogue.
Subjects: a proposition's slug (`boekstart`), an offering id (`oba.boekstart`), an activity id
(`oba.boekstart.<token>`) and `library:<code>` for a library organisation; the dots and the colon keep the four
kinds of key apart. A retirement, withdrawal or cancellation is a record too (never a tombstone), and it still holds
the entity's last state.

`propositions.usage.v1` carries loans and activity participation; subject = member_id.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from shared.events.envelope import EventData
from shared.events.registry import event
from shared.events.types import Channel, LibraryCode, Name, Slug, WebOrigin
from shared.topics import CATALOG, USAGE

OfferChannel = Literal["online", "offline", "both"]
Theme = Literal["reading-and-language", "digital-skills", "lifelong-learning", "social-participation"]
TargetGroup = Literal[
    "babies-and-toddlers",  # 0-3
    "children",  # 4-11
    "teenagers",  # 12-17
    "adults",
    "low-literate-adults",
    "seniors",
    "parents",
    "newcomers",
    "people-with-a-reading-disability",
    "schools",
    "professionals",
]
# `oba.boekstart`: the library offering a proposition.
OfferingId = Annotated[
    str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{1,39}\.[a-z0-9][a-z0-9-]{0,79}$", max_length=120)
]
# `oba.boekstart.3f9a1c2e7d4b`: a session of an offering.
ActivityId = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z][a-z0-9-]{1,39}\.[a-z0-9][a-z0-9-]{0,79}\.[a-z0-9]{6,32}$", max_length=160),
]
# A postcode area (`1034`) or an inclusive range of them (`1000-1109`).
AreaRange = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{3}(-[1-9][0-9]{3})?$")]


# ------------------------------------------------------------------------------------------ catalogue


class PropositionDescription(BaseModel):
    """What a proposition is, in both languages: the body of propositions' `PUT /v1/propositions/{slug}` and, with
    its slug, the catalogue's record of it (one set of field rules for both)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name_nl: Name = Field(min_length=1, max_length=120)
    name_en: Name = Field(min_length=1, max_length=120)
    description_nl: str = Field(default="", max_length=2000)
    description_en: str = Field(default="", max_length=2000)
    theme: Theme
    target_groups: list[TargetGroup] = Field(min_length=1)
    channels: OfferChannel = Field(description="online, offline or both")
    programme: str | None = Field(default=None, max_length=120, description="the national programme, if any")


class PropositionState(EventData, PropositionDescription):
    """A canonical proposition of the network, the same in every library."""

    slug: Slug


@event("catalog.proposition_published.v1", CATALOG)
class PropositionPublished(PropositionState):
    """A proposition was added to the catalogue or changed: its whole current description."""


@event("catalog.proposition_retired.v1", CATALOG)
class PropositionRetired(PropositionState):
    """A proposition is no longer offered in the network; the record keeps its last description."""


class Branch(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    code: Slug
    name: Name = Field(min_length=1, max_length=120)
    opening_hours: str | None = Field(
        default=None, max_length=200, description="as members read it, e.g. 'ma-vr 10.00-20.00, za 10.00-17.00'"
    )


@event("catalog.library_changed.v1", CATALOG)
class LibraryChanged(EventData):
    """A library organisation: its branches and the postcode areas it serves (subject `library:<code>`)."""

    library: LibraryCode
    name: Name = Field(min_length=1, max_length=120)
    website: str | None = Field(default=None, max_length=300)
    website_origins: list[WebOrigin] = Field(
        default_factory=list, max_length=20, description="where the library's web tracker may post from (CORS)"
    )
    postcode_areas: list[AreaRange] = Field(default_factory=list)
    branches: list[Branch] = Field(default_factory=list)
    retired: bool = Field(
        default=False,
        description="retired by the network: no new members, events, campaigns or keys name it, its offerings are "
        "not offered and its areas are free; what happened before stays. Put again to restore it.",
    )


@event("catalog.offering_changed.v1", CATALOG)
class OfferingChanged(EventData):
    """Which library offers a proposition, under what local name, at which branches and through which channels.

    `active: false` says the library withdrew it; the record keeps what it was."""

    offering_id: OfferingId
    library: LibraryCode
    proposition: Slug
    local_name: Name | None = Field(default=None, max_length=120, description="none: the national name")
    branches: list[Slug] = Field(default_factory=list)
    channels: list[Channel] = Field(min_length=1)
    url: str | None = Field(default=None, max_length=300)
    active: bool = True


class ActivityState(EventData):
    """A scheduled session of a proposition at a branch."""

    activity_id: ActivityId
    proposition: Slug
    library: LibraryCode
    branch: Slug
    title: Name | None = Field(default=None, max_length=160)
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    capacity: int = Field(ge=1, le=10_000)


@event("catalog.activity_scheduled.v1", CATALOG)
class ActivityScheduled(ActivityState):
    """A session was scheduled."""


@event("catalog.activity_cancelled.v1", CATALOG)
class ActivityCancelled(ActivityState):
    """A session was cancelled; the record keeps what it was."""


# ---------------------------------------------------------------------------------------------- usage

ItemFormat = Literal["book", "ebook", "audiobook", "other"]


@event("usage.loan_reserved.v1", USAGE)
class LoanReserved(EventData):
    item_id: str = Field(min_length=1, max_length=120)
    reservation_id: str = Field(min_length=1, max_length=120)
    pickup_branch: Slug | None = None
    format: ItemFormat = "book"


@event("usage.loan_borrowed.v1", USAGE)
class LoanBorrowed(EventData):
    item_id: str = Field(min_length=1, max_length=120)
    loan_id: str = Field(min_length=1, max_length=120)
    format: ItemFormat = "book"
    branch: Slug | None = None
    reservation_id: str | None = Field(default=None, max_length=120, description="the reservation it collects")


@event("usage.loan_returned.v1", USAGE)
class LoanReturned(EventData):
    item_id: str = Field(min_length=1, max_length=120)
    loan_id: str = Field(min_length=1, max_length=120)
    format: ItemFormat = "book"
    branch: Slug | None = None


@event("usage.activity_registered.v1", USAGE)
class ActivityRegistered(EventData):
    activity_id: ActivityId
    proposition: Slug


@event("usage.activity_attended.v1", USAGE)
class ActivityAttended(EventData):
    activity_id: ActivityId
    proposition: Slug
    walk_in: bool = Field(default=False, description="attended without having registered (set by propositions)")
