"""In-app messages delivered by deciding itself, on the real broker and Redis: in the inbox with their
`message.sent` in the decisions' own batch, published again (never put in the inbox twice) when the process died
before publishing, and rendered per member where the text names the trigger."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest

from services.notifications.rules import message_id
from shared.events import CloudEvent, deterministic_id
from shared.events.journey import FrictionDetected
from shared.settings import Settings
from tests.integration.test_notifications_support import (
    NOON,
    RULE,
    campaign,
    member,
    notifications,
    notifications_settings,
)

pytestmark = pytest.mark.integration


class Crash(ConnectionError):
    pass


def friction(member_id: str, detected: datetime) -> CloudEvent:
    data = FrictionDetected(
        friction_id="f-" + member_id, rule=RULE, start_event_id="s-" + member_id,
        started_at=detected - timedelta(days=14), due_at=detected, library="oba", age_band="18-64",
    )  # fmt: skip
    return CloudEvent.create(
        data, id=data.friction_id, subject=member_id, source=f"/journey/rules/{RULE}", library="oba", time=detected
    )


async def test_a_process_that_died_before_publishing_sends_the_in_app_message_once_and_publishes_it_on_redelivery(
    settings: Settings, admin_key: str
) -> None:
    # The delivery loop would wait an hour: whatever arrives came from deciding itself.
    configured = notifications_settings(settings, notifications_delivery_tick_seconds=3600)
    async with notifications(configured, admin_key) as n:
        campaign_id = await n.create(campaign())
        m = member()
        detected = friction(m, n.clock())
        publisher = n.app.state.parts.publisher
        publish_many = publisher.publish_many

        async def dies(events: Sequence[CloudEvent], **kwargs: Any) -> None:
            raise Crash("the process died after storing its decisions")

        # Decided once by a process that stored everything and died before Kafka saw its events…
        publisher.publish_many = dies
        try:
            with pytest.raises(Crash):
                await n.app.state.decider.on_triggers([detected])
        finally:
            publisher.publish_many = publish_many
        assert [message["body"] for message in await n.inbox(m)] == ["Kom langs bij de Bibliotheek."]

        # … so Kafka hands the friction over again (its offset was never committed).
        await n.publish(detected, "journey.frictions.v1")
        decided = (await n.decided_for([m]))[m]
        assert [(d.type, d.id, d.data["medium"]) for d in decided] == [
            ("sent", message_id(campaign_id, m, detected.id), "in_app")
        ]
        assert len(await n.inbox(m)) == 1
        results = await n.results(campaign_id)
        assert (results["triggered"], results["sent"], results["waiting"]) == (1, 1, 0)
        assert await n.stores.queue.next_due() is None  # no delivery was left waiting


async def test_an_in_app_text_that_names_the_trigger_s_time_is_rendered_for_each_member(
    settings: Settings, admin_key: str
) -> None:
    async with notifications(notifications_settings(settings), admin_key) as n:
        await n.create(
            campaign(messages={"in_app": {"nl": {"title": "Je pas wacht", "body": "Sinds {{ trigger.time }}."}}})
        )
        early, late = member(), member()
        times = {early: NOON - timedelta(hours=3), late: NOON - timedelta(hours=1)}
        # One batch: what is alike in it is rendered once.
        await n.app.state.decider.on_triggers([friction(m, detected) for m, detected in times.items()])
        await n.decided_for([early, late])
        for m, detected in times.items():
            assert [message["body"] for message in await n.inbox(m)] == [f"Sinds {detected.isoformat()}."]


async def test_a_broadcast_whose_process_died_before_kafka_took_a_page_publishes_every_message_and_sends_it_once(
    settings: Settings, admin_key: str, seed_libraries: list[str]
) -> None:
    """Nothing redelivers a broadcast: a page's events go out before its decisions are stored, so the page a dying
    process could not publish is decided again on resume, and every member has their message.sent."""
    configured = notifications_settings(
        settings, notifications_broadcast_page=5, notifications_broadcast_tick_seconds=3600
    )
    async with notifications(configured, admin_key) as n:
        segment = await n.babies(20)
        campaign_id = await n.create(
            campaign(
                name="BoekStart-week", kind="broadcast", trigger=None, audience={"libraries": ["oba"]},
                schedule={"send_at": (NOON - timedelta(minutes=1)).isoformat()},
            )
        )  # fmt: skip
        publisher = n.app.state.parts.publisher
        publish_many = publisher.publish_many
        pages: list[int] = []

        async def dies_on_the_second_page(events: Sequence[CloudEvent], **kwargs: Any) -> None:
            pages.append(len(events))
            if len(pages) == 2:
                raise Crash("the process died before Kafka acknowledged the page")
            await publish_many(events, **kwargs)

        publisher.publish_many = dies_on_the_second_page
        try:
            with pytest.raises(Crash):
                await n.app.state.broadcaster.broadcast_due()
        finally:
            publisher.publish_many = publish_many
        await n.app.state.broadcaster.broadcast_due()  # resumed, as a restart would

        decided = await n.decided_for(segment)
        assert (await n.stores.campaigns.broadcast_progress(campaign_id)).status == "done"
        for m in segment:
            assert {(d.type, d.id) for d in decided[m]} == {
                ("sent", message_id(campaign_id, m, deterministic_id("broadcast", campaign_id)))
            }
            assert len(await n.inbox(m)) == 1
        results = await n.results(campaign_id)
        assert (results["triggered"], results["sent"]) == (20, 20)
