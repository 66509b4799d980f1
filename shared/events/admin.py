"""Events of the admin audit trail (`admin.audit.v1`, subject = what was changed, e.g. `campaign:c-1`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.events.envelope import EventData
from shared.events.registry import event
from shared.topics import AUDIT

AdminAction = Literal[
    "campaign.activate",
    "campaign.pause",
    "campaign.archive",
    "campaign.restore",
    "library.put",
    "library.retire",
    "key.create",
    "key.revoke",
]


@event("admin.action_recorded.v1", AUDIT)
class AdminActionRecorded(EventData):
    """An admin write, recorded before it is published: who (an API key's id, never its secret nor its name, which
    may name a person), what, to what and through which service; the event's time says when."""

    action: AdminAction
    target: str = Field(min_length=1, max_length=200, description="`campaign:<id>`, `library:<code>`, `key:<id>`")
    key_id: str | None = Field(description="the API key that did it; none for an operator at the command line")
    roles: list[str] = Field(default_factory=list, description="the key's roles at the time")
    scope: str = Field(description="the key's library, or `*` for the whole network")
    service: str = Field(min_length=1, max_length=40, description="identity, propositions, notifications or cli")
