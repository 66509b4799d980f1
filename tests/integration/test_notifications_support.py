"""What the notifications tests share: the service in-process on the real broker and Redis, a clock the test
moves, a real SMTP server and a real webhook server on loopback, and a producer for the events that trigger.

(Named `test_…` to live among the notifications tests; it holds no tests itself.)
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from aiosmtpd.controller import Controller
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from deploy import runtime
from services.identity.app import create_app as identity_app
from services.identity.settings import IdentitySettings
from services.notifications.app import Stores, create_app
from services.notifications.contacts import Contact, ContactDirectory, IdentityContacts
from services.notifications.preferences import IdentityPreferences, PreferenceChanges
from services.notifications.settings import NotificationsSettings
from services.notifications.state import Profile
from shared.events import CloudEvent, EventData, to_kafka
from shared.events.journey import FrictionDetected
from shared.settings import Settings
from tests.support import header, read_topic, running

# Tuesday 10 March 2026, 12:00 in Amsterdam: well outside quiet hours.
NOON = datetime(2026, 3, 10, 11, 0, tzinfo=UTC)
# Not the built-in campaign's rule (online-signup-not-activated), so only the test's campaigns react.
RULE = "desk-signup-never-online"
TYPE_PREFIX = "nl.bibliotheek."


class TestClock:
    """Runs with real time from `start` (so backoffs pass), and jumps when the test says so."""

    __test__ = False

    def __init__(self, start: datetime = NOON) -> None:
        self._start = start
        self._t0 = time.monotonic()

    def __call__(self) -> datetime:
        return self._start + timedelta(seconds=time.monotonic() - self._t0)

    def jump_to(self, at: datetime) -> None:
        self._start, self._t0 = at, time.monotonic()


class FakeContacts:
    """identity's answers, for tests about delivery rather than about identity."""

    def __init__(self) -> None:
        self.addresses: dict[tuple[str, str], Contact] = {}
        self.asked: list[tuple[str, str]] = []

    def add(self, member_id: str, medium: str, address: str, recipient: str = "member", name: str = "Sam") -> None:
        self.addresses[(member_id, medium)] = Contact(recipient, address, name)  # type: ignore[arg-type]

    async def contacts(self, wanted: Any) -> dict[Any, Contact | None]:
        self.asked.extend(wanted)
        return {(member_id, medium): self.addresses.get((member_id, medium)) for member_id, medium in wanted}

    async def aclose(self) -> None:
        pass


# ------------------------------------------------------------------------------------- loopback servers


class SmtpSink:
    """A real SMTP server (aiosmtpd) on a free loopback port, keeping what it receives."""

    def __init__(self) -> None:
        self.port = runtime.free_port()
        self.received: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(message)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"

    def __enter__(self) -> SmtpSink:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


@dataclass
class Webhook:
    """The SMS/push provider: a real HTTP server on loopback that fails the first `failures` calls with
    `status`, then answers 202."""

    failures: int = 0
    status: int = 500
    port: int = field(default_factory=runtime.free_port)
    calls: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/messages"

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/messages")
        async def receive(request: Request) -> JSONResponse:
            self.calls.append(await request.json())
            self.keys.append(request.headers.get("idempotency-key", ""))
            if len(self.calls) <= self.failures:
                return JSONResponse({"error": "try later"}, status_code=self.status)
            return JSONResponse({"accepted": True}, status_code=202)

        return app


@contextlib.asynccontextmanager
async def serving(webhook: Webhook) -> AsyncIterator[Webhook]:
    async with runtime.serving(webhook.app(), port=webhook.port):
        yield webhook


# ----------------------------------------------------------------------------------------- the service


def notifications_settings(settings: Settings, **overrides: Any) -> NotificationsSettings:
    """Fast loops and short backoffs, so that a test sees retries in well under a second."""
    values: dict[str, Any] = {
        "notifications_delivery_tick_seconds": 0.05,
        "notifications_delivery_backoff_seconds": 0.05,
        "notifications_delivery_retries": 2,
        "notifications_broadcast_tick_seconds": 0.1,
        **overrides,
    }
    return NotificationsSettings(**settings.model_dump(), **values)


def campaign(**overrides: Any) -> dict[str, Any]:
    """A triggered in-app campaign on the online-sign-up friction; a test changes what it is about."""
    return {
        "name": "Je pas wacht",
        "purpose": "service",
        "trigger": {"friction_rules": [RULE]},
        "channels": ["in_app"],
        "messages": {"in_app": {"nl": {"title": "Je pas wacht", "body": "Kom langs bij {{ library.name }}."}}},
        **overrides,
    }


@dataclass
class Decided:
    type: str  # sent, suppressed, deferred, failed
    member: str
    id: str
    data: dict[str, Any]


@dataclass
class Notifications:
    client: httpx.AsyncClient
    app: FastAPI
    settings: NotificationsSettings
    clock: TestClock
    producer: AIOKafkaProducer

    @property
    def stores(self) -> Stores:
        stores: Stores = self.app.state.stores
        return stores

    async def babies(self, count: int) -> list[str]:
        """`count` new members aged 0-3 at the OBA (signed up online, Dutch), put straight into the members
        projection: a broadcast's segment without their events."""
        segment = [member() for _ in range(count)]
        projections = self.stores.projections
        pipe = projections.batch()
        for m in segment:
            projections.signed_up(pipe, m, Profile("0-3", "oba", "online", "nl"), None)
        await projections.apply(pipe)
        return segment

    async def everything(self) -> str:
        """Every key and value notifications holds in this test's Redis namespace, as one text."""
        redis = self.app.state.parts.redis
        lines = []
        async for key in redis.scan_iter(match=self.settings.key("notifications", "*"), count=1000):
            kind = await redis.type(key)
            if kind == "string":
                value: Any = await redis.get(key)
            elif kind == "hash":
                value = await redis.hgetall(key)
            elif kind == "set":
                value = sorted(await redis.smembers(key))
            elif kind == "zset":
                value = await redis.zrange(key, 0, -1)
            else:
                value = kind
            lines.append(f"{key} {value}")
        return "\n".join(lines)

    # --------------------------------------------------------------------------------------- campaigns

    async def create(self, definition: dict[str, Any], *, activate: bool = True) -> str:
        response = await self.client.post("/v1/campaigns", json=definition)
        assert response.status_code == 201, response.text
        campaign_id = str(response.json()["id"])
        if activate:
            activated = await self.client.post(f"/v1/campaigns/{campaign_id}/activate")
            assert activated.status_code == 200, activated.text
        return campaign_id

    async def results(self, campaign_id: str, **params: Any) -> dict[str, Any]:
        response = await self.client.get(f"/v1/campaigns/{campaign_id}/results", params=params)
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def inbox(self, member_id: str) -> list[dict[str, Any]]:
        response = await self.client.get(f"/v1/members/{member_id}/inbox")
        assert response.status_code == 200, response.text
        return list(response.json()["messages"])

    # ----------------------------------------------------------------------------------------- events

    async def publish(self, event: CloudEvent, topic: str) -> None:
        record = to_kafka(event)
        headers = [(k, v.encode()) for k, v in record.headers.items()]
        await self.producer.send_and_wait(self.settings.topic(topic), record.value, key=record.key, headers=headers)

    async def member_event(
        self, kind: str, member_id: str, at: datetime | None = None, *, library: str = "oba", **data: Any
    ) -> CloudEvent:
        """An identity event, e.g. `member_event("consent_changed", m, medium="email", purpose="marketing",
        granted=True)`."""
        event = CloudEvent(
            id=str(uuid.uuid4()), source="/identity", type=f"{TYPE_PREFIX}member.{kind}.v1", time=at or self.clock(),
            subject=member_id, library=library, channel="online", platform="website", data=data,
        )  # fmt: skip
        await self.publish(event, "identity.members.v1")
        return event

    async def catalogue(self, kind: str, subject: str, **data: Any) -> None:
        event = CloudEvent(
            id=str(uuid.uuid4()), source="/propositions", type=f"{TYPE_PREFIX}catalog.{kind}.v1", time=self.clock(),
            subject=subject, data=data,
        )  # fmt: skip
        await self.publish(event, "propositions.catalog.v1")

    async def friction(
        self,
        member_id: str,
        *,
        rule: str = RULE,
        library: str = "oba",
        detected: datetime | None = None,
        friction_id: str | None = None,
        age_band: str | None = "18-64",
    ) -> CloudEvent:
        detected = detected or self.clock()
        friction_id = friction_id or str(uuid.uuid4())
        data: EventData = FrictionDetected(
            friction_id=friction_id, rule=rule, start_event_id=str(uuid.uuid4()),
            started_at=detected - timedelta(days=14), due_at=detected, library=library,
            age_band=age_band,
        )  # fmt: skip
        event = CloudEvent.create(
            data, id=friction_id, subject=member_id, source=f"/journey/rules/{rule}", library=library, time=detected
        )
        await self.publish(event, "journey.frictions.v1")
        return event

    async def resolution(self, friction: CloudEvent, resolved: datetime) -> None:
        event = CloudEvent(
            id=str(uuid.uuid4()), source="/journey", type=f"{TYPE_PREFIX}friction.resolved.v1", time=resolved,
            subject=friction.subject, library=friction.library,
            data={"friction_id": friction.id, "rule": friction.data["rule"], "resolved_by_event_id": str(uuid.uuid4()),
                  "resolved_at": resolved.isoformat(), "seconds_to_resolve": 1.0},
        )  # fmt: skip
        await self.publish(event, "journey.frictions.v1")

    # -------------------------------------------------------------------------------------- decisions

    async def decisions(self, until: Callable[[list[Decided]], bool], within: float = 30.0) -> list[Decided]:
        """Read what notifications published on the deliveries topic until `until` holds."""
        records = await read_topic(
            self.settings.kafka_bootstrap,
            self.settings.topic("notifications.deliveries.v1"),
            until=lambda rs: until([_decided(r) for r in rs]),
            within=within,
        )
        return [_decided(r) for r in records]

    async def decided_for(self, members: list[str], within: float = 30.0) -> dict[str, list[Decided]]:
        """Each member's decisions once every member has a final one (sent, suppressed or failed)."""
        final = {"sent", "suppressed", "failed"}

        def done(found: list[Decided]) -> bool:
            return all(any(d.member == m and d.type in final for d in found) for m in members)

        found = await self.decisions(done, within)
        return {m: [d for d in found if d.member == m] for m in members}


def _decided(record: Any) -> Decided:
    kind = (header(record, "ce_type") or "").removeprefix(f"{TYPE_PREFIX}message.").removesuffix(".v1")
    return Decided(kind, header(record, "ce_subject") or "", header(record, "ce_id") or "", json.loads(record.value))


def text_of(mail: EmailMessage) -> str:
    """The plain-text part of an e-mail (sent as text with an HTML alternative), line ends as in Python."""
    part = mail.get_body(("plain",))
    assert isinstance(part, EmailMessage)
    return str(part.get_content()).replace("\r\n", "\n")


def html_of(mail: EmailMessage) -> str:
    part = mail.get_body(("html",))
    assert isinstance(part, EmailMessage)
    return str(part.get_content())


def member() -> str:
    return str(uuid.uuid4())


@contextlib.asynccontextmanager
async def notifications(
    settings: NotificationsSettings,
    key: str,
    *,
    clock: TestClock | None = None,
    contacts: ContactDirectory | None = None,
    preferences: PreferenceChanges | None = None,
) -> AsyncIterator[Notifications]:
    clock = clock or TestClock()
    app = create_app(settings, clock=clock, contacts=contacts or FakeContacts(), preferences=preferences)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        async with running(app, key) as client:
            yield Notifications(client, app, settings, clock, producer)
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def beside_identity(
    identity_settings: IdentitySettings, admin_key: str, service_key: str, **overrides: Any
) -> AsyncIterator[tuple[Notifications, httpx.AsyncClient, SmtpSink]]:
    """notifications beside the real identity service (in-process, asked with `service_key`: contacts and
    preference changes), e-mail to a local SMTP sink; yields notifications, a client of identity (`admin_key`),
    the sink."""
    identity = identity_app(identity_settings)
    to_identity = httpx.ASGITransport(app=identity)
    with SmtpSink() as smtp:
        values = {"notifications_smtp_port": smtp.port, **overrides}
        async with (
            running(identity, admin_key) as people,
            notifications(
                notifications_settings(identity_settings, **values), admin_key,
                contacts=IdentityContacts("http://identity", service_key, transport=to_identity),
                preferences=IdentityPreferences("http://identity", service_key, transport=to_identity),
            ) as n,
        ):  # fmt: skip
            yield n, people, smtp
