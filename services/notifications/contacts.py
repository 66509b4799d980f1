"""Where to deliver, asked of identity at send time: notifications never stores an address.

`ContactDirectory` is what delivering needs: the addresses for a whole batch of deliveries at once.
`IdentityContacts` asks identity's internal batched contacts endpoint over HTTP with the `service` key (one call
per batch). Tests may point it at an in-process identity (an httpx transport) or pass another
directory.
"""

from __future__ import annotations

from collections.abc import Sequence
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


Wanted = tuple[str, Medium]  # (member id, medium)


class ContactDirectory(Protocol):
    async def contacts(self, wanted: Sequence[Wanted]) -> dict[Wanted, Contact | None]:
        """Each member's address for the medium (their guardian's, for a minor); None when there is none: no
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

    async def contacts(self, wanted: Sequence[Wanted]) -> dict[Wanted, Contact | None]:
        if not wanted:
            return {}
        unique = list(dict.fromkeys(wanted))
        body = {"wanted": [{"member_id": m, "medium": medium} for m, medium in unique]}
        try:
            response = await self._http().post("/internal/v1/contacts", json=body)
        except httpx.HTTPError as exc:
            raise ContactUnavailable(f"identity unreachable ({type(exc).__name__})") from None
        if response.status_code != 200:
            # 401/403 (our key), 5xx: nothing the member can change; retried, then failed with this reason.
            raise ContactUnavailable(f"identity answered {response.status_code}")
        answers = response.json()["contacts"]
        return {
            pair: Contact(recipient=a["recipient"], address=a["address"], name=a.get("name", "")) if a else None
            for pair, a in zip(unique, answers, strict=True)
        }

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
