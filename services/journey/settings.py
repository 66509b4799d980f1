from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field

from shared.settings import Settings


class JourneySettings(Settings):
    # The skeleton's one absence rule: an online sign-up is expected to be activated at a branch in time.
    journey_activation_window: timedelta = Field(default=timedelta(days=14))
    # Timers fire when the journey clock passes due time plus this; events this late still count as on time.
    journey_allowed_lateness: timedelta = Field(default=timedelta(minutes=1))
    # `wall`: live operation, the clock is the wall clock. `event`: replaying history, the clock is the latest
    # event time seen, so the same events give the same frictions however fast they are replayed.
    journey_clock: Literal["wall", "event"] = "wall"
    journey_timer_tick_seconds: float = Field(default=1.0, gt=0)
    journey_timer_lease_seconds: float = Field(default=30.0, gt=0)
