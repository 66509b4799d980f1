"""Unit tests' hypothesis profile: the same examples on every run and machine (derandomized, no example database),
and no per-example deadline (a shared, busy machine is slow, not wrong)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "klantreis", derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("klantreis")
