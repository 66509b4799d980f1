"""Metrics for every service: one set of OpenTelemetry instruments, read on `GET /metrics` (Prometheus text) and
pushed over OTLP when `OTEL_METRICS_EXPORTER=otlp` (`OTEL_EXPORTER_OTLP_*` say where and how).

| Prometheus name | labels | what |
|---|---|---|
| `klantreis_events_consumed_total` | topic, type | events a handler of this service handled |
| `klantreis_events_produced_total` | topic, type | events this service published (acknowledged by Kafka) |
| `klantreis_handler_duration_seconds` | group, topic | time in the handler, per message (per batch in batches) |
| `klantreis_consumer_lag` | group, topic, partition | records on the partition the group has not committed past |
| `klantreis_dead_letters_total` | topic, reason | records (or deliveries) put on a dead-letter topic |
| `klantreis_frictions_detected_total`, `_resolved_total` | rule | journey |
| `klantreis_messages_total` | outcome, reason | notifications: sent, deferred, suppressed (by reason), failed |

FastAPI's and FastStream's own instruments (`http_server_duration_*`, `messaging_process_duration_*`,
`messaging_publish_duration_*`) go to the same provider. Labels hold topics, types, rules and reasons, never a
member. Counting is in memory (`Tally`: a dict update; a batch adds once per label set), nothing does I/O per
message. Consumer lag is the
one figure that asks Kafka (end offsets and the group's committed offsets of the assigned partitions, as
`kafka-consumer-groups --describe` does), on each scrape, and every `LAG_INTERVAL` seconds when metrics are pushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricReader, PeriodicExportingMetricReader
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from shared import consumers
from shared.telemetry import exporters_wanted, otlp_protocol, resource

log = logging.getLogger(__name__)

LAG_INTERVAL = 15.0
LAG_TIMEOUT = 2.0
# Handler time from a millisecond to a batch that takes seconds.
TOPIC_TYPE = ("topic", "type")
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


def _pushing_readers() -> list[MetricReader]:
    readers: list[MetricReader] = []
    for name in exporters_wanted("metrics"):
        if name == "console":
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
        elif otlp_protocol("metrics") == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter

            readers.append(PeriodicExportingMetricReader(GrpcExporter()))
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter

            readers.append(PeriodicExportingMetricReader(HttpExporter()))
    return readers


class Tally:
    """A counter kept in a dict, so that adding to it on a hot path costs a dict update (the SDK's `Counter.add`
    costs some twenty times as much); an observable counter reads it when metrics are collected."""

    def __init__(self, meter: Meter, name: str, unit: str, description: str, labels: tuple[str, ...]) -> None:
        self._labels = labels
        self._counts: Counter[tuple[str, ...]] = Counter()
        meter.create_observable_counter(name, callbacks=[self._observe], unit=unit, description=description)

    def add(self, count: int, *values: str) -> None:
        self._counts[values] += count

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        # dict() copies in one step under the GIL: the exporter's thread may read while the event loop adds.
        return [Observation(n, dict(zip(self._labels, key, strict=True))) for key, n in dict(self._counts).items()]


class ServiceMetrics:
    """The instruments of one service, with their own provider and Prometheus registry (a test running several
    services in one process sees each one's own figures)."""

    def __init__(self, service: str, *, export: bool = True) -> None:
        """`export=False`: Prometheus text only, nothing pushed (a publisher outside any service, a tool)."""
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        prometheus = PrometheusMetricReader(registry=self.registry, scope_info_enabled=False)
        pushing = _pushing_readers() if export else []
        self.provider = MeterProvider(metric_readers=[prometheus, *pushing], resource=resource(service))
        self.pushed = bool(pushing)
        meter = self.provider.get_meter("klantreis")
        self._consumed = Tally(
            meter, "klantreis.events.consumed", "{event}", "Events a handler of this service handled", TOPIC_TYPE
        )
        self._produced = Tally(
            meter, "klantreis.events.produced", "{event}", "Events published and acknowledged by Kafka", TOPIC_TYPE
        )
        self._handler_duration = meter.create_histogram(
            "klantreis.handler.duration",
            unit="s",
            description="Time in the handler: per message, or per batch for batch consumers",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._dead_letters = Tally(
            meter, "klantreis.dead_letters", "{record}", "Records put on a dead-letter topic", ("topic", "reason")
        )
        self._detected = Tally(meter, "klantreis.frictions.detected", "{friction}", "Frictions detected", ("rule",))
        self._resolved = Tally(meter, "klantreis.frictions.resolved", "{friction}", "Frictions resolved", ("rule",))
        self._messages = Tally(
            meter, "klantreis.messages", "{message}", "Messages by outcome and reason", ("outcome", "reason")
        )
        meter.create_observable_gauge(
            "klantreis.consumer.lag",
            callbacks=[self._observe_lag],
            unit="{record}",
            description="Records on a partition the consumer group has not committed past",
        )
        self._consumers: list[tuple[str, Any, str]] = []
        self._security: dict[str, dict[str, Any]] = {}  # per cluster: how this process signs in there
        self._lag: dict[tuple[str, str, int], int] = {}

    # ------------------------------------------------------------------------------------------ counting

    def consumed(self, topic: str, types: Mapping[str, int]) -> None:
        for event_type, count in types.items():
            self._consumed.add(count, topic, event_type)

    def produced(self, topics_and_types: Iterable[tuple[str, str]]) -> None:
        for (topic, event_type), count in Counter(topics_and_types).items():
            self._produced.add(count, topic, event_type)

    def handled(self, group: str, topic: str, seconds: float) -> None:
        self._handler_duration.record(seconds, {"group": group, "topic": topic})

    def dead_lettered(self, topic: str, reason: str) -> None:
        self._dead_letters.add(1, topic, reason)

    def frictions(self, detected: Mapping[str, int], resolved: Mapping[str, int]) -> None:
        for rule, count in detected.items():
            self._detected.add(count, rule)
        for rule, count in resolved.items():
            self._resolved.add(count, rule)

    def messages(self, outcomes: Iterable[str]) -> None:
        """Outcomes as notifications counts them: `sent`, `deferred`, `failed`, `suppressed:<reason>`."""
        for outcome, count in Counter(outcomes).items():
            kind, _, reason = outcome.partition(":")
            self._messages.add(count, kind, reason)

    # ------------------------------------------------------------------------------------------------ lag

    def watch(self, group: str, subscriber: Any, bootstrap: str, security: Mapping[str, Any] | None = None) -> None:
        """Report the lag of consumer group `group` on the partitions assigned to `subscriber`'s consumer (its
        `.consumer`, once started), on the cluster at `bootstrap` (signed in with `security`:
        `Settings.kafka_security()`)."""
        self._consumers.append((group, subscriber, bootstrap))
        self._security[bootstrap] = dict(security or {})

    async def refresh_lag(self) -> None:
        """The broker's lag, as `kafka-consumer-groups --describe` shows it: end offsets (one request to the
        partition leaders) against the group's committed offsets (an admin client asks the group coordinator; the
        consumers themselves are not disturbed), for every partition assigned to this process's consumers. A
        partition the group never committed lags by all it holds."""
        lag: dict[tuple[str, str, int], int] = {}
        watched = [
            (group, consumer, bootstrap, sorted(consumer.assignment()))
            for group, subscriber, bootstrap in self._consumers
            if (consumer := getattr(subscriber, "consumer", None)) is not None and consumer.assignment()
        ]
        admins: dict[str, Any] = {}
        try:
            for group, consumer, bootstrap, assigned in watched:
                try:
                    if bootstrap not in admins:
                        admins[bootstrap] = consumers.admin_client(bootstrap, self._security.get(bootstrap))
                        await asyncio.wait_for(admins[bootstrap].start(), LAG_TIMEOUT)
                    ends = await consumers.end_offsets(consumer, assigned, LAG_TIMEOUT)
                    committed = await consumers.committed_offsets(admins[bootstrap], group, assigned, LAG_TIMEOUT)
                    never = [tp for tp in assigned if tp not in committed]
                    committed |= await consumers.beginning_offsets(consumer, never, LAG_TIMEOUT)
                    for tp in assigned:
                        lag[(group, tp.topic, tp.partition)] = max(0, ends[tp] - committed[tp])
                except Exception as exc:
                    # Kafka away or a rebalance under way: keep the last figures of this group until the next round.
                    log.warning("consumer lag of %s not measured: %s", group, type(exc).__name__)
                    lag.update({k: v for k, v in self._lag.items() if k[0] == group})
        finally:
            for admin in admins.values():
                with contextlib.suppress(Exception):
                    await admin.close()
        self._lag = lag

    async def track_lag(self) -> None:
        """Keep the lag fresh for pushed metrics, which nobody scrapes."""
        while True:
            await self.refresh_lag()
            await asyncio.sleep(LAG_INTERVAL)

    def _observe_lag(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(value, {"group": group, "topic": topic, "partition": str(partition)})
            for (group, topic, partition), value in self._lag.items()
        ]

    # ---------------------------------------------------------------------------------------- exposition

    async def exposition(self) -> bytes:
        """The Prometheus text of every instrument, with the lag measured now."""
        await self.refresh_lag()
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self.provider.shutdown(timeout_millis=5_000)
