"""The stored form of notifications' state (see keys.py). Only the stores use this module.

A member's hash keeps every field and value within 64 bytes, so Redis keeps it as one compact listpack: a few
hundred bytes per member rather than a hash table of its own. Times are epoch milliseconds; empty is "none".
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any, cast

import msgspec

from services.notifications.keys import tag
from services.notifications.state import (
    Claim,
    DeadLetter,
    DecisionMemory,
    Delivery,
    InboxMessage,
    MemberRecord,
    MemberState,
    Outbox,
    Profile,
    from_ms,
    ms,
)
from shared.events import from_structured, to_structured
from shared.events.types import Medium

PROFILE, GUARDIAN, CONSENT, PROPOSITION, WARD, CLAIM, DECIDED, INBOX, FRICTION, EFFECT = "pgcrwkdife"
LANGUAGE = "n"  # the language the member chose later (member.language_changed): over the sign-up's
MEDIA: dict[str, str] = {"email": "e", "sms": "s", "push": "p", "in_app": "i"}
PURPOSES: dict[str, str] = {"marketing": "m", "service": "s"}
_MEDIA = {v: k for k, v in MEDIA.items()}
_PURPOSES = {v: k for k, v in PURPOSES.items()}
CAMPAIGN_PREFIX = 8  # a decided marker names campaigns by this many characters of their id
FRICTION_TAG_BYTES = 4  # a friction's record is named by 32 bits of its id: unique among one member's frictions
GROUPS: dict[str, str] = {"messaged": "m", "holdout": "h"}  # a friction's group in a campaign's effect
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def batch_json(value: Any) -> bytes:
    """A batch's writes as one compact JSON argument (msgspec: a fifth of the json module's time)."""
    return msgspec.json.encode(value)


def consent_field(medium: str, purpose: str) -> str:
    return CONSENT + MEDIA[medium] + PURPOSES[purpose]


def profile_value(profile: Profile) -> str:
    language = "" if profile.language == "nl" else profile.language  # most members': left out
    return "|".join((profile.age_band, profile.library, profile.origin, language))


def claim_value(claim: Claim) -> str:
    return f"{stamp(claim.expires_ms)}|{stamp(claim.sent_ms)}"


def decided_value(memory: DecisionMemory) -> str:
    outcomes = ";".join(f"{c[:CAMPAIGN_PREFIX]},{v},{code}" for c, v, code in memory.outcomes)
    return f"{memory.decided_ms}|{outcomes}"


def stamp(at_ms: int | None) -> str:
    """A time in the member's hash: base-36 milliseconds (8 characters rather than 13); empty for none."""
    return b36(at_ms) if at_ms else ""


def unstamp(value: str) -> int | None:
    """`stamp` read back; also the decimal milliseconds (13 digits) written before stamps."""
    if not value:
        return None
    return int(value) if len(value) >= 12 else int(value, 36)


@functools.lru_cache(maxsize=4096)  # a batch stamps its one "now" on every claim and inbox item
def b36(number: int) -> str:
    """A number in base 36 (a time in milliseconds: 8 characters rather than 13); negative with a "-"."""
    if number < 0:
        return "-" + b36(-number)
    digits = ""
    while True:
        number, digit = divmod(number, 36)
        digits = _DIGITS[digit] + digits
        if not number:
            return digits


def marker_field(event_id: str, friction_id: str | None) -> str:
    """The field remembering a decided trigger: a friction's record (which also holds its effect), else the
    trigger's decided marker."""
    if friction_id:
        return FRICTION + tag(friction_id, size=FRICTION_TAG_BYTES)
    return DECIDED + tag(event_id)


def friction_value(detected_ms: int, memory: DecisionMemory, groups: Mapping[str, str]) -> str:
    """A friction's record: `<detected>|<decided - detected>|<resolved - detected>|<outcome>;…` (times in base-36
    milliseconds, resolved empty until it is), an outcome `<campaign[:8]>,<version>,<code>[,<group>]`, the group
    (`m` messaged, `h` holdout) once the friction is in that campaign's effect. `groups`: by campaign id."""
    outcomes = ";".join(
        f"{c[:CAMPAIGN_PREFIX]},{v},{code}" + (f",{groups[c]}" if c in groups else "") for c, v, code in memory.outcomes
    )
    return f"{b36(detected_ms)}|{b36(memory.decided_ms - detected_ms)}||{outcomes}"


def _friction_memory(value: str) -> DecisionMemory:
    if value.count("|") < 3:  # recorded before friction records ("<ms>|<day>|<resolved ms>"): an effect's
        return DecisionMemory(int(value.partition("|")[0]), (), lasting=True)
    detected, decided, _, outcomes = value.split("|", 3)
    parsed = [o.split(",") for o in outcomes.split(";") if o]
    # Kept for good when it is in an effect, or may enter one (a message queued or deferred, counted once sent).
    lasting = any(len(o) > 3 or o[2][:1] in "sd" for o in parsed)
    decided_ms = int(detected, 36) + int(decided, 36)
    return DecisionMemory(decided_ms, tuple((o[0], int(o[1]), o[2]) for o in parsed), lasting)


def member_state(member_id: str, raw: Mapping[str, str], erased: bool) -> MemberState:
    """The member's hash, read at once, as deciding sees it."""
    profile = Profile()
    guardian = ""
    consents: dict[str, bool] = {}
    propositions: set[str] = set()
    claims: dict[str, Claim] = {}
    decided: dict[str, DecisionMemory] = {}
    chosen = ""
    for name, value in raw.items():
        kind, rest = name[:1], name[1:]
        if kind == PROFILE:
            age_band, library, origin, language = value.split("|")
            profile = Profile(age_band, library, origin, language)
        elif kind == GUARDIAN:
            guardian = value
        elif kind == LANGUAGE:
            chosen = value
        elif kind == CONSENT and len(rest) == 2:
            consents[f"{_MEDIA[rest[0]]}:{_PURPOSES[rest[1]]}"] = value.startswith("1")
        elif kind == PROPOSITION:
            propositions.add(rest)
        elif kind == CLAIM:
            expires, _, sent = value.partition("|")
            claims[rest] = Claim(unstamp(expires), unstamp(sent))
        elif kind == DECIDED:
            at, _, outcomes = value.partition("|")
            parsed = [o.split(",") for o in outcomes.split(";") if o]
            decided[name] = DecisionMemory(int(at), tuple((c, int(v), code) for c, v, code in parsed))
        elif kind == FRICTION:
            decided[name] = _friction_memory(value)
    if guardian or chosen:
        language = chosen or profile.language
        profile = Profile(profile.age_band, profile.library, profile.origin, language, guardian)
    record = MemberRecord(profile, frozenset(propositions), consents, erased)
    return MemberState(member_id, record, claims, decided)


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


# The in-app inbox: the text of a message (the same for everyone a campaign's version says it to in one library
# and locale: it names nobody) is stored once, by its hash; a member's inbox item refers to it.


def text_value(m: InboxMessage) -> str:
    return dumps([m.campaign_id, m.title, m.body, m.locale, m.library or ""])


def text_tag(m: InboxMessage) -> str:
    """64 bits of the text's hash in URL-safe base64 (11 characters): shared by the whole network, so longer
    than a member's tags."""
    digest = hashlib.blake2b(text_value(m).encode(), digest_size=8).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def inbox_field(message_id: str) -> str:
    """A message id (a UUID: 36 characters) as its 16 bytes in URL-safe base64 (22): every inbox item is shorter."""
    # Only the canonical spelling (lower-case, hyphens where uuid writes them), so that the field gives back the
    # very same id; checked without the UUID object (a broadcast page has a thousand).
    if not _CANONICAL_UUID.fullmatch(message_id):
        return INBOX + message_id
    raw = bytes.fromhex(message_id.replace("-", ""))
    return INBOX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def message_id_of(field: str) -> str:
    """The message id an inbox field (`inbox_field`) names."""
    name = field[len(INBOX) :]
    if len(name) != 22:
        return name
    return str(uuid.UUID(bytes=base64.urlsafe_b64decode(name + "==")))


def inbox_value(m: InboxMessage, text: str | None = None) -> str:
    """`text`: the message's `text_tag` when the caller has it already."""
    return f"{text or text_tag(m)}|{stamp(ms(m.created_at))}|{int(m.read)}|{m.about_member_id or ''}"


def inbox_item(value: str) -> tuple[str, int, bool, str | None]:
    """(text tag, created ms, read, about member)"""
    text, created, read, about = value.split("|")
    return text, unstamp(created) or 0, read == "1", about or None


def inbox_message(message_id: str, value: str, text: str) -> InboxMessage:
    _, created, read, about = inbox_item(value)
    campaign, title, body, locale, library = json.loads(text)
    return InboxMessage(message_id, campaign, title, body, locale, library or None, from_ms(created), read, about)


def with_read(value: str, read: bool) -> str:
    text, created, _, about = value.split("|")
    return f"{text}|{created}|{int(read)}|{about}"


def outbox_value(outbox: Outbox) -> str:
    """The events of a delivery's ending as structured CloudEvents, and its dead letter as `{"dead_letter": …}`."""
    return dumps(
        [
            {"dead_letter": {"value": item.value, "headers": item.headers}}
            if isinstance(item, DeadLetter)
            else to_structured(item)
            for item in outbox
        ]
    )


def outbox(value: str) -> Outbox:
    items = cast(list[dict[str, Any]], json.loads(value))
    return [DeadLetter(**item["dead_letter"]) if "dead_letter" in item else from_structured(item) for item in items]
