"""One member's way from sign-up to e-mail as traces, collected in memory, on the real broker and Redis.

identity runs behind a real HTTP server, so notifications asks it for the address over real HTTP (traced by the
httpx instrumentation); the e-mail goes to a real SMTP server on loopback. The sign-up is one trace; the timer
that fires once the activation window has passed starts the next one, linked to the sign-up's, and everything
that follows (the friction on Kafka, notifications deciding and delivering, identity's contact lookup, SMTP, the
message.sent event) hangs under it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from faststream.kafka import KafkaRouter
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from deploy.runtime import serving
from services.identity.app import create_app as identity_app
from services.identity.settings import IdentitySettings
from services.journey.app import create_app as journey_app
from services.journey.settings import JourneySettings
from services.notifications.app import create_app as notifications_app
from shared import telemetry
from shared.events import CloudEvent, EventData
from shared.events.journey import FrictionResolved
from shared.events.members import MemberErased
from shared.kafka import subscribe
from shared.service import ServiceParts, build_app
from shared.settings import Settings
from shared.topics import FRICTIONS, MEMBERS
from tests.integration.conftest import MakeKey
from tests.integration.test_notifications_support import SmtpSink, TestClock, notifications_settings
from tests.support import eventually, read_to_end, running

pytestmark = pytest.mark.integration

RULE = "online-signup-not-activated"
PERSON = {
    "name": "Sanne de Vries",
    "email": "sanne.devries@example.nl",
    "birth_date": "1991-04-12",
    "postcode": "1034 AB",
    "home_library": "oba",
    "platform": "website",
}
EMAIL_CAMPAIGN = {
    "name": "Activeer je pas (e-mail)",
    "purpose": "service",
    "trigger": {"friction_rules": [RULE]},
    "channels": ["email"],
    "messages": {"email": {"nl": {"subject": "Je pas wacht", "body": "Kom langs bij {{ library.name }}."}}},
    "priority": 90,
}
SPANS = InMemorySpanExporter()


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """Finished spans in memory: on the process's provider if a provider of the SDK is installed already (there
    is one per process), else on one configured as the services configure theirs."""
    processor = SimpleSpanProcessor(SPANS)
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.add_span_processor(telemetry.SpanFilter(processor))
    else:
        trace.set_tracer_provider(telemetry.tracer_provider("klantreis-tests", [processor]))
    return SPANS


@pytest.fixture
async def identity_url(identity_settings: IdentitySettings) -> AsyncIterator[str]:
    """identity behind a real HTTP server on loopback (its lifespan run by uvicorn)."""
    async with serving(identity_app(identity_settings)) as url:
        yield url


def by_id(found: list[ReadableSpan]) -> dict[int, ReadableSpan]:
    return {s.context.span_id: s for s in found}


def parent_of(span: ReadableSpan, index: dict[int, ReadableSpan]) -> ReadableSpan | None:
    return index.get(span.parent.span_id) if span.parent is not None else None


def chain(span: ReadableSpan, index: dict[int, ReadableSpan]) -> list[str]:
    """The names from `span` up to the root of its trace; fails on a parent that was never recorded."""
    names = [span.name]
    while span.parent is not None:
        parent = parent_of(span, index)
        assert parent is not None, f"{span.name}: its parent was not recorded"
        assert parent.context.trace_id == span.context.trace_id
        span = parent
        names.append(span.name)
    return names


def one(found: list[ReadableSpan], name: str, kind: SpanKind | None = None) -> ReadableSpan:
    matching = [s for s in found if s.name == name and (kind is None or s.kind == kind)]
    assert len(matching) == 1, f"{name}: {len(matching)} spans among {sorted({s.name for s in found})}"
    return matching[0]


async def test_a_sign_up_to_e_mail_journey_is_one_span_tree_per_trace_linked_where_the_timer_fired(
    spans: InMemorySpanExporter,
    settings: Settings,
    identity_url: str,
    journey_settings: JourneySettings,
    admin_key: str,
    make_key: MakeKey,
) -> None:
    with SmtpSink() as smtp:
        noon = datetime.now(UTC).replace(hour=11, minute=0, second=0, microsecond=0)  # outside quiet hours
        # notifications reaches identity over HTTP with a `service` key, as deployed.
        reach = settings.model_copy(update={"identity_url": identity_url, "service_key": await make_key("service")})
        configured = notifications_settings(reach, notifications_smtp_port=smtp.port)
        notifications = notifications_app(configured, clock=TestClock(noon))
        async with (
            running(journey_app(journey_settings)),
            running(notifications, admin_key) as marketing,
            httpx.AsyncClient(base_url=identity_url, headers={"Authorization": f"Bearer {admin_key}"}) as website,
        ):
            assert (await marketing.post("/v1/campaigns/activate-your-card/pause")).status_code == 200
            created = await marketing.post("/v1/campaigns", json=EMAIL_CAMPAIGN)
            assert created.status_code == 201, created.text
            campaign = created.json()["id"]
            assert (await marketing.post(f"/v1/campaigns/{campaign}/activate")).status_code == 200
            spans.clear()

            # The library website signs the member up (its own client is not traced: the trace starts at identity).
            with suppress_http_instrumentation():
                response = await website.post("/v1/members", json=PERSON)
            assert response.status_code == 202, response.text
            member = response.json()["member_id"]

            await eventually(lambda: asyncio.sleep(0, result=smtp.received), within=60)

            def message_sent_published() -> list[ReadableSpan]:
                return [
                    s
                    for s in spans.get_finished_spans()
                    if s.name == f"{settings.topic('notifications.deliveries.v1')} publish"
                ]

            await eventually(lambda: asyncio.sleep(0, result=message_sent_published()))

    found = list(spans.get_finished_spans())
    index = by_id(found)
    members, frictions, deliveries = (
        settings.topic(t) for t in ("identity.members.v1", "journey.frictions.v1", "notifications.deliveries.v1")
    )

    # The sign-up: identity's request span, under it the event's creation and publication on Kafka.
    sign_up = one(found, "POST /v1/members", SpanKind.SERVER)
    assert sign_up.parent is None
    created_event = one(found, f"{members} create", SpanKind.PRODUCER)
    assert chain(created_event, index) == [f"{members} create", "POST /v1/members"]
    assert chain(one(found, f"{members} publish"), index)[-1] == "POST /v1/members"
    # Redis commands under the request: by name, never with their data.
    assert any((s.attributes or {}).get("db.system") == "redis" and parent_of(s, index) is sign_up for s in found)

    # Fourteen days later (three seconds here) the timer fires: a trace of its own, linked to the sign-up's.
    fired = one(found, f"fire {RULE}")
    assert fired.parent is None
    assert fired.context.trace_id != sign_up.context.trace_id
    [link] = fired.links
    assert (link.context.trace_id, link.context.span_id) == (sign_up.context.trace_id, created_event.context.span_id)
    assert fired.attributes is not None
    assert fired.attributes["klantreis.member_id"] == member
    assert fired.attributes["klantreis.rule"] == RULE

    # Everything after it hangs under the fired timer: journey publishes the friction, notifications consumes it
    # in a batch and decides it in the friction's trace, the delivery asks identity for the address over HTTP,
    # sends the e-mail and publishes message.sent.
    consumed = one(found, "decide")
    assert chain(consumed, index) == ["decide", f"{frictions} create", f"fire {RULE}"]
    deliver = one(found, "deliver")
    assert chain(deliver, index)[1:] == chain(consumed, index)
    lookup = one(found, "POST /internal/v1/contacts", SpanKind.SERVER)
    # One call to identity per delivery batch, in the trace of the batch's first delivery.
    assert chain(lookup, index)[1:] == ["POST", "look up contacts", *chain(deliver, index)[1:]]
    assert parent_of(lookup, index).kind == SpanKind.CLIENT  # type: ignore[union-attr]
    smtp_send = one(found, "smtp send", SpanKind.CLIENT)
    assert chain(smtp_send, index)[1:] == chain(deliver, index)
    assert smtp_send.status.status_code != StatusCode.ERROR
    sent = one(found, f"{deliveries} publish")
    assert chain(sent, index)[-3:] == chain(deliver, index)[-3:]
    assert "deliver" in chain(sent, index)
    assert {s.context.trace_id for s in (consumed, deliver, lookup, smtp_send, sent)} == {fired.context.trace_id}

    # Ids and types only: nothing of the person in any span, nor where the caller called from.
    attributes = json.dumps([{**dict(s.attributes or {}), "name": s.name} for s in found], default=str)
    for personal in ("Sanne", "Vries", PERSON["email"], "1991-04-12", "1034 AB"):
        assert personal not in attributes
    for server in (sign_up, lookup):
        assert server.attributes is not None
        assert telemetry.CALLER_ATTRIBUTES.isdisjoint(server.attributes), dict(server.attributes)
        assert server.attributes["http.route"]


async def test_a_handler_that_publishes_twice_continues_the_trace_of_the_message_it_handles(
    spans: InMemorySpanExporter, settings: Settings
) -> None:
    """FastStream #2625: publishing more than once from one handler under the telemetry middleware once raised."""
    parts = ServiceParts.connect("relay", settings)
    router = KafkaRouter()
    done: list[str] = []

    async def relay(event: CloudEvent, data: EventData) -> None:
        for kind in ("first", "second"):
            await parts.publisher.publish(resolved(event, kind))
        await parts.publisher.publish_many([resolved(event, "third"), resolved(event, "fourth")])
        done.append(event.id)

    subscribe(router, settings, parts.publisher, topic=MEMBERS, group="relay", handler=relay)
    app = build_app(parts, title="relay", description="publishes four events per member event", kafka=router)
    async with running(app):
        spans.clear()
        trigger = CloudEvent.create(
            MemberErased(), id=str(uuid.uuid4()), subject=str(uuid.uuid4()), source="/identity", library="oba"
        )
        with telemetry.tracer().start_as_current_span("test publishes"):
            await parts.publisher.publish(trigger)
        await eventually(lambda: asyncio.sleep(0, result=done))

    dead = await read_to_end(settings.kafka_bootstrap, settings.topic(MEMBERS.dead_letters))
    assert dead == []
    found = list(spans.get_finished_spans())
    index = by_id(found)
    consumed = one(found, f"{settings.topic(MEMBERS.name)} process", SpanKind.CONSUMER)
    published = [s for s in found if s.name == f"{settings.topic(FRICTIONS.name)} publish"]
    assert len(published) == 4
    for span in published:
        assert consumed.name in chain(span, index)
        assert chain(span, index)[-1] == "test publishes"


def resolved(cause: CloudEvent, kind: str) -> CloudEvent:
    data = FrictionResolved(
        friction_id=f"{cause.id}-{kind}", rule=RULE, resolved_by_event_id=cause.id,
        resolved_at=datetime.now(UTC), seconds_to_resolve=0.0,
    )  # fmt: skip
    return CloudEvent.create(data, id=str(uuid.uuid4()), subject=cause.subject or "", source="/relay", library="oba")
