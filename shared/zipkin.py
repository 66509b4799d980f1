"""Spans to a Zipkin server (`OTEL_TRACES_EXPORTER=zipkin`, `OTEL_EXPORTER_ZIPKIN_ENDPOINT`), in Zipkin's JSON v2.

Zipkin has no span links: a span's links become tags, `link.<n>.trace_id` and `link.<n>.span_id` (and the link's
own attributes as `link.<n>.<name>`), so a fired timer's tags name the trace of the event that started the timer:
open `<zipkin>/zipkin/traces/<trace id>`, or search `link.0.trace_id=<trace id>` to go the other way.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.exporter.zipkin.json import ZipkinExporter as JsonZipkinExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import format_span_id, format_trace_id

# A batch consumer's span links to every record it read (up to hundreds): the first few say where to look.
LINKS_AS_TAGS = 8


class ZipkinExporter(SpanExporter):
    def __init__(self, endpoint: str | None = None) -> None:
        self._inner = JsonZipkinExporter(endpoint=endpoint)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        converted: Sequence[ReadableSpan] = [with_links_as_tags(span) for span in spans]
        return self._inner.export(converted)  # type: ignore[arg-type]  # typed as API spans, reads SDK ones

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def link_tags(span: ReadableSpan) -> dict[str, str]:
    tags: dict[str, str] = {}
    for n, link in enumerate(span.links[:LINKS_AS_TAGS]):
        tags[f"link.{n}.trace_id"] = format_trace_id(link.context.trace_id)
        tags[f"link.{n}.span_id"] = format_span_id(link.context.span_id)
        for name, value in (link.attributes or {}).items():
            tags[f"link.{n}.{name}"] = str(value)
    if len(span.links) > LINKS_AS_TAGS:
        tags["link.count"] = str(len(span.links))
    return tags


def with_links_as_tags(span: ReadableSpan) -> ReadableSpan:
    if not span.links:
        return span
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes={**(span.attributes or {}), **link_tags(span)},
        events=span.events,
        links=(),
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
