"""Tracing chosen by the OTEL_* variables, trace context carried on, and log lines as JSON with trace ids."""

from __future__ import annotations

import io
import json
import logging
import urllib.parse
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from shared import telemetry
from shared.logging import JsonLines

SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
NOT_SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


def test_nothing_is_exported_unless_an_exporter_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    assert telemetry.span_exporters() == []
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert telemetry.span_exporters() == []


def test_otlp_over_http_by_default_over_grpc_when_asked_and_console_beside_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp,console")
    assert [type(e) for e in telemetry.span_exporters()] == [HttpExporter, ConsoleSpanExporter]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert [type(e) for e in telemetry.span_exporters()] == [GrpcExporter, ConsoleSpanExporter]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")  # the signal's own variable wins
    assert [type(e) for e in telemetry.span_exporters()] == [HttpExporter, ConsoleSpanExporter]


def test_an_exporter_or_protocol_the_platform_does_not_know_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jaeger")
    with pytest.raises(telemetry.TelemetryMisconfigured, match="OTEL_TRACES_EXPORTER=jaeger"):
        telemetry.span_exporters()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(telemetry.TelemetryMisconfigured, match="http/json"):
        telemetry.span_exporters()


def test_the_sdk_switched_off_exports_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert telemetry.span_exporters() == []


def test_the_service_name_is_the_service_s_own_unless_otel_service_name_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert telemetry.resource("journey").attributes["service.name"] == "journey"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "journey-eu-1")
    assert telemetry.resource("journey").attributes["service.name"] == "journey-eu-1"


def test_only_a_sampled_trace_context_is_kept_with_work_that_continues_later() -> None:
    assert telemetry.sampled_traceparent([("ce_id", b"x"), ("traceparent", SAMPLED.encode())]) == SAMPLED
    assert telemetry.sampled_traceparent([("traceparent", NOT_SAMPLED.encode())]) is None
    assert telemetry.sampled_traceparent([("traceparent", b"garbage")]) is None
    assert telemetry.sampled_traceparent([("traceparent", b"00-trace-span-zz")]) is None  # flags not hex
    assert telemetry.sampled_traceparent(None) is None


def test_a_link_points_at_the_span_a_stored_traceparent_names() -> None:
    [link] = telemetry.link_to(SAMPLED)
    assert f"{link.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert f"{link.context.span_id:016x}" == "b7ad6b7169203331"
    assert telemetry.link_to(None) == []
    assert telemetry.context_from("not a traceparent") is None


def test_work_carried_on_under_a_stored_traceparent_joins_its_trace() -> None:
    spans = InMemorySpanExporter()
    tracer = telemetry.tracer_provider("test", [SimpleSpanProcessor(spans)]).get_tracer("test")
    with tracer.start_as_current_span("decide"):
        stored = telemetry.current_traceparent()
    assert stored is not None
    with tracer.start_as_current_span("deliver", context=telemetry.context_from(stored)):
        pass
    decide, deliver = spans.get_finished_spans()
    assert deliver.parent is not None
    assert (deliver.context.trace_id, deliver.parent.span_id) == (decide.context.trace_id, decide.context.span_id)


def test_redis_commands_outside_any_traced_work_are_not_exported() -> None:
    spans = InMemorySpanExporter()
    provider = telemetry.tracer_provider("test", [SimpleSpanProcessor(spans)])
    redis = provider.get_tracer(telemetry.REDIS_SCOPE)
    with redis.start_as_current_span("ZRANGEBYSCORE"):
        pass  # a background loop polling
    with provider.get_tracer("klantreis").start_as_current_span("deliver"), redis.start_as_current_span("HGETALL"):
        pass
    assert sorted(s.name for s in spans.get_finished_spans()) == ["HGETALL", "deliver"]


def test_a_log_line_is_one_json_object_with_the_service_and_the_current_trace_and_span() -> None:
    spans = InMemorySpanExporter()
    tracer = telemetry.tracer_provider("test", [SimpleSpanProcessor(spans)]).get_tracer("test")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLines("journey"))
    log = logging.getLogger("test.json.lines")
    log.addHandler(handler)
    log.propagate = False
    try:
        with tracer.start_as_current_span("handle") as span:
            log.warning("dead-lettered %s[%s]@%s", "identity.members.v1", 1, 42)
        log.error("outside any trace")
    finally:
        log.removeHandler(handler)
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["message"] == "dead-lettered identity.members.v1[1]@42"
    assert (inside["service"], inside["level"], inside["logger"]) == ("journey", "WARNING", "test.json.lines")
    assert inside["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert inside["span_id"] == f"{span.get_span_context().span_id:016x}"
    assert "trace_id" not in outside


def test_the_caller_s_address_and_user_agent_are_not_exported() -> None:
    spans = InMemorySpanExporter()
    provider = telemetry.tracer_provider("test", [SimpleSpanProcessor(spans)])
    attributes = {"http.route": "/v1/members/{member_id}/inbox", "net.peer.ip": "203.0.113.7",
                  "client.address": "203.0.113.7", "http.user_agent": "BibliotheekApp/5.1 (iPhone)"}  # fmt: skip
    with provider.get_tracer("test").start_as_current_span("GET /v1/members/{member_id}/inbox", attributes=attributes):
        pass
    [span] = spans.get_finished_spans()
    assert dict(span.attributes or {}) == {"http.route": "/v1/members/{member_id}/inbox"}


def test_a_url_is_exported_without_its_query_which_may_hold_what_someone_typed() -> None:
    spans = InMemorySpanExporter()
    provider = telemetry.tracer_provider("test", [SimpleSpanProcessor(spans)])
    attributes = {"http.route": "/pages/desk", "http.url": "http://identity/pages/desk?q=sanne%40example.nl",
                  "http.target": "/pages/desk?q=0612345678", "url.query": "q=0612345678"}  # fmt: skip
    with provider.get_tracer("test").start_as_current_span("GET /pages/desk", attributes=attributes):
        pass
    [span] = spans.get_finished_spans()
    assert dict(span.attributes or {}) == {
        "http.route": "/pages/desk", "http.url": "http://identity/pages/desk", "http.target": "/pages/desk",
    }  # fmt: skip


def test_spans_under_a_member_s_work_carry_the_member_even_those_that_ended_before_the_member_was_known() -> None:
    spans = InMemorySpanExporter()
    provider = telemetry.tracer_provider("test", [SimpleSpanProcessor(spans)])
    redis = provider.get_tracer(telemetry.REDIS_SCOPE)
    with provider.get_tracer("test").start_as_current_span("POST /v1/members"):
        with redis.start_as_current_span("HGETALL"):
            pass  # the API key, looked up before the member exists
        telemetry.attribute_member("m-1")
        with redis.start_as_current_span("HSET"):
            pass
    with provider.get_tracer("test").start_as_current_span("GET /healthz"), redis.start_as_current_span("PING"):
        pass
    members = {s.name: (s.attributes or {}).get("klantreis.member_id") for s in spans.get_finished_spans()}
    assert members == {"HGETALL": "m-1", "HSET": "m-1", "POST /v1/members": "m-1", "GET /healthz": None, "PING": None}


def test_a_redis_script_not_yet_cached_is_an_event_on_the_work_that_went_on_not_a_failed_span() -> None:
    from redis.exceptions import NoScriptError

    spans = InMemorySpanExporter()
    provider = telemetry.tracer_provider("test", [SimpleSpanProcessor(spans)])
    redis = provider.get_tracer(telemetry.REDIS_SCOPE)
    with provider.get_tracer("test").start_as_current_span("deliver"):
        with pytest.raises(NoScriptError), redis.start_as_current_span("EVALSHA"):
            raise NoScriptError("No matching script. Please use EVAL.")
        with redis.start_as_current_span("SCRIPT LOAD"), redis.start_as_current_span("EVALSHA"):
            pass
        with pytest.raises(ConnectionError), redis.start_as_current_span("HGET"):
            raise ConnectionError("Redis away")  # a failure is still one
    by_name = [(s.name, s.status.status_code.name) for s in spans.get_finished_spans()]
    assert sorted(by_name) == [("EVALSHA", "UNSET"), ("HGET", "ERROR"), ("SCRIPT LOAD", "UNSET"), ("deliver", "UNSET")]
    deliver = next(s for s in spans.get_finished_spans() if s.name == "deliver")
    [retry] = deliver.events
    assert retry.name == "retry"
    assert "NOSCRIPT" in str((retry.attributes or {})["retry.reason"])


def test_zipkin_gets_a_span_s_links_as_tags_it_can_search_and_follow() -> None:
    from shared.zipkin import with_links_as_tags

    spans = InMemorySpanExporter()
    tracer = telemetry.tracer_provider("test", [SimpleSpanProcessor(spans)]).get_tracer("test")
    with tracer.start_span("fire online-signup-not-activated", links=telemetry.link_to(SAMPLED, why="started by")):
        pass
    [fired] = spans.get_finished_spans()
    tags = with_links_as_tags(fired).attributes or {}
    assert tags["link.0.trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert tags["link.0.span_id"] == "b7ad6b7169203331"
    assert tags["link.0.why"] == "started by"


def test_the_viewer_link_searches_the_member_s_spans_and_there_is_none_without_a_viewer() -> None:
    noon = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    url = telemetry.member_traces_url("http://127.0.0.1:9411/zipkin/", "cc02c620", now=noon)
    assert url is not None
    assert url.startswith("http://127.0.0.1:9411/zipkin/?annotationQuery=klantreis.member_id%3Dcc02c620&")
    query = dict(urllib.parse.parse_qsl(url.partition("?")[2]))
    end = datetime.fromtimestamp(int(query["endTs"]) / 1000, UTC)
    assert end == noon + timedelta(days=1)
    assert end - timedelta(milliseconds=int(query["millis"])) == noon - timedelta(days=7)
    assert telemetry.member_traces_url("", "cc02c620") is None


def test_a_kafka_key_is_recorded_as_text_and_names_the_member_on_topics_keyed_by_member() -> None:
    from shared.kafka_spans import readable

    key = "messaging.kafka.message.key"
    assert readable({key: b"m-1"}, "t1.identity.members.v1") == {key: "m-1", "klantreis.member_id": "m-1"}
    assert readable({key: b"m-1"}, "t1.journey.frictions.v1.dlq")["klantreis.member_id"] == "m-1"
    assert readable({key: b"activate-your-card"}, "t1.notifications.campaigns.v1") == {key: "activate-your-card"}


async def test_a_commit_refused_by_a_rebalance_is_an_event_on_the_span_not_a_failure() -> None:
    from aiokafka.errors import CommitFailedError

    from shared.kafka import _commit

    class MovedAway:
        async def ack(self) -> None:
            raise CommitFailedError("the group rebalanced")

    spans = InMemorySpanExporter()
    tracer = telemetry.tracer_provider("test", [SimpleSpanProcessor(spans)]).get_tracer("test")
    with tracer.start_as_current_span("identity.members.v1 process"):
        await _commit(MovedAway())  # type: ignore[arg-type]
    [consumed] = spans.get_finished_spans()
    assert consumed.status.status_code.name == "UNSET"
    [retry] = consumed.events
    assert "rebalance" in str((retry.attributes or {})["retry.reason"])


def test_with_two_exporters_each_gets_the_retry_once() -> None:
    from redis.exceptions import NoScriptError

    first, second = InMemorySpanExporter(), InMemorySpanExporter()
    provider = telemetry.tracer_provider("test", [SimpleSpanProcessor(first), SimpleSpanProcessor(second)])
    redis = provider.get_tracer(telemetry.REDIS_SCOPE)
    with (
        provider.get_tracer("test").start_as_current_span("deliver"),
        pytest.raises(NoScriptError),
        redis.start_as_current_span("EVALSHA"),
    ):
        raise NoScriptError("No matching script. Please use EVAL.")
    for exporter in (first, second):
        [deliver] = exporter.get_finished_spans()
        assert [e.name for e in deliver.events] == ["retry"]


@pytest.mark.parametrize("outcome", ["retried", "dead-lettered", "not retried"])
def test_a_part_that_failed_is_red_unless_its_work_retried_it_and_did_not_fail(outcome: str) -> None:
    spans = InMemorySpanExporter()
    provider = telemetry.tracer_provider("test", [SimpleSpanProcessor(spans)])
    with provider.get_tracer("test").start_as_current_span("identity.members.v1 process"):
        with pytest.raises(ConnectionError), provider.get_tracer(telemetry.REDIS_SCOPE).start_as_current_span("GET"):
            raise ConnectionError("Redis away")
        if outcome != "not retried":
            telemetry.expected_retry("transient failure", ConnectionError("Redis away"), 1)
        if outcome == "dead-lettered":
            telemetry.failed("dead-lettered: retries_exhausted")
    get = next(s for s in spans.get_finished_spans() if s.name == "GET")
    assert (get.status.status_code == StatusCode.ERROR) == (outcome != "retried")
    assert any(e.name == "retried" for e in get.events) == (outcome == "retried")
