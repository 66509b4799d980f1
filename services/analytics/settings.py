"""analytics' settings: `KLANTREIS_ANALYTICS_*` on top of the shared ones."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from shared.settings import Settings


class AnalyticsSettings(Settings):
    # `chdb`: ClickHouse's engine in this process, data under `analytics_path` (one process per path).
    # `server`: a ClickHouse server at `analytics_clickhouse_url` (production), the same schema and SQL.
    analytics_store: Literal["chdb", "server"] = "chdb"
    analytics_path: Path = Path(".klantreis/analytics")
    analytics_clickhouse_url: str = "http://127.0.0.1:8123"
    analytics_clickhouse_user: str = "default"
    analytics_clickhouse_password: SecretStr = SecretStr("")
    analytics_database: str = "klantreis"
    analytics_batch_size: int = Field(default=20_000, ge=1, description="records per Kafka batch, one insert each")
    # Report cells counting fewer members (or frictions) than this are suppressed (docs/reports.md).
    analytics_min_cell: int = Field(default=5, ge=1)
    # A computed report is served again for this long (per query and key scope).
    analytics_cache_seconds: float = Field(default=5.0, ge=0)
    # The clock reports censor by: the wall clock (`auto`) or the latest event time stored (`event`, replays).
    analytics_clock: Literal["auto", "event"] = "auto"
    # An absence window counts as closed once the clock has passed its due time plus this (journey's lateness).
    analytics_allowed_lateness: timedelta = Field(default=timedelta(minutes=1))
    # The rule catalogue whose absence windows are the friction rates' denominators; journey's when not set.
    analytics_rules_file: Path | None = None
    # journey's override of the activation window (the local run's demo), read from the same variable.
    journey_activation_window: timedelta | None = None
