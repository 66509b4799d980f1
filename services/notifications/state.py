"""notifications' state, typed: what the stores hold, as the rest of the service sees it.

Converted to and from the stored (compact) form only inside the stores (`codec.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from shared.events import CloudEvent
from shared.events.types import Medium, Purpose

DeliveryStatus = Literal["pending", "sent", "suppressed", "failed"]
BroadcastStatus = Literal["", "running", "paused", "done"]


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def from_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


@dataclass(frozen=True)
class Profile:
    """What identity's events say about a member, as far as deciding needs it (pseudonymous)."""

    age_band: str = ""
    library: str = ""
    origin: str = ""  # online or offline sign-up
    language: str = ""
    guardian_id: str = ""


@dataclass(frozen=True)
class MemberRecord:
    """One member's projection: the profile, the propositions, their own consents, and erasure."""

    profile: Profile = field(default_factory=Profile)
    propositions: frozenset[str] = frozenset()
    consents: dict[str, bool] = field(default_factory=dict)  # "<medium>:<purpose>" → granted
    erased: bool = False


@dataclass(frozen=True)
class Delivery:
    """A message to deliver, decided and waiting (now, after quiet hours, or for a retry): never an address."""

    member_id: str
    message_id: str
    campaign_id: str
    version: int
    purpose: Purpose
    media: tuple[Medium, ...]
    locale: str
    library: str | None
    branch: str | None
    trigger_event_id: str
    trigger_type: str
    trigger_rule: str | None
    trigger_time: datetime
    friction_id: str | None
    created_at: datetime
    attempts: int = 0
    status: DeliveryStatus = "pending"
    # The delivery, made later by the delivery loop, carries on the decision's trace.
    traceparent: str | None = None


@dataclass(frozen=True)
class InboxMessage:
    """An in-app message as the apps show it. The inbox is stored, so it never holds a name."""

    message_id: str
    campaign_id: str
    title: str
    body: str
    locale: str
    library: str | None
    created_at: datetime
    read: bool = False
    about_member_id: str | None = None  # the minor a guardian's message is about


@dataclass(frozen=True)
class Claim:
    """The once-per-(campaign, member, trigger) slot, until when (None: for ever), and when its message went out
    (None: held out, or given back because the message did not go out): the frequency cap counts these times."""

    expires_ms: int | None
    sent_ms: int | None


@dataclass(frozen=True)
class DecisionMemory:
    """A trigger decided before, remembered for redeliveries: when, and per campaign its version and outcome code
    (`s` send, `d<medium>` deferred, `x<reason>` suppressed). Campaigns by the first 8 characters of their id."""

    decided_ms: int
    outcomes: tuple[tuple[str, int, str], ...]  # (campaign id or its first 8 characters, version, code)
    # A friction's record that holds (or may still get) a campaign's effect: kept after the decision TTL.
    lasting: bool = False


@dataclass(frozen=True)
class MemberState:
    """Everything deciding reads of one member in one round trip."""

    member_id: str
    record: MemberRecord
    claims: dict[str, Claim] = field(default_factory=dict)  # by claim tag
    decided: dict[str, DecisionMemory] = field(default_factory=dict)  # by its field (`codec.marker_field`)

    def sent_since(self, since_ms: int) -> int:
        return sum(1 for c in self.claims.values() if c.sent_ms is not None and c.sent_ms >= since_ms)


@dataclass(frozen=True)
class DeadLetter:
    """A delivery that failed for good, as it goes to the deliveries' dead-letter topic: its JSON value and its
    `dlq_*` headers."""

    value: dict[str, Any]
    headers: dict[str, str]


@dataclass(frozen=True)
class BroadcastProgress:
    """How far a broadcast has come: where it resumes (library, and the SSCAN cursor in it) after a pause or a
    restart, and how many members it has looked at. A broadcast not started yet has status ""."""

    status: BroadcastStatus = ""
    library: str = ""
    cursor: int = 0
    looked_at: int = 0
    started_at: str = ""  # ISO times, as the operator reads them in Redis
    updated_at: str = ""
    finished_at: str = ""


Outbox = list[CloudEvent | DeadLetter]  # what a delivery's ending publishes, in order
