"""The journey engine, without I/O: what one event does to a member's journey, and what a due timer decides.

A member's journey is a small JSON-able dict (see `new_journey`). `apply` records an event and returns the timers
it starts or stops and the frictions it raises or resolves now; `fire` decides a timer once the journey clock has
passed its due time plus the allowed lateness. Absence and threshold rules decide only when their timer fires,
from event times alone, so the order in which events arrived (within the lateness), the batching and the
partitioning never change the outcome. The same functions drive the live service (state in Redis) and
back-testing (state in memory).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from services.journey.rules import AbsenceRule, ImmediateRule, InactivityRule, Rule, ThresholdRule, field_value
from shared.events import CloudEvent, deterministic_id
from shared.events.registry import TYPE_PREFIX

Journey = dict[str, Any]

TIMELINE_LENGTH = 25
RECENT_IDS = 100
EXPECTS_KEPT = 10


def new_journey(member_id: str) -> Journey:
    return {
        "id": member_id,
        "p": {},  # profile from the sign-up: age_band, home_library, postcode_area, channel, platform
        "f": {},  # first occurrence per event type: [ms, channel, platform]
        "t": {},  # last touch per channel and per platform: ms
        "a": None,  # last activity: ms
        "tl": [],  # recent timeline: [ms, type, channel, platform, library], oldest first
        "ids": [],  # recently applied event ids (a redelivery changes nothing)
        "r": {},  # rule state by rule key
        "o": {},  # open frictions by friction id
    }


@dataclass(frozen=True)
class Friction:
    friction_id: str
    rule: str
    member_id: str
    start_event_id: str
    started_ms: int
    due_ms: int
    library: str | None
    channel_pair: str | None
    platform: str | None
    age_band: str | None

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Resolution:
    friction: Friction
    event_id: str
    at_ms: int


@dataclass(frozen=True)
class ClosedStart:
    """An absence window that closed, met or not: the denominator of friction rates (right-censored)."""

    rule: str
    due_ms: int
    library: str | None
    channel_pair: str | None
    platform: str | None
    age_band: str | None
    friction: bool


@dataclass
class Outcome:
    timers_add: list[tuple[str, int]] = field(default_factory=list)
    timers_remove: list[str] = field(default_factory=list)
    detected: list[Friction] = field(default_factory=list)
    resolved: list[Resolution] = field(default_factory=list)
    closed: list[ClosedStart] = field(default_factory=list)
    applied: bool = True

    def extend(self, other: Outcome) -> None:
        self.timers_add += other.timers_add
        self.timers_remove += other.timers_remove
        self.detected += other.detected
        self.resolved += other.resolved
        self.closed += other.closed


def ms(event: CloudEvent) -> int:
    return int(event.utc_time.timestamp() * 1000)


def short_type(event: CloudEvent) -> str:
    return event.type.removeprefix(TYPE_PREFIX)


def _corr(event: CloudEvent, fields: list[str]) -> str:
    return "/".join(str(field_value(event, name)) for name in fields)


# -------------------------------------------------------------------------------------------------- apply


def apply(journey: Journey, event: CloudEvent, rules: list[Rule]) -> Outcome:
    """Record one of the member's events; effects that do not wait for a timer happen now."""
    if event.id in journey["ids"]:
        return Outcome(applied=False)
    journey["ids"] = [*journey["ids"][-(RECENT_IDS - 1) :], event.id]
    t = ms(event)
    _record(journey, event, t)
    out = Outcome()
    for rule in rules:
        if isinstance(rule, AbsenceRule):
            out.extend(_absence_event(journey, rule, event, t))
        elif isinstance(rule, ThresholdRule):
            out.extend(_threshold_event(journey, rule, event, t))
        elif isinstance(rule, InactivityRule):
            out.extend(_inactivity_event(journey, rule, event, t))
        else:
            out.extend(_immediate_event(journey, rule, event, t))
    return out


def _record(journey: Journey, event: CloudEvent, t: int) -> None:
    kind = short_type(event)
    if kind == "member.signed_up.v1":
        journey["p"] = {
            "age_band": event.data.get("age_band"),
            "home_library": event.data.get("home_library"),
            "postcode_area": event.data.get("postcode_area"),
            "channel": event.channel,
            "platform": event.platform,
            "source": event.data.get("source"),
        }
    first = journey["f"].get(kind)
    if first is None or t < first[0]:
        journey["f"][kind] = [t, event.channel, event.platform]
    for touch in (f"channel:{event.channel}", f"platform:{event.platform}"):
        if not touch.endswith(":None"):
            journey["t"][touch] = max(t, journey["t"].get(touch, 0))
    if not kind.startswith(("friction.", "message.", "member.erased", "member.merged")):
        journey["a"] = max(t, journey["a"] or 0)
    entry = [t, kind, event.channel, event.platform, event.library]
    timeline = journey["tl"]
    bisect.insort(timeline, entry, key=lambda e: e[0])
    del timeline[: max(0, len(timeline) - TIMELINE_LENGTH)]


def _may_apply(rule: Rule, journey: Journey) -> bool:
    """Whether the rule may apply to the member: it does if it admits their profile, and may if the sign-up has
    not arrived yet (events from another topic can come first). The filter is decided again when it fires."""
    return not journey["p"] or rule.admits(journey["p"])


def _friction(
    journey: Journey,
    rule: Rule,
    friction_id: str,
    start_event_id: str,
    started: int,
    due: int,
    library: str | None,
    platform: str | None,
    channel_pair: str | None = None,
) -> Friction:
    profile = journey["p"]
    return Friction(
        friction_id=friction_id,
        rule=rule.id,
        member_id=journey["id"],
        start_event_id=start_event_id,
        started_ms=started,
        due_ms=due,
        library=library or profile.get("home_library"),
        channel_pair=channel_pair or rule.channel_pair,
        platform=platform,
        age_band=profile.get("age_band"),
    )


def _resolve_open(journey: Journey, rule_id: str, key: str | None, event: CloudEvent, t: int) -> list[Resolution]:
    """Resolve the rule's open frictions (for `key`, if given) that started before this event."""
    resolved = []
    for friction_id, raw in list(journey["o"].items()):
        if raw["rule"] != rule_id or (key is not None and raw.get("key") != key) or raw["started_ms"] > t:
            continue
        del journey["o"][friction_id]
        friction = Friction(**{k: v for k, v in raw.items() if k != "key"})
        resolved.append(Resolution(friction, event.id, max(t, friction.due_ms)))
    return resolved


def _open(journey: Journey, friction: Friction, key: str) -> None:
    journey["o"][friction.friction_id] = {**friction.as_json(), "key": key}


def _expected(state: dict[str, Any]) -> list[list[Any]]:
    """The rule's expected events as [time, event id], oldest first (journeys stored before ids had times only)."""
    state["e"] = [e if isinstance(e, list) else [e, None] for e in state["e"]]
    expected: list[list[Any]] = state["e"]
    return expected


def _absence_event(journey: Journey, rule: AbsenceRule, event: CloudEvent, t: int) -> Outcome:
    out = Outcome()
    if rule.expect.matches(event):
        key = f"{rule.id}|{_corr(event, list(rule.same.values()))}"
        state = journey["r"].setdefault(key, {"s": [], "e": []})
        # [time, event id]: the id tells an expected event at the very time of a start from the start itself.
        expected = _expected(state)
        if not any(e[1] == event.id for e in expected):
            bisect.insort(expected, [t, event.id], key=lambda e: e[0])
            del expected[: max(0, len(expected) - EXPECTS_KEPT)]
        out.resolved += _resolve_open(journey, rule.id, key, event, t)
    if rule.start.matches(event) and _may_apply(rule, journey):
        key = f"{rule.id}|{_corr(event, list(rule.same))}"
        state = journey["r"].setdefault(key, {"s": [], "e": []})
        due = t + int(rule.within.total_seconds() * 1000)
        pair = rule.channel_pair
        if event.data.get("from_channel") and event.data.get("to_channel") and pair is None:
            pair = f"{event.data['from_channel']}→{event.data['to_channel']}"
        start = [t, event.id, event.library, event.platform, pair]
        if start not in state["s"]:
            state["s"].append(start)
            out.timers_add.append((f"a|{key}|{t}|{event.id}", due))
    return out


def _threshold_event(journey: Journey, rule: ThresholdRule, event: CloudEvent, t: int) -> Outcome:
    out = Outcome()
    key = f"{rule.id}|{_corr(event, rule.same)}"
    if rule.match.matches(event) and _may_apply(rule, journey):
        state = journey["r"].setdefault(key, {"m": [], "x": [], "lib": event.library, "pl": event.platform})
        if t not in state["m"]:
            bisect.insort(state["m"], t)
            # A check at the event's own time decides once later events of the window have had time to arrive.
            out.timers_add.append((f"t|{key}|{t}|{event.id}", t))
    if rule.reset is not None and rule.reset.matches(event):
        # Kept even before any failure arrived: arrival order must not decide what a reset resets.
        state = journey["r"].setdefault(key, {"m": [], "x": [], "lib": event.library, "pl": event.platform})
        bisect.insort(state["x"], t)
        del state["x"][: max(0, len(state["x"]) - EXPECTS_KEPT)]
        out.resolved += _resolve_open(journey, rule.id, key, event, t)
    return out


def _inactivity_event(journey: Journey, rule: InactivityRule, event: CloudEvent, t: int) -> Outcome:
    """Each activity waits for the next one; a wait met by a later activity is dropped at once, so with events in
    order a member has one pending timer. Decided when it fires, from the activity times: arrival order does not
    matter."""
    out = Outcome()
    if not (rule.activity.matches(event) and _may_apply(rule, journey)):
        return out
    acts = journey["r"].setdefault(rule.id, {"acts": []})["acts"]
    if any(a[0] == t for a in acts):
        return out
    window = int(rule.within.total_seconds() * 1000)
    bisect.insort(acts, [t, event.id], key=lambda a: a[0])
    position = next(i for i, a in enumerate(acts) if a[0] == t)
    if position > 0 and t - acts[position - 1][0] <= window:
        out.timers_remove.append(f"i|{rule.id}|{acts[position - 1][0]}")
    if position + 1 < len(acts) and acts[position + 1][0] - t <= window:
        pass  # met already by a later activity that arrived first: no wait to start
    else:
        out.timers_add.append((f"i|{rule.id}|{t}", t + window))
    del acts[: max(0, len(acts) - EXPECTS_KEPT)]
    out.resolved += _resolve_open(journey, rule.id, rule.id, event, t)
    return out


def _immediate_event(journey: Journey, rule: ImmediateRule, event: CloudEvent, t: int) -> Outcome:
    out = Outcome()
    if rule.resolve is not None and rule.resolve.matches(event):
        out.resolved += _resolve_open(journey, rule.id, None, event, t)
    if rule.match.matches(event) and _may_apply(rule, journey):
        friction = _friction(
            journey,
            rule,
            deterministic_id("friction", rule.id, journey["id"], event.id),
            event.id,
            t,
            t,
            event.library,
            event.platform,
        )
        _open(journey, friction, rule.id)
        out.detected.append(friction)
    return out


# --------------------------------------------------------------------------------------------------- fire


def fire(journey: Journey, timer: str, rules: dict[str, Rule]) -> Outcome:
    """Decide a timer whose due time (plus lateness) the journey clock has passed."""
    kind, rule_id = timer.split("|", 2)[:2]
    rule = rules.get(rule_id)
    if rule is None:
        return Outcome()  # the rule was removed from the catalogue
    if kind == "a" and isinstance(rule, AbsenceRule):
        return _fire_absence(journey, rule, timer)
    if kind == "t" and isinstance(rule, ThresholdRule):
        return _fire_threshold(journey, rule, timer)
    if kind == "i" and isinstance(rule, InactivityRule):
        return _fire_inactivity(journey, rule, timer)
    return Outcome()


def _fire_absence(journey: Journey, rule: AbsenceRule, timer: str) -> Outcome:
    _, rule_id, corr, started, start_id = timer.split("|", 4)
    key, t0 = f"{rule_id}|{corr}", int(started)
    state = journey["r"].get(key)
    start = next((s for s in state["s"] if s[0] == t0 and s[1] == start_id), None) if state else None
    if state is None or start is None:
        return Outcome()
    state["s"].remove(start)
    if not rule.admits(journey["p"]):
        return Outcome()
    due = t0 + int(rule.within.total_seconds() * 1000)
    _, _, library, platform, pair = start
    profile = journey["p"]
    out = Outcome()
    # At or after the start, but not the start itself: an event that is both start and expected (a course
    # attended) does not meet itself, while a login at the very millisecond of a channel switch does meet it.
    expected = _expected(state)
    met = any(t0 <= t <= due and event_id != start_id for t, event_id in expected)
    out.closed.append(
        ClosedStart(
            rule.id,
            due,
            library or profile.get("home_library"),
            pair or rule.channel_pair,
            platform,
            profile.get("age_band"),
            friction=not met,
        )
    )
    if not met:
        friction = _friction(
            journey,
            rule,
            deterministic_id("friction", rule.id, journey["id"], start_id),
            start_id,
            t0,
            due,
            library,
            platform,
            pair,
        )
        out.detected.append(friction)
        later = [t for t, _ in expected if t > due]
        if later:  # the expected event came after the window but before the timer fired
            out.resolved.append(Resolution(friction, f"{rule.id}:{journey['id']}:{later[0]}", later[0]))
        else:
            _open(journey, friction, key)
    if not state["s"]:
        # Keep what a later start could still need: nothing older than the window, at most a few times.
        state["e"] = [e for e in expected if e[0] >= due][-EXPECTS_KEPT:]
        if not state["e"]:
            del journey["r"][key]
    return out


def _fire_threshold(journey: Journey, rule: ThresholdRule, timer: str) -> Outcome:
    _, rule_id, corr, at, event_id = timer.split("|", 4)
    key, t = f"{rule_id}|{corr}", int(at)
    state = journey["r"].get(key)
    out = Outcome()
    if state is None:
        return out
    window = int(rule.within.total_seconds() * 1000)
    since_reset = max([x for x in state["x"] if x <= t], default=None)
    burst = [m for m in state["m"] if t - window < m <= t and (since_reset is None or m > since_reset)]
    already_open = any(f["rule"] == rule.id and f.get("key") == key for f in journey["o"].values())
    if not rule.admits(journey["p"]):
        return out
    # One friction per burst: a 4th failure while the friction is open adds nothing.
    if len(burst) >= rule.count and not already_open and burst[0] > state.get("raised", -1):
        friction = _friction(
            journey,
            rule,
            deterministic_id("friction", rule.id, journey["id"], corr, str(t)),
            event_id,
            burst[0],
            t,
            state.get("lib"),
            state.get("pl"),
        )
        state["raised"] = t
        resets = [x for x in state["x"] if x > t]
        if resets:
            out.resolved.append(Resolution(friction, f"{rule.id}:{journey['id']}:{resets[0]}", resets[0]))
        else:
            _open(journey, friction, key)
        out.detected.append(friction)
    state["m"] = [m for m in state["m"] if m > t - window or m > t]
    return out


def _fire_inactivity(journey: Journey, rule: InactivityRule, timer: str) -> Outcome:
    last = int(timer.split("|")[2])
    acts = journey["r"].get(rule.id, {}).get("acts", [])
    start = next((a for a in acts if a[0] == last), None)
    out = Outcome()
    if start is None or not rule.admits(journey["p"]):
        return out  # forgotten, or not a member the rule is about
    due = last + int(rule.within.total_seconds() * 1000)
    later = [a[0] for a in acts if a[0] > last]
    if later and later[0] <= due:
        return out  # active again in time
    friction = _friction(
        journey, rule, deterministic_id("friction", rule.id, journey["id"], str(last)), start[1], last, due, None, None
    )
    if later:  # active again, but too late, before this timer fired
        out.resolved.append(Resolution(friction, f"{rule.id}:{journey['id']}:{later[0]}", later[0]))
    else:
        _open(journey, friction, rule.id)
    out.detected.append(friction)
    return out


def merge_into(survivor: Journey, merged: Journey) -> Journey:
    """The survivor's journey with what the merged record adds: earlier first occurrences, touches, timeline.
    The merged record's pending timers and open frictions end with it."""
    for kind, first in merged["f"].items():
        if kind not in survivor["f"] or first[0] < survivor["f"][kind][0]:
            survivor["f"][kind] = first
    for touch, t in merged["t"].items():
        survivor["t"][touch] = max(t, survivor["t"].get(touch, 0))
    survivor["a"] = max(survivor["a"] or 0, merged["a"] or 0) or None
    survivor["tl"] = sorted(survivor["tl"] + merged["tl"], key=lambda e: e[0])[-TIMELINE_LENGTH:]
    if not survivor["p"]:
        survivor["p"] = merged["p"]
    return survivor


def timers_of(journey: Journey) -> list[str]:
    """Every timer the journey may still have pending (to cancel them on erasure or merge)."""
    timers = []
    for key, state in journey["r"].items():
        for start in state.get("s", []):
            timers.append(f"a|{key}|{start[0]}|{start[1]}")
        for act in state.get("acts", []):
            timers.append(f"i|{key}|{act[0]}")
    return timers
