"""identity's vault and the stored form of a member: sealing, wrapping, rotation and the old clear form."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from deploy import platform
from services.identity import member_form
from services.identity.records import MemberRecord
from services.identity.settings import IdentitySettings
from services.identity.vault import MasterKeys, Vault, VaultError, development_master_keys, new_master_keys

RECORD = MemberRecord(
    name="Wilhelmina Zwanenburg-Quist",
    email="w.zwanenburg@example.nl",
    phone="0698765432",
    birth_date=date(1958, 2, 27),
    postcode="9711 XZ",
    home_library="groningen",
    signed_up_at=datetime(2026, 11, 23, 10, 15, tzinfo=UTC),
    channel="online",
    platform="website",
    last_channel="online",
    last_platform="website",
)
PERSONAL = ("Wilhelmina", "Zwanenburg", "w.zwanenburg@example.nl", "0698765432", "1958-02-27", "9711 XZ")


def test_a_member_s_record_comes_back_whole_and_its_stored_form_holds_no_personal_datum_in_the_clear() -> None:
    vault = Vault(new_master_keys("k1"))
    stored = member_form.stored(vault, "m-1", RECORD)

    assert member_form.record(vault, "m-1", stored) == RECORD
    text = json.dumps(stored)
    for value in PERSONAL:
        assert value not in text
    assert stored["home_library"] == "groningen" and stored["last_platform"] == "website"  # Lua scripts read these
    assert stored["key"].startswith("k1:")


def test_sealed_data_opens_only_for_its_own_member() -> None:
    vault = Vault(new_master_keys("k1"))
    stored = member_form.stored(vault, "m-1", RECORD)
    with pytest.raises(VaultError):
        member_form.record(vault, "m-2", stored)  # copied onto another member


def test_each_member_gets_a_key_of_their_own() -> None:
    vault = Vault(new_master_keys("k1"))
    first, second = member_form.stored(vault, "m-1", RECORD), member_form.stored(vault, "m-1", RECORD)
    assert first["key"] != second["key"] and first["sealed"] != second["sealed"]
    mixed = {**first, "key": second["key"]}
    with pytest.raises(VaultError):
        member_form.record(vault, "m-1", mixed)


def test_without_its_master_key_a_member_key_does_not_unwrap() -> None:
    stored = member_form.stored(Vault(new_master_keys("k1")), "m-1", RECORD)
    with pytest.raises(VaultError, match="'k1'"):
        member_form.record(Vault(new_master_keys("k2")), "m-1", stored)
    other_key_same_id = Vault(new_master_keys("k1"))
    with pytest.raises(VaultError):
        member_form.record(other_key_same_id, "m-1", stored)


def test_a_rotated_master_key_still_unwraps_and_a_rewrap_moves_the_member_key_to_the_current_one() -> None:
    old = new_master_keys("k1")
    stored = member_form.stored(Vault(old), "m-1", RECORD)
    both = old.with_new_current("k2")
    rotated = Vault(both)

    assert member_form.record(rotated, "m-1", stored) == RECORD
    rewrapped = member_form.rewrapping(rotated, "m-1", stored)
    assert rewrapped is not None and rewrapped.startswith("k2:")
    moved = {**stored, "key": rewrapped}
    assert member_form.rewrapping(rotated, "m-1", moved) is None  # nothing more to do
    # Once rewrapped, the old master key can go: the new one alone opens the member's data.
    only_new = Vault(MasterKeys("k2", {"k2": both.keys["k2"]}))
    assert member_form.record(only_new, "m-1", moved) == RECORD
    with pytest.raises(VaultError):
        member_form.record(only_new, "m-1", stored)
    with pytest.raises(VaultError):
        member_form.record(Vault(new_master_keys("k2")), "m-1", moved)  # the key opens, not its id


def test_the_new_current_key_is_the_one_a_rotated_set_wraps_with() -> None:
    old = new_master_keys("k1")
    rotated = old.with_new_current("k2")
    assert rotated.current == "k2" and set(rotated.keys) == {"k1", "k2"}
    assert MasterKeys.parse(rotated.text()) == rotated
    assert member_form.rewrapping(Vault(rotated), "m", member_form.stored(Vault(rotated), "m", RECORD)) is None
    with pytest.raises(ValueError):
        rotated.with_new_current("k1")


def test_a_member_stored_in_the_clear_reads_and_seals_into_the_sealed_form() -> None:
    clear = {
        "name": RECORD.name, "email": RECORD.email or "", "phone": "", "birth_date": "1958-02-27",
        "postcode": "9711 XZ", "home_library": "groningen", "signed_up_at": RECORD.signed_up_at.isoformat(),
        "channel": "online", "platform": "website", "source": "", "language": "nl", "last_channel": "online",
        "last_platform": "website", "card_activated_at": "", "guardian_id": "",
    }  # fmt: skip
    vault = Vault(new_master_keys("k1"))
    expected = MemberRecord(**{**RECORD.__dict__, "phone": None})
    assert member_form.record(vault, "m-1", clear) == expected

    seal = member_form.sealing(vault, "m-1", clear)
    assert seal is not None
    sealed = {k: v for k, v in clear.items() if k not in member_form.PERSONAL} | seal
    assert member_form.record(vault, "m-1", sealed) == expected
    assert member_form.sealing(vault, "m-1", sealed) is None  # sealing twice changes nothing


def test_a_hash_without_personal_data_is_no_member() -> None:
    vault = Vault(new_master_keys("k1"))
    assert member_form.record(vault, "m-1", {"last_channel": "online", "last_platform": "app"}) is None


def test_master_keys_are_read_current_first_and_bad_ones_refused_without_showing_the_key() -> None:
    k1, k2 = base64.b64encode(b"1" * 32).decode(), base64.urlsafe_b64encode(b"\xff" * 32).decode().rstrip("=")
    keys = MasterKeys.parse(f"new:{k2}, old:{k1}")
    assert keys.current == "new" and keys.keys == {"new": b"\xff" * 32, "old": b"1" * 32}
    assert "1111" not in repr(keys)
    short = base64.b64encode(b"secret-short").decode()
    for bad in ("", f"no-colon{k1}", f"a b:{k1}", f"x:{short}", f"x:{k1},x:{k2}", "x:***"):
        with pytest.raises(ValueError) as refused:
            MasterKeys.parse(bad)
        assert short not in str(refused.value) and k1 not in str(refused.value)


def test_settings_refuse_a_bad_master_key_without_echoing_it_and_the_development_key_in_production() -> None:
    with pytest.raises(ValidationError) as refused:
        IdentitySettings(identity_master_keys="k1:dGhpcy1pcy10aGUtc2VjcmV0")
    assert "dGhpcy1pcy10aGUtc2VjcmV0" not in str(refused.value)
    with pytest.raises(ValidationError, match="KLANTREIS_IDENTITY_MASTER_KEYS"):
        IdentitySettings(environment="production", identity_hmac_key="a-real-secret")
    real = new_master_keys("k1").text()
    production = IdentitySettings(
        environment="production", identity_hmac_key="a-real-secret", identity_master_keys=real
    )
    assert production.master_keys().current == "k1"
    assert IdentitySettings().master_keys() == development_master_keys()


def test_the_local_run_makes_one_master_key_readable_only_by_its_owner_and_a_configured_one_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(platform, "MASTER_KEYS_FILE", tmp_path / ".klantreis" / "identity-master-keys")
    monkeypatch.delenv(platform.MASTER_KEYS_ENV, raising=False)

    made = platform.identity_master_keys()

    assert platform.MASTER_KEYS_FILE.stat().st_mode & 0o777 == 0o600
    assert platform.identity_master_keys() == made  # made once, then read
    assert len(MasterKeys.parse(made).keys) == 1
    secret = made.split(":", 1)[1]
    assert secret not in capsys.readouterr().out
    configured = new_master_keys("ops").text()
    monkeypatch.setenv(platform.MASTER_KEYS_ENV, configured)
    assert platform.identity_master_keys() == configured


def test_outside_production_members_sealed_with_the_development_key_stay_readable_under_a_key_of_the_run() -> None:
    sealed_in_development = member_form.stored(Vault(IdentitySettings().master_keys()), "m-1", RECORD)
    own = new_master_keys("k1").text()

    local = Vault(IdentitySettings(identity_master_keys=own).master_keys())
    assert member_form.record(local, "m-1", sealed_in_development) == RECORD
    assert (member_form.rewrapping(local, "m-1", sealed_in_development) or "").startswith("k1:")  # never wraps
    production = IdentitySettings(environment="production", identity_hmac_key="a-real-secret", identity_master_keys=own)
    with pytest.raises(VaultError):
        member_form.record(Vault(production.master_keys()), "m-1", sealed_in_development)
