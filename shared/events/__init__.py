"""Event envelope, binding and registry. Importing this package registers every event type."""

from shared.events import journey, members, notifications, propositions
from shared.events.envelope import (
    BATCH,
    STRUCTURED,
    CloudEvent,
    EventData,
    FieldError,
    InvalidEvent,
    KafkaRecord,
    deterministic_id,
    from_batch,
    from_kafka,
    from_structured,
    to_kafka,
    to_structured,
)
from shared.events.registry import event_types, model_for, typed_batch, typed_data, validated

__all__ = [
    "BATCH",
    "STRUCTURED",
    "CloudEvent",
    "EventData",
    "FieldError",
    "InvalidEvent",
    "KafkaRecord",
    "deterministic_id",
    "event_types",
    "from_batch",
    "from_kafka",
    "from_structured",
    "journey",
    "members",
    "model_for",
    "notifications",
    "propositions",
    "to_kafka",
    "to_structured",
    "typed_batch",
    "typed_data",
    "validated",
]
