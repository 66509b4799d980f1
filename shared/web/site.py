"""The pages of one service: templates, the signed-in visitor, sign-in and sign-out, language, static files.

A service builds a `Site` and adds its pages to `site.router` (everything under `/pages`, left out of the
OpenAPI document):

    site = Site("notifications", parts, Path(__file__).parent / "templates")

    @site.router.get("/pages/campaigns")
    async def campaigns(request: Request, visitor: Annotated[Visitor, Depends(site.guard(CAMPAIGNS))]) -> Response:
        return site.render(request, visitor, "campaigns.html", campaigns=...)

`guard` sends a visitor without a session to the sign-in form (and back afterwards), and answers a key without
the section's role with a 403 page. The key's library scope is the page's business: `visitor.library` is None
for a key of the whole network. A `Problem` raised by the domain (404, 403, 409) becomes a page with its status.
Form posts are read with `site.form`, which checks the session's CSRF token.
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlparse

import jinja2
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute

from shared.auth import NETWORK, Principal, Role
from shared.problems import Problem
from shared.service import ServiceParts
from shared.web.i18n import LANGUAGES, Translator, language_of
from shared.web.session import COOKIE, Session, Sessions

_HERE = Path(__file__).parent
MAX_FORM_BYTES = 256 * 1024


@dataclass(frozen=True)
class Section:
    """A part of the site in the navigation, served by one service, for keys holding one of `roles` (none: any)."""

    name: str
    service: str
    path: str
    roles: tuple[Role, ...] = ()


DASHBOARD = Section("dashboard", "analytics", "/pages/dashboard", ("analyst",))
CAMPAIGNS = Section("campaigns", "notifications", "/pages/campaigns", ("marketing",))
CATALOGUE = Section("catalogue", "propositions", "/pages/catalogue")
SECTIONS: tuple[Section, ...] = (DASHBOARD, CAMPAIGNS, CATALOGUE)


@dataclass(frozen=True)
class Visitor:
    session: Session | None
    principal: Principal | None
    t: Translator

    @property
    def signed_in(self) -> bool:
        return self.principal is not None

    @property
    def library(self) -> str | None:
        """The one library the key is scoped to; None for a key of the whole network (or nobody signed in)."""
        if self.principal is None or self.principal.library == NETWORK:
            return None
        return self.principal.library

    def may(self, section: Section) -> bool:
        return self.principal is not None and (
            not section.roles or any(self.principal.has(role) for role in section.roles)
        )

    @property
    def csrf(self) -> str:
        return self.session.csrf if self.session else ""


class SignInNeeded(Exception):
    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class Form:
    """A posted form (application/x-www-form-urlencoded), whitespace trimmed."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self._pairs = [(name, value.strip()) for name, value in pairs]

    def get(self, name: str, default: str = "") -> str:
        return next((value for key, value in self._pairs if key == name), default)

    def all(self, name: str) -> list[str]:
        return [value for key, value in self._pairs if key == name and value]

    def items(self) -> list[tuple[str, str]]:
        return list(self._pairs)


def safe_next(path: str | None, default: str) -> str:
    """Only a path of the pages on this host: never an address elsewhere (no open redirect)."""
    if not path or not path.startswith("/pages") or path.startswith("//") or "\\" in path:
        return default
    parsed = urlparse(path)
    return default if parsed.scheme or parsed.netloc else path


def _options(t: Translator, values: Sequence[str], prefix: str, blank: str | None) -> list[tuple[str, str]]:
    """Choices of a select: each value with its word from the catalogue (`prefix` + value), after a blank one."""
    chosen = [(value, t.get(prefix + value, value)) for value in values]
    return [("", blank), *chosen] if blank is not None else chosen


def _origin(url: str) -> str:
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.netloc}"


class Site:
    def __init__(self, service: str, parts: ServiceParts, templates: Path) -> None:
        self.service = service
        self._settings = parts.settings
        self._keyring = parts.keyring
        self.sessions = Sessions(parts.redis, parts.settings)
        self._env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(
                [jinja2.FileSystemLoader(templates), jinja2.FileSystemLoader(_HERE / "templates")]
            ),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._static = {path.name: path.read_bytes() for path in sorted((_HERE / "static").iterdir()) if path.is_file()}
        self._static_version = hashlib.sha256(b"".join(self._static.values())).hexdigest()[:10]
        origins = sorted({_origin(self.base_url(s.service)) for s in SECTIONS})
        # Forms may lead (by redirect after sign-in) to the other services' pages; nothing else is allowed.
        self._security_headers = {
            "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
            f"connect-src 'self'; form-action 'self' {' '.join(origins)}; base-uri 'none'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store",
        }
        self.router = APIRouter(route_class=self._route_class(), include_in_schema=False)
        self._add_common_routes()

    # ------------------------------------------------------------------------------------------ urls

    def base_url(self, service: str) -> str:
        return str(getattr(self._settings, f"{service}_url")).rstrip("/")

    def url(self, section: Section) -> str:
        """Relative on this service, absolute (the configured service URL) on another."""
        return section.path if section.service == self.service else self.base_url(section.service) + section.path

    # ------------------------------------------------------------------------------------- visitors

    async def visitor(self, request: Request) -> Visitor:
        session = await self.sessions.load(request.cookies.get(COOKIE))
        principal = None
        if session is not None and session.api_key:
            principal = await self._keyring.verify(session.api_key)
        return Visitor(session, principal, Translator(language_of(session.language if session else None)))

    def guard(self, section: Section) -> Callable[[Request], Coroutine[Any, Any, Visitor]]:
        """A dependency: the signed-in visitor allowed to see `section`."""

        async def signed_in(request: Request) -> Visitor:
            visitor = await self.visitor(request)
            if visitor.principal is None:
                path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                raise SignInNeeded(path)
            if not visitor.may(section):
                raise Problem(403, "Forbidden", visitor.t("errors.role", section=visitor.t(f"nav.{section.name}")))
            return visitor

        return signed_in

    async def form(self, request: Request, visitor: Visitor) -> Form:
        """The posted form, after checking its CSRF token against the session's (403 otherwise)."""
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            raise Problem(413, "Content Too Large", visitor.t("errors.too_large"))
        form = Form(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
        token = form.get("csrf") or request.headers.get("x-csrf-token")
        if visitor.session is None or not visitor.session.csrf_matches(token):
            raise Problem(403, "Forbidden", visitor.t("errors.csrf"))
        return form

    # ------------------------------------------------------------------------------------ rendering

    def render(
        self, request: Request, visitor: Visitor, template: str, *, status: int = 200, **context: Any
    ) -> HTMLResponse:
        current = request.url.path
        nav = [
            {"label": visitor.t(f"nav.{s.name}"), "url": self.url(s), "current": current.startswith(s.path)}
            for s in SECTIONS
            if visitor.may(s)
        ]
        html = self._env.get_template(template).render(
            t=visitor.t,
            visitor=visitor,
            nav=nav,
            languages=LANGUAGES,
            here=current + (f"?{request.url.query}" if request.url.query else ""),
            static=lambda name: f"/pages/static/{name}?v={self._static_version}",
            query=lambda **values: urlencode({k: v for k, v in values.items() if v not in (None, "")}, doseq=True),
            options=lambda values, prefix, blank=None: _options(visitor.t, values, prefix, blank),
            **context,
        )
        return HTMLResponse(html, status_code=status, headers=self._security_headers)

    def fragment(self, visitor: Visitor, template: str, **context: Any) -> HTMLResponse:
        """A part of a page (the live preview), without the layout."""
        html = self._env.get_template(template).render(t=visitor.t, visitor=visitor, **context)
        return HTMLResponse(html, headers=self._security_headers)

    async def error_page(self, request: Request, status: int, message: str, details: Sequence[str] = ()) -> Response:
        visitor = await self.visitor(request)
        home = self.home(visitor) if visitor.signed_in else "/pages/sign-in"
        return self.render(
            request, visitor, "error.html", status=status, message=message, details=list(details), home=home
        )

    def home(self, visitor: Visitor) -> str:
        """Where a visitor lands: this service's section when the key may see it, else the first it may."""
        allowed = [s for s in SECTIONS if visitor.may(s)]
        mine = [s for s in allowed if s.service == self.service]
        chosen = (mine or allowed or [CATALOGUE])[0]
        return self.url(chosen)

    # ------------------------------------------------------------------------------------ internals

    def _route_class(self) -> type[APIRoute]:
        site = self

        class PageRoute(APIRoute):
            """Turns what a page cannot show into a page: sign-in redirects, problems, bad query parameters."""

            def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
                handler = super().get_route_handler()

                async def page(request: Request) -> Response:
                    try:
                        return await handler(request)
                    except SignInNeeded as needed:
                        return RedirectResponse(f"/pages/sign-in?{urlencode({'next': needed.next_path})}", 303)
                    except Problem as problem:
                        return await site.error_page(request, problem.status, problem.detail or problem.title)
                    except RequestValidationError as invalid:
                        fields = [".".join(str(p) for p in e.get("loc", ())[1:]) for e in invalid.errors()]
                        visitor = await site.visitor(request)
                        return await site.error_page(request, 422, visitor.t("errors.invalid"), fields)

                return page

        return PageRoute

    @staticmethod
    def _set_cookie(response: Response, request: Request, session: Session) -> None:
        # A browser-session cookie: how long a session lasts is Redis's business (sessions.py).
        response.set_cookie(
            COOKIE,
            session.id,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    def _add_common_routes(self) -> None:
        router = self.router

        @router.get("/pages/sign-in")
        async def sign_in_form(request: Request, next: str | None = None) -> Response:
            visitor = await self.visitor(request)
            if visitor.signed_in:
                return RedirectResponse(safe_next(next, self.home(visitor)), 303)
            session = visitor.session or await self.sessions.start()
            visitor = Visitor(session, None, visitor.t)
            response = self.render(request, visitor, "sign_in.html", next=safe_next(next, ""), error=None)
            if visitor.session is not None and request.cookies.get(COOKIE) != session.id:
                self._set_cookie(response, request, session)
            return response

        @router.post("/pages/sign-in")
        async def sign_in(request: Request) -> Response:
            visitor = await self.visitor(request)
            form = await self.form(request, visitor)
            assert visitor.session is not None  # form() checked it
            key = form.get("api_key")
            principal = await self._keyring.verify(key) if key else None
            next_path = safe_next(form.get("next"), "")
            if principal is None:
                # The key is never echoed back into the page.
                error = visitor.t("sign_in.unknown_key" if key else "sign_in.missing_key")
                return self.render(request, visitor, "sign_in.html", status=401, next=next_path, error=error)
            session = await self.sessions.sign_in(visitor.session, key)
            signed_in = Visitor(session, principal, visitor.t)
            response = RedirectResponse(next_path or self.home(signed_in), 303)
            self._set_cookie(response, request, session)
            return response

        @router.post("/pages/sign-out")
        async def sign_out(request: Request) -> Response:
            visitor = await self.visitor(request)
            if visitor.session is not None:  # an expired session is signed out already
                await self.form(request, visitor)
                await self.sessions.end(visitor.session)
            response = RedirectResponse("/pages/sign-in", 303)
            response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
            return response

        @router.post("/pages/language")
        async def language(request: Request) -> Response:
            visitor = await self.visitor(request)
            form = await self.form(request, visitor)
            assert visitor.session is not None
            await self.sessions.set_language(visitor.session, language_of(form.get("language")))
            return RedirectResponse(safe_next(form.get("next"), self.home(visitor)), 303)

        @router.get("/pages/static/{name}")
        async def static(name: str) -> Response:
            body = self._static.get(name)
            if body is None:
                return Response(status_code=404)
            media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
            return Response(
                body,
                media_type=media_type,
                headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
            )
