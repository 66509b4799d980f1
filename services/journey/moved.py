"""journey's report and dashboard URLs since the reports moved to the analytics service (docs/reports.md): each
answers 307 Temporary Redirect to the same path and query there, so links, bookmarks and scripts keep working
(a 307 keeps the method and the Authorization header goes along to the new host only if the client allows it:
curl needs `--location-trusted`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from shared.settings import Settings

MOVED = (
    "/v1/reports/{report}",
    "/v1/members/{member_id}/timeline",
    "/pages/dashboard",
    "/pages/dashboard/{download}",
)


def moved_router(settings: Settings) -> APIRouter:
    router = APIRouter(tags=["reports"])
    analytics = settings.analytics_url.rstrip("/")

    async def to_analytics(request: Request) -> RedirectResponse:
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(f"{analytics}{request.url.path}{query}", status_code=307)

    for path in MOVED:
        router.add_api_route(
            path,
            to_analytics,
            methods=["GET"],
            summary="Moved to the analytics service: 307 to the same path and query there",
            responses={307: {"description": "the same request at the analytics service (KLANTREIS_ANALYTICS_URL)"}},
            status_code=307,
            response_class=RedirectResponse,  # no body: the OpenAPI shows the 307 without content
        )
    return router
