"""A simulated library network: members of all ages signing up online and at desks, logging in across platforms,
reserving and collecting, taking courses — with frictions planted at known rates.

The ground truth comes from the plan, not from the journey engine: for every member the simulator decides
whether they will get stuck, and how, and writes down the friction (rule, member, start event) it planted. A
detector that finds exactly these has precision and recall 1.0. Everything is reproducible from the seed.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from shared.events import CloudEvent, to_structured
from shared.events.registry import TYPE_PREFIX

# Libraries of the catalogue's seed (services/propositions/seed.yaml), each with a postcode area it serves: every
# library code entering the platform must be in the catalogue (tests/unit/test_simulator_libraries.py holds them to it).
LIBRARIES = ["oba", "rotterdam", "den-haag", "utrecht", "haarlem", "groningen", "eindhoven", "midden-brabant"]
POSTCODES = {
    "oba": "1034",
    "rotterdam": "3011",
    "den-haag": "2511",
    "utrecht": "3511",
    "haarlem": "2011",
    "groningen": "9711",
    "eindhoven": "5611",
    "midden-brabant": "5038",
}
DAY = timedelta(days=1)
# What counts as activity for the youth-inactive rule (as in rules.yaml).
ACTIVITY = {
    "member.signed_up.v1",
    "member.card_activated.v1",
    "member.login_succeeded.v1",
    "usage.loan_reserved.v1",
    "usage.loan_borrowed.v1",
    "usage.activity_registered.v1",
    "usage.activity_attended.v1",
}
RETURN_VISIT = {"usage.activity_attended.v1", "usage.activity_registered.v1", "usage.loan_borrowed.v1"}


@dataclass(frozen=True)
class Rates:
    """The share of members who get stuck, per rule (of those the rule applies to)."""

    registration_abandoned: float = 0.03
    not_activated: float = 0.15
    activated_late: float = 0.05  # of online sign-ups: stuck, then activated after all (a resolution)
    desk_never_online: float = 0.20
    reservation_not_collected: float = 0.20
    repeated_login_failures: float = 0.04
    switch_without_success: float = 0.05
    basic_skills_no_return: float = 0.40
    youth_inactive: float = 0.10
    boekstart_no_first_loan: float = 0.25
    duplicate: float = 0.02


@dataclass(frozen=True)
class Planted:
    rule: str
    member_id: str
    start_event_id: str


@dataclass
class Network:
    events: list[CloudEvent] = field(default_factory=list)
    truth: list[Planted] = field(default_factory=list)
    members: int = 0

    def planted_by_rule(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for planted in self.truth:
            counts[planted.rule] = counts.get(planted.rule, 0) + 1
        return dict(sorted(counts.items()))

    def write(self, history: Path, truth: Path) -> None:
        with history.open("w") as out:
            for event in self.events:
                out.write(json.dumps(to_structured(event), separators=(",", ":")) + "\n")
        truth.write_text(json.dumps([p.__dict__ for p in self.truth], indent=1))


class _Member:
    def __init__(self, sim: Simulator, member_id: str, library: str) -> None:
        self.sim, self.id, self.library = sim, member_id, library
        self.events: list[CloudEvent] = []
        self.planted: list[Planted] = []

    def emit(self, kind: str, at: datetime, *, channel: str, platform: str, **data: Any) -> CloudEvent:
        event = CloudEvent(
            id=str(uuid.UUID(int=self.sim.rng.getrandbits(128))),
            source=f"/libraries/{self.library}/{platform}",
            type=TYPE_PREFIX + kind,
            time=at,
            subject=self.id,
            library=self.library,
            channel=channel,
            platform=platform,
            data=data,
        )
        self.sim.network.events.append(event)
        self.events.append(event)
        return event

    def plant(self, rule: str, start: CloudEvent) -> None:
        self.planted.append(Planted(rule, self.id, start.id))


class Simulator:
    def __init__(self, members: int, *, seed: int = 7, end: datetime | None = None, rates: Rates = Rates()) -> None:
        self.rng = random.Random(seed)
        self.count = members
        # Every window closes before the history ends, so the truth is complete (nothing right-censored).
        self.end = (end or datetime.now(UTC)).replace(microsecond=0) - timedelta(days=2)
        self.begin = self.end - timedelta(days=720)
        self.rates = rates
        self.network = Network(members=members)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def run(self) -> Network:
        for n in range(self.count):
            member = _Member(self, str(uuid.UUID(int=self.rng.getrandbits(128))), self.rng.choice(LIBRARIES))
            self._member(member, n)
            self.network.truth += member.planted
        self.network.events.sort(key=lambda e: e.time)
        return self.network

    # ------------------------------------------------------------------------------------------ members

    def _member(self, m: _Member, n: int) -> None:
        rng, r = self.rng, self.rates
        signup = self.begin + timedelta(
            seconds=rng.randint(0, int((self.end - self.begin).total_seconds()) - 240 * 86400)
        )
        kind = rng.random()
        baby = kind < 0.06
        age = "0-3" if baby else rng.choice(["4-11", "12-17", "18-64", "18-64", "18-64", "65+"])
        online = not baby and kind < 0.65
        platform = "partner" if baby else rng.choice(["website", "app"]) if online else "desk"
        channel = "online" if online else "offline"

        started = m.emit(
            "member.registration_started.v1",
            signup - timedelta(minutes=12),
            channel=channel,
            platform=platform,
            home_library=m.library,
        )
        if self.chance(r.registration_abandoned):
            m.plant("registration-abandoned", started)
            return
        data: dict[str, Any] = {"age_band": age, "home_library": m.library, "postcode_area": POSTCODES[m.library]}
        if baby:
            data |= {"source": "consultatiebureau", "proposition": "boekstart"}
        signed = m.emit("member.signed_up.v1", signup, channel=channel, platform=platform, **data)
        last_activity = signup
        web = platform if online else rng.choice(["website", "app"])

        if online:
            if self.chance(r.not_activated):
                m.plant("online-signup-not-activated", signed)
            elif self.chance(r.activated_late / (1 - r.not_activated)):
                m.plant("online-signup-not-activated", signed)
                last_activity = self._activate(m, signup + rng.uniform(16, 40) * DAY)
            else:
                last_activity = self._activate(m, signup + rng.uniform(0.1, 12) * DAY)
        else:
            # Desk and partner sign-ups (and the parents of BoekStart babies) are expected online within 30 days.
            m.emit(
                "member.card_activated.v1",
                signup + timedelta(minutes=5),
                channel="offline",
                platform="desk",
                branch="hoofdvestiging",
            )
            if self.chance(r.desk_never_online):
                m.plant("desk-signup-never-online", signed)
            else:
                last_activity = self._login(m, signup + rng.uniform(0.5, 25) * DAY, web)

        if baby:
            first_loan = (
                signup + (rng.uniform(65, 100) if self.chance(r.boekstart_no_first_loan) else rng.uniform(3, 50)) * DAY
            )
            if first_loan - signup > 60 * DAY:
                m.plant("boekstart-no-first-loan", signed)
            last_activity = max(last_activity, self._borrow(m, first_loan))

        if self.chance(r.duplicate):
            suspected = m.emit(
                "member.duplicate_suspected.v1",
                signup + timedelta(minutes=1),
                channel=channel,
                platform=platform,
                other_member_id=str(uuid.UUID(int=self.rng.getrandbits(128))),
                other_library=rng.choice(LIBRARIES),
                matched_on=["email"],
            )
            m.plant("duplicate-accounts", suspected)

        adult = age in ("18-64", "65+")
        if adult and self.chance(0.3):
            last_activity = max(last_activity, self._reserve(m, signup + rng.uniform(30, 200) * DAY))
        if self.chance(r.repeated_login_failures):
            at = signup + rng.uniform(30, 200) * DAY
            failures = [
                m.emit(
                    "member.login_failed.v1",
                    at + timedelta(minutes=k * 4),
                    channel="online",
                    platform=web,
                    login_platform=web,
                    reason="bad_credentials",
                )
                for k in range(3)
            ]
            m.plant("repeated-login-failures", failures[2])
        if self.chance(0.10):
            last_activity = max(last_activity, self._switch(m, signup + rng.uniform(30, 200) * DAY, web))
        if self.chance(0.05):
            last_activity = max(last_activity, self._course(m, signup + rng.uniform(20, 200) * DAY))

        if age in ("0-3", "4-11", "12-17"):
            self._youth(m)
        self._check_courses(m)

    def _activate(self, m: _Member, at: datetime) -> datetime:
        m.emit("member.card_activated.v1", at, channel="offline", platform="desk", branch="hoofdvestiging")
        return at

    def _login(self, m: _Member, at: datetime, platform: str) -> datetime:
        m.emit("member.login_succeeded.v1", at, channel="online", platform=platform, login_platform=platform)
        return at

    def _borrow(self, m: _Member, at: datetime, item: str | None = None) -> datetime:
        m.emit(
            "usage.loan_borrowed.v1",
            at,
            channel="offline",
            platform=self.rng.choice(["desk", "kiosk"]),
            item_id=item or f"item-{self.rng.randint(1, 10**9)}",
            loan_id=f"loan-{self.rng.randint(1, 10**9)}",
        )
        return at

    def _reserve(self, m: _Member, at: datetime) -> datetime:
        item = f"item-{self.rng.randint(1, 10**9)}"
        reserved = m.emit(
            "usage.loan_reserved.v1",
            at,
            channel="online",
            platform="website",
            item_id=item,
            reservation_id=f"res-{self.rng.randint(1, 10**9)}",
        )
        if self.chance(self.rates.reservation_not_collected):
            m.plant("reservation-not-collected", reserved)
            return at
        # Someone else's item borrowed meanwhile does not collect this one.
        return self._borrow(m, at + self.rng.uniform(0.5, 6.5) * DAY, item)

    def _switch(self, m: _Member, at: datetime, usual: str) -> datetime:
        switched = m.emit(
            "member.channel_switched.v1",
            at,
            channel="online",
            platform="ebook",
            from_channel="online",
            from_platform=usual,
            to_channel="online",
            to_platform="ebook",
        )
        if self.chance(self.rates.switch_without_success / 0.10):
            m.emit(
                "member.login_failed.v1",
                at + timedelta(minutes=1),
                channel="online",
                platform="ebook",
                login_platform="ebook",
                reason="account_not_linked",
            )
            m.plant("switch-without-success", switched)
            return at
        return self._login(m, at + timedelta(minutes=self.rng.uniform(1, 40)), "ebook")

    def _course(self, m: _Member, at: datetime) -> datetime:
        attended = m.emit(
            "usage.activity_attended.v1",
            at,
            channel="offline",
            platform="desk",
            activity_id=self._activity(m, "klik-en-tik"),
            proposition="klik-en-tik",
        )
        if self.chance(self.rates.basic_skills_no_return):
            m.plant("basic-skills-no-return", attended)
            return at
        back = at + self.rng.uniform(2, 25) * DAY
        m.emit(
            "usage.activity_attended.v1",
            back,
            channel="offline",
            platform="desk",
            activity_id=self._activity(m, "taalcafe"),
            proposition="taalcafe",
        )
        # The return visit starts a new wait of its own: come back again, so that nothing else is planted.
        m.emit(
            "usage.activity_registered.v1",
            back + self.rng.uniform(1, 20) * DAY,
            channel="offline",
            platform="desk",
            activity_id=self._activity(m, "voorlezen"),
            proposition="voorlezen",
        )
        return back + 21 * DAY

    def _youth(self, m: _Member) -> None:
        """Young members borrow at least every 150 days until the end of the history, unless planted inactive.
        Any gap of more than 180 days between their activities (another friction can cause one) is a friction."""
        latest = max((e for e in m.events if _kind(e) in ACTIVITY), key=lambda e: e.time)
        if not (self.chance(self.rates.youth_inactive) and latest.time <= self.end - 185 * DAY):
            at, stop = latest.time, self.end - self.rng.uniform(0, 20) * DAY
            while at + 150 * DAY < stop:
                at += self.rng.uniform(40, 150) * DAY
                self._borrow(m, at)
            self._borrow(m, max(at, stop))
        activity = sorted((e for e in m.events if _kind(e) in ACTIVITY), key=lambda e: e.time)
        for before, after in zip(activity, [*activity[1:], None], strict=True):
            if (after.time if after else self.end) - before.time > 180 * DAY:
                m.plant("youth-inactive", before)

    def _activity(self, m: _Member, proposition: str) -> str:
        # Activity ids read <library>.<proposition>.<hex>, as propositions schedules them.
        return f"{m.library}.{proposition}.{self.rng.getrandbits(32):08x}"

    def _check_courses(self, m: _Member) -> None:
        """A course planted without return is no friction if the member came back anyway (say, to borrow)."""
        returns = [e.time for e in m.events if _kind(e) in RETURN_VISIT]
        for planted in [p for p in m.planted if p.rule == "basic-skills-no-return"]:
            start = next(e for e in m.events if e.id == planted.start_event_id)
            if any(start.time < t <= start.time + 30 * DAY for t in returns):
                m.planted.remove(planted)


def _kind(event: CloudEvent) -> str:
    return event.type.removeprefix(TYPE_PREFIX)


def simulate(members: int, *, seed: int = 7, end: datetime | None = None) -> Network:
    return Simulator(members, seed=seed, end=end).run()


def read_truth(path: Path) -> list[Planted]:
    """The ground truth `Network.write` wrote."""
    return [Planted(**p) for p in json.loads(path.read_text())]


# ------------------------------------------------------------------------------------------- at the doors

# An age in each band, for the birth dates of simulated members signing up through identity.
_AGE = {"0-3": 1, "4-11": 8, "12-17": 14, "18-64": 35, "65+": 72}


@dataclass(frozen=True)
class SignUp:
    """The start of one simulated member's journey as platforms report it through identity's HTTP API: a
    registration (CloudEvent, keeping its id and subject), the sign-up completing it, and for a desk or partner
    sign-up the card activated at the desk right after."""

    registration: CloudEvent
    person: dict[str, Any] | None  # the body of POST /v1/members; None: the registration is abandoned
    card_activation: CloudEvent | None
    duplicate: bool = False  # shares the e-mail address of a member signed up before


def at_the_doors(network: Network, today: date) -> list[SignUp]:
    """What identity's doors take of each member: times are left to the moment of posting, since identity stamps
    a sign-up with the time it arrives. Personal data is made up (`example.invalid` addresses); a member planted
    as a duplicate shares the e-mail address of the member before, so identity suspects the duplicate itself."""
    by_member: dict[str, dict[str, CloudEvent]] = {}
    for event in network.events:
        if event.subject is not None:
            by_member.setdefault(event.subject, {}).setdefault(_kind(event), event)
    doors: list[SignUp] = []
    previous_email: str | None = None
    for n, (member, first) in enumerate(by_member.items(), start=1):
        signed = first.get("member.signed_up.v1")
        person, duplicate = None, False
        if signed is not None:
            email = f"member-{member[:13]}@example.invalid"
            if "member.duplicate_suspected.v1" in first and previous_email is not None:
                email, duplicate = previous_email, True
            previous_email = email
            age = _AGE[str(signed.data["age_band"])]
            born = date(today.year - age, today.month, min(today.day, 28)) - timedelta(days=int(member[:4], 16) % 300)
            person = {
                "registration_id": member,
                "name": f"Simulated member {n}",
                "email": email,
                "birth_date": born.isoformat(),
                "postcode": f"{signed.data['postcode_area']} AB",
                "home_library": signed.data["home_library"],
                "platform": signed.platform,
            } | {k: signed.data[k] for k in ("source", "proposition") if signed.data.get(k)}
        activation = (
            first.get("member.card_activated.v1") if signed is not None and signed.channel == "offline" else None
        )
        doors.append(SignUp(first["member.registration_started.v1"], person, activation, duplicate))
    return doors


def read_history(path: Path) -> Iterator[dict[str, Any]]:
    with path.open() as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)
