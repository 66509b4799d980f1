"""One member's way from sign-up to a message as traces: collected in memory from services in this process, and
in a real Zipkin server from the services as processes of their own, on the real broker.

identity runs behind a real HTTP server, so notifications asks it for the address over real HTTP (traced by the
httpx instrumentation); the e-mail goes to a real SMTP server on loopback. The sign-up is one trace; the timer
that fires once the activation window has passed starts the next one, linked to the sign-up's, and everything
that follows (the friction on Kafka, notifications deciding and delivering, identity's contact lookup, SMTP, the
message.sent event) hangs under it.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from faststream.kafka import KafkaRouter
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from deploy.platform import ServiceChild, child_services
from deploy.runtime import RedisNode, ZipkinNode, free_port, serving
from services.identity.app import create_app as identity_app
from services.identity.settings import IdentitySettings
from services.journey.app import create_app as journey_app
from services.journey.settings import JourneySettings
from services.notifications.app import create_app as notifications_app
from shared import telemetry
from shared.auth import Keyring
from shared.events import CloudEvent, EventData
from shared.events.journey import FrictionResolved
from shared.events.members import MemberErased
from shared.kafka import Received, subscribe, subscribe_batches
from shared.redis import make_redis
from shared.service import ServiceParts, build_app
from shared.settings import Settings
from shared.topics import FRICTIONS, MEMBERS
from tests.integration.conftest import MakeKey
from tests.integration.test_notifications_support import SmtpSink, TestClock, notifications_settings
from tests.support import eventually, own_redis, publish_seed_libraries, read_to_end, running, spans_kept_in

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
    """Finished spans in memory (on the process's one provider)."""
    return spans_kept_in(SPANS)


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


async def test_a_handler_retried_after_a_transient_failure_is_not_red_and_a_dead_letter_is(
    spans: InMemorySpanExporter, settings: Settings
) -> None:
    parts = ServiceParts.connect("flaky", settings)
    router = KafkaRouter()
    away = make_redis(settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"}))
    attempts: list[str] = []

    async def flaky(event: CloudEvent, data: EventData) -> None:
        attempts.append(event.id)
        if event.subject == "bad":
            raise ValueError("a bug")
        # The first attempt meets Redis away (a failed Redis span), the second the real one.
        await (away if attempts.count(event.id) == 1 else parts.redis).get(settings.key("flaky", event.id))

    subscribe(router, settings, parts.publisher, topic=MEMBERS, group="flaky", handler=flaky)
    app = build_app(parts, title="flaky", description="fails once, then handles", kafka=router)
    member = str(uuid.uuid4())
    erased = [
        CloudEvent.create(MemberErased(), id=str(uuid.uuid4()), subject=subject, source="/identity", library="oba")
        for subject in (member, "bad")
    ]
    async with running(app):
        spans.clear()
        await parts.publisher.publish_many(erased)
        await eventually(lambda: asyncio.sleep(0, result=len(attempts) == 3))
        await eventually(lambda: asyncio.sleep(0, result=len(spans.get_finished_spans()) >= 5))
    await away.aclose()

    found = list(spans.get_finished_spans())
    consumed = {
        (s.attributes or {})["klantreis.member_id"]: s
        for s in found
        if s.name == f"{settings.topic(MEMBERS.name)} process" and s.kind == SpanKind.CONSUMER
    }
    handled, dead = consumed[member], consumed["bad"]
    # Retried and done: the consume span has the retry as an event, the Redis command that met Redis away is kept,
    # not red, with what happened as an event.
    assert handled.status.status_code != StatusCode.ERROR
    [retry] = [e for e in handled.events if e.name == "retry"]
    assert (retry.attributes or {})["retry.attempt"] == 1
    assert (retry.attributes or {})["exception.type"] == "ConnectionError"
    assert (handled.attributes or {})["messaging.kafka.message.key"] == member
    under = [s for s in found if s.parent is not None and s.parent.span_id == handled.context.span_id]
    assert sorted(s.name for s in under) == ["GET", "GET"]
    assert all(s.status.status_code != StatusCode.ERROR for s in under)
    assert any(e.name == "retried" for s in under for e in s.events)
    # A dead letter is a failure for someone to look at: red.
    assert dead.status.status_code == StatusCode.ERROR
    assert dead.status.description == "dead-lettered: handler_error"


async def test_a_batch_consumer_s_span_links_to_the_span_of_every_sampled_record_it_took(
    spans: InMemorySpanExporter, settings: Settings
) -> None:
    parts = ServiceParts.connect("batches", settings)
    router = KafkaRouter()
    taken: list[str] = []

    async def take(batch: list[Received], ends: dict[tuple[str, int], int]) -> None:
        taken.extend(r.event.id for r in batch)

    subscribe_batches(router, settings, parts.publisher, topics=[MEMBERS], group="batches", handler=take)
    app = build_app(parts, title="batches", description="reads members in batches", kafka=router)
    events = [
        CloudEvent.create(MemberErased(), id=str(uuid.uuid4()), subject=str(uuid.uuid4()), source="/identity",
                          library="oba")
        for _ in range(3)
    ]  # fmt: skip
    async with running(app):
        spans.clear()
        with telemetry.tracer().start_as_current_span("test publishes") as cause:
            await parts.publisher.publish_many(events)
        await eventually(lambda: asyncio.sleep(0, result=len(taken) == 3))
        await eventually(lambda: asyncio.sleep(0, result=_batch_spans(spans, settings)))

    found = list(spans.get_finished_spans())
    index = by_id(found)
    published = {s.context.span_id for s in found if s.kind == SpanKind.PRODUCER}
    # Every record was published in the test's (sampled) trace: the batch's trace starts with a span that links to
    # each record's span, and the batch's processing hangs under it.
    starts = _batch_spans(spans, settings)
    linked = [link.context for span in starts for link in span.links]
    assert {c.trace_id for c in linked} == {cause.get_span_context().trace_id}
    assert len({c.span_id for c in linked}) == 3
    assert {c.span_id for c in linked} <= published
    processing = f"{settings.topic(MEMBERS.name)} process"
    processed = [s for s in found if s.name == processing and s.kind == SpanKind.CONSUMER]
    assert {parent.context.span_id for s in processed if (parent := parent_of(s, index))} == {
        s.context.span_id for s in starts
    }


def _batch_spans(spans: InMemorySpanExporter, settings: Settings) -> list[ReadableSpan]:
    name = f"{settings.topic(MEMBERS.name)} create"
    return [s for s in spans.get_finished_spans() if s.name == name and s.kind == SpanKind.CONSUMER and s.links]


def resolved(cause: CloudEvent, kind: str) -> CloudEvent:
    data = FrictionResolved(
        friction_id=f"{cause.id}-{kind}", rule=RULE, resolved_by_event_id=cause.id,
        resolved_at=datetime.now(UTC), seconds_to_resolve=0.0,
    )  # fmt: skip
    return CloudEvent.create(data, id=str(uuid.uuid4()), subject=cause.subject or "", source="/relay", library="oba")


# ------------------------------------------------------------------------------------------- in Zipkin


@pytest.fixture(scope="session")
def zipkin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZipkinNode]:
    """A Zipkin server (in-memory storage) on a free port, for the tests that look at traces as an operator.
    Started, not waited for: a test starts its services meanwhile and calls `wait_ready` before it sends spans."""
    node = ZipkinNode(port=free_port(), log_file=tmp_path_factory.mktemp("zipkin") / "zipkin.log")
    node.start(detach=False)
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def fresh_redis(tmp_path: Path) -> Iterator[RedisNode]:
    """A Redis server of this test's own: none of the platform's scripts are cached in it yet, as after a start."""
    with own_redis(tmp_path / "redis") as node:
        yield node


ZipkinSpan = dict[str, Any]


def last_lines(services: Iterable[ServiceChild], count: int = 15) -> str:
    return "\n".join(
        f"--- {s.name}\n" + "\n".join(s.log_path.read_text(errors="replace").splitlines()[-count:]) for s in services
    )


async def member_traces(zipkin: ZipkinNode, member: str) -> list[list[ZipkinSpan]]:
    """What an operator finds in Zipkin following the member's link on the pages (its search, through the API)."""
    link = telemetry.member_traces_url(zipkin.ui_url, member)
    assert link is not None and link.startswith(zipkin.ui_url + "/?")
    search = dict(urllib.parse.parse_qsl(link.partition("?")[2]))
    async with httpx.AsyncClient(base_url=zipkin.url) as client:
        response = await client.get(
            "/api/v2/traces",
            params={
                "annotationQuery": search["annotationQuery"],
                "endTs": search["endTs"],
                "lookback": search["millis"],
                "limit": search["limit"],
            },
        )
    response.raise_for_status()
    traces: list[list[ZipkinSpan]] = response.json()
    return traces


async def service_spans(zipkin: ZipkinNode, services: Sequence[str]) -> list[ZipkinSpan]:
    """Every span the services sent, whatever member (a batch's or a loop's work names none)."""
    spans: list[ZipkinSpan] = []
    async with httpx.AsyncClient(base_url=zipkin.url) as client:
        for service in services:
            response = await client.get("/api/v2/traces", params={"serviceName": service, "limit": 1000})
            response.raise_for_status()
            spans += [span for trace in response.json() for span in trace]
    return spans


def named(spans: list[ZipkinSpan], name: str) -> ZipkinSpan:
    matching = [s for s in spans if s.get("name") == name.lower()]  # Zipkin keeps span names in lower case
    assert len(matching) == 1, f"{name}: {len(matching)} among {sorted(s.get('name', '') for s in spans)}"
    return matching[0]


async def test_a_sign_up_to_an_in_app_message_is_in_zipkin_by_service_with_the_member_on_every_span(
    zipkin: ZipkinNode, fresh_redis: RedisNode, settings: Settings, tmp_path: Path
) -> None:
    environment = {
        "OTEL_TRACES_EXPORTER": "zipkin",
        "OTEL_EXPORTER_ZIPKIN_ENDPOINT": zipkin.spans_endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "KLANTREIS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "KLANTREIS_REDIS_URL": fresh_redis.url,
        "KLANTREIS_TOPIC_PREFIX": settings.topic_prefix,
        "KLANTREIS_GROUP_PREFIX": settings.group_prefix,
        "KLANTREIS_KEY_PREFIX": settings.key_prefix,
        "KLANTREIS_PARTITIONS": str(settings.partitions),
        "KLANTREIS_JOURNEY_ACTIVATION_WINDOW": "PT3S",
        "KLANTREIS_JOURNEY_ALLOWED_LATENESS": "PT0S",
        "KLANTREIS_JOURNEY_TIMER_TICK_SECONDS": "0.1",
        "KLANTREIS_JOURNEY_IDLE_SECONDS": "0.5",
    }
    await publish_seed_libraries(settings)  # identity checks the sign-up's library against the catalogue
    redis = make_redis(settings.model_copy(update={"redis_url": fresh_redis.url}))
    try:
        key = await Keyring(redis, settings).create("test", ["admin"])
    finally:
        await redis.aclose()
    headers = {"Authorization": f"Bearer {key}"}
    with child_services(("identity", "journey", "notifications"), environment, tmp_path) as services:
        zipkin.wait_ready()
        async with httpx.AsyncClient(headers=headers, timeout=10) as http:
            response = await http.post(services["identity"].url + "/v1/members", json=PERSON)
            assert response.status_code == 202, response.text
            member = response.json()["member_id"]
            inbox = f"{services['notifications'].url}/v1/members/{member}/inbox"

            async def delivered() -> list[dict[str, Any]]:
                messages: list[dict[str, Any]] = (await http.get(inbox)).json()["messages"]
                return messages

            async def sent_is_in_zipkin() -> list[list[ZipkinSpan]]:
                traces = await member_traces(zipkin, member)
                spans = [s for found in traces for s in found]
                done = any(s["name"] == f"{settings.topic('notifications.deliveries.v1')} publish" for s in spans)
                return traces if done else []

            try:
                await eventually(delivered, within=120)
                traces = await eventually(sent_is_in_zipkin, within=60)
            except AssertionError as exc:
                raise AssertionError(f"{exc}; the services' logs:\n{last_lines(services.values())}") from None

    spans = [s for found in traces for s in found]
    services_seen = {s["localEndpoint"]["serviceName"] for s in spans}
    assert {"identity", "journey", "notifications"} <= services_seen
    # Every span the search finds is about this member, and says so.
    for span in spans:
        assert span.get("tags", {}).get("klantreis.member_id") == member, span
    # The sign-up and the fired timer: two traces, the second naming the first.
    sign_up = named(spans, "POST /v1/members")
    assert sign_up["localEndpoint"]["serviceName"] == "identity"
    fired = named(spans, "fire online-signup-not-activated")
    assert fired["localEndpoint"]["serviceName"] == "journey"
    assert fired["traceId"] != sign_up["traceId"]
    assert fired["tags"]["link.0.trace_id"] == sign_up["traceId"]
    assert fired["tags"]["link.0.klantreis.link"] == "timer started by"
    # The key is the member id, readable, so a search by it works too.
    keyed = [s for s in spans if "messaging.kafka.message.key" in s.get("tags", {})]
    assert keyed and all(s["tags"]["messaging.kafka.message.key"] == member for s in keyed)
    # The in-app message is decided and delivered at once under the fired timer, in notifications, and its
    # message.sent published in the same trace.
    decide = named(spans, "decide")
    assert (decide["traceId"], decide["localEndpoint"]["serviceName"]) == (fired["traceId"], "notifications")
    sent = named(spans, f"{settings.topic('notifications.deliveries.v1')} publish")
    assert sent["traceId"] == fired["traceId"]
    # A fresh Redis had none of the scripts: the first EVALSHA of each missed and was retried (in the member's work
    # or in a batch's or loop's, which names no member). That is expected, so it is an event on the span that went
    # on, and no span is red.
    assert not [s for s in spans if "error" in s.get("tags", {})], "red spans"
    everything = await service_spans(zipkin, ("identity", "journey", "notifications"))
    retries = [a["value"] for s in everything for a in s.get("annotations", []) if a["value"].startswith('{"retry"')]
    assert any("NOSCRIPT" in r for r in retries), retries
    assert not [
        s for s in everything if s["name"] == "evalsha" and s.get("tags", {}).get("otel.status_code") == "ERROR"
    ]
