"""Tracing for every service: OpenTelemetry, configured by the standard `OTEL_*` variables, set up once per process.

- `OTEL_TRACES_EXPORTER`: `otlp`, `zipkin`, `console` or `none` (comma-separated for several). Unset means `none`
  here (not the SDK's `otlp`); the local run (`klantreis run`) sets `zipkin` for its Zipkin server.
- `OTEL_EXPORTER_OTLP_PROTOCOL` (or `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`): `http/protobuf` (default) or `grpc`;
  `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_ZIPKIN_ENDPOINT` and the other exporter variables are read by the
  exporters themselves.
- `OTEL_SERVICE_NAME` (default: the service's own name), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and
  `OTEL_TRACES_SAMPLER_ARG` (read by the SDK: sampling is set there), `OTEL_SDK_DISABLED=true` to switch
  everything off.

What is traced: HTTP requests (FastAPI server spans; not /healthz, /readyz, /metrics), Kafka publish and consume
with the W3C trace context in the record headers (FastStream's `KafkaTelemetryMiddleware`, see `shared.kafka`),
Redis commands (command names only, never their arguments), outbound HTTP (httpx), and the spans the services
make themselves: journey's fired timers, notifications' deliveries and SMTP sends. Span attributes are ids and
types, never personal data. Every span about one member carries `klantreis.member_id` (the pseudonymous id): the
Kafka spans of member-keyed topics from the record key, the services' own spans from their work, and the spans
under those (Redis commands, HTTP calls) from their local root (`SpanFilter`). Expected retries (a Redis script
not yet cached, a handler retried after a transient failure, a commit refused by a rebalance) are `retry` events on
the span that carried on, and the part that failed before the retry is not marked failed; a dead letter is.

Work that continues later, out of the request or message that caused it, keeps that cause's `traceparent`
(`current_traceparent`, stored with the work) and carries on under it (`context_from`) or links to it (`link_to`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, SynchronousMultiSpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, SpanContext, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACER_NAME = "klantreis"
NAMESPACE = "klantreis"
# Server spans for these would be one trace per probe or scrape: noise, not work.
UNTRACED_PATHS = "/healthz$,/readyz$,/metrics$"
# Spans of this instrumentation without a parent are the polling of background loops (timers due? deliveries
# due?): not exported. Inside a request, a consumed message, a fired timer or a delivery they are.
REDIS_SCOPE = "opentelemetry.instrumentation.redis"
# Who called: a member's app calls from the member's device, and an IP address or user agent is personal data.
# Server spans get these from the HTTP instrumentation; they are left out of what is exported.
CALLER_ATTRIBUTES = frozenset(
    {
        "net.peer.ip", "net.peer.port", "net.sock.peer.addr", "net.sock.peer.port", "http.client_ip",
        "client.address", "client.port", "network.peer.address", "network.peer.port", "http.user_agent",
        "user_agent.original",
    }
)  # fmt: skip

# A URL's query can hold what a person typed (the desk looks members up by e-mail address or phone number): URLs
# are exported without it.
URL_ATTRIBUTES = frozenset({"http.url", "url.full", "http.target", "url.query"})

_PROPAGATOR = TraceContextTextMapPropagator()
_configured = False


class TelemetryMisconfigured(ValueError):
    """An `OTEL_*` variable names something this platform cannot do."""


def _names(variable: str, default: str) -> list[str]:
    raw = os.environ.get(variable, "").strip() or default
    return [name.strip().lower() for name in raw.split(",") if name.strip()]


def _disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def otlp_protocol(signal: str) -> str:
    """The OTLP protocol for `signal` (`traces`, `metrics`): the signal's own variable, else the general one."""
    protocol = (
        os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol not in ("http/protobuf", "grpc"):
        raise TelemetryMisconfigured(f"OTLP protocol {protocol!r}: use http/protobuf or grpc")
    return protocol


def exporters_wanted(signal: str) -> list[str]:
    """The exporters named by `OTEL_<SIGNAL>_EXPORTER`, without `none`; empty when the SDK is disabled."""
    if _disabled():
        return []
    names = [n for n in _names(f"OTEL_{signal.upper()}_EXPORTER", "none") if n != "none"]
    known = ("otlp", "zipkin", "console") if signal == "traces" else ("otlp", "console")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise TelemetryMisconfigured(f"OTEL_{signal.upper()}_EXPORTER={unknown[0]}: use {', '.join(known)} or none")
    return names


def span_exporters() -> list[SpanExporter]:
    exporters: list[SpanExporter] = []
    for name in exporters_wanted("traces"):
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name == "zipkin":
            from shared.zipkin import ZipkinExporter

            exporters.append(ZipkinExporter())
        elif otlp_protocol("traces") == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

            exporters.append(GrpcExporter())
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

            exporters.append(HttpExporter())
    return exporters


def resource(service: str) -> Resource:
    """Who emits: `service.name` (OTEL_SERVICE_NAME wins), the namespace, and OTEL_RESOURCE_ATTRIBUTES."""
    name = os.environ.get("OTEL_SERVICE_NAME", "").strip() or service
    return Resource.create({"service.name": name, "service.namespace": NAMESPACE})


MEMBER_ATTRIBUTE = "klantreis.member_id"
# redis-py runs a registered script with EVALSHA; a server that does not have it yet (the first call after a
# start, or after SCRIPT FLUSH) answers NOSCRIPT, and redis-py loads the script and runs it again.
SCRIPT_NOT_CACHED = "redis.exceptions.NoScriptError"


class SpanFilter(SpanProcessor):
    """Passes finished spans on to `inner`: without Redis commands made outside any traced work (background
    polling), without the caller's address and user agent, with the member id of their local root (a span that
    learned the member only after its first Redis command, such as identity's sign-up), and with a Redis script
    that was not cached yet as an event on its parent instead of a failed span."""

    def __init__(self, inner: SpanProcessor) -> None:
        self._inner = inner
        # Spans under way in this process: what each one's local root is, and what ended under a root still going
        # that has no member id yet (passed on when the root ends).
        self._live: dict[int, SdkSpan] = {}
        self._root: dict[int, int] = {}
        self._waiting: dict[int, list[ReadableSpan]] = {}
        self._lock = threading.Lock()  # spans may end on other threads (httpx in a worker thread, exporters)

    def on_start(self, span: SdkSpan, parent_context: Context | None = None) -> None:
        span_id = span.context.span_id
        parent = span.parent
        with self._lock:
            root = self._root.get(parent.span_id) if parent is not None and not parent.is_remote else None
            if root is None:
                root = span_id
            elif MEMBER_ATTRIBUTE not in (span.attributes or {}) and root in self._live:
                member = (self._live[root].attributes or {}).get(MEMBER_ATTRIBUTE)
                if member is not None:
                    span.set_attribute(MEMBER_ATTRIBUTE, member)
            self._live[span_id] = span
            self._root[span_id] = root
        self._inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        span_id = span.context.span_id
        scope = span.instrumentation_scope
        with self._lock:
            self._live.pop(span_id, None)
            root = self._root.pop(span_id, span_id)
            if scope is not None and scope.name == REDIS_SCOPE:
                if span.parent is None:
                    return
                if _script_not_cached(span):
                    self._retried(span)
                    return
            failed = span.status.status_code == StatusCode.ERROR
            if root != span_id and root in self._live and (failed or MEMBER_ATTRIBUTE not in (span.attributes or {})):
                self._waiting.setdefault(root, []).append(span)
                return
            waiting = self._waiting.pop(span_id, [])
        member = (span.attributes or {}).get(MEMBER_ATTRIBUTE) if root == span_id else None
        # A part that failed, under work that then retried (a `retry` event after it) and did not fail in the end,
        # was an expected retry: not red.
        retried = (
            [e.timestamp for e in span.events if e.name == "retry"]
            if span.status.status_code != StatusCode.ERROR
            else []
        )
        for child in waiting:
            self._inner.on_end(_exported(child, member, retried=any(at >= (child.end_time or 0) for at in retried)))
        self._inner.on_end(_exported(span, None))

    def _retried(self, span: ReadableSpan) -> None:
        parent = self._live.get(span.parent.span_id) if span.parent is not None else None
        if parent is not None:
            parent.add_event(
                "retry",
                {"retry.reason": "redis script not cached yet (NOSCRIPT): loaded and run again", "retry.of": span.name},
                timestamp=span.end_time,
            )

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


def _script_not_cached(span: ReadableSpan) -> bool:
    return span.status.status_code == StatusCode.ERROR and any(
        event.name == "exception" and (event.attributes or {}).get("exception.type") == SCRIPT_NOT_CACHED
        for event in span.events
    )


def _exported(span: ReadableSpan, member: Any, *, retried: bool = False) -> ReadableSpan:
    """`span` as exported: without the caller's attributes, with `member` as its member id if it has none, and
    when it failed but was `retried` successfully, not failed, with a `retried` event instead."""
    attributes = span.attributes or {}
    add_member = member is not None and MEMBER_ATTRIBUTE not in attributes
    retried = retried and span.status.status_code == StatusCode.ERROR
    queried = [k for k in URL_ATTRIBUTES.intersection(attributes) if k == "url.query" or "?" in str(attributes[k])]
    if CALLER_ATTRIBUTES.isdisjoint(attributes) and not queried and not add_member and not retried:
        return span
    kept = {k: v for k, v in attributes.items() if k not in CALLER_ATTRIBUTES and k != "url.query"}
    kept.update({k: str(attributes[k]).split("?", 1)[0] for k in queried if k != "url.query"})
    if add_member:
        kept[MEMBER_ATTRIBUTE] = member
    events = span.events
    if retried:
        reason = {"retry.reason": span.status.description or "failed"}
        events = (*events, Event("retried", reason, timestamp=span.end_time))
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=kept,
        events=events,
        links=span.links,
        kind=span.kind,
        status=Status(StatusCode.UNSET) if retried else span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def tracer_provider(service: str, processors: Iterable[SpanProcessor]) -> TracerProvider:
    """A provider as the platform configures it (resource, sampler from the environment, `SpanFilter`), sending
    finished spans to `processors`."""
    provider = TracerProvider(resource=resource(service))
    # One filter for all of them: it changes spans under way (member id, retry events) once, not once per exporter.
    every = SynchronousMultiSpanProcessor()  # type: ignore[no-untyped-call]
    for processor in processors:
        every.add_span_processor(processor)
    provider.add_span_processor(SpanFilter(every))
    return provider


def configure_tracing(service: str) -> None:
    """Once per process: instrument Redis and httpx, and install the exporting provider when `OTEL_TRACES_EXPORTER`
    names an exporter. Otherwise the global provider is left alone: spans cost nearly nothing and go nowhere,
    unless someone (a test) installs a provider of their own."""
    global _configured
    if _configured:
        return
    _configured = True
    if _disabled():
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    # Both use the global provider at span time, so a provider installed later (by a test) is used too.
    RedisInstrumentor().instrument()
    HTTPXClientInstrumentor().instrument()
    exporters = span_exporters()
    if exporters:
        trace.set_tracer_provider(tracer_provider(service, (BatchSpanProcessor(e) for e in exporters)))


def instrument_app(app: FastAPI, meter_provider: Any = None) -> None:
    """Server spans for every request but probes and scrapes; trace context from `traceparent` is continued."""
    if _disabled():
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app, excluded_urls=UNTRACED_PATHS, exclude_spans=["receive", "send"], meter_provider=meter_provider
    )


def flush() -> None:
    """Send what is buffered (at shutdown): a provider of the SDK flushes, the no-op one has nothing."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush(5_000)


def tracer() -> Tracer:
    return trace.get_tracer(TRACER_NAME)


# ------------------------------------------------------------------------------------- carrying context on


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the current span if it is sampled, to store with work that continues later;
    None when there is nothing worth keeping (no trace, or one not recorded)."""
    span_context = trace.get_current_span().get_span_context()
    if not (span_context.is_valid and span_context.trace_flags.sampled):
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def sampled_traceparent(headers: Sequence[tuple[str, bytes]] | None) -> str | None:
    """The `traceparent` of a Kafka record's headers when its trace is sampled (flags bit 0); None when it is not,
    or is missing, or is not a traceparent at all (a producer's garbage must not stop a consumer)."""
    value = dict(headers or ()).get("traceparent")  # a dict made in C: faster than a loop over ten headers
    if value is None:
        return None
    text = value.decode("ascii", "replace")
    parts = text.split("-")
    if len(parts) != 4 or len(parts[3]) != 2:
        return None
    try:
        return text if int(parts[3], 16) & 1 else None
    except ValueError:
        return None


def context_from(traceparent: str | None) -> Context | None:
    """The trace context a stored `traceparent` names, to carry on under it; None if there is none."""
    if not traceparent:
        return None
    extracted = _PROPAGATOR.extract({"traceparent": traceparent})
    return extracted if trace.get_current_span(extracted).get_span_context().is_valid else None


def link_to(traceparent: str | None, **attributes: str) -> list[Link]:
    """A link to the span a stored `traceparent` names (none if there is none)."""
    extracted = context_from(traceparent)
    if extracted is None:
        return []
    span_context: SpanContext = trace.get_current_span(extracted).get_span_context()
    return [Link(span_context, attributes=attributes or None)]


@contextlib.contextmanager
def within(context: Context | None) -> Iterator[None]:
    """Make `context` current for a block (nothing changes when it is None)."""
    token = otel_context.attach(context) if context is not None else None
    try:
        yield
    finally:
        if token is not None:
            otel_context.detach(token)


def span_attributes(**values: str | int | None) -> Mapping[str, str | int]:
    """`klantreis.*` span attributes from ids and types, leaving out what is not known."""
    return {f"klantreis.{name}": value for name, value in values.items() if value is not None}


def attribute_member(member_id: str) -> None:
    """Say which member the current span's work is about (once the work knows it): the span and the spans under
    it carry `klantreis.member_id`."""
    trace.get_current_span().set_attribute(MEMBER_ATTRIBUTE, member_id)


def failed(reason: str) -> None:
    """The current span's work failed for good (a dead letter): red, for someone to look at."""
    trace.get_current_span().set_status(Status(StatusCode.ERROR, reason))


def expected_retry(reason: str, error: BaseException, attempt: int) -> None:
    """Record on the current span that its work failed transiently and is tried again (not a failure)."""
    trace.get_current_span().add_event(
        "retry",
        {"retry.reason": reason, "retry.attempt": attempt, "exception.type": type(error).__name__},
    )


# ------------------------------------------------------------------------------------- the trace viewer


def member_traces_url(viewer_url: str, member_id: str, *, days: int = 7, now: datetime | None = None) -> str | None:
    """Zipkin's search for every trace with a span of `member_id`, from `days` ago until a day after `now`
    (a link that stays good for a day); None without a viewer. `viewer_url` is Zipkin's UI, such as
    `http://127.0.0.1:9411/zipkin` (KLANTREIS_TRACE_VIEWER_URL)."""
    if not viewer_url:
        return None
    end_ms = int(((now or datetime.now(UTC)) + timedelta(days=1)).timestamp() * 1000)
    query = urllib.parse.urlencode(
        {
            "annotationQuery": f"{MEMBER_ATTRIBUTE}={member_id}",
            # Zipkin's UI runs the search on opening only with an end time and a lookback; `millis` takes any.
            "lookback": "millis",
            "millis": str((days + 1) * 86_400_000),
            "endTs": str(end_ms),
            "limit": "50",
        }
    )
    return f"{viewer_url.rstrip('/')}/?{query}"
