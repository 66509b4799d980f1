"""Tracing for every service: OpenTelemetry, configured by the standard `OTEL_*` variables, set up once per process.

- `OTEL_TRACES_EXPORTER`: `otlp`, `console` or `none` (comma-separated for several). Unset means `none` here
  (not the SDK's `otlp`): a local run prints and sends nothing.
- `OTEL_EXPORTER_OTLP_PROTOCOL` (or `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`): `http/protobuf` (default) or `grpc`;
  `OTEL_EXPORTER_OTLP_ENDPOINT` and the other exporter variables are read by the exporters themselves.
- `OTEL_SERVICE_NAME` (default: the service's own name), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and
  `OTEL_TRACES_SAMPLER_ARG` (read by the SDK), `OTEL_SDK_DISABLED=true` to switch everything off.

What is traced: HTTP requests (FastAPI server spans; not /healthz, /readyz, /metrics), Kafka publish and consume
with the W3C trace context in the record headers (FastStream's `KafkaTelemetryMiddleware`, see `shared.kafka`),
Redis commands (command names only, never their arguments), outbound HTTP (httpx), and the spans the services
make themselves: journey's fired timers, notifications' deliveries and SMTP sends. Span attributes are ids and
types, never personal data.

Work that continues later, out of the request or message that caused it, keeps that cause's `traceparent`
(`current_traceparent`, stored with the work) and carries on under it (`context_from`) or links to it (`link_to`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from fastapi import FastAPI
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, SpanContext, Tracer
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
    unknown = [n for n in names if n not in ("otlp", "console")]
    if unknown:
        raise TelemetryMisconfigured(f"OTEL_{signal.upper()}_EXPORTER={unknown[0]}: use otlp, console or none")
    return names


def span_exporters() -> list[SpanExporter]:
    exporters: list[SpanExporter] = []
    for name in exporters_wanted("traces"):
        if name == "console":
            exporters.append(ConsoleSpanExporter())
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


class SpanFilter(SpanProcessor):
    """Passes finished spans on to `inner`, except Redis commands made outside any traced work (background
    polling), and without the caller's address and user agent."""

    def __init__(self, inner: SpanProcessor) -> None:
        self._inner = inner

    def on_start(self, span: SdkSpan, parent_context: Context | None = None) -> None:
        self._inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        scope = span.instrumentation_scope
        if span.parent is None and scope is not None and scope.name == REDIS_SCOPE:
            return
        self._inner.on_end(_without_caller(span))

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


def _without_caller(span: ReadableSpan) -> ReadableSpan:
    attributes = span.attributes or {}
    if CALLER_ATTRIBUTES.isdisjoint(attributes):
        return span
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes={k: v for k, v in attributes.items() if k not in CALLER_ATTRIBUTES},
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def tracer_provider(service: str, processors: Iterable[SpanProcessor]) -> TracerProvider:
    """A provider as the platform configures it (resource, sampler from the environment, `SpanFilter`), sending
    finished spans to `processors`."""
    provider = TracerProvider(resource=resource(service))
    for processor in processors:
        provider.add_span_processor(SpanFilter(processor))
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
    """The `traceparent` of a Kafka record's headers when its trace is sampled (flags bit 0), else None."""
    for name, value in headers or ():
        if name == "traceparent":
            text = value.decode("ascii", "replace")
            parts = text.split("-")
            if len(parts) == 4 and len(parts[3]) == 2 and int(parts[3], 16) & 1:
                return text
            return None
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
