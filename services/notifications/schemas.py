"""The bodies notifications' HTTP API takes and answers (OpenAPI schemas)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.notifications.campaigns import EXAMPLE, CampaignDefinition, Locale, Status
from shared.events.types import LibraryCode, Medium, Slug
from shared.schemas import example_answer

VIEW_EXAMPLE = {
    **EXAMPLE,
    "id": "c-3f0c",
    "version": 1,
    "status": "active",
    "created_at": "2026-11-23T10:00:00+00:00",
    "updated_at": "2026-11-23T10:05:00+00:00",
    "built_in": False,
    "overlaps": [],
    "warnings": [],
}


class CampaignView(CampaignDefinition):
    """A campaign: its current definition and where it stands."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"examples": [VIEW_EXAMPLE]})

    id: str
    version: int
    status: Status
    created_at: str
    updated_at: str
    built_in: bool = Field(default=False, description="shipped with the service; a change stores a copy")
    overlaps: list[str] = Field(
        default_factory=list, description="active campaigns hitting the same members for the same trigger"
    )
    warnings: list[str] = Field(default_factory=list)


class CampaignEdit(CampaignDefinition):
    """The whole new definition and the version it was edited from (409 when another edit came first)."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"examples": [{**EXAMPLE, "version": 1}]})

    version: int = Field(ge=1, description="the version this edit starts from")


class CampaignList(BaseModel):
    model_config = example_answer(campaigns=[VIEW_EXAMPLE], next_cursor=None)

    campaigns: list[CampaignView]
    next_cursor: str | None


class CampaignVersion(BaseModel):
    version: int
    definition: CampaignDefinition


class CampaignVersions(BaseModel):
    model_config = example_answer(
        campaign_id="c-3f0c", versions=[{"version": 1, "definition": {"name": "Je pas wacht"}}]
    )

    campaign_id: str
    versions: list[CampaignVersion]


class PreviewRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"library": "oba", "branch": "oosterdok", "medium": "email"}]}
    )

    library: LibraryCode | None = Field(default=None, description="the sample member's library")
    branch: Slug | None = None
    medium: Medium | None = Field(default=None, description="none: every medium")
    locale: Locale | None = Field(default=None, description="none: every locale")
    recipient: Literal["member", "guardian"] = "member"
    version: int | None = Field(default=None, ge=1, description="none: the current version")


class RenderedMessage(BaseModel):
    medium: Medium
    locale: str
    sender: str
    subject: str | None
    title: str | None
    body: str


class Preview(BaseModel):
    model_config = example_answer(
        campaign_id="c-3f0c",
        version=1,
        library="oba",
        messages=[
            {
                "medium": "in_app",
                "locale": "nl",
                "sender": "OBA Openbare Bibliotheek Amsterdam",
                "subject": None,
                "title": "Je pas wacht",
                "body": "Kom langs bij OBA Openbare Bibliotheek Amsterdam.",
            }
        ],
        warnings=[],
    )

    campaign_id: str
    version: int
    library: str | None
    messages: list[RenderedMessage]
    warnings: list[str]


class GroupEffect(BaseModel):
    frictions: int = Field(description="frictions whose N days have passed")
    resolved: int = Field(description="of those, resolved within N days")
    share: float | None


class Effect(BaseModel):
    within_days: int
    messaged: GroupEffect
    holdout: GroupEffect
    difference: float | None = Field(description="messaged share minus holdout share")
    too_recent: int = Field(description="frictions younger than N days: not counted yet")


class Results(BaseModel):
    model_config = example_answer(
        campaign_id="c-3f0c",
        triggered=120,
        sent=98,
        suppressed={"no_consent": 9, "holdout": 12},
        failed=1,
        deferred=4,
        waiting=0,
        effect={
            "within_days": 14,
            "messaged": {"frictions": 80, "resolved": 36, "share": 0.45},
            "holdout": {"frictions": 10, "resolved": 3, "share": 0.3},
            "difference": 0.15,
            "too_recent": 18,
        },
        warnings=[],
    )

    campaign_id: str
    triggered: int
    sent: int
    suppressed: dict[str, int]
    failed: int
    deferred: int = Field(description="deferred by quiet hours (then sent, suppressed or failed)")
    waiting: int = Field(description="decided, not yet sent, suppressed or failed")
    effect: Effect
    warnings: list[str]


class InboxMessage(BaseModel):
    message_id: str
    campaign_id: str
    title: str
    body: str
    locale: str
    library: str | None = None
    created_at: str
    read: bool
    about_member_id: str | None = Field(default=None, description="the minor a guardian's message is about")


class InboxView(BaseModel):
    model_config = example_answer(member_id="cc02c620-5a1b-4e0f-9d51-2f3b8f6f0e11", messages=[], unread=0)

    member_id: str
    messages: list[InboxMessage]
    unread: int


class ReadMark(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"read": True}]})

    read: bool


class ReadState(BaseModel):
    model_config = example_answer(member_id="cc02c620-5a1b-4e0f-9d51-2f3b8f6f0e11", message_id="m-9a1b", read=True)

    member_id: str
    message_id: str
    read: bool


class BounceReport(BaseModel):
    """What the e-mail provider reports about a message it could not deliver."""

    model_config = ConfigDict(
        extra="ignore",  # providers add their own fields
        json_schema_extra={"examples": [{"message_id": "6f1c0d2e-…", "kind": "hard"}]},
    )

    message_id: str = Field(min_length=1, max_length=200, description="our Message-ID, without <…@klantreis>")
    kind: Literal["hard", "soft"] = Field(description="hard: the address does not exist or refuses for good")


class BounceOutcome(BaseModel):
    model_config = example_answer(message_id="m-9a1b", marked_undeliverable=True)

    message_id: str
    marked_undeliverable: bool
