"""The catalogue's pages: which propositions the network has and which library offers them where.

Read in-process from `Catalogue` and shown through the API's own views (`offering_view`, `proposition_view`), so
a page shows what `GET /v1/offerings` answers. A key of one library sees that library's offerings only.
(No `from __future__ import annotations`: FastAPI reads the routes' `Annotated` dependencies, defined locally.)
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, cast, get_args

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from services.propositions.catalogue import Catalogue
from services.propositions.domain import OfferingQuery, PropositionQuery, library_serving
from services.propositions.schemas import offering_view, proposition_view
from shared.events.propositions import TargetGroup, Theme
from shared.events.types import Channel
from shared.service import ServiceParts
from shared.web.site import CATALOGUE, Site, Visitor

TEMPLATES = Path(__file__).parent / "templates"
THEMES: tuple[str, ...] = get_args(Theme)
TARGET_GROUPS: tuple[str, ...] = get_args(TargetGroup)
CHANNELS: tuple[str, ...] = get_args(Channel)
_AREA = re.compile(r"^[1-9][0-9]{3}$")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,79}$")


@dataclass(frozen=True)
class CatalogueFilters:
    """What the visitor asked for, checked: a value that is not one of the choices is an error on that field."""

    postcode_area: str = ""
    proposition: str = ""
    theme: str = ""
    target_group: str = ""
    channel: str = ""
    errors: dict[str, str] = field(default_factory=dict)

    def offering_query(self, library: str | None) -> OfferingQuery:
        return OfferingQuery(
            proposition=self.proposition or None,
            library=library,
            theme=cast(Theme | None, self.theme or None),
            target_group=cast(TargetGroup | None, self.target_group or None),
            channel=cast(Channel | None, self.channel or None),
            postcode_area=self.postcode_area or None,
        )

    def proposition_query(self) -> PropositionQuery:
        return PropositionQuery(
            theme=cast(Theme | None, self.theme or None),
            target_group=cast(TargetGroup | None, self.target_group or None),
            channel=cast(Channel | None, self.channel or None),
        )


def catalogue_filters(
    postcode_area: str, proposition: str, theme: str, target_group: str, channel: str
) -> CatalogueFilters:
    """The filters of the catalogue page; error keys (catalogue.errors.*) name what is wrong, per field."""
    postcode_area = postcode_area.replace(" ", "")[:4] if postcode_area.strip() else ""
    errors: dict[str, str] = {}
    if postcode_area and not _AREA.match(postcode_area):
        errors["postcode_area"] = "catalogue.errors.postcode_area"
    if proposition and not _SLUG.match(proposition):
        errors["proposition"] = "catalogue.errors.choice"
    for name, value, allowed in (
        ("theme", theme, THEMES),
        ("target_group", target_group, TARGET_GROUPS),
        ("channel", channel, CHANNELS),
    ):
        if value and value not in allowed:
            errors[name] = "catalogue.errors.choice"
    return CatalogueFilters(
        postcode_area="" if "postcode_area" in errors else postcode_area,
        proposition="" if "proposition" in errors else proposition,
        theme="" if "theme" in errors else theme,
        target_group="" if "target_group" in errors else target_group,
        channel="" if "channel" in errors else channel,
        errors=errors,
    )


def pages_router(parts: ServiceParts, catalogue: Catalogue) -> APIRouter:
    site = Site("propositions", parts, TEMPLATES)
    router = site.router
    Reader = Annotated[Visitor, Depends(site.guard(CATALOGUE))]

    @router.get("/")
    async def root() -> Response:
        return RedirectResponse(CATALOGUE.path, 303)

    @router.get("/pages/catalogue")
    async def catalogue_page(
        request: Request,
        visitor: Reader,
        postcode_area: str = "",
        proposition: str = "",
        theme: str = "",
        target_group: str = "",
        channel: str = "",
    ) -> Response:
        filters = catalogue_filters(postcode_area, proposition, theme, target_group, channel)
        propositions = await catalogue.propositions()
        libraries = await catalogue.libraries()
        found = await catalogue.find_offerings(filters.offering_query(visitor.library))
        serving = library_serving(libraries.values(), filters.postcode_area) if filters.postcode_area else None
        # A library's key is told whether its own library serves the area, never which other one does.
        if serving is not None and visitor.library is not None and serving.code != visitor.library:
            serving_name: str | None = None
            elsewhere = True
        else:
            serving_name = serving.data.name if serving else None
            elsewhere = False
        offered = await catalogue.find_offerings(OfferingQuery(library=visitor.library))
        libraries_per_proposition: dict[str, set[str]] = {}
        for detail in offered:
            libraries_per_proposition.setdefault(detail.offering.data.proposition, set()).add(
                detail.offering.data.library
            )
        shown = [
            proposition_view(p)
            for p in await catalogue.find_propositions(filters.proposition_query())
            if not filters.proposition or p.slug == filters.proposition
        ]
        return site.render(
            request,
            visitor,
            "catalogue.html",
            filters=filters,
            errors={name: visitor.t(key) for name, key in filters.errors.items()},
            offerings=sorted((offering_view(d) for d in found), key=lambda o: (o.name.casefold(), o.library)),
            propositions=shown,
            proposition_choices=sorted(
                (
                    (p.slug, p.data.name_en if visitor.t.language == "en" else p.data.name_nl)
                    for p in propositions.values()
                ),
                key=lambda choice: choice[1].casefold(),
            ),
            offered_by={slug: len(codes) for slug, codes in libraries_per_proposition.items()},
            serving_name=serving_name,
            elsewhere=elsewhere,
            themes=THEMES,
            target_groups=TARGET_GROUPS,
            channels=CHANNELS,
        )

    @router.get("/pages/catalogue/{slug}")
    async def proposition_page(request: Request, slug: str, visitor: Reader) -> Response:
        proposition = await catalogue.proposition(slug)  # 404 page when unknown
        found = await catalogue.find_offerings(OfferingQuery(proposition=slug, library=visitor.library, status="all"))
        return site.render(
            request,
            visitor,
            "proposition.html",
            proposition=proposition_view(proposition),
            offerings=[offering_view(d) for d in sorted(found, key=lambda d: d.offering.data.library)],
        )

    return router
