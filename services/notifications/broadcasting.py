"""Broadcasts: a campaign sent to every member of its audience at `send_at`, a page of members at a time.

Each page (`notifications_broadcast_page` members of one library, by SSCAN) is decided as one batch, so caps,
quiet hours, holdout and consent apply as for any trigger. The run's position (library and scan cursor) and how
many members it looked at are saved after every page: a restart, or an `activate` after a `pause`, carries on
from there. Nobody gets it twice: a member decided before finds the broadcast's decided marker and claim (a scan
may return a member again, and the page after the last saved position is looked at again after a crash).
Nothing redelivers a broadcast, so a page's events are acknowledged by Kafka before its decisions are stored: a
process that dies in between decides that page again on resume, publishing the same ids again, and never leaves a
member decided whose events were not published.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from services.notifications.campaign_store import CampaignStore
from services.notifications.campaigns import BROADCAST, Campaign, TriggerEvent, in_audience
from services.notifications.deciding import Decider, facts_of
from services.notifications.decision_log import marker_field
from services.notifications.keys import stop_if_cancelled, tag
from services.notifications.projection_store import ProjectionStore
from services.notifications.settings import NotificationsSettings
from services.notifications.state import BroadcastProgress, BroadcastStatus
from shared.events import deterministic_id

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


class Broadcaster:
    def __init__(
        self,
        decider: Decider,
        campaigns: CampaignStore,
        projections: ProjectionStore,
        settings: NotificationsSettings,
        clock: Clock,
    ) -> None:
        self._decider = decider
        self._campaigns = campaigns
        self._projections = projections
        self._settings = settings
        self._clock = clock

    async def run(self) -> None:
        while True:
            await self.broadcast_due()
            stop_if_cancelled()
            await asyncio.sleep(self._settings.notifications_broadcast_tick_seconds)

    async def broadcast_due(self) -> int:
        """Run every active broadcast whose time has come and that has not finished; returns how many ran."""
        now = self._clock()
        ran = 0
        for campaign in await self._decider.live_campaigns(now):
            send_at = campaign.definition.schedule.send_at
            if campaign.definition.kind != "broadcast" or send_at is None or send_at > now:
                continue
            progress = await self._campaigns.broadcast_progress(campaign.id)
            if progress.status == "done":
                continue
            await self._broadcast(campaign, progress, send_at)
            ran += 1
        return ran

    async def _broadcast(self, campaign: Campaign, progress: BroadcastProgress, send_at: datetime) -> None:
        libraries = campaign.definition.audience_libraries or await self._projections.libraries()
        position, cursor, looked_at = progress.library, progress.cursor, progress.looked_at
        started = progress.started_at or self._clock().isoformat()
        for library in sorted(libraries):
            if library < position:
                continue
            if library != position:
                cursor = 0
            while True:
                if not await self._still_active(campaign.id):
                    await self._save(campaign.id, "paused", library, cursor, looked_at, started)
                    log.info("broadcast %s paused after %d members", campaign.id, looked_at)
                    return
                cursor, members = await self._projections.library_members(
                    library, cursor, self._settings.notifications_broadcast_page
                )
                await self._page(campaign, members, send_at, library)
                looked_at += len(members)
                await self._save(campaign.id, "running", library, cursor, looked_at, started)
                stop_if_cancelled()
                if cursor == 0:
                    break
        await self._campaigns.save_broadcast_progress(
            campaign.id, BroadcastProgress("done", looked_at=looked_at, finished_at=self._clock().isoformat())
        )
        log.info("broadcast %s done: %d members looked at", campaign.id, looked_at)

    async def _still_active(self, campaign_id: str) -> bool:
        current = await self._campaigns.campaign(campaign_id)
        return current is not None and current.status == "active"

    async def _save(
        self, campaign_id: str, status: BroadcastStatus, library: str, cursor: int, looked_at: int, started: str
    ) -> None:
        await self._campaigns.save_broadcast_progress(
            campaign_id, BroadcastProgress(status, library, cursor, looked_at, started, self._clock().isoformat())
        )

    async def _page(self, campaign: Campaign, members: list[str], send_at: datetime, library: str) -> None:
        """One page of the audience, decided as one batch. A broadcast counts the members of its audience only."""
        event_id = deterministic_id("broadcast", campaign.id)
        decided = marker_field(event_id, None)
        states = await self._decider.states(members)
        pending = []
        for member_id in members:
            state = states[member_id]
            trigger = TriggerEvent(event_id, BROADCAST, member_id, send_at, {"library": library})
            guardian_id = state.record.profile.guardian_id
            facts = facts_of(trigger, state, states.get(guardian_id) if guardian_id else None)
            if facts.erased or not in_audience(campaign.definition, facts.audience):
                continue
            if decided in state.decided or tag(campaign.id, trigger.key) in state.claims:
                continue  # decided before (a resumed run, or a member the scan returned twice)
            pending.append((trigger, [campaign]))
        if pending:
            await self._decider.decide(pending, self._clock(), states, publish_first=True)
