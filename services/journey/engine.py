"""The journey engine, without I/O: what one event does to a member's state, and what a due timer decides.

`Engine.apply` records an event and returns the timers it starts and the frictions it raises or resolves now;
`Engine.fire` decides a timer once the clock of its partition has passed its due time plus the allowed lateness.
Absence, threshold and inactivity rules decide only when their timer fires, from event times alone, so batching
and partitioning never change the outcome; an expected event already known when a timer fires means no friction.
The same engine drives the live service (services/journey/partition.py) and back-testing (memory.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from services.journey.outcomes import ClosedWindow, Friction, Outcome, Resolution
from services.journey.pruning import forget_inactive, forget_unwaited
from services.journey.rules import (
    AbsenceRule,
    Conditions,
    ImmediateRule,
    InactivityRule,
    JourneyEvent,
    Rule,
    ThresholdRule,
    meets,
)
from services.journey.state import (
    Activity,
    Burst,
    MemberState,
    OpenFriction,
    Profile,
    Seen,
    Start,
    Timer,
    full_id,
    ref,
)
from shared.events import deterministic_id

SIGNED_UP = "member.signed_up.v1"
MERGED = "member.merged.v1"
ERASED = "member.erased.v1"
LIVE_STREAM = ""  # services/journey/partition.py LIVE: restored timers belong to live operation
PRUNE_AT = 3  # expected events or activities per member before they are pruned by the clock (once per batch)
GROWN = 12  # ... or at once, while a batch brings many of one member's events (keeps each event's work small)
RESETS_KEPT = 2
OPEN_KEPT = 8  # open frictions kept per member; older ones can no longer be resolved


def _ms(duration_seconds: float) -> int:
    return int(duration_seconds * 1000)


class Engine:
    def __init__(self, rules: Sequence[Rule], lateness_ms: int = 0, *, closed_windows: bool = True) -> None:
        self.rules = list(rules)
        self.lateness = lateness_ms
        # Whether a closed absence window is told (`Outcome.closed`): back-tests count them; the service only when it
        # publishes them (one for nearly every second event, each a value of nine fields to build).
        self.closed_windows = closed_windows
        self.by_id = {r.id: r for r in self.rules}
        # States and timers name rules by code (a few bytes per member instead of the id, for millions of members).
        self._by_code = {r.code: r for r in self.rules}
        if len(self._by_code) < len(self.rules):
            raise ValueError("two rule ids share a code (services/journey/rules.py rule code): rename one of them")
        self._windows = {r.code: _ms(r.within.total_seconds()) for r in self.rules}
        # Per event type, the rules that look at it with their handler and what such an event must have to start
        # or meet what (None: an event of this type never does): an event no rule looks at costs a dictionary
        # lookup, and neither a rule's kind nor the types it looks at are asked again per event.
        handlers: dict[type, Callable[..., None]] = {
            AbsenceRule: self._absence, ThresholdRule: self._threshold, InactivityRule: self._inactivity,
            ImmediateRule: self._immediate,
        }  # fmt: skip
        by_kind: dict[str, list[tuple[Callable[..., None], Any, Conditions | None, Conditions | None]]] = {}
        for rule in self.rules:
            for kind in rule.kinds():
                by_kind.setdefault(kind, []).append((handlers[type(rule)], rule, *rule.conditions(kind)))
        self._by_kind = {kind: tuple(rules) for kind, rules in by_kind.items()}
        self.kinds = frozenset(self._by_kind) | {SIGNED_UP, MERGED, ERASED}

    # ----------------------------------------------------------------------------------------------- apply

    def apply(
        self,
        state: MemberState,
        event: JourneyEvent,
        stream: str = "",
        clock: Callable[[], int] | None = None,
        out: Outcome | None = None,
    ) -> Outcome:
        """Record one of the member's events; effects that do not wait for a timer happen now (added to `out`,
        when given: a partition collects a whole batch's in one). What the state no longer needs is forgotten by
        `prune`, once per batch (and when a window's timer fires), or here by the partition's `clock` (asked only
        then) when many of the member's events come in one batch."""
        if out is None:
            out = Outcome()
        if event.kind == SIGNED_UP:
            state.profile = Profile(event.data.get("age_band"), event.data.get("home_library"))
        seen = len(state.seen)
        for handler, rule, first, second in self._by_kind.get(event.kind, ()):
            handler(state, rule, event, stream, out, first, second)
        if len(state.seen) > seen and not state.starts:
            # No window waits for it: kept only until the clock has passed it by the lateness (a start may still be
            # on its way on another topic), then this timer forgets it, even if the member is never heard of again.
            out.timers.append(_forget_timer(event.subject, event.t, stream))
        if clock is not None and (len(state.seen) > GROWN or len(state.activity) > GROWN):
            self.prune(state, clock())
        return out

    def prune(self, state: MemberState, clock: int) -> None:
        """Forget what no window can need any more. `clock` is the partition's event time (the slowest topic's):
        expected events no window waits for are kept until it has passed them by the lateness, since the start
        they meet may still be on its way on another topic."""
        before = clock - self.lateness
        if state.seen:
            if not state.starts:
                state.seen = [s for s in state.seen if s.t >= before]  # no window waits: only the lateness keeps them
            elif len(state.seen) > PRUNE_AT:
                forget_unwaited(state, before)
        if len(state.activity) > PRUNE_AT:
            forget_inactive(state, before)

    @staticmethod
    def _may_apply(rule: Rule, state: MemberState) -> bool:
        """The rule applies to the member if it admits their profile, and may if the sign-up has not arrived yet
        (events from another topic can come first). The filter is decided again when the timer fires."""
        return not rule.member or state.profile is None or _admits(rule, state.profile)

    def _absence(
        self, state: MemberState, rule: AbsenceRule, event: JourneyEvent, stream: str, out: Outcome,
        expect: Conditions | None, start: Conditions | None,
    ) -> None:  # fmt: skip
        expected = expect is not None and meets(event, expect)
        starts = start is not None and meets(event, start) and self._may_apply(rule, state)
        if not (expected or starts):
            return
        kept = ref(event.id)  # only for an event the rule uses: this runs for every event of the rule's types
        if expected:
            corr = _corr(event, rule.expect_fields)
            for s in state.seen:
                if s.event_id == kept and s.rule == rule.code:
                    break
            else:
                state.seen.append(Seen(rule.code, corr, event.t, kept))
            _resolve_open(state, rule, corr, event, out)
        if starts:
            corr = _corr(event, rule.start_fields)
            for pending in state.starts:
                if pending.event_id == kept and pending.rule == rule.code:
                    return
            pair = rule.channel_pair
            if pair is None and event.data.get("from_channel") and event.data.get("to_channel"):
                pair = f"{event.data['from_channel']}→{event.data['to_channel']}"
            opened = Start(rule.code, corr, event.t, kept, event.library, event.platform, pair, stream)
            state.starts.append(opened)
            out.timers.append(_absence_timer(opened, event.subject, self._windows[rule.code]))

    def _threshold(
        self, state: MemberState, rule: ThresholdRule, event: JourneyEvent, stream: str, out: Outcome,
        match: Conditions | None, resets: Conditions | None,
    ) -> None:  # fmt: skip
        corr = _corr(event, rule.same_fields)
        matched = match is not None and meets(event, match) and self._may_apply(rule, state)
        reset = resets is not None and meets(event, resets)
        if not (matched or reset):
            return
        burst = next((b for b in state.bursts if b.rule == rule.code and b.corr == corr), None)
        if burst is None:
            # Kept even for a reset before any failure arrived: arrival order must not decide what a reset resets.
            burst = Burst(rule.code, corr, library=event.library, platform=event.platform, stream=stream)
            state.bursts.append(burst)
        if matched and event.t not in burst.matches:
            burst.matches.append(event.t)
            burst.matches.sort()
            # A check at the event's own time decides once later events of the window have had time to arrive.
            kept = ref(event.id)
            burst.checks.append((event.t, kept))
            out.timers.append(Timer(event.t, event.subject, "t", rule.code, corr, event.t, kept, burst.stream))
        if reset:
            burst.resets = sorted([*burst.resets, event.t])[-RESETS_KEPT:]
            _resolve_open(state, rule, corr, event, out)

    def _inactivity(
        self, state: MemberState, rule: InactivityRule, event: JourneyEvent, stream: str, out: Outcome,
        activity: Conditions | None, _: None,
    ) -> None:  # fmt: skip
        """Each activity waits for the next one; the latest activity's wait is the one armed."""
        if activity is None or not meets(event, activity) or not self._may_apply(rule, state):
            return
        _resolve_open(state, rule, "", event, out)
        acts = [a for a in state.activity if a.rule == rule.code]
        for a in acts:
            if a.t == event.t:
                return
        # Each activity waits for the next one, decided when its timer fires (the clock, not this member's own
        # events, says when the other topics have caught up). A wait superseded in time is dropped at once.
        window = self._windows[rule.code]
        later = [a for a in acts if a.t > event.t]
        armed = not later or min(a.t for a in later) > event.t + window + self.lateness
        kept = ref(event.id)
        previous = state.activity[-1] if state.activity else None
        state.activity.append(Activity(rule.code, event.t, kept, armed, stream))
        if previous is not None and (previous.rule, previous.t) > (rule.code, event.t):
            state.activity.sort(key=lambda a: (a.rule, a.t))
        if armed:
            out.timers.append(Timer(event.t + window, event.subject, "i", rule.code, "", event.t, kept, stream))
        for a in acts:
            if a.armed and a.t < event.t and event.t <= a.t + window + self.lateness:
                a.armed = False  # met by this activity

    def _immediate(
        self, state: MemberState, rule: ImmediateRule, event: JourneyEvent, _: str, out: Outcome,
        match: Conditions | None, resolve: Conditions | None,
    ) -> None:  # fmt: skip
        if resolve is not None and meets(event, resolve):
            _resolve_open(state, rule, None, event, out)
        if match is not None and meets(event, match) and self._may_apply(rule, state):
            friction_id = deterministic_id("friction", rule.id, event.subject, event.id)
            if any(o.friction_id == ref(friction_id) for o in state.open):
                return
            friction = _friction(
                state, rule, event.subject, friction_id, event.id, event.t, event.t, event.library, event.platform
            )
            _open(state, friction, rule.code, "")
            out.detected.append(friction)

    # ------------------------------------------------------------------------------------------------ fire

    def fire(self, state: MemberState, timer: Timer, clock: int, out: Outcome | None = None) -> Outcome:
        """Decide a timer whose due time (plus lateness) the clock has passed. A timer whose state is gone
        (fired before, erased, or superseded) decides nothing. `out` as for `apply`."""
        if out is None:
            out = Outcome()
        if timer.kind == "f":
            if state.seen and not state.starts:
                state.seen = [s for s in state.seen if s.t >= clock - self.lateness]
            return out
        rule = self._by_code.get(timer.rule)
        if isinstance(rule, AbsenceRule) and timer.kind == "a":
            self._fire_absence(state, rule, timer, clock, out)
        elif isinstance(rule, ThresholdRule) and timer.kind == "t":
            self._fire_threshold(state, rule, timer, out)
        elif isinstance(rule, InactivityRule) and timer.kind == "i":
            self._fire_inactivity(state, rule, timer, clock, out)
        return out

    def _fire_absence(self, state: MemberState, rule: AbsenceRule, timer: Timer, clock: int, out: Outcome) -> None:
        start = next((s for s in state.starts if s.rule == rule.code and s.event_id == timer.event_id), None)
        if start is None:
            return
        state.starts.remove(start)
        seen = [s for s in state.seen if s.rule == rule.code and s.corr == start.corr]
        forget_unwaited(state, clock - self.lateness, (rule.code, start.corr))
        profile = state.profile or _NO_PROFILE
        if not _admits(rule, profile):
            return
        # At or after the start, but not the start itself: an event that is both start and expected (a course
        # attended) does not meet itself, while a login at the very millisecond of a channel switch does meet it.
        # Within the lateness after the window counts as met (it arrived in time to be seen); later ones resolve.
        after = [s for s in seen if s.t >= start.t and s.event_id != start.event_id]
        met = any(s.t <= timer.due + self.lateness for s in after)
        library = start.library or profile.home_library
        pair = start.pair or rule.channel_pair
        if self.closed_windows:
            out.closed.append(
                ClosedWindow(
                    rule.id,
                    timer.member,
                    full_id(start.event_id),
                    timer.due,
                    met,
                    library,
                    pair,
                    start.platform,
                    profile.age_band,
                )
            )
        if not met:
            start_event_id = full_id(start.event_id)
            friction_id = deterministic_id("friction", rule.id, timer.member, start_event_id)
            friction = _friction(state, rule, timer.member, friction_id, start_event_id, start.t, timer.due,
                                 start.library, start.platform, pair)  # fmt: skip
            out.detected.append(friction)
            if after:  # the expected event came late, and was seen before the timer fired
                first = min(after, key=lambda s: s.t)
                out.resolved.append(_resolution(friction, full_id(first.event_id), first.t))
            else:
                _open(state, friction, rule.code, start.corr)

    def _fire_threshold(self, state: MemberState, rule: ThresholdRule, timer: Timer, out: Outcome) -> None:
        burst = next((b for b in state.bursts if b.rule == rule.code and b.corr == timer.corr), None)
        check = (timer.t, timer.event_id)
        if burst is None or check not in burst.checks:
            return
        burst.checks.remove(check)
        t, window = timer.t, self._windows[rule.code]
        since_reset = max([x for x in burst.resets if x <= t], default=None)
        matches = [m for m in burst.matches if t - window < m <= t and (since_reset is None or m > since_reset)]
        already_open = any(o.rule == rule.code and o.key == timer.corr for o in state.open)
        known_reset = any(t < x <= t + self.lateness for x in burst.resets)
        if (
            _admits(rule, state.profile)
            and len(matches) >= rule.count
            and not already_open
            and matches[0] > burst.raised
            and not known_reset
        ):
            friction_id = deterministic_id("friction", rule.id, timer.member, timer.corr, str(t))
            friction = _friction(state, rule, timer.member, friction_id, full_id(timer.event_id), matches[0], t,
                                 burst.library, burst.platform)  # fmt: skip
            burst.raised = t
            out.detected.append(friction)
            later = [x for x in burst.resets if x > t]
            if later:  # reset late, seen before the check was decided (the reset's id is not kept: the time is)
                out.resolved.append(_resolution(friction, f"{rule.id}:{timer.member}:{later[0]}", later[0]))
            else:
                _open(state, friction, rule.code, timer.corr)
        burst.matches = [m for m in burst.matches if m > t - window]
        if not (burst.checks or burst.matches or any(o.rule == rule.code and o.key == timer.corr for o in state.open)):
            state.bursts.remove(burst)

    def _fire_inactivity(
        self, state: MemberState, rule: InactivityRule, timer: Timer, clock: int, out: Outcome
    ) -> None:
        activity = next((a for a in state.activity if a.rule == rule.code and a.t == timer.t), None)
        if activity is None or not activity.armed:
            return  # met by a later activity, or decided before
        activity.armed = False
        acts = [a for a in state.activity if a.rule == rule.code]
        later = sorted(a.t for a in acts if a.t > activity.t)
        forget_inactive(state, clock - self.lateness)
        if later and later[0] <= timer.due + self.lateness:
            return  # active again in time
        if not _admits(rule, state.profile):
            return
        friction = self._inactive(state, rule, timer.member, activity, timer.due)
        out.detected.append(friction)
        back = next((a for a in acts if a.t == later[0]), None) if later else None
        if back is not None:  # active again, but too late, before this timer fired
            out.resolved.append(_resolution(friction, full_id(back.event_id), back.t))
        else:
            _open(state, friction, rule.code, "")

    @staticmethod
    def _inactive(state: MemberState, rule: Rule, member: str, activity: Activity, due: int) -> Friction:
        friction_id = deterministic_id("friction", rule.id, member, str(activity.t))
        return _friction(state, rule, member, friction_id, full_id(activity.event_id), activity.t, due, None, None)

    # -------------------------------------------------------------------------------------------- restore

    def timers(self, member: str, state: MemberState) -> list[Timer]:
        """Every timer the state still waits for (rebuilt when a partition's state is restored)."""
        timers = [_absence_timer(s, member, self._windows.get(s.rule, 0)) for s in state.starts]
        if state.seen and not state.starts:
            timers.append(_forget_timer(member, max(s.t for s in state.seen), LIVE_STREAM))
        for burst in state.bursts:
            timers += [Timer(t, member, "t", burst.rule, burst.corr, t, i, burst.stream) for t, i in burst.checks]
        for a in state.activity:
            if a.armed:
                timers.append(Timer(a.t + self._windows.get(a.rule, 0), member, "i", a.rule, "", a.t, a.event_id,
                                    a.stream))  # fmt: skip
        return timers


def _forget_timer(member: str, t: int, stream: str) -> Timer:
    return Timer(t, member, "f", 0, "", t, b"", stream)


def _absence_timer(start: Start, member: str, window: int) -> Timer:
    return Timer(start.t + window, member, "a", start.rule, start.corr, start.t, start.event_id, start.stream)


_NO_PROFILE = Profile()


def _admits(rule: Rule, profile: Profile | None) -> bool:
    """The rule's `member:` filter on the profile (services/journey/rules.py `admits`, without a dict per call)."""
    for name, values in rule.member.items():
        if str(getattr(profile, name) if profile is not None else None) not in values:
            return False
    return True


def _corr(event: JourneyEvent, fields: tuple[str, ...]) -> str:
    if not fields:
        return ""
    if len(fields) == 1:
        return str(event.field(fields[0]))
    return "/".join([str(event.field(name)) for name in fields])


def _friction(
    state: MemberState,
    rule: Rule,
    member: str,
    friction_id: str,
    start_event_id: str,
    started: int,
    due: int,
    library: str | None,
    platform: str | None,
    channel_pair: str | None = None,
) -> Friction:
    profile = state.profile or _NO_PROFILE
    return Friction(
        friction_id=friction_id,
        rule=rule.id,
        member_id=member,
        start_event_id=start_event_id,
        started_ms=started,
        due_ms=due,
        library=library or profile.home_library,
        channel_pair=channel_pair or rule.channel_pair,
        platform=platform,
        age_band=profile.age_band,
    )


def _resolution(friction: Friction, event_id: str, at: int) -> Resolution:
    return Resolution(friction.friction_id, friction.rule, friction.member_id, friction.library, friction.due_ms,
                      event_id, max(at, friction.due_ms))  # fmt: skip


def _open(state: MemberState, friction: Friction, rule_code: int, key: str) -> None:
    state.open.append(
        OpenFriction(ref(friction.friction_id), rule_code, key, friction.started_ms, friction.due_ms, friction.library)
    )
    del state.open[:-OPEN_KEPT]


def _resolve_open(state: MemberState, rule: Rule, key: str | None, event: JourneyEvent, out: Outcome) -> None:
    """Resolve the rule's open frictions (for `key`, if given) that started before this event."""
    if not state.open:
        return
    keep = []
    for o in state.open:
        if o.rule == rule.code and (key is None or o.key == key) and o.started <= event.t:
            friction_id = full_id(o.friction_id)
            out.resolved.append(
                Resolution(friction_id, rule.id, event.subject, o.library, o.due, event.id, max(event.t, o.due))
            )
        else:
            keep.append(o)
    state.open = keep
