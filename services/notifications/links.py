"""The member's own links in a message: a signed, expiring token that opens their preference centre and
unsubscribes them in one click, without a login.

A token reads `<member id>.<expiry, unix seconds>.<HMAC-SHA256 of both, first 16 bytes, base64url>`: whoever holds
it may change that member's consents and language until it expires, and nothing else. The member id is
pseudonymous; the token names no person. Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import quote

MAC_BYTES = 16


class LinkRefused(Exception):
    """The token is not one we signed (tampered) or no longer valid (expired)."""

    def __init__(self, reason: Literal["tampered", "expired"]) -> None:
        super().__init__(reason)
        self.reason: Literal["tampered", "expired"] = reason


def _mac(payload: str, secret: str) -> str:
    digest = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()[:MAC_BYTES]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def sign(member_id: str, expires: datetime, secret: str) -> str:
    payload = f"{member_id}.{int(expires.timestamp())}"
    return f"{payload}.{_mac(payload, secret)}"


def verify(token: str, secret: str, now: datetime) -> str:
    """The member id the token was signed for; LinkRefused when it was changed or has expired."""
    payload, _, mac = token.rpartition(".")
    member_id, _, expires = payload.rpartition(".")
    if not member_id or not expires.isdigit() or not hmac.compare_digest(mac, _mac(payload, secret)):
        raise LinkRefused("tampered")
    if datetime.fromtimestamp(int(expires), UTC) <= now:
        raise LinkRefused("expired")
    return member_id


@dataclass(frozen=True)
class MemberLinks:
    """Where a message's recipient manages what they receive (absolute URLs)."""

    preferences: str
    unsubscribe: str  # RFC 8058 one-click: POST `List-Unsubscribe=One-Click`; a GET shows a confirmation


def member_links(public_url: str, token: str, locale: str) -> MemberLinks:
    base = f"{public_url.rstrip('/')}/preferences/{quote(token, safe='.-_')}"
    lang = "en" if locale == "en" else "nl"
    return MemberLinks(preferences=f"{base}?lang={lang}", unsubscribe=f"{base}/unsubscribe?lang={lang}")
