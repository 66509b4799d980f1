"""Settings shared by every service, read from `KLANTREIS_*` environment variables.

Every service reads the same variables, so one environment configures the whole platform; a service adds its
own fields by subclassing `Settings`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KLANTREIS_", extra="ignore", frozen=True)

    # `production` refuses development placeholders (such as identity's HMAC key) at start.
    environment: Literal["development", "production"] = "development"
    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Who this process is on Kafka (SASL/SCRAM-SHA-512) and Redis (an ACL user): each service its own principal,
    # allowed only its own topics, groups and keys (docs/security.md). No user name: a plaintext broker and
    # Redis's default user (the shared development servers).
    kafka_username: str = ""
    kafka_password: SecretStr = SecretStr("")
    redis_username: str = ""
    redis_password: SecretStr = SecretStr("")
    # Prefixes let several platforms (or tests) share one broker and one Redis without seeing each other.
    topic_prefix: str = ""
    group_prefix: str = ""
    key_prefix: str = ""
    partitions: int = Field(default=3, ge=1, description="partitions of each topic when it is created")

    host: str = Field(default="127.0.0.1", description="address the service listens on (0.0.0.0 in a container)")
    identity_url: str = "http://127.0.0.1:8001"
    propositions_url: str = "http://127.0.0.1:8002"
    journey_url: str = "http://127.0.0.1:8003"
    notifications_url: str = "http://127.0.0.1:8004"
    analytics_url: str = "http://127.0.0.1:8005"

    # Consumers retry a handler failing on a transient error (Redis or Kafka briefly away) this often, with
    # exponential backoff, before the message goes to the dead-letter topic; permanent errors go at once.
    handler_retries: int = Field(default=5, ge=0)
    handler_retry_backoff_seconds: float = Field(default=0.2, gt=0)
    # An HTTP request waits at most this long for Kafka to acknowledge what it publishes, then answers 503 with
    # Retry-After (consumers and timers wait as long as Kafka is away: they retry rather than give up).
    publish_timeout: float = Field(default=5.0, gt=0, description="seconds; KLANTREIS_PUBLISH_TIMEOUT")
    # The key other services use to call internal endpoints (role `service`), e.g. notifications → identity.
    service_key: str = ""
    # Where operators look at traces (Zipkin's UI, e.g. http://127.0.0.1:9411/zipkin): pages link a member to
    # their traces there. Empty: no viewer, no links. The local run sets it to its Zipkin.
    trace_viewer_url: str = ""
    # Whether the local run (`klantreis up`/`run`) starts Zipkin and the services send their traces to it.
    local_traces: bool = True

    def kafka_security(self) -> dict[str, Any]:
        """The security arguments of every Kafka client of this process (aiokafka's names); the one place."""
        if not self.kafka_username:
            return {}
        return {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": self.kafka_username,
            "sasl_plain_password": self.kafka_password.get_secret_value(),
        }

    def topic(self, name: str) -> str:
        """The physical topic name of a logical topic (see `shared.topics`)."""
        return f"{self.topic_prefix}{name}"

    def group(self, name: str) -> str:
        return f"{self.group_prefix}{name}"

    def key(self, *parts: str) -> str:
        """A Redis key in this platform's namespace: `key("journey", "timers")` → `<prefix>journey:timers`."""
        return self.key_prefix + ":".join(parts)
