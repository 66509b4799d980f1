from __future__ import annotations

from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.identity.vault import MasterKeys, development_master_keys
from shared.settings import Settings

DEVELOPMENT_HMAC_KEY = "klantreis-development-only-hmac-key"
DEVELOPMENT_MASTER_KEYS = development_master_keys().text()


class IdentitySettings(Settings):
    # A refused setting's error must not print the value: it is a secret.
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    # The lookup key: keys the hashes of e-mail addresses, phone numbers and external account ids that identity
    # indexes, so that an index leaked without the key reveals nothing. Set a long random value in production.
    identity_hmac_key: SecretStr = SecretStr(DEVELOPMENT_HMAC_KEY)
    # The master keys that wrap each member's own key (services/identity/vault.py): `<key id>:<base64 of 32
    # random bytes>`, comma-separated, the current one first; the others still unwrap until `klantreis vault
    # upgrade` has rewrapped every member key (docs/security.md). `klantreis run` generates one into .klantreis/.
    identity_master_keys: SecretStr = SecretStr(DEVELOPMENT_MASTER_KEYS)
    # Below this age (by birth date) a member is a minor: messages go to their guardian.
    identity_minor_below_age: int = Field(default=16, ge=1, le=21)

    @field_validator("identity_master_keys")
    @classmethod
    def _master_keys_readable(cls, value: SecretStr) -> SecretStr:
        MasterKeys.parse(value.get_secret_value())  # its errors name the key id, never the key
        return value

    @model_validator(mode="after")
    def _no_placeholder_in_production(self) -> Self:
        if self.environment != "production":
            return self
        if self.identity_hmac_key.get_secret_value() == DEVELOPMENT_HMAC_KEY:
            raise ValueError("set KLANTREIS_IDENTITY_HMAC_KEY: the development key is refused in production")
        if set(self.master_keys().keys.values()) & set(development_master_keys().keys.values()):
            raise ValueError("set KLANTREIS_IDENTITY_MASTER_KEYS: the development key is refused in production")
        return self

    def hmac_key(self) -> bytes:
        """The key of the keyed hashes that find members by e-mail address, phone number or platform account."""
        return self.identity_hmac_key.get_secret_value().encode()

    def master_keys(self) -> MasterKeys:
        """The configured master keys; outside production the development key unwraps too (never wraps), so members
        sealed before `klantreis run` made a key of its own stay readable until `klantreis vault upgrade`."""
        keys = MasterKeys.parse(self.identity_master_keys.get_secret_value())
        development = development_master_keys()
        if self.environment == "production" or development.current in keys.keys:
            return keys
        return MasterKeys(keys.current, {**keys.keys, **development.keys})
