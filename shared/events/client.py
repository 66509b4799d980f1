"""Events a library's website or app sends from the visitor's browser (clients/web, the tracker), on
`identity.members.v1` through identity's ingest.

subject = the visitor: a first-party random id the tracker keeps on the library's own site (no third-party cookie),
or the member's id once the library's server linked that visitor to a member after login. Nothing here names a
person: a page's path without query or fragment, a proposition's slug, a search's scope and result count (never the
words searched for, which may be a name), the platform a visitor is sent on to.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, StringConstraints

from shared.events.envelope import EventData
from shared.events.registry import event
from shared.events.types import Platform, Slug
from shared.topics import MEMBERS

# The tracker's first-party visitor id: `v-` and a random UUID (never a member's id, which is a bare UUID).
VISITOR = re.compile(r"^v-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
VisitorId = Annotated[str, StringConstraints(pattern=VISITOR.pattern)]

# A site path as the tracker sends it: `/boekstart`, no query string or fragment (they may carry personal data).
SitePath = Annotated[str, StringConstraints(pattern=r"^/[^?#\s]*$", max_length=300)]


@event("client.page_viewed.v1", MEMBERS)
class PageViewed(EventData):
    """The visitor opened a page of the library's site."""

    path: SitePath


@event("client.proposition_viewed.v1", MEMBERS)
class PropositionViewed(EventData):
    """The visitor looked at a proposition (BoekStart, Klik & Tik…) on the library's site."""

    proposition: Slug
    path: SitePath | None = None


@event("client.search_performed.v1", MEMBERS)
class SearchPerformed(EventData):
    """The visitor searched the site; the words searched for are not sent."""

    scope: Slug = Field(description="what was searched: catalogue, activities, site…")
    results: int = Field(ge=0, le=10_000_000)


@event("client.platform_handoff.v1", MEMBERS)
class PlatformHandoff(EventData):
    """The visitor was sent on to another platform of the network, e.g. "go to the e-book platform"."""

    to_platform: Platform
    proposition: Slug | None = None


CLIENT_EVENTS: tuple[type[EventData], ...] = (PageViewed, PropositionViewed, SearchPerformed, PlatformHandoff)
CLIENT_TYPES: frozenset[str] = frozenset(model.event_type for model in CLIENT_EVENTS)
