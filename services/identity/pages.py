"""The desk page for front-office staff (role member-data, library scope): find a member, see their journey and
open frictions (analytics), see what their library offers for their situation (propositions), and refer them
onward (`POST /v1/members/{id}/referrals`, the same operation).

The journey and the offerings are asked of analytics and propositions over HTTP with the visitor's own key, so
the page shows what their APIs answer, in the same scope; when one does not answer, the page says so and still
shows the rest. (No `from __future__ import annotations`: FastAPI reads the routes' `Annotated` dependencies.)
"""

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from services.identity import domain
from services.identity.members import Members
from shared.events.types import age_band
from shared.idempotency import Ids
from shared.service import ServiceParts
from shared.web.site import Section, Site, Visitor

TEMPLATES = Path(__file__).parent / "templates"
# Not in the shared navigation (yet): the desk is reached by its address, by keys holding member-data.
DESK = Section("desk", "identity", "/pages/desk", ("member-data",))
# Who a proposition is for, by the member's age band; `basic_skills` adds the programmes for people who struggle
# with reading, writing, numbers or computers.
GROUPS_BY_BAND = {
    "0-3": {"babies-and-toddlers", "parents"},
    "4-11": {"children"},
    "12-17": {"teenagers"},
    "18-64": {"adults"},
    "65+": {"seniors", "adults"},
}
BASIC_SKILLS_GROUPS = {"low-literate-adults"}
BASIC_SKILLS_THEMES = {"digital-skills"}


def fits(proposition: dict[str, Any], band: str, basic_skills: bool) -> bool:
    """Whether a proposition (as `GET /v1/propositions` shows it) fits the member: a basic-skills programme (for
    low-literate adults, or about digital skills) when they struggle with reading, writing, numbers or computers;
    otherwise one for their age band."""
    groups = set(proposition.get("target_groups") or [])
    if groups & BASIC_SKILLS_GROUPS or proposition.get("theme") in BASIC_SKILLS_THEMES:
        return basic_skills
    return bool(groups & GROUPS_BY_BAND.get(band, set()))


def desk_router(parts: ServiceParts, members: Members) -> APIRouter:
    site = Site("identity", parts, TEMPLATES)
    Desk = Annotated[Visitor, Depends(site.guard(DESK))]

    async def ask(visitor: Visitor, service: str, path: str) -> Any:
        key = visitor.session.api_key if visitor.session else None
        async with httpx.AsyncClient(base_url=site.base_url(service), timeout=5) as client:
            response = await client.get(path, headers={"Authorization": f"Bearer {key}"})
        return response.json() if response.status_code == 200 else None

    @site.router.get("/pages/desk")
    async def desk(
        request: Request, visitor: Desk, q: str = "", basic_skills: bool = False, referred: str = ""
    ) -> Response:
        assert visitor.principal is not None
        found = await members.find(q, visitor.principal) if q else []
        member = None
        if len(found) == 1:
            member_id, record = found[0]
            band = age_band(record.birth_date, datetime.now(UTC).date())
            journey, offerings, unavailable = None, [], []
            try:
                journey = await ask(visitor, "analytics", f"/v1/members/{member_id}/timeline")
            except httpx.HTTPError:
                unavailable.append("analytics")
            try:
                offered = await ask(
                    visitor, "propositions", f"/v1/offerings?{urlencode({'library': record.home_library})}"
                )
                catalogue = await ask(visitor, "propositions", "/v1/propositions")
                about = {p["slug"]: p for p in (catalogue or {}).get("items", [])}
                offerings = [
                    o
                    for o in (offered or {}).get("items", [])
                    if o.get("available") and fits(about.get(o["proposition"], {}), band, basic_skills)
                ]
            except httpx.HTTPError:
                unavailable.append("propositions")
            member = {
                "id": member_id,
                "record": record,
                "band": band,
                "minor": domain.is_minor(record.birth_date, datetime.now(UTC).date()),
                "journey": journey,
                "offerings": offerings,
                "unavailable": unavailable,
            }
        return site.render(
            request, visitor, "desk.html", q=q, found=found, member=member, basic_skills=basic_skills, referred=referred
        )

    @site.router.post("/pages/desk/referrals")
    async def refer(request: Request, visitor: Desk) -> Response:
        assert visitor.principal is not None
        form = await site.form(request, visitor)
        member_id, proposition = form.get("member_id"), form.get("proposition")
        ids = Ids(None)
        await members.refer(member_id, proposition, None, "desk", visitor.principal, ids)
        return RedirectResponse(f"/pages/desk?{urlencode({'q': member_id, 'referred': proposition})}", 303)

    return site.router
