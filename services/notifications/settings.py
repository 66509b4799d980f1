"""notifications' settings: `KLANTREIS_NOTIFICATIONS_*` on top of the shared ones."""

from __future__ import annotations

from datetime import time, timedelta

from pydantic import Field, SecretStr, model_validator

from shared.events.types import Medium
from shared.settings import Settings

INTERRUPTING: tuple[Medium, ...] = ("email", "sms", "push")
DEVELOPMENT_SECRET = "development-only-notifications-secret"


class NotificationsSettings(Settings):
    # Quiet hours in the network's time zone: messages on these media decided inside them wait for the end.
    # The in-app inbox interrupts nobody, so it is not among them by default.
    notifications_timezone: str = "Europe/Amsterdam"
    notifications_quiet_hours_start: time = time(21, 0)
    notifications_quiet_hours_end: time = time(8, 0)
    notifications_quiet_media: list[Medium] = Field(default_factory=lambda: list(INTERRUPTING))

    # Network-wide: at most this many messages per member within the window, whichever library or campaign.
    notifications_frequency_cap: int = Field(default=3, ge=1)
    notifications_frequency_window: timedelta = timedelta(days=7)
    # A trigger older than this (a friction whose window closed long ago: a history loaded into the platform) is
    # reported, not messaged.
    notifications_freshness_limit: timedelta = timedelta(days=2)

    # The campaign's measured effect: frictions resolved within this many days, messaged versus holdout.
    notifications_effect_days: int = Field(default=14, ge=1, le=365)

    # E-mail over SMTP (the local run's sink listens on 1025).
    notifications_smtp_host: str = "127.0.0.1"
    notifications_smtp_port: int = Field(default=1025, ge=1, le=65535)
    notifications_smtp_from: str = "noreply@bibliotheek.nl"
    notifications_smtp_starttls: bool = False
    notifications_smtp_username: str = ""
    notifications_smtp_password: SecretStr = SecretStr("")
    notifications_smtp_timeout_seconds: float = Field(default=10.0, gt=0)

    # SMS and push through the provider's HTTP webhooks; empty: that medium cannot be delivered.
    notifications_sms_webhook_url: str = ""
    notifications_push_webhook_url: str = ""
    notifications_webhook_token: SecretStr = SecretStr("")
    notifications_webhook_timeout_seconds: float = Field(default=10.0, gt=0)

    # A delivery failing on something transient is tried again after backoff * 2^(attempt-1), this many times.
    notifications_delivery_retries: int = Field(default=5, ge=0)
    notifications_delivery_backoff_seconds: float = Field(default=2.0, gt=0)
    # A claimed delivery not finished within the lease (the process died) is claimed again.
    notifications_delivery_lease_seconds: float = Field(default=120.0, gt=0)
    notifications_delivery_tick_seconds: float = Field(default=1.0, gt=0)
    notifications_delivery_batch: int = Field(default=100, ge=1)
    notifications_delivery_concurrency: int = Field(default=10, ge=1)
    # Records of the frictions, members and usage topics handled as one batch, at most: a batch's Redis round trips,
    # acknowledgements and commit are shared by all its records (a quiet topic's batches are as small as they come).
    notifications_consumer_batch: int = Field(default=2000, ge=1)
    notifications_broadcast_tick_seconds: float = Field(default=5.0, gt=0)
    # Members of a broadcast's audience decided as one batch; the run's position is saved after each.
    # 2,000: a page's fixed round trips (the campaign, the scan, the states, the acks, the write, the position) are
    # shared by twice as many members as with 1,000, and its one write still takes Redis only milliseconds.
    notifications_broadcast_page: int = Field(default=2000, ge=1)

    # How long a trigger's decisions are remembered, so that a redelivered trigger decides nothing again.
    notifications_decision_ttl: timedelta = timedelta(days=7)

    # The member's own links (preference centre, one-click unsubscribe): signed with this secret, valid this long,
    # under this public base URL (https in production: mail providers honour only an https List-Unsubscribe).
    # Empty: the service's own URL (the local run). The secret also keys the hashes of bounced addresses.
    notifications_link_secret: SecretStr = SecretStr(DEVELOPMENT_SECRET)
    notifications_link_validity: timedelta = timedelta(days=60)
    notifications_public_url: str = ""
    # A bounce the e-mail provider reports later (POST /v1/bounces, with this bearer token; empty: refused) is
    # matched to a message sent at most this long ago.
    notifications_bounce_webhook_token: SecretStr = SecretStr("")
    notifications_bounce_window: timedelta = timedelta(days=30)

    @property
    def public_url(self) -> str:
        return self.notifications_public_url or self.notifications_url

    @model_validator(mode="after")
    def _safe_in_production(self) -> NotificationsSettings:
        if self.environment == "production":
            if self.notifications_link_secret.get_secret_value() == DEVELOPMENT_SECRET:
                raise ValueError("set KLANTREIS_NOTIFICATIONS_LINK_SECRET: the development secret signs members' links")
            if not self.public_url.startswith("https://"):
                raise ValueError("KLANTREIS_NOTIFICATIONS_PUBLIC_URL must be an https URL in production")
        return self

    # Deep links the templates offer as `links.*`.
    notifications_app_link: str = "https://www.bibliotheek.nl/app"
    # Members who came in through one of these propositions get the plain-language Dutch variant when a
    # campaign has one (`nl-plain`).
    notifications_plain_language_propositions: list[str] = Field(
        default_factory=lambda: ["digitaalhuis", "klik-en-tik", "digisterker"]
    )
