"""Campaign management for marketing staff: each operation checks, stores and publishes `campaign.changed`.

A key scoped to one library manages that library's campaigns; campaigns of the whole network need a
network-wide key. Every change is a new record on the compacted campaigns topic with the whole definition, so
the topic is the audit trail and its latest record per campaign is the campaign. The state is stored before
publishing; if Kafka does not acknowledge, the state is put back and nothing happened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from services.notifications import results, templates
from services.notifications.campaign_store import CampaignStore
from services.notifications.campaigns import (
    EDITABLE,
    Campaign,
    CampaignDefinition,
    Change,
    Locale,
    next_status,
    overlap,
    problems,
)
from services.notifications.catalogue_store import CatalogueStore
from services.notifications.rendering import render_message
from services.notifications.settings import NotificationsSettings
from shared.audit import AdminAudit
from shared.auth import NETWORK, Principal, forbid_other_library
from shared.events import CloudEvent, FieldError
from shared.events.admin import AdminAction
from shared.events.notifications import CampaignChanged
from shared.events.types import Medium
from shared.idempotency import Ids
from shared.kafka import EventPublisher
from shared.libraries import LibraryDirectory
from shared.problems import Problem, not_found

Clock = Callable[[], datetime]
SOURCE = "/notifications/campaigns"
CHANGES: dict[Change, str] = {"activate": "activated", "pause": "paused", "archive": "archived", "restore": "restored"}
AUDITED: dict[Change, AdminAction] = {
    "activate": "campaign.activate",
    "pause": "campaign.pause",
    "archive": "campaign.archive",
    "restore": "campaign.restore",
}


def conflict(detail: str) -> Problem:
    return Problem(409, "Conflict", detail)


@dataclass(frozen=True)
class PreviewSample:
    """The sample member a preview renders for."""

    library: str | None = None
    branch: str | None = None
    medium: Medium | None = None
    locale: Locale | None = None
    recipient: str = "member"
    version: int | None = None


class CampaignManagement:
    def __init__(
        self,
        store: CampaignStore,
        catalogue: CatalogueStore,
        publisher: EventPublisher,
        settings: NotificationsSettings,
        clock: Clock,
        libraries: LibraryDirectory,
    ) -> None:
        self._store = store
        self._catalogue = catalogue
        self._publisher = publisher
        self._settings = settings
        self._clock = clock
        self.libraries = libraries
        self._audit = AdminAudit(publisher, "notifications")

    # --------------------------------------------------------------------------------------- access

    @staticmethod
    def _may_manage(caller: Principal, library: str | None) -> None:
        if library is None:
            if caller.library != NETWORK:
                raise Problem(403, "Forbidden", f"this key is scoped to library {caller.library!r}: campaigns of "
                              "the whole network need a network-wide key")  # fmt: skip
            return
        forbid_other_library(caller, library)

    @staticmethod
    def _may_read(caller: Principal, campaign: Campaign) -> bool:
        library = campaign.definition.library
        return library is None or caller.covers(library)

    async def campaign(self, campaign_id: str, caller: Principal) -> Campaign:
        found = await self._store.campaign(campaign_id)
        if found is None:
            raise not_found("campaign")
        if not self._may_read(caller, found):
            raise Problem(403, "Forbidden", f"this key is scoped to library {caller.library!r}")
        return found

    async def campaigns(self, caller: Principal) -> list[Campaign]:
        return [c for c in await self._store.campaigns() if self._may_read(caller, c)]

    async def versions(self, campaign_id: str, caller: Principal) -> list[tuple[int, CampaignDefinition]]:
        await self.campaign(campaign_id, caller)
        return await self._store.versions(campaign_id)

    # -------------------------------------------------------------------------------------- changes

    @staticmethod
    def validate(definition: CampaignDefinition) -> None:
        """422 naming every field that is wrong, templates included: nothing fails later at send time."""
        found = problems(definition) + templates.check(definition)
        if found:
            errors = [FieldError(f"body.{e.field}", e.message) for e in found]
            detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
            raise Problem(422, "Unprocessable Content", detail, errors=errors)

    async def _known_libraries(self, definition: CampaignDefinition) -> None:
        """Every library a campaign names is a library of the catalogue (422 naming the field otherwise)."""
        named = {f"body.audience.libraries.{i}": code for i, code in enumerate(definition.audience.libraries)}
        await self.libraries.require({"body.library": definition.library, **named})

    async def create(self, definition: CampaignDefinition, caller: Principal, ids: Ids) -> Campaign:
        self._may_manage(caller, definition.library)
        self.validate(definition)
        await self._known_libraries(definition)
        now = self._clock().isoformat()
        campaign = Campaign(ids.new("campaign"), 1, "draft", definition, created_at=now, updated_at=now)
        await self._save(None, campaign, "created", caller, ids)
        return campaign

    async def edit(
        self, campaign_id: str, version: int, definition: CampaignDefinition, caller: Principal, ids: Ids
    ) -> Campaign:
        current = await self.campaign(campaign_id, caller)
        self._may_manage(caller, current.definition.library)
        self._may_manage(caller, definition.library)
        if current.status not in EDITABLE:
            raise conflict(f"the campaign is {current.status}: it can no longer change")
        if version != current.version:
            raise conflict(f"version {version} was edited meanwhile: the current version is {current.version}")
        self.validate(definition)
        await self._known_libraries(definition)
        now = self._clock().isoformat()
        edited = replace(
            current,
            version=current.version + 1,
            definition=definition,
            updated_at=now,
            created_at=current.created_at or now,
            built_in=False,
        )
        if edited.status == "active":
            edited = replace(edited, overlaps=await self._overlaps(edited))
        await self._save(current, edited, "edited", caller, ids)
        return edited

    async def change(self, campaign_id: str, change: Change, caller: Principal, ids: Ids) -> Campaign:
        current = await self.campaign(campaign_id, caller)
        self._may_manage(caller, current.definition.library)
        status = next_status(current.status, change)
        if status is None:
            raise conflict(f"a campaign that is {current.status} cannot {change}")
        now = self._clock().isoformat()
        changed = replace(current, status=status, updated_at=now, created_at=current.created_at or now, built_in=False)
        if change == "activate":
            # Flagged, not refused: marketing decides whether both should run.
            changed = replace(changed, overlaps=await self._overlaps(changed))
        elif status != "active":
            changed = replace(changed, overlaps=())
        # Recorded before anything changes: no status change without its audit record (shared.audit).
        library = current.definition.library
        await self._audit.record(AUDITED[change], f"campaign:{campaign_id}", caller, ids, library=library,
                                 time=self._clock())  # fmt: skip
        await self._save(current, changed, CHANGES[change], caller, ids)
        return changed

    async def _overlaps(self, campaign: Campaign) -> tuple[str, ...]:
        """Other active campaigns that would hit the same members for the same trigger."""
        active = await self._store.active_campaigns()
        return tuple(sorted(o.id for o in active if o.id != campaign.id and overlap(campaign.definition, o.definition)))

    async def _save(
        self, previous: Campaign | None, campaign: Campaign, change: str, caller: Principal, ids: Ids
    ) -> None:
        data = CampaignChanged(
            campaign_id=campaign.id,
            version=campaign.version,
            status=campaign.status,
            change=change,
            definition={**campaign.definition.model_dump(mode="json"), "overlaps": list(campaign.overlaps)},
            changed_by=caller.key_id,
        )
        event = CloudEvent.create(
            data,
            id=ids.new(f"campaign-changed:{campaign.id}:{change}"),
            subject=campaign.id,
            source=SOURCE,
            library=campaign.definition.library,
            time=self._clock(),
        )
        await self._store.save_campaign(campaign)
        try:
            await self._publisher.publish(event)
        except BaseException:
            await self._store.restore_campaign(previous, campaign)
            raise

    # ------------------------------------------------------------------------------------ read-outs

    async def warnings(self, campaign: Campaign) -> list[str]:
        proposition = campaign.definition.proposition
        if proposition is None:
            return []
        offered = await self._catalogue.offered_by(proposition)
        libraries = campaign.definition.audience_libraries
        if not offered or (libraries and not set(libraries) & offered):
            return [f"no library of the audience offers {proposition} in the catalogue: this campaign reaches nobody"]
        return []

    async def preview(self, campaign_id: str, sample: PreviewSample, caller: Principal) -> dict[str, Any]:
        campaign = await self.campaign(campaign_id, caller)
        await self.libraries.require({"body.library": sample.library})
        version = sample.version or campaign.version
        definition = await self._store.campaign_version(campaign_id, version)
        if definition is None:
            raise not_found(f"version {version} of the campaign")
        library_code = sample.library or definition.library or next(iter(definition.audience_libraries), None)
        library = await self._catalogue.library(library_code)
        rendered = []
        for medium, by_locale in definition.messages.items():
            if sample.medium is not None and medium != sample.medium:
                continue
            for locale in by_locale:
                if sample.locale is not None and locale != sample.locale:
                    continue
                proposition = None
                if definition.proposition:
                    proposition = await self._catalogue.proposition(definition.proposition, library_code, locale)
                context = templates.context(
                    definition,
                    medium,
                    templates.Sample(
                        library=library,
                        library_code=library_code,
                        branch=sample.branch,
                        proposition=proposition,
                        trigger_type=(definition.trigger.event_types or [""])[0] if definition.trigger else "",
                        trigger_rule=(definition.trigger.friction_rules or [""])[0] if definition.trigger else "",
                        trigger_time=self._clock(),
                        recipient_name="Sam Jansen",
                        is_guardian=sample.recipient == "guardian",
                    ),
                    app_link=self._settings.notifications_app_link,
                )
                template = definition.messages[medium][locale]
                empty = [
                    FieldError(
                        f"messages.{medium}.{locale}.{part}",
                        f"{', '.join(names)}: no value for {library_code or 'the network'}",
                    )
                    for part, names in templates.unfilled_parts(template, context)
                ]
                if empty:
                    detail = "the message would show an empty placeholder; fill it in the catalogue or leave it out"
                    raise Problem(
                        422, "Unprocessable Content", f"{detail}: " + "; ".join(e.message for e in empty), errors=empty
                    )
                message = render_message(template, context)
                rendered.append(
                    {
                        "medium": medium,
                        "locale": locale,
                        "sender": message.sender,
                        "subject": message.subject,
                        "title": message.title,
                        "body": message.body,
                    }
                )
        return {
            "campaign_id": campaign.id,
            "version": version,
            "library": library_code,
            "messages": rendered,
            "warnings": await self.warnings(campaign),
        }

    async def results(self, campaign_id: str, within_days: int | None, caller: Principal) -> results.CampaignResults:
        campaign = await self.campaign(campaign_id, caller)
        days = within_days or self._settings.notifications_effect_days
        counted = results.counts(await self._store.results(campaign_id))
        measured = results.effect(await self._store.effect(campaign_id), self._clock(), days)
        return results.CampaignResults(campaign.id, counted, measured, await self.warnings(campaign))
