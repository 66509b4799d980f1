"""A campaign's results arithmetic, without I/O: counts, and the effect right-censored at N days."""

from __future__ import annotations

from datetime import UTC, datetime

from services.notifications.results import DAY_MS, counts, days_taken, detection_day, effect

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def test_counts_read_the_counters_and_what_is_still_waiting() -> None:
    counted = counts({"triggered": "10", "sent": "5", "failed": "1", "deferred": "2", "suppressed:holdout": "2",
                      "suppressed:no_consent": "1", "suppressed:duplicate": "0"})  # fmt: skip
    assert counted.suppressed == {"holdout": 2, "no_consent": 1}
    assert counted.waiting == 1
    assert counts({}).waiting == 0


def test_days_are_whole_days_from_detection_and_detection_days_are_utc_dates() -> None:
    detected = int(datetime(2026, 2, 1, 23, 30, tzinfo=UTC).timestamp() * 1000)
    assert detection_day(detected) == "2026-02-01"
    assert days_taken(detected, detected + 3 * DAY_MS - 1) == 2
    assert days_taken(detected, detected + 3 * DAY_MS) == 3
    assert days_taken(detected, detected - 5000) == 0


def test_the_effect_compares_shares_resolved_within_n_days_of_messaged_and_holdout() -> None:
    buckets = {
        "messaged:2026-02-01:total": "10",
        "messaged:2026-02-01:resolved:2": "6",
        "messaged:2026-02-01:resolved:20": "2",  # too late for N = 14
        "holdout:2026-02-01:total": "10",
        "holdout:2026-02-01:resolved:13": "3",
    }
    measured = effect(buckets, NOW, 14)
    assert (measured.messaged.frictions, measured.messaged.resolved, measured.messaged.share) == (10, 6, 0.6)
    assert (measured.holdout.frictions, measured.holdout.resolved, measured.holdout.share) == (10, 3, 0.3)
    assert measured.difference == 0.3
    assert effect(buckets, NOW, 21).messaged.share == 0.8


def test_a_friction_younger_than_n_days_counts_neither_as_resolved_nor_as_unresolved() -> None:
    buckets = {
        "messaged:2026-03-01:total": "4",
        "messaged:2026-03-01:resolved:1": "1",
        "holdout:2026-02-20:total": "2",  # 14 days end on 2026-03-07: closed
        "holdout:2026-02-25:total": "1",  # its last friction's 14 days end on 2026-03-12: still open
    }
    measured = effect(buckets, NOW, 14)
    assert (measured.messaged.frictions, measured.messaged.resolved, measured.messaged.share) == (0, 0, None)
    assert (measured.holdout.frictions, measured.too_recent) == (2, 5)
    assert measured.difference is None
