"""The member's preference centre and one-click unsubscribe: public pages reached by the signed, expiring link in
every e-mail (`links.py`), no login.

- `GET /preferences/{token}`: consent per purpose and medium, and the language of messages, as a form (Dutch or
  English: `?lang=`, default the member's language);
- `POST /preferences/{token}`: the form saved: the differences go to identity as consent and language events
  (`preferences.py`), and the page says so;
- `POST /preferences/{token}/unsubscribe`: RFC 8058 one-click (`List-Unsubscribe=One-Click`, as mail providers
  post it) or the confirmation page's button: marketing e-mail withdrawn;
- `GET /preferences/{token}/unsubscribe`: the confirmation page (a GET never changes anything: mail scanners
  follow links).

A changed or expired token is refused with 403 and a page that says which. The pages are plain HTML forms (labels
tied to every control, fieldsets with legends, the `lang` attribute, a visible focus ring): they work with the
keyboard alone and without JavaScript.
(No `from __future__ import annotations`: FastAPI reads the routes' annotations.)
"""

import uuid
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, Template, select_autoescape

from services.notifications.links import LinkRefused, verify
from services.notifications.member_words import WORDS, MemberLanguage, member_language
from services.notifications.preferences import (
    MEDIA,
    PURPOSES,
    PreferenceChanges,
    PreferencesUnavailable,
    UnknownMember,
    Wanted,
    changes,
    current,
    unsubscribed,
)
from services.notifications.projection_store import ProjectionStore
from services.notifications.settings import NotificationsSettings
from shared.events.types import Medium, Purpose

MAX_FORM_BYTES = 4096
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the URL: it must not leave with a link followed
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}


@lru_cache(maxsize=1)
def _template() -> Template:
    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(["html"])
    )
    return env.get_template("preferences.html")


def page(lang: MemberLanguage, *, status: int = 200, **context: Any) -> HTMLResponse:
    html = _template().render(lang=lang, w=WORDS[lang], other="en" if lang == "nl" else "nl", **context)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def wanted_from(body: bytes, fallback: str) -> Wanted:
    pairs = parse_qsl(body[:MAX_FORM_BYTES].decode("utf-8", "replace"))
    ticked = {value for name, value in pairs if name == "consent"}
    consents = frozenset((m, p) for m in MEDIA for p in PURPOSES if f"{m}:{p}" in ticked)
    language = next((value for name, value in pairs if name == "language"), fallback)
    return Wanted(consents, member_language(language))


# Why a change asked on a page is not made: a bad or expired link, a member identity does not know, identity away.
CHANGE_REFUSED = (LinkRefused, UnknownMember, PreferencesUnavailable)


def preferences_router(
    settings: NotificationsSettings,
    projections: ProjectionStore,
    identity: PreferenceChanges,
    clock: Callable[[], datetime],
) -> APIRouter:
    router = APIRouter(prefix="/preferences", tags=["preferences"], include_in_schema=False)
    secret = settings.notifications_link_secret.get_secret_value()

    def refused(lang: MemberLanguage, reason: str, status: int) -> HTMLResponse:
        return page(lang, status=status, view="error", message=WORDS[lang][f"refused.{reason}"])

    def refusal(lang: MemberLanguage, problem: Exception) -> HTMLResponse:
        """The page for a change that could not be made (one of `CHANGE_REFUSED`)."""
        if isinstance(problem, LinkRefused):
            return refused(lang, problem.reason, 403)
        if isinstance(problem, UnknownMember):
            return refused(lang, "unknown", 404)
        return refused(lang, "unavailable", 503)

    async def shown(
        token: str, lang: MemberLanguage | None, *, saved: bool = False, overrides: Wanted | None = None
    ) -> HTMLResponse:
        member_id = verify(token, secret, clock())
        record = await projections.member(member_id)
        language = member_language(record.profile.language)
        chosen = lang or language
        if record.erased:
            return refused(chosen, "unknown", 404)
        receives = overrides.consents if overrides else current(record.consents)
        rows: list[tuple[Purpose, list[tuple[Medium, bool]]]] = [
            (p, [(m, (m, p) in receives) for m in MEDIA]) for p in PURPOSES
        ]
        return page(chosen, view="form", token=token, rows=rows, saved=saved,
                    language=overrides.language if overrides else language)  # fmt: skip

    @router.get("/{token}", response_class=HTMLResponse)
    async def preferences(token: str, lang: str | None = None) -> HTMLResponse:
        try:
            return await shown(token, member_language(lang) if lang else None)
        except LinkRefused as exc:
            return refused(member_language(lang), exc.reason, 403)

    @router.post("/{token}", response_class=HTMLResponse)
    async def save(token: str, request: Request, lang: str | None = None) -> HTMLResponse:
        chosen = member_language(lang)
        try:
            member_id = verify(token, secret, clock())
            record = await projections.member(member_id)
            wanted = wanted_from(await request.body(), record.profile.language or "nl")
            found = changes(member_id, record.consents, record.profile.language, wanted, str(uuid.uuid4()))
            await identity.post(found)
            return await shown(token, member_language(lang) if lang else wanted.language, saved=True, overrides=wanted)
        except CHANGE_REFUSED as exc:
            return refusal(chosen, exc)

    @router.get("/{token}/unsubscribe", response_class=HTMLResponse)
    async def confirm(token: str, lang: str | None = None) -> HTMLResponse:
        chosen = member_language(lang)
        try:
            verify(token, secret, clock())
        except LinkRefused as exc:
            return refused(chosen, exc.reason, 403)
        return page(chosen, view="unsubscribe", token=token, done=False)

    @router.post("/{token}/unsubscribe", response_class=HTMLResponse)
    async def unsubscribe(token: str, lang: str | None = None) -> HTMLResponse:
        """RFC 8058: whatever the body, a valid link unsubscribes (providers post `List-Unsubscribe=One-Click`)."""
        chosen = member_language(lang)
        try:
            member_id = verify(token, secret, clock())
            stamp = await projections.consent_stamp(member_id, "email", "marketing")
            if stamp.startswith("1"):  # granted: withdraw it (withdrawn already, or never given: nothing to change)
                await identity.post([unsubscribed(member_id, token, stamp)])
        except CHANGE_REFUSED as exc:
            return refusal(chosen, exc)
        return page(chosen, view="unsubscribe", token=token, done=True)

    return router
