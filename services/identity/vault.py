"""Crypto-shredding: every member's personal data sealed with a key of that member, the member keys wrapped by a
master key. Pure (no I/O); `MemberStore` alone uses it, to convert a record to and from its stored form.

- A member key is 32 random bytes (AES-256); the personal data is sealed with AES-GCM under it, with the member
  id as associated data, so a sealed value copied onto another member does not open.
- The member key is kept wrapped (AES-GCM again) by the current master key, written `<key id>:<base64>`. Older
  master keys, listed after the current one, still unwrap: rotation rewraps member keys at leisure.
- Erasing a member deletes their wrapped key with the data: whatever copy of the sealed data an append-only
  file, a snapshot, a replica or a backup kept is unreadable from then on (see docs/security.md for what a
  holder of the master key could still do, and why rotation ends that too).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
# Associated data: what a ciphertext is for, so a wrapped key cannot be opened as sealed data or the reverse.
_WRAPPED = b"klantreis member key\x00"
_SEALED = b"klantreis personal data\x00"


class VaultError(Exception):
    """A member key or sealed value that cannot be opened: unknown master key id, or not what was sealed."""


@dataclass(frozen=True)
class MasterKeys:
    """The master keys by id; `current` wraps, every one unwraps."""

    current: str
    keys: Mapping[str, bytes]

    @classmethod
    def parse(cls, text: str) -> MasterKeys:
        """`<key id>:<base64 of 32 bytes>[,<key id>:<base64>…]`, the current key first. Errors never show a key."""
        keys: dict[str, bytes] = {}
        for position, entry in enumerate(part.strip() for part in text.split(",") if part.strip()):
            key_id, sep, encoded = entry.partition(":")
            if not sep or not KEY_ID.match(key_id):
                raise ValueError(f"master key {position + 1}: write it as <key id>:<base64>, the id [A-Za-z0-9_.-]")
            if key_id in keys:
                raise ValueError(f"master key id {key_id!r} is listed twice")
            keys[key_id] = _key_bytes(key_id, encoded)
        if not keys:
            raise ValueError("no master key")
        return cls(next(iter(keys)), keys)

    def text(self) -> str:
        """The form `parse` reads, current key first."""
        ordered = [self.current, *(k for k in self.keys if k != self.current)]
        return ",".join(f"{k}:{base64.b64encode(self.keys[k]).decode()}" for k in ordered)

    def with_new_current(self, key_id: str) -> MasterKeys:
        """A new random master key as the current one; the others stay, to unwrap until everything is rewrapped."""
        if not KEY_ID.match(key_id) or key_id in self.keys:
            raise ValueError(f"master key id {key_id!r} is not a new id of [A-Za-z0-9_.-]{{1,32}}")
        return MasterKeys(key_id, {key_id: os.urandom(KEY_BYTES), **self.keys})

    def __repr__(self) -> str:
        return f"MasterKeys(current={self.current!r}, ids={list(self.keys)!r})"


def new_master_keys(key_id: str) -> MasterKeys:
    return MasterKeys(key_id, {key_id: os.urandom(KEY_BYTES)})


def development_master_keys() -> MasterKeys:
    """A fixed key for tests and development only (refused in production): anyone can compute it."""
    return MasterKeys("dev", {"dev": hashlib.sha256(b"klantreis-development-only-master-key").digest()})


def _key_bytes(key_id: str, encoded: str) -> bytes:
    try:
        raw = base64.b64decode(encoded.strip() + "=" * (-len(encoded.strip()) % 4), altchars=b"-_", validate=False)
    except (binascii.Error, ValueError):
        raise ValueError(f"master key {key_id!r} is not base64") from None
    if len(raw) != KEY_BYTES:
        raise ValueError(f"master key {key_id!r} must be {KEY_BYTES} bytes (base64 of 32 random bytes)")
    return raw


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise VaultError("not base64") from None


def _encrypt(key: bytes, plaintext: bytes, associated: bytes) -> str:
    nonce = os.urandom(NONCE_BYTES)
    return _b64(nonce + AESGCM(key).encrypt(nonce, plaintext, associated))


def _decrypt(key: bytes, sealed: str, associated: bytes) -> bytes:
    raw = _unb64(sealed)
    try:
        return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated)
    except (InvalidTag, ValueError):
        raise VaultError("the ciphertext does not open with this key for this member") from None


class Vault:
    def __init__(self, master: MasterKeys) -> None:
        self._master = master

    @property
    def current(self) -> str:
        return self._master.current

    @staticmethod
    def new_member_key() -> bytes:
        return os.urandom(KEY_BYTES)

    def wrap(self, member_id: str, member_key: bytes) -> str:
        """The member key wrapped by the current master key: `<key id>:<base64 nonce + ciphertext>`."""
        associated = _WRAPPED + member_id.encode()
        return f"{self._master.current}:{_encrypt(self._master.keys[self._master.current], member_key, associated)}"

    def unwrap(self, member_id: str, wrapped: str) -> bytes:
        key_id, _, sealed = wrapped.partition(":")
        master = self._master.keys.get(key_id)
        if master is None:
            raise VaultError(f"the member key is wrapped by master key {key_id!r}, which is not configured")
        return _decrypt(master, sealed, _WRAPPED + member_id.encode())

    def wrapped_by_current(self, wrapped: str) -> bool:
        return wrapped.partition(":")[0] == self._master.current

    def rewrap(self, member_id: str, wrapped: str) -> str:
        """The same member key, wrapped by the current master key."""
        return self.wrap(member_id, self.unwrap(member_id, wrapped))

    @staticmethod
    def seal(member_id: str, member_key: bytes, plaintext: bytes) -> str:
        return _encrypt(member_key, plaintext, _SEALED + member_id.encode())

    @staticmethod
    def open(member_id: str, member_key: bytes, sealed: str) -> bytes:
        return _decrypt(member_key, sealed, _SEALED + member_id.encode())
