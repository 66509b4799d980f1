"""Log lines as JSON, one object a line, with the service and the current trace and span ids.

A line's `trace_id` is the one to look up in Jaeger. Services log one line per failure (where it happened: a
topic, partition and offset, a message id), never one per message, and never personal data: messages carry ids
and types only.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

# Loggers that would otherwise print in their own format, or once per request or message.
QUIET = {"uvicorn.access": logging.WARNING, "aiokafka": logging.WARNING, "httpx": logging.WARNING}
# What aiokafka logs, as ERROR or WARNING, on every retry while the broker is away: thousands of lines an outage.
# `shared.availability` logs an outage once when it starts and once when it ends; these show at DEBUG only.
BROKER_AWAY = frozenset(
    {
        'Unable connect to "%s:%s": %s', 'Unable to request metadata from "%s:%s": %s',
        "Unable to request metadata from node with id %s: %r", "Unable to update metadata from %s",
        "Unable connect to node with id %s: %s", "Got error produce response: %s",
        "Got error produce response on topic-partition %s, retrying. Error: %s", "Cannot send %r to %s: %r",
        "Failed fetch messages from %s: %s", "Failed fetch offsets from %s: %s", "Group Coordinator Request failed: %s",
        "FindCoordinator Request failed: %s", "Heartbeat send request failed: %s. Will retry.",
        "Topic %s not found in cluster metadata",
    }
)  # fmt: skip


class BrokerAwayAtDebug(logging.Filter):
    """Lets aiokafka's per-retry lines about an unreachable broker through only when DEBUG is on."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("aiokafka") and record.msg in BROKER_AWAY:
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


class JsonLines(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = trace.format_trace_id(span.trace_id)
            entry["span_id"] = trace.format_span_id(span.span_id)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(service: str, level: int | str = logging.INFO) -> None:
    """Every log record of the process, uvicorn's included, as one JSON line on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines(service))
    handler.addFilter(BrokerAwayAtDebug())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        # uvicorn's own handlers would print the same record a second time, in another format.
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    for name, quiet_level in QUIET.items():
        logging.getLogger(name).setLevel(quiet_level)
