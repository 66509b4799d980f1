"""Wiring of the analytics service: the only place its parts meet."""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import AsyncIterator, Iterator

from fastapi import FastAPI

from services.analytics.api import reports_router
from services.analytics.cohorts_api import cohorts_router
from services.analytics.handlers import FactWriter, analytics_router
from services.analytics.interest import interest_router
from services.analytics.pages import pages_router
from services.analytics.paths import next_steps_up_to_date
from services.analytics.population_api import build as population_routers
from services.analytics.queries import derived, fingerprint
from services.analytics.reading import Reports, rules_in_force
from services.analytics.settings import AnalyticsSettings
from services.analytics.store import AnalyticsStore
from shared.service import ServiceParts, build_app
from shared.settings import Settings


@contextlib.contextmanager
def collecting_seldom() -> Iterator[None]:
    """Ingest makes hundreds of thousands of objects per batch (records, rows), nearly all freed with it: Python's
    cyclic collector, run every 700 allocations, walked the live heap so often that it took a quarter of ingest's
    CPU (py-spy). What exists at start is frozen (it lives as long as the service) and the collector runs less
    often; both undone at the end (tests run services in one process)."""
    previous = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(100_000, 20, 20)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()


# How long a thread may hold the GIL while another waits for it (Python's default: 5 ms). See `gil_handed_over_soon`.
GIL_SWITCH_SECONDS = 0.001


@contextlib.contextmanager
def gil_handed_over_soon() -> Iterator[None]:
    """The store's statements run in a worker thread, and chDB takes the GIL to start and end each one and to read
    a batch's Arrow tables (`Python(batch)`); meanwhile the event loop decodes the next batch and holds the GIL for
    Python's whole switch interval each time. A look-up that takes 6 ms alone took 50-90 ms so (the interval once
    per acquisition), and ingest was a third slower: the worker thread gets the GIL within 1 ms instead. Undone at
    the end (tests run services in one process)."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def create_app(settings: Settings | None = None, *, parts: ServiceParts | None = None) -> FastAPI:
    if not isinstance(settings, AnalyticsSettings):
        settings = AnalyticsSettings(**(settings.model_dump() if settings is not None else {}))
    parts = parts or ServiceParts.connect("analytics", settings)
    store = AnalyticsStore(settings)
    reading = Reports(store, settings)
    writer = FactWriter(store, reading.windows)
    reach_0_18, libraries = population_routers(parts, reading, store, settings)
    app = build_app(
        parts,
        title="klantreis analytics",
        description="The network's read side: every member, usage, friction and delivery event as one pseudonymous "
        "row in ClickHouse, and the reports analysts ask of them (frictions, funnels, reach, a member's timeline).",
        api=[
            reports_router(reading, settings),
            cohorts_router(reading, settings),
            interest_router(store, reading, settings.analytics_min_cell),
            pages_router(parts, [rule.id for rule in rules_in_force(settings).rules]),
            *reach_0_18,
        ],
        close=[libraries.close],
        kafka=analytics_router(writer, settings, parts.publisher),
    )
    served = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await store.open()
        await store.windows_for(fingerprint(reading.windows), derived(reading.windows))
        await next_steps_up_to_date(store)  # a store made before `next_steps`: all of it, once
        with collecting_seldom(), gil_handed_over_soon():
            async with served(app):
                yield
        # After the consumers stopped: nothing writes any more. The data folder is free for another process.
        await store.close()

    app.router.lifespan_context = lifespan
    app.state.store = store
    app.state.writer = writer
    app.state.reports = reading
    return app
