"""What a member's state can forget: expected events and activities no window can need any more (services/journey/
engine.py prunes with these once per batch, when a window's timer fires, and when one batch brings many of a
member's events)."""

from __future__ import annotations

from collections import Counter
from operator import attrgetter

from services.journey.state import MemberState, Seen

SEEN_KEPT = 2  # expected events kept per pending window: the earliest two after its start decide it
SEEN_CAP = 16  # at most this many per rule and correlation, however far the topics run apart


_by_time = attrgetter("t")


def forget_unwaited(state: MemberState, before: int, only: tuple[int, str] | None = None) -> None:
    """Expected events kept (of every rule and correlation, or `only` one): those at or after `before` (the clock
    less the lateness: a start may still be on its way on another topic), and for each pending window the earliest
    two at or after its start (the first may be the start itself) and the latest one. What decides a window is the
    earliest expected event after its start."""
    if not state.seen:
        return
    if only is None and min([s.t for s in state.seen]) >= before and _under_cap(state.seen):
        return  # all still within the lateness (nearly always, once per batch): nothing to forget
    by_key: dict[tuple[int, str], list[Seen]] = {}
    kept: list[Seen] = []
    if only is None:
        for s in state.seen:
            by_key.setdefault((s.rule, s.corr), []).append(s)
    else:
        rule_id, corr_id = only
        mine = [s for s in state.seen if s.rule == rule_id and s.corr == corr_id]
        if not mine:
            return
        by_key[only] = mine
        kept = [s for s in state.seen if s.rule != rule_id or s.corr != corr_id]
    for (rule, corr), seen in by_key.items():
        seen.sort(key=_by_time)
        if seen[0].t >= before:
            kept += seen[:SEEN_CAP]  # all still within the lateness
            continue
        starts = [s.t for s in state.starts if s.rule == rule and s.corr == corr]
        keep = {id(s) for s in seen if s.t >= before}
        for t0 in starts:
            keep |= {id(s) for s in [s for s in seen if s.t >= t0][:SEEN_KEPT]}
        if starts:
            keep.add(id(seen[-1]))
        kept += [s for s in seen if id(s) in keep][:SEEN_CAP]
    state.seen = kept


def _under_cap(seen: list[Seen]) -> bool:
    return len(seen) <= SEEN_CAP or max(Counter([(s.rule, s.corr) for s in seen]).values()) <= SEEN_CAP


def forget_inactive(state: MemberState, before: int) -> None:
    """Activities kept: those still waiting, the latest of each rule, and any at or after `before` (one may still
    meet the wait of an earlier activity that is on its way on another topic)."""
    latest: dict[int, int] = {}
    for a in state.activity:
        latest[a.rule] = max(a.t, latest.get(a.rule, a.t))
    state.activity = [a for a in state.activity if a.armed or a.t >= before or a.t == latest[a.rule]]
