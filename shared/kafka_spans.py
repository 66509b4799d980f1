"""What the Kafka spans (FastStream's telemetry middleware) say: the record key as text, and on topics keyed by
member the member id as `klantreis.member_id`.

FastStream records the key as the bytes it is, which viewers show in base64, so a search by
`messaging.kafka.message.key=<member id>` would find nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from faststream.kafka.opentelemetry.provider import (
    BatchKafkaTelemetrySettingsProvider,
    KafkaTelemetrySettingsProvider,
)
from faststream.opentelemetry.middleware import TelemetryMiddleware
from opentelemetry.metrics import MeterProvider
from opentelemetry.semconv.trace import SpanAttributes

from shared.telemetry import MEMBER_ATTRIBUTE
from shared.topics import ALL_TOPICS, DEAD_LETTER_SUFFIX

KEY = SpanAttributes.MESSAGING_KAFKA_MESSAGE_KEY
# Topics whose records are keyed by member id (their dead letters keep the key); physical names carry a prefix.
MEMBER_KEYED = tuple(topic.name for topic in ALL_TOPICS if topic.key == "member_id")


def keyed_by_member(topic: str) -> bool:
    return topic.removesuffix(DEAD_LETTER_SUFFIX).endswith(MEMBER_KEYED)


def readable(attributes: dict[str, Any], topic: str) -> dict[str, Any]:
    key = attributes.get(KEY)
    if isinstance(key, bytes):
        key = attributes[KEY] = key.decode("utf-8", "backslashreplace")
    if isinstance(key, str) and keyed_by_member(topic):
        attributes[MEMBER_ATTRIBUTE] = key
    return attributes


class _Consumed(KafkaTelemetrySettingsProvider):
    def get_consume_attrs_from_message(self, msg: Any) -> dict[str, Any]:
        return readable(super().get_consume_attrs_from_message(msg), msg.raw_message.topic)

    def get_publish_attrs_from_cmd(self, cmd: Any) -> dict[str, Any]:
        return readable(super().get_publish_attrs_from_cmd(cmd), cmd.destination)


class _ConsumedInBatches(BatchKafkaTelemetrySettingsProvider):
    # A batch holds many members' records: its span has no member id; it links to every sampled record's span.
    def get_publish_attrs_from_cmd(self, cmd: Any) -> dict[str, Any]:
        return readable(super().get_publish_attrs_from_cmd(cmd), cmd.destination)


def _provider(msg: Any) -> KafkaTelemetrySettingsProvider | BatchKafkaTelemetrySettingsProvider:
    return _ConsumedInBatches() if isinstance(msg, Sequence) else _Consumed()


def kafka_telemetry(meter_provider: MeterProvider | None) -> TelemetryMiddleware[Any]:
    """FastStream's Kafka telemetry middleware with the platform's span attributes; its publish and process
    durations go to `meter_provider`."""
    return TelemetryMiddleware(
        settings_provider_factory=_provider, meter_provider=meter_provider, include_messages_counters=False
    )
