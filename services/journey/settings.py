from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field

from shared.settings import Settings


class JourneySettings(Settings):
    # The rule catalogue (YAML); the shipped one when not set.
    journey_rules_file: Path | None = None
    # Overrides the window of the online-sign-up-not-activated rule (the local run shortens it for the demo).
    journey_activation_window: timedelta | None = None
    # Timers fire when the journey clock passes due time plus this; events this late still count.
    journey_allowed_lateness: timedelta = Field(default=timedelta(minutes=1))
    # `auto`: each partition's clock follows the event time of what was consumed, and the wall clock once the
    # consumer has caught up with it (live operation). `event`: event time only, never the wall clock.
    journey_clock: Literal["auto", "event"] = "auto"
    # A caught-up partition follows the wall clock only after this long without new events: a replay that
    # pauses between chunks is not mistaken for live traffic.
    journey_idle_seconds: float = Field(default=5.0, ge=0)
    # Records taken from Kafka per batch at most (one Redis write and one round of acks per batch). Live traffic
    # comes in small batches anyway; a backlog (a restart, a replay) in large ones, where a member's state is
    # encoded and written once per batch however many of their events it holds (bench/journey_throughput.py: 20,000
    # against 5,000 took a fifth less time; a batch of 20,000 is decided in about a second).
    journey_batch_size: int = Field(default=20_000, ge=1)
    # Publish every closed absence window (met or not) as `window.closed` on journey.windows.v1. Off: the platform's
    # read side (analytics) derives the windows, the friction rates' denominators, from the events itself, and
    # nothing of the platform reads the topic; building, storing and sending one record per closed window took a
    # quarter of journey's time (docs/journey.md, eighth round). On for a consumer outside the platform that does.
    journey_publish_windows: bool = False
