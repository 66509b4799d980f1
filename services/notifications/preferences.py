"""What a member changes in the preference centre, and how it reaches identity, which owns consent.

`changes` is pure: from the member's consents and language as notifications knows them, and what the form asks,
the events that say the difference (`member.consent_changed`, `member.language_changed`). `IdentityPreferences`
posts them to identity's CloudEvents ingest (`POST /v1/events`) with the service's key (roles `service` and
`ingest`): identity checks, stores and publishes them like any posted consent, and notifications' projection
learns them from the members topic like every other consent change. Event ids are chosen by the caller, so a
request repeated (a second one-click POST) changes nothing twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx

from services.notifications.rules import consented
from shared.events import BATCH, CloudEvent, EventData, deterministic_id, to_structured
from shared.events.members import ConsentChanged, LanguageChanged
from shared.events.types import Language, Medium, Purpose

SOURCE = "/notifications/preferences"
MEDIA: tuple[Medium, ...] = ("email", "sms", "push", "in_app")
PURPOSES: tuple[Purpose, ...] = ("marketing", "service")


class PreferencesUnavailable(Exception):
    """identity could not take the change now: the member is asked to try again."""


class UnknownMember(Exception):
    """identity has no such member (erased, or never signed up)."""


@dataclass(frozen=True)
class Wanted:
    """What the form asks: the (medium, purpose) pairs ticked, and the language."""

    consents: frozenset[tuple[Medium, Purpose]]
    language: Language


def current(consents: Mapping[str, bool]) -> frozenset[tuple[Medium, Purpose]]:
    """The pairs the member receives now (marketing by opt-in, service unless withdrawn)."""
    return frozenset((m, p) for m in MEDIA for p in PURPOSES if consented(consents, m, p))


def changes(
    member_id: str, consents: Mapping[str, bool], language: str, wanted: Wanted, request_id: str
) -> list[CloudEvent]:
    """The events that turn the member's preferences into `wanted`; ids derived from `request_id`."""
    now = current(consents)
    found: list[EventData] = [
        ConsentChanged(medium=m, purpose=p, granted=(m, p) in wanted.consents)
        for m in MEDIA
        for p in PURPOSES
        if ((m, p) in wanted.consents) != ((m, p) in now)
    ]
    if wanted.language != (language or "nl"):
        found.append(LanguageChanged(language=wanted.language))
    return [event(member_id, data, request_id) for data in found]


def unsubscribed(member_id: str, token: str, stamp: str) -> CloudEvent:
    """One-click: marketing e-mail withdrawn. The id comes from the link and the consent it withdraws (`stamp`,
    as notifications holds it: value and time), so clicking again changes nothing twice, while a member who
    subscribed again since can unsubscribe again with the same link."""
    data = ConsentChanged(medium="email", purpose="marketing", granted=False)
    return event(member_id, data, deterministic_id("unsubscribe", token, stamp))


def event(member_id: str, data: EventData, request_id: str) -> CloudEvent:
    key = "|".join(f"{k}={v}" for k, v in sorted(data.model_dump(mode="json").items()))
    return CloudEvent.create(
        data, id=deterministic_id("preference", request_id, data.event_type, key), subject=member_id, source=SOURCE
    )


class PreferenceChanges(Protocol):
    async def post(self, events: Sequence[CloudEvent]) -> None: ...

    async def aclose(self) -> None: ...


class IdentityPreferences:
    def __init__(self, base_url: str, service_key: str, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._base_url = base_url
        self._headers = {"Authorization": f"Bearer {service_key}", "Content-Type": BATCH}
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self._base_url, headers=self._headers, transport=self._transport, timeout=10.0
            )
        return self._client

    async def post(self, events: Sequence[CloudEvent]) -> None:
        if not events:
            return
        body = json.dumps([to_structured(e) for e in events]).encode()
        try:
            response = await self._http().post("/v1/events", content=body)
        except httpx.HTTPError as exc:
            raise PreferencesUnavailable(f"identity unreachable ({type(exc).__name__})") from None
        if response.status_code not in (202, 422):
            raise PreferencesUnavailable(f"identity answered {response.status_code}")
        rejected = response.json().get("rejected", [])
        if any(r.get("status") == 404 for r in rejected):
            raise UnknownMember()
        if rejected:
            raise PreferencesUnavailable(f"identity refused {len(rejected)} change(s)")

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
