"""Events propositions publishes: the compacted catalogue (subject = proposition slug, offering id or
activity id) and usage (subject = member_id)."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from shared.events.envelope import EventData
from shared.events.registry import event
from shared.events.types import Channel, LibraryCode, Slug
from shared.topics import CATALOG, USAGE

OfferChannel = Literal["online", "offline", "both"]


@event("catalog.proposition_published.v1", CATALOG)
class PropositionPublished(EventData):
    slug: Slug
    name_nl: str = Field(min_length=1, max_length=120)
    name_en: str = Field(min_length=1, max_length=120)
    description_nl: str = Field(default="", max_length=2000)
    theme: str = Field(max_length=80)
    target_groups: list[str] = Field(min_length=1)
    channels: OfferChannel
    programme: str | None = Field(default=None, max_length=120)


@event("catalog.proposition_retired.v1", CATALOG)
class PropositionRetired(EventData):
    slug: Slug


@event("catalog.offering_changed.v1", CATALOG)
class OfferingChanged(EventData):
    offering_id: str = Field(min_length=1, max_length=120)
    library: LibraryCode
    proposition: Slug
    local_name: str | None = Field(default=None, max_length=120)
    branches: list[str] = Field(default_factory=list)
    channels: list[Channel] = Field(default_factory=list)
    active: bool = True


@event("catalog.activity_scheduled.v1", CATALOG)
class ActivityScheduled(EventData):
    activity_id: str = Field(min_length=1, max_length=120)
    proposition: Slug
    library: LibraryCode
    branch: str = Field(max_length=80)
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    capacity: int = Field(ge=1)


ItemFormat = Literal["book", "ebook", "audiobook", "other"]


@event("usage.loan_reserved.v1", USAGE)
class LoanReserved(EventData):
    item_id: str = Field(min_length=1, max_length=120)
    reservation_id: str = Field(min_length=1, max_length=120)
    pickup_branch: str | None = Field(default=None, max_length=80)
    format: ItemFormat = "book"


@event("usage.loan_borrowed.v1", USAGE)
class LoanBorrowed(EventData):
    item_id: str = Field(min_length=1, max_length=120)
    loan_id: str = Field(min_length=1, max_length=120)
    format: ItemFormat = "book"


@event("usage.loan_returned.v1", USAGE)
class LoanReturned(EventData):
    item_id: str = Field(min_length=1, max_length=120)
    loan_id: str = Field(min_length=1, max_length=120)


@event("usage.activity_registered.v1", USAGE)
class ActivityRegistered(EventData):
    activity_id: str = Field(min_length=1, max_length=120)
    proposition: Slug


@event("usage.activity_attended.v1", USAGE)
class ActivityAttended(EventData):
    activity_id: str = Field(min_length=1, max_length=120)
    proposition: Slug
