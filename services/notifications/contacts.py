"""Where to deliver, asked of identity at send time: notifications never stores an address.

`ContactDirectory` is what delivering needs; `IdentityContacts` asks identity's internal contact endpoint over
HTTP with the `service` key. Tests may point it at an in-process identity (an httpx transport) or pass another
directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import httpx

from shared.events.types import Medium


@dataclass(frozen=True)
class Contact:
    """The address to use now. Never stored, never logged."""

    recipient: Literal["member", "guardian"]
    address: str
    name: str = ""

    def __repr__(self) -> str:
        return f"Contact(recipient={self.recipient!r}, address=<hidden>, name=<hidden>)"


class ContactUnavailable(Exception):
    """identity could not answer now (down, overloaded, refusing our key): try again later."""


class ContactDirectory(Protocol):
    async def contact(self, member_id: str, medium: Medium) -> Contact | None:
        """The member's address for `medium` (their guardian's, for a minor); None when there is none: no
        address for that medium, a minor without a guardian, or an unknown or erased member."""
        ...

    async def aclose(self) -> None: ...


class IdentityContacts:
    def __init__(self, base_url: str, service_key: str, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._base_url = base_url
        self._headers = {"Authorization": f"Bearer {service_key}"}
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self._base_url, headers=self._headers, transport=self._transport, timeout=5.0
            )
        return self._client

    async def contact(self, member_id: str, medium: Medium) -> Contact | None:
        try:
            response = await self._http().get(f"/internal/v1/members/{member_id}/contact", params={"medium": medium})
        except httpx.HTTPError as exc:
            raise ContactUnavailable(f"identity unreachable ({type(exc).__name__})") from None
        if response.status_code in (404, 409):
            return None
        if response.status_code != 200:
            # 401/403 (our key), 5xx: nothing the member can change; retried, then failed with this reason.
            raise ContactUnavailable(f"identity answered {response.status_code}")
        body = response.json()
        return Contact(recipient=body["recipient"], address=body["address"], name=body.get("name", ""))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
