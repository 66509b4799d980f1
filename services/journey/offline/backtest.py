"""Back-testing a rule catalogue: what a new or changed rule would flag over stored history, next to the rules in
force, before it goes live. Nothing is published: both catalogues run over the same events in memory.

The comparison is by friction (rule, member, start event) and by member, per rule. The same comparison scores a
detector against a simulated network's planted truth (precision and recall).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import TypeAdapter, ValidationError

from services.journey.offline.memory import InMemoryJourneys, Replayed
from services.journey.rules import RuleCatalogue, with_window
from shared.events import CloudEvent

# (rule, member, start event id): a friction, whatever run or truth it came from.
FrictionKey = tuple[str, str, str]

_DURATION = TypeAdapter(timedelta)


class BacktestError(ValueError):
    """A candidate that cannot be run as asked (unknown rule, bad duration); the message says what to fix."""


def parse_window(text: str) -> tuple[str, timedelta]:
    """`RULE=P30D` → (rule id, 30 days): ISO 8601 durations, as in rules.yaml."""
    rule, sep, duration = text.partition("=")
    if not sep or not rule.strip() or not duration.strip():
        raise BacktestError(f"--window {text!r}: write RULE=DURATION, e.g. desk-signup-never-online=P14D")
    try:
        # Only ISO 8601: a bare number would silently mean seconds.
        if not duration.strip().upper().startswith("P"):
            raise ValueError
        within = _DURATION.validate_python(duration.strip())
    except (ValidationError, ValueError):
        raise BacktestError(
            f"--window {text!r}: {duration.strip()!r} is not an ISO 8601 duration (P14D, PT1H)"
        ) from None
    if within <= timedelta(0):
        raise BacktestError(f"--window {text!r}: the duration must be positive")
    return rule.strip(), within


def candidate_catalogue(base: RuleCatalogue, windows: Sequence[tuple[str, timedelta]]) -> RuleCatalogue:
    """`base` (the rules in force, or a candidate rules file) with the windows changed."""
    for rule_id, within in windows:
        if base.by_id(rule_id) is None:
            known = ", ".join(r.id for r in base.rules)
            raise BacktestError(f"--window: no rule {rule_id!r} in the candidate catalogue (rules: {known})")
        base = with_window(base, rule_id, within)
    return base


def run(
    events: Iterable[CloudEvent], catalogue: RuleCatalogue, lateness: timedelta, until: datetime | None
) -> Replayed:
    """The catalogue over the events in memory; windows still open at `until` are not counted (right-censored)."""
    journeys = InMemoryJourneys(catalogue, lateness)
    journeys.feed(events)
    return journeys.finish(until)


def run_both(
    events: Sequence[CloudEvent],
    in_force: RuleCatalogue,
    candidate: RuleCatalogue,
    lateness: timedelta,
    until: datetime | None,
) -> tuple[Replayed, Replayed]:
    """Both catalogues over the same events. Rules keep their state apart, so a rule the candidate leaves as it is
    flags the same frictions in both runs: only the rules that differ run a second time."""
    in_force_run = run(events, in_force, lateness, until)
    differing = [r for r in candidate.rules if in_force.by_id(r.id) != r]
    differing_run = run(events, RuleCatalogue(rules=differing), lateness, until) if differing else Replayed()
    same = {r.id for r in candidate.rules} - {r.id for r in differing}
    candidate_run = Replayed(
        detected=[f for f in in_force_run.detected if f.rule in same] + differing_run.detected,
        resolved=[r for r in in_force_run.resolved if r.rule in same] + differing_run.resolved,
        closed=[c for c in in_force_run.closed if c.rule in same] + differing_run.closed,
    )
    return in_force_run, candidate_run


@dataclass(frozen=True)
class RuleDiff:
    """One rule's frictions in a reference (the rules in force, or a planted truth) and in another run."""

    rule: str
    reference: frozenset[tuple[str, str]]  # (member, start event id)
    other: frozenset[tuple[str, str]]
    resolved_reference: int = 0
    resolved_other: int = 0
    changed: bool = False  # the rule's definition differs between the two catalogues

    @property
    def both(self) -> int:
        return len(self.reference & self.other)

    @property
    def precision(self) -> float:
        """Of the other run's frictions, the share the reference has too (1.0 when it has none)."""
        return self.both / len(self.other) if self.other else 1.0

    @property
    def recall(self) -> float:
        """Of the reference's frictions, the share the other run found (1.0 when there are none)."""
        return self.both / len(self.reference) if self.reference else 1.0

    @property
    def members_only_other(self) -> list[str]:
        return sorted({m for m, _ in self.other} - {m for m, _ in self.reference})

    @property
    def members_only_reference(self) -> list[str]:
        return sorted({m for m, _ in self.reference} - {m for m, _ in self.other})


def compare(
    reference: Iterable[FrictionKey],
    other: Iterable[FrictionKey],
    rules: Iterable[str] = (),
) -> list[RuleDiff]:
    """Per rule (every rule in `rules`, and any rule either side flagged), in that order, then alphabetically."""
    by_rule: dict[str, tuple[set[tuple[str, str]], set[tuple[str, str]]]] = {r: (set(), set()) for r in rules}
    for side, keys in ((0, reference), (1, other)):
        for rule, member, start in keys:
            by_rule.setdefault(rule, (set(), set()))[side].add((member, start))
    return [RuleDiff(rule, frozenset(ref), frozenset(oth)) for rule, (ref, oth) in by_rule.items()]


def friction_keys(replayed: Replayed) -> list[FrictionKey]:
    return [(f.rule, f.member_id, f.start_event_id) for f in replayed.detected]


def compare_runs(
    in_force: Replayed, candidate: Replayed, in_force_rules: RuleCatalogue, candidate_rules: RuleCatalogue
) -> list[RuleDiff]:
    """The rules in force (reference) against the candidate, rule by rule, in catalogue order."""
    order = [r.id for r in in_force_rules.rules] + [r.id for r in candidate_rules.rules]
    diffs = compare(friction_keys(in_force), friction_keys(candidate), dict.fromkeys(order))
    resolved_in_force = _resolved_by_rule(in_force)
    resolved_candidate = _resolved_by_rule(candidate)
    return [
        RuleDiff(
            d.rule,
            d.reference,
            d.other,
            resolved_reference=resolved_in_force.get(d.rule, 0),
            resolved_other=resolved_candidate.get(d.rule, 0),
            changed=in_force_rules.by_id(d.rule) != candidate_rules.by_id(d.rule),
        )
        for d in diffs
    ]


def _resolved_by_rule(replayed: Replayed) -> dict[str, int]:
    counts: dict[str, int] = {}
    for resolution in replayed.resolved:
        counts[resolution.rule] = counts.get(resolution.rule, 0) + 1
    return counts


# ------------------------------------------------------------------------------------------------ showing


def describe_change(in_force: RuleCatalogue, candidate: RuleCatalogue) -> list[str]:
    """One line per rule added, removed or changed (with the windows when those differ)."""
    lines = []
    for rule in candidate.rules:
        before = in_force.by_id(rule.id)
        if before is None:
            lines.append(f"  {rule.id}: new ({rule.kind}, within {_duration(rule.within)})")
        elif before != rule:
            window = (
                f"within {_duration(rule.within)} instead of {_duration(before.within)}"
                if before.within != rule.within
                else "definition changed"
            )
            lines.append(f"  {rule.id}: {window}")
    lines += [f"  {r.id}: removed" for r in in_force.rules if candidate.by_id(r.id) is None]
    return lines or ["  (no rule differs from the rules in force)"]


def _duration(value: timedelta) -> str:
    """ISO 8601, as in rules.yaml: P14D, PT1H, PT15M."""
    days, seconds = value.days, value.seconds
    parts = ((seconds // 3600, "H"), (seconds % 3600 // 60, "M"), (seconds % 60, "S"))
    time = "".join(f"{n}{unit}" for n, unit in parts if n)
    if not days and not time:
        return "PT0S"
    return "P" + (f"{days}D" if days else "") + (f"T{time}" if time else "")


def backtest_table(diffs: Sequence[RuleDiff]) -> str:
    """Frictions in force vs candidate, members flagged by one side only, and how many resolved later."""
    head = (
        f"{'rule':<30} {'in force':>9} {'candidate':>10} {'members only':>13} {'members only':>13}"
        f" {'resolved later':>15}\n{'':<30} {'':>9} {'':>10} {'by candidate':>13} {'by in force':>13}"
        f" {'in force/cand.':>15}"
    )
    rows = [
        f"{(d.rule + (' *' if d.changed else '')):<30} {len(d.reference):>9,} {len(d.other):>10,}"
        f" {len(d.members_only_other):>13,} {len(d.members_only_reference):>13,}"
        f" {f'{d.resolved_reference:,}/{d.resolved_other:,}':>15}"
        for d in diffs
    ]
    return "\n".join([head, *rows])


def member_lists(diffs: Sequence[RuleDiff]) -> str:
    """The pseudonymous ids behind the member counts, rule by rule (only rules where the two sides differ)."""
    lines: list[str] = []
    for d in diffs:
        for label, members in (("only by the candidate", d.members_only_other),
                               ("only by the rules in force", d.members_only_reference)):  # fmt: skip
            if members:
                lines.append(f"{d.rule}: {len(members):,} members flagged {label}")
                lines += [f"  {m}" for m in members]
    return "\n".join(lines) if lines else "no member is flagged by one side only"


def score_table(diffs: Sequence[RuleDiff]) -> str:
    """A detector (other) against a planted truth (reference): precision and recall per rule, and overall."""
    rows = [f"{'rule':<30} {'planted':>8} {'detected':>9} {'precision':>10} {'recall':>7}"]
    for d in diffs:
        rows.append(f"{d.rule:<30} {len(d.reference):>8,} {len(d.other):>9,} {d.precision:>10.3f} {d.recall:>7.3f}")
    planted, detected, found = (sum(len(d.reference) for d in diffs), sum(len(d.other) for d in diffs),
                                sum(d.both for d in diffs))  # fmt: skip
    precision, recall = found / detected if detected else 1.0, found / planted if planted else 1.0
    rows.append(f"{'all':<30} {planted:>8,} {detected:>9,} {precision:>10.3f} {recall:>7.3f}")
    return "\n".join(rows)


def exact(diffs: Sequence[RuleDiff]) -> bool:
    return all(d.reference == d.other for d in diffs)
