from __future__ import annotations

from typing import Self

from pydantic import Field, SecretStr, model_validator

from shared.settings import Settings

DEVELOPMENT_HMAC_KEY = "klantreis-development-only-hmac-key"


class IdentitySettings(Settings):
    # Keys the hashes of e-mail addresses, phone numbers and external account ids that identity indexes, so
    # that an index leaked without the key reveals nothing. Set a long random value in production.
    identity_hmac_key: SecretStr = SecretStr(DEVELOPMENT_HMAC_KEY)
    # Below this age (by birth date) a member is a minor: messages go to their guardian.
    identity_minor_below_age: int = Field(default=16, ge=1, le=21)

    @model_validator(mode="after")
    def _no_placeholder_in_production(self) -> Self:
        if self.environment == "production" and self.identity_hmac_key.get_secret_value() == DEVELOPMENT_HMAC_KEY:
            raise ValueError("set KLANTREIS_IDENTITY_HMAC_KEY: the development key is refused in production")
        return self
