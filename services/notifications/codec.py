"""The stored form of notifications' state: compact JSON arrays in one hash per member (see keys.py).

Only the stores use this module. Times are stored as epoch milliseconds, empty strings stand for "none".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

from services.notifications.keys import tag
from services.notifications.state import (
    Claim,
    DecisionMemory,
    Delivery,
    InboxMessage,
    MemberRecord,
    MemberState,
    Profile,
    from_ms,
    ms,
)
from shared.events.types import Medium

PROFILE, GUARDIAN, CONSENT, PROPOSITION, WARD, SENT, CLAIM, DECIDED, DELIVERY, INBOX, FRICTION = "pgcrwskdjif"
OUTBOX = "o"
MEDIA: dict[str, str] = {"email": "e", "sms": "s", "push": "p", "in_app": "i"}
PURPOSES: dict[str, str] = {"marketing": "m", "service": "s"}
_MEDIA = {v: k for k, v in MEDIA.items()}
_PURPOSES = {v: k for k, v in PURPOSES.items()}


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def message_tag(message_id: str) -> str:
    return tag(message_id)


def consent_field(medium: str, purpose: str) -> str:
    return CONSENT + MEDIA[medium] + PURPOSES[purpose]


def profile_value(profile: Profile) -> str:
    return dumps([profile.age_band, profile.library, profile.origin, profile.platform, profile.language])


def claim_value(claim: Claim) -> str:
    return f"{claim.message_tag}|{claim.expires_ms or ''}"


def decided_value(memory: DecisionMemory) -> str:
    return dumps([memory.decided_ms, [list(o) for o in memory.outcomes]])


def member_state(member_id: str, raw: Mapping[str, str], erased: bool) -> MemberState:
    """The member's hash, read at once, as deciding sees it."""
    profile = Profile()
    guardian = ""
    consents: dict[str, bool] = {}
    propositions: set[str] = set()
    sent: list[tuple[str, int]] = []
    claims: dict[str, Claim] = {}
    decided: dict[str, DecisionMemory] = {}
    for name, value in raw.items():
        kind, rest = name[:1], name[1:]
        if kind == PROFILE:
            profile = Profile(*json.loads(value))
        elif kind == GUARDIAN:
            guardian = value
        elif kind == CONSENT and len(rest) == 2:
            consents[f"{_MEDIA[rest[0]]}:{_PURPOSES[rest[1]]}"] = value.startswith("1")
        elif kind == PROPOSITION:
            propositions.add(rest)
        elif kind == SENT:
            sent.append((rest, int(value)))
        elif kind == CLAIM:
            message, _, expires = value.partition("|")
            claims[rest] = Claim(message, int(expires) if expires and expires != "0" else None)
        elif kind == DECIDED:
            at, outcomes = json.loads(value)
            decided[rest] = DecisionMemory(int(at), tuple((str(c), int(v), str(o)) for c, v, o in outcomes))
    if guardian:
        profile = Profile(**{**profile.__dict__, "guardian_id": guardian})
    record = MemberRecord(profile, frozenset(propositions), consents, erased)
    return MemberState(member_id, record, tuple(sent), claims, decided)


def delivery_value(d: Delivery) -> str:
    return dumps(
        [
            d.member_id, d.campaign_id, d.version, d.purpose, "".join(MEDIA[m] for m in d.media), d.locale,
            d.library or "", d.branch or "", d.trigger_event_id, d.trigger_type, d.trigger_rule or "",
            ms(d.trigger_time), d.friction_id or "", ms(d.created_at), d.attempts, d.status, d.traceparent or "",
        ]
    )  # fmt: skip


def delivery(message_id: str, value: str) -> Delivery:
    (member, campaign, version, purpose, media, locale, library, branch, trigger_id, trigger_type, rule, trigger_ms,
     friction, created_ms, attempts, status, traceparent) = json.loads(value)  # fmt: skip
    return Delivery(
        member_id=member, message_id=message_id, campaign_id=campaign, version=int(version), purpose=purpose,
        media=tuple(cast(Medium, _MEDIA[c]) for c in media), locale=locale, library=library or None,
        branch=branch or None, trigger_event_id=trigger_id, trigger_type=trigger_type, trigger_rule=rule or None,
        trigger_time=from_ms(trigger_ms), friction_id=friction or None, created_at=from_ms(created_ms),
        attempts=int(attempts), status=status, traceparent=traceparent or None,
    )  # fmt: skip


def inbox_value(m: InboxMessage) -> str:
    return dumps(
        [
            m.campaign_id,
            m.title,
            m.body,
            m.locale,
            m.library or "",
            ms(m.created_at),
            int(m.read),
            m.about_member_id or "",
        ]
    )


def inbox_message(message_id: str, value: str) -> InboxMessage:
    campaign, title, body, locale, library, created_ms, read, about = json.loads(value)
    return InboxMessage(
        message_id, campaign, title, body, locale, library or None, from_ms(created_ms), bool(read), about or None
    )


def with_read(value: str, read: bool) -> str:
    fields = json.loads(value)
    fields[6] = int(read)
    return dumps(fields)
