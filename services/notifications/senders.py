"""The media: e-mail over SMTP, SMS and push through the provider's HTTP webhooks.

Each attempt ends `delivered`, `retry` (transient: a 4xx SMTP reply, a 5xx or 429 from the webhook, a
connection error) or `rejected` (permanent: retrying cannot help); an SMTP server refusing the recipient with
a 5xx reply is a hard bounce (`bounced`): the address is undeliverable. Error texts carry codes and exception
types only, never an address.

E-mail goes as text/plain with a text/html alternative (`mail.py`); a marketing e-mail carries RFC 8058's
`List-Unsubscribe` (the one-click https URL) and `List-Unsubscribe-Post: List-Unsubscribe=One-Click`.
"""

from __future__ import annotations

import asyncio
import smtplib
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from typing import Any, Literal

import httpx
from opentelemetry.trace import SpanKind, StatusCode

from services.notifications.settings import NotificationsSettings
from shared import telemetry
from shared.events.types import Medium


@dataclass(frozen=True)
class Attempt:
    outcome: Literal["delivered", "retry", "rejected"]
    error: str = ""
    bounced: bool = False  # the address itself was refused for good (a hard bounce)


DELIVERED = Attempt("delivered")


@dataclass(frozen=True)
class Outgoing:
    """One rendered message for one address."""

    message_id: str
    medium: Medium
    address: str
    sender_name: str
    body: str
    subject: str = ""
    title: str = ""
    link: str = ""
    html: str = ""  # e-mail: the HTML alternative of `body`
    unsubscribe: str = ""  # e-mail: the one-click unsubscribe URL (marketing only)


class EmailSender:
    """Plain-text e-mail through an SMTP server; smtplib in a thread, so the event loop never blocks."""

    def __init__(self, settings: NotificationsSettings) -> None:
        self._settings = settings

    async def send(self, message: Outgoing) -> Attempt:
        s = self._settings
        with telemetry.tracer().start_as_current_span(
            "smtp send",
            kind=SpanKind.CLIENT,
            attributes={
                "server.address": s.notifications_smtp_host,
                "server.port": s.notifications_smtp_port,
                **telemetry.span_attributes(message_id=message.message_id),
            },
        ) as span:
            attempt = await asyncio.to_thread(self._send, message)
            span.set_attribute("klantreis.outcome", attempt.outcome)
            if attempt.outcome != "delivered":
                span.set_status(StatusCode.ERROR, attempt.error)
            return attempt

    def compose(self, message: Outgoing) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = formataddr((message.sender_name, self._settings.notifications_smtp_from))
        mail["To"] = message.address
        mail["Subject"] = message.subject
        # A stable Message-ID lets mail systems recognise a message sent twice after a crash.
        mail["Message-ID"] = f"<{message.message_id}@klantreis>"
        mail["Date"] = format_datetime(datetime.now(UTC))
        if message.unsubscribe:
            mail["List-Unsubscribe"] = f"<{message.unsubscribe}>"
            mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        mail.set_content(message.body)
        if message.html:
            mail.add_alternative(message.html, subtype="html")
        return mail

    def _send(self, message: Outgoing) -> Attempt:
        s = self._settings
        try:
            timeout = s.notifications_smtp_timeout_seconds
            with smtplib.SMTP(s.notifications_smtp_host, s.notifications_smtp_port, timeout=timeout) as smtp:
                if s.notifications_smtp_starttls:
                    smtp.starttls()
                if s.notifications_smtp_username:
                    smtp.login(s.notifications_smtp_username, s.notifications_smtp_password.get_secret_value())
                smtp.send_message(self.compose(message))
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            refused = _by_code(codes[0] if codes else 550, "recipient refused")
            return Attempt(refused.outcome, refused.error, bounced=refused.outcome == "rejected")
        except smtplib.SMTPResponseException as exc:
            return _by_code(exc.smtp_code, type(exc).__name__)
        except (smtplib.SMTPException, OSError) as exc:
            return Attempt("retry", f"SMTP {type(exc).__name__}")
        return DELIVERED


def _by_code(code: int, what: str) -> Attempt:
    # 4xx: try again later; 5xx: the server will not take it.
    return Attempt("retry" if 400 <= code < 500 else "rejected", f"SMTP {code} {what}")


class WebhookSender:
    """SMS and push: a JSON POST to the provider's webhook, with the message id as its Idempotency-Key."""

    def __init__(self, settings: NotificationsSettings) -> None:
        self._settings = settings
        self._client: httpx.AsyncClient | None = None

    def url(self, medium: Medium) -> str:
        if medium == "sms":
            return self._settings.notifications_sms_webhook_url
        return self._settings.notifications_push_webhook_url if medium == "push" else ""

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            token = self._settings.notifications_webhook_token.get_secret_value()
            self._client = httpx.AsyncClient(
                timeout=self._settings.notifications_webhook_timeout_seconds,
                headers={"Authorization": f"Bearer {token}"} if token else {},
            )
        return self._client

    async def send(self, message: Outgoing) -> Attempt:
        url = self.url(message.medium)
        if not url:
            return Attempt("rejected", f"no webhook configured for {message.medium}")
        payload: dict[str, Any] = {
            "message_id": message.message_id,
            "medium": message.medium,
            "to": message.address,
            "sender": message.sender_name,
            "body": message.body,
        }
        if message.medium == "push":
            payload.update({"title": message.title, "link": message.link})
        try:
            response = await self._http().post(url, json=payload, headers={"Idempotency-Key": message.message_id})
        except httpx.HTTPError as exc:
            return Attempt("retry", f"webhook {type(exc).__name__}")
        status = response.status_code
        if 200 <= status < 300:
            return DELIVERED
        if status in (408, 425, 429) or status >= 500:
            return Attempt("retry", f"webhook answered {status}")
        return Attempt("rejected", f"webhook answered {status}")

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
