"""The soak's figures: p99 from histogram buckets, RSS growth per hour."""

from __future__ import annotations

import math

from bench.soak import Sample, growth_mib_per_hour, p99_ms


def test_the_p99_is_the_upper_bound_of_the_bucket_the_99th_percentile_falls_in() -> None:
    cumulative = {0.005: 900.0, 0.025: 985.0, 0.1: 995.0, math.inf: 1000.0}
    assert p99_ms(cumulative) == 100.0
    assert p99_ms({0.005: 0.0, math.inf: 0.0}) is None


def test_rss_growth_per_hour_leaves_out_the_first_minute_of_warming_up() -> None:
    samples = [Sample(0, 70.0, 0, None), *(Sample(m, 80.0 + m / 6, 0, None) for m in range(1, 11))]
    assert round(growth_mib_per_hour(samples), 6) == 10.0
    assert growth_mib_per_hour([Sample(0, 70.0, 0, None), Sample(1, 71.0, 0, None)]) == 60.0
