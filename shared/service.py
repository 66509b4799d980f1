"""The one way a service process is put together: a FastAPI app and its Kafka subscribers under one lifespan.

Each service's `app.py` builds its routers and handlers from a `ServiceParts` and calls `build_app`. Nothing
connects at import time; tests pass their own settings (prefixes, a free broker port) and get real clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, Response
from faststream.kafka import KafkaBroker, KafkaRouter
from faststream.specification import AsyncAPI
from redis.asyncio import Redis
from starlette.types import ASGIApp, Receive, Scope, Send
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_fixed

from shared import telemetry
from shared.auth import Keyring
from shared.availability import Availability
from shared.contract import install_contract
from shared.event_schemas import link_schemas, schemas_router
from shared.events import EventData
from shared.failed_items import FailedItems
from shared.idempotency import IdempotentReplies
from shared.kafka import make_broker
from shared.logging import configure_logging
from shared.metrics import CONTENT_TYPE, ServiceMetrics
from shared.problems import install_problem_handlers
from shared.publishing import EventPublisher, publish_deadline
from shared.redis import make_redis
from shared.settings import Settings
from shared.topics import ALL_TOPICS, ensure_topics

log = logging.getLogger(__name__)
GRACEFUL_STOP_SECONDS = 5.0
BACKGROUND_STOP_SECONDS = 10.0

BackgroundTask = Callable[[], Awaitable[None]]


@dataclass
class ServiceParts:
    """The connections a service works with, made once per process (or per test)."""

    name: str
    settings: Settings
    broker: KafkaBroker
    redis: Redis
    metrics: ServiceMetrics
    publisher: EventPublisher = field(init=False)
    keyring: Keyring = field(init=False)
    redis_availability: Availability = field(init=False)

    def __post_init__(self) -> None:
        self.publisher = EventPublisher(self.broker, self.settings, self.metrics)
        self.keyring = Keyring(self.redis, self.settings)
        self.redis_availability = Availability("redis", self._ping_redis)

    @property
    def dependencies(self) -> tuple[Availability, ...]:
        return self.publisher.kafka, self.redis_availability

    async def _ping_redis(self) -> bool:
        return bool(await self.redis.ping())

    @classmethod
    def connect(cls, name: str, settings: Settings) -> ServiceParts:
        metrics = ServiceMetrics(name)
        return cls(name, settings, make_broker(settings, service=name, metrics=metrics), make_redis(settings), metrics)


METRICS_EXAMPLE = (
    'klantreis_events_consumed_total{topic="identity.members.v1",type="nl.bibliotheek.member.signed_up.v1"} 5210\n'
)
READY = {"status": "ready", "service": "identity", "checks": {"kafka": "ok", "redis": "ok"}}


def health_router(parts: ServiceParts) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get(
        "/healthz",
        summary="The process is up",
        responses={200: {"content": {"application/json": {"example": {"status": "ok", "service": "identity"}}}}},
    )
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": parts.name}

    @router.get(
        "/readyz",
        summary="Kafka and Redis are reachable",
        description="Each is asked at most once a second however often this is called; while either is away, "
        "writes answer 503 with Retry-After.",
        responses={
            200: {"content": {"application/json": {"example": READY}}},
            # Not a problem document: the same shape as the 200, so that a probe reads both alike.
            503: {
                "description": "not ready: `checks` names what is unreachable",
                "x-problem": False,
                "content": {
                    "application/json": {
                        "example": {**READY, "status": "not ready", "checks": {"kafka": "ok", "redis": "unreachable"}}
                    }
                },
            },
        },
    )
    async def readyz() -> JSONResponse:
        answers = await asyncio.gather(*(dependency.ready() for dependency in parts.dependencies))
        checks = {d.name: "ok" if up else "unreachable" for d, up in zip(parts.dependencies, answers, strict=True)}
        ready = all(answers)
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "service": parts.name, "checks": checks},
            status_code=200 if ready else 503,
        )

    @router.get(
        "/metrics",
        summary="Prometheus metrics: events in and out, handler time, consumer lag, dead letters",
        response_class=Response,
        responses={
            200: {
                "content": {CONTENT_TYPE: {"example": METRICS_EXAMPLE}},
                "description": "Prometheus text format",
            }
        },
    )
    async def metrics() -> Response:
        return Response(await parts.metrics.exposition(), media_type=CONTENT_TYPE)

    return router


def build_app(
    parts: ServiceParts,
    *,
    title: str,
    description: str,
    api: Sequence[APIRouter] = (),
    kafka: KafkaRouter | None = None,
    background: Sequence[BackgroundTask] = (),
    stop: Sequence[BackgroundTask] = (),
    close: Sequence[BackgroundTask] = (),
    publishes: Sequence[type[EventData]] = (),
    create_topics: bool = True,
) -> FastAPI:
    """`stop`: asked first at shutdown, so that background loops finish what they hold (within 5 s) before the
    rest is cancelled; only what ends a loop belongs there (anything else makes every stop wait the 5 s).
    `close`: resources the loops and routes use, closed once the loops are done."""
    telemetry.configure_tracing(parts.name)
    if kafka is not None:
        parts.broker.include_router(kafka)
    for model in publishes:
        # Declared for the AsyncAPI document only; events are sent by EventPublisher.
        parts.broker.publisher(
            parts.settings.topic(model.topic),
            title=model.event_type,
            schema=model,
            description=(model.__doc__ or "").strip() or None,
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A service signed in as its own principal administers no topics (least privilege): the operators' tools did.
        if create_topics and not parts.settings.kafka_username:
            await ensure_topics(parts.settings, ALL_TOPICS)
        await parts.broker.start()
        # Only the topics it publishes: a service may not even see the others (docs/security.md).
        await parts.publisher.learn_topics({parts.settings.topic(model.topic) for model in publishes})
        # Pushed metrics need the lag measured without a scrape.
        loops = (*background, parts.metrics.track_lag) if parts.metrics.pushed else background
        tasks = [asyncio.create_task(_supervised(parts.name, task)) for task in loops]
        try:
            yield
        finally:
            for ask in stop:
                await ask()
            if stop and tasks:
                await asyncio.wait(tasks, timeout=GRACEFUL_STOP_SECONDS)
            for task in tasks:
                task.cancel()
            # A loop stuck in a request that never returns must not keep the service from stopping.
            _, stuck = await asyncio.wait(tasks, timeout=BACKGROUND_STOP_SECONDS) if tasks else (set(), set())
            if stuck:
                log.warning("%s: %d background task(s) did not stop within %.0f s; going on without them",
                            parts.name, len(stuck), BACKGROUND_STOP_SECONDS)  # fmt: skip
            for resource in close:
                await resource()
            # Stopping the broker lets in-flight handlers finish and commit; nothing unprocessed is committed.
            for dependency in parts.dependencies:
                await dependency.close()
            await parts.broker.stop()
            await parts.redis.aclose()
            telemetry.flush()
            parts.metrics.shutdown()

    app = FastAPI(title=title, description=description, version="1", lifespan=lifespan)
    telemetry.instrument_app(app, meter_provider=parts.metrics.provider)
    app.add_middleware(_BoundedPublishing, seconds=parts.settings.publish_timeout)
    app.state.availability = {dependency.name: dependency for dependency in parts.dependencies}
    install_problem_handlers(app, FailedItems(parts.publisher, parts.name).keep_request)
    install_contract(app)
    app.include_router(health_router(parts))

    @app.get(
        "/asyncapi",
        tags=["operations"],
        summary="AsyncAPI 3.0 document: the events this service uses",
        responses={
            200: {"content": {"application/json": {"example": {"asyncapi": "3.0.0", "info": {"title": title}}}}}
        },
    )
    async def asyncapi() -> JSONResponse:
        spec = AsyncAPI(parts.broker, title=title, version="1", description=description, schema_version="3.0.0")
        return JSONResponse(link_schemas(spec.to_specification().to_jsonable()))

    app.include_router(schemas_router())
    for router in api:
        app.include_router(router)
    app.state.parts = parts
    app.state.keyring = parts.keyring
    app.state.idempotent_replies = IdempotentReplies(parts.redis, parts.settings)
    return app


class _BoundedPublishing:
    """Every HTTP request publishes under the publish deadline: a client gets 503 rather than wait while Kafka is
    away (`shared.kafka.publish_deadline`)."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self._app = app
        self._seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        with publish_deadline(self._seconds):
            await self._app(scope, receive, send)


async def _supervised(service: str, task: BackgroundTask) -> None:
    """Keep a background loop alive: log each failure and start it again after a pause (a cancellation, being a
    BaseException, is not retried: it stops the loop)."""

    def failed(state: RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome is not None else None
        log.error("%s: background task %s failed; restarting in 1 s", service, task.__name__, exc_info=failure)

    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(Exception), wait=wait_fixed(1), before_sleep=failed
    ):
        with attempt:
            await task()


# Young objects a collection waits for (CPython's default: 700). A batch of thousands of events allocates
# hundreds of thousands of objects, nearly all freed by reference counting: at 700, 150 young and one or two full
# collections per 5,000-event POST /v1/events, 100-200 ms of it; at 20,000, five young ones, 20-60 ms.
YOUNG_COLLECTION_THRESHOLD = 20_000


def freeze_startup_heap() -> None:
    """Leave what the process built at start (modules, models, routes) out of the garbage collector's full passes,
    and collect the young generation less often.

    A batch of thousands of events allocates enough to set off full collections, each of which walked the whole
    start-up heap: 130-220 ms of a 5,000-event POST /v1/events, 15-20 ms once frozen (bench/ingest.py)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)


def serve(app: FastAPI, url: str, host: str) -> None:
    """Run one service process on the port of its configured URL, listening on `host` (0.0.0.0 in a container)."""
    from urllib.parse import urlparse

    import uvicorn

    parsed = urlparse(url)
    configure_logging(app.state.parts.name)
    freeze_startup_heap()
    # log_config=None: uvicorn's records go through the JSON lines too.
    uvicorn.run(app, host=host, port=parsed.port or 80, log_level="info", access_log=False, log_config=None)
