"""The stored forms of identity's typed state (records.py): a `MemberRecord` (a Redis hash of strings), and the
linked accounts, registrations, suspicions and changes kept beside it. Used by `MemberStore` alone. Pure.

The personal fields (name, e-mail, phone, birth date, postcode) are kept only sealed, as one JSON value in
`sealed`, under the member's own key, kept wrapped in `key` (services/identity/vault.py). The other fields are
pseudonymous (the events publish them too) and stay readable, so that Lua scripts and batch reads use them
without any key. A hash written before sealing existed (the personal fields in the clear) still reads, and
`sealing` says how to convert it.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import cast

from services.identity.records import LinkedAccount, MemberChange, MemberRecord, Registration, Suspicion
from services.identity.vault import Vault
from shared.events.types import Language

PERSONAL = ("name", "email", "phone", "birth_date", "postcode")
KEY = "key"
SEALED = "sealed"


def _personal(record: MemberRecord) -> dict[str, str | None]:
    return {
        "name": record.name,
        "email": record.email,
        "phone": record.phone,
        "birth_date": record.birth_date.isoformat(),
        "postcode": record.postcode,
    }


def _plain(record: MemberRecord) -> dict[str, str]:
    """The pseudonymous fields, absent values as empty strings."""
    return {
        "home_library": record.home_library,
        "signed_up_at": record.signed_up_at.isoformat(),
        "channel": record.channel,
        "platform": record.platform,
        "source": record.source or "",
        "language": record.language,
        "last_channel": record.last_channel or "",
        "last_platform": record.last_platform or "",
        "card_activated_at": record.card_activated_at.isoformat() if record.card_activated_at else "",
        "guardian_id": record.guardian_id or "",
    }


def _sealed_fields(vault: Vault, member_id: str, personal: dict[str, str | None]) -> dict[str, str]:
    member_key = vault.new_member_key()
    plaintext = json.dumps(personal, ensure_ascii=False, separators=(",", ":")).encode()
    return {KEY: vault.wrap(member_id, member_key), SEALED: vault.seal(member_id, member_key, plaintext)}


def stored(vault: Vault, member_id: str, record: MemberRecord) -> dict[str, str]:
    """The hash of a new member: a new member key, the personal data sealed under it."""
    return {**_plain(record), **_sealed_fields(vault, member_id, _personal(record))}


def record(vault: Vault, member_id: str, fields: dict[str, str]) -> MemberRecord | None:
    """The record a member hash holds; None for a hash without personal data (what a write racing an erasure
    leaves: a member no more)."""
    if SEALED in fields:
        member_key = vault.unwrap(member_id, fields[KEY])
        personal: dict[str, str | None] = json.loads(vault.open(member_id, member_key, fields[SEALED]))
    elif "name" in fields:
        personal = {name: fields.get(name) or None for name in PERSONAL}
    else:
        return None

    def text(name: str) -> str | None:
        return fields.get(name) or None

    activated = text("card_activated_at")
    return MemberRecord(
        name=personal["name"] or "",
        email=personal["email"],
        phone=personal["phone"],
        birth_date=date.fromisoformat(personal["birth_date"] or ""),
        postcode=personal["postcode"] or "",
        home_library=fields["home_library"],
        signed_up_at=datetime.fromisoformat(fields["signed_up_at"]),
        channel=fields["channel"],
        platform=fields["platform"],
        source=text("source"),
        language=cast(Language, text("language") or "nl"),
        last_channel=text("last_channel"),
        last_platform=text("last_platform"),
        card_activated_at=datetime.fromisoformat(activated) if activated else None,
        guardian_id=text("guardian_id"),
    )


def sealing(vault: Vault, member_id: str, fields: dict[str, str]) -> dict[str, str] | None:
    """For a hash written with the personal fields in the clear: the fields that seal them (the clear ones are
    deleted with `PERSONAL`). None when there is nothing to seal."""
    if SEALED in fields or "name" not in fields:
        return None
    return _sealed_fields(vault, member_id, {name: fields.get(name) or None for name in PERSONAL})


def rewrapping(vault: Vault, member_id: str, fields: dict[str, str]) -> str | None:
    """The member key wrapped by the current master key, when it is wrapped by another one; else None."""
    wrapped = fields.get(KEY)
    if wrapped is None or vault.wrapped_by_current(wrapped):
        return None
    return vault.rewrap(member_id, wrapped)


def change_fields(change: MemberChange) -> dict[str, str]:
    fields = {
        "last_channel": change.last_channel,
        "last_platform": change.last_platform,
        "card_activated_at": change.card_activated_at.isoformat() if change.card_activated_at else None,
        "language": change.language,
    }
    return {name: value for name, value in fields.items() if value is not None}


def registration_fields(registration: Registration) -> dict[str, str]:
    return {"home_library": registration.home_library, "started_at": registration.started_at.isoformat()}


def suspicion_fields(suspicion: Suspicion) -> dict[str, str]:
    return {
        "id": suspicion.id,
        "member_id": suspicion.member_id,
        "other_member_id": suspicion.other_member_id,
        "library": suspicion.library,
        "other_library": suspicion.other_library,
        "matched_on": ",".join(suspicion.matched_on),
        "status": suspicion.status,
        "created_at": suspicion.created_at,
    }


def suspicion(fields: dict[str, str]) -> Suspicion:
    """A suspicion as stored; one whose queueing was cut short (its id alone) reads with empty fields."""
    return Suspicion(
        id=fields["id"],
        member_id=fields.get("member_id", ""),
        other_member_id=fields.get("other_member_id", ""),
        library=fields.get("library", ""),
        other_library=fields.get("other_library", ""),
        matched_on=tuple(kind for kind in fields.get("matched_on", "").split(",") if kind),
        status=fields.get("status", ""),
        created_at=fields.get("created_at", ""),
    )


def registration(fields: dict[str, str]) -> Registration:
    return Registration(fields["home_library"], datetime.fromisoformat(fields["started_at"]))


def account_value(account: LinkedAccount) -> str:
    return json.dumps({"ref": account.ref, "index": account.index})


def account(value: str) -> LinkedAccount:
    return LinkedAccount(**json.loads(value))
