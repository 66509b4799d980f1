"""What tracing and metrics add per consumed event, next to the decoding every consumer does anyway, measured in the
same run (no Kafka or Redis needed: the consumer's per-record work, in process).

    .venv/bin/python bench/telemetry_overhead.py [--records 500] [--rounds 200]

- baseline: decoding a batch of records as `shared.kafka.subscribe_batches` does (CloudEvents binding and the
  type's pydantic model) into `Received`;
- the same with what operators added: the record's sampled `traceparent` kept, and the batch counted per topic
  and type (`klantreis_events_consumed_total`) and timed (`klantreis_handler_duration_seconds`);
- one message of `shared.kafka.subscribe`: its counter and histogram (no decoding);
- a span: with no provider installed (the default, `OTEL_TRACES_EXPORTER=none`), and recorded by the SDK with a
  batch processor whose exporter drops what it gets (what a sampled trace costs the process, not the network).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from shared import telemetry
from shared.events import CloudEvent, from_kafka, to_kafka, typed_data
from shared.events.members import MemberSignedUp
from shared.kafka import Received, _types_by_topic
from shared.metrics import ServiceMetrics

TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Record:
    """The fields of an aiokafka ConsumerRecord the consumer reads."""

    def __init__(self, offset: int, value: bytes, headers: Sequence[tuple[str, bytes]]) -> None:
        self.topic, self.partition, self.offset, self.value, self.headers = (
            "identity.members.v1",
            0,
            offset,
            value,
            headers,
        )


def records(count: int) -> list[Record]:
    out = []
    for offset in range(count):
        event = CloudEvent.create(
            MemberSignedUp(age_band="18-64", home_library="oba", postcode_area="1034"),
            id=str(uuid.uuid4()), subject=str(uuid.uuid4()), source="/libraries/oba/website", library="oba",
            channel="online", platform="website",
        )  # fmt: skip
        record = to_kafka(event)
        headers = [(k, v.encode()) for k, v in record.headers.items()] + [("traceparent", TRACEPARENT)]
        out.append(Record(offset, record.value, headers))
    return out


def decode(batch: Sequence[Record]) -> list[Received]:
    out = []
    for r in batch:
        event = from_kafka(r.value, r.headers)
        out.append(Received(r.topic, r.partition, r.offset, event, typed_data(event)))
    return out


def decode_observed(batch: Sequence[Record], metrics: ServiceMetrics) -> list[Received]:
    started = time.perf_counter()
    out = []
    for r in batch:
        event = from_kafka(r.value, r.headers)
        out.append(
            Received(r.topic, r.partition, r.offset, event, typed_data(event), telemetry.sampled_traceparent(r.headers))
        )
    for topic, types in _types_by_topic(out).items():
        metrics.consumed(topic, types)
    metrics.handled("journey", "identity.members.v1", time.perf_counter() - started)
    return out


class Dropping(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def per_call_ns(actions: dict[str, Callable[[], object]], calls: int, repeats: int = 7) -> dict[str, float]:
    """Each action's time per call: the best of `repeats` runs, the actions taking turns, so that a machine busy
    with something else slows all of them alike rather than whichever ran at the wrong moment."""
    best = dict.fromkeys(actions, float("inf"))
    for action in actions.values():
        action()  # warm up
    for _ in range(repeats):
        for name, action in actions.items():
            started = time.perf_counter_ns()
            for _ in range(calls):
                action()
            best[name] = min(best[name], (time.perf_counter_ns() - started) / calls)
    return best


def count_one_message(metrics: ServiceMetrics) -> None:
    metrics.handled("notifications", "journey.frictions.v1", 0.001)
    metrics.consumed("journey.frictions.v1", {"nl.bibliotheek.friction.detected.v1": 1})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=500, help="records per batch (journey's default batch)")
    parser.add_argument("--rounds", type=int, default=200, help="batches timed")
    args = parser.parse_args()
    batch = records(args.records)
    metrics = ServiceMetrics("bench", export=False)

    rounds = max(1, args.rounds // 7)
    batches = per_call_ns(
        {"baseline": lambda: decode(batch), "observed": lambda: decode_observed(batch, metrics)}, rounds
    )
    baseline, observed = (batches[k] / args.records for k in ("baseline", "observed"))
    single = per_call_ns({"single": lambda: count_one_message(metrics)}, rounds * args.records)["single"]
    provider = telemetry.tracer_provider("bench", [BatchSpanProcessor(Dropping(), max_queue_size=100_000)])
    spans = per_call_ns(
        {
            "untraced": lambda: trace.get_tracer("bench").start_span("x").end(),
            "recorded": lambda: provider.get_tracer("bench").start_span("x").end(),
        },
        rounds * 50,
    )
    untraced, recorded = spans["untraced"], spans["recorded"]
    provider.shutdown()

    print(f"per consumed event, batches of {args.records}, best of 7 runs of {rounds} batches each")
    print(f"  baseline: decode into Received              {baseline:9.0f} ns")
    print(
        f"  + traceparent kept, batch counted and timed  {observed:9.0f} ns"
        f"   ({observed - baseline:+.0f} ns, {100 * (observed - baseline) / baseline:+.1f} % of the baseline)"
    )
    share = 100 * single / baseline
    print(f"  one message of subscribe: counter + histogram {single:8.0f} ns   ({share:.1f} % of decoding one)")
    print(f"  a span, no provider (OTEL_TRACES_EXPORTER=none) {untraced:6.0f} ns")
    print(f"  a span, recorded and batched for export       {recorded:8.0f} ns")


if __name__ == "__main__":
    main()
