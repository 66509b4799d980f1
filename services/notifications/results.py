"""A campaign's results, without I/O: counts of decisions, and the measured effect.

The effect compares frictions of messaged members with those of the holdout: the share resolved within N days
of being detected. It is right-censored: a friction whose N days have not passed yet cannot have been left
unresolved, so it is not counted at all (neither way) until they have. Frictions are bucketed by the UTC day they
were detected; a day counts once every friction of it has had its N days.

Bucket fields (one hash per campaign): `<group>:<day>:total` and `<group>:<day>:resolved:<whole days taken>`,
group `messaged` or `holdout`, day `YYYY-MM-DD`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

Group = Literal["messaged", "holdout"]
GROUPS: tuple[Group, ...] = ("messaged", "holdout")
DAY_MS = 86_400_000


def detection_day(detected_ms: int) -> str:
    return datetime.fromtimestamp(detected_ms / 1000, UTC).date().isoformat()


def days_taken(detected_ms: int, resolved_ms: int) -> int:
    """Whole days from detection to resolution (a resolution before detection, by clock skew, counts as 0)."""
    return max(0, resolved_ms - detected_ms) // DAY_MS


@dataclass(frozen=True)
class Counts:
    triggered: int = 0
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    suppressed: dict[str, int] = field(default_factory=dict)

    @property
    def waiting(self) -> int:
        """Decided to send (maybe deferred) and not yet sent, suppressed at send time or failed."""
        return max(0, self.triggered - self.sent - self.failed - sum(self.suppressed.values()))


def counts(raw: Mapping[str, str]) -> Counts:
    suppressed = {
        name.removeprefix("suppressed:"): int(value)
        for name, value in sorted(raw.items())
        if name.startswith("suppressed:") and int(value)
    }
    return Counts(
        triggered=int(raw.get("triggered", 0)),
        sent=int(raw.get("sent", 0)),
        failed=int(raw.get("failed", 0)),
        deferred=int(raw.get("deferred", 0)),
        suppressed=suppressed,
    )


@dataclass(frozen=True)
class GroupEffect:
    frictions: int
    resolved: int

    @property
    def share(self) -> float | None:
        return round(self.resolved / self.frictions, 4) if self.frictions else None


@dataclass(frozen=True)
class Effect:
    within_days: int
    messaged: GroupEffect
    holdout: GroupEffect
    too_recent: int  # frictions whose N days have not passed yet

    @property
    def difference(self) -> float | None:
        """Messaged share minus holdout share: the campaign's measured effect, in share points."""
        if self.messaged.share is None or self.holdout.share is None:
            return None
        return round(self.messaged.share - self.holdout.share, 4)


def _window_closed(day: date, within_days: int, now: datetime) -> bool:
    last_detection = datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)
    return last_detection + timedelta(days=within_days) <= now


def effect(buckets: Mapping[str, str], now: datetime, within_days: int) -> Effect:
    totals = {group: 0 for group in GROUPS}
    resolved = {group: 0 for group in GROUPS}
    too_recent = 0
    for name, raw in buckets.items():
        group, day_text, kind, *rest = name.split(":")
        if group not in totals:
            continue
        value = int(raw)
        closed = _window_closed(date.fromisoformat(day_text), within_days, now)
        if kind == "total":
            if closed:
                totals[group] += value
            else:
                too_recent += value
        elif kind == "resolved" and closed and int(rest[0]) < within_days:
            resolved[group] += value
    return Effect(
        within_days=within_days,
        messaged=GroupEffect(totals["messaged"], resolved["messaged"]),
        holdout=GroupEffect(totals["holdout"], resolved["holdout"]),
        too_recent=too_recent,
    )


@dataclass(frozen=True)
class CampaignResults:
    """A campaign's figures: what its decisions and deliveries came to, and its measured effect."""

    campaign_id: str
    counts: Counts
    effect: Effect
    warnings: list[str]
