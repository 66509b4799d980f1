"""notifications at scale, on the real broker and Redis: deciding never runs ahead of the members projection
(consent and erasure), and a broadcast can be paused and resumed without messaging anyone twice."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaProducer

from services.notifications.rules import in_holdout
from shared.events import CloudEvent, to_kafka
from shared.events.journey import FrictionDetected
from shared.settings import Settings
from shared.topics import ensure_topics
from tests.integration.test_notifications_support import (
    NOON,
    RULE,
    TYPE_PREFIX,
    TestClock,
    campaign,
    member,
    notifications,
    notifications_settings,
)
from tests.support import eventually

pytestmark = pytest.mark.integration


def member_event(kind: str, member_id: str, at: object, **data: object) -> CloudEvent:
    return CloudEvent(
        id=str(uuid.uuid4()), source="/identity", type=f"{TYPE_PREFIX}member.{kind}.v1", time=at, subject=member_id,
        library="oba", channel="online", platform="website", data=data,
    )  # fmt: skip


async def test_a_consent_withdrawn_a_second_before_the_friction_means_no_message_even_behind_a_backlog(
    settings: Settings, admin_key: str
) -> None:
    """The campaign is made, notifications stops; then the events arrive: the friction is at the head of its
    topic, while the withdrawal waits behind thousands of other members' events. When notifications starts
    again, the friction is decided only once the members projection has applied the withdrawal."""
    configured = notifications_settings(settings)
    await ensure_topics(configured)
    async with notifications(configured, admin_key) as n:
        campaign_id = await n.create(campaign())
    withdrew, kept = member(), member()
    friction_time = NOON
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=20)
    await producer.start()

    async def send(event: CloudEvent, topic: str) -> asyncio.Future[object]:
        record = to_kafka(event)
        headers = [(k, v.encode()) for k, v in record.headers.items()]
        sent: asyncio.Future[object] = await producer.send(
            settings.topic(topic), record.value, key=record.key, headers=headers
        )
        return sent

    try:
        backlog = [
            await send(member_event("signed_up", member(), NOON - timedelta(minutes=5), age_band="18-64",
                                    home_library="oba", postcode_area="1034"), "identity.members.v1")
            for _ in range(3000)
        ]  # fmt: skip
        await asyncio.gather(*backlog)
        for m in (withdrew, kept):
            # The withdrawal goes to the partition of its member: keyed, like everything identity publishes.
            medium = "in_app" if m == withdrew else "email"
            withdrawal = member_event(
                "consent_changed", m, friction_time - timedelta(seconds=1), medium=medium, purpose="service",
                granted=False,
            )  # fmt: skip
            await (await send(withdrawal, "identity.members.v1"))
        for m in (withdrew, kept):
            friction = FrictionDetected(
                friction_id=str(uuid.uuid4()), rule=RULE, start_event_id=str(uuid.uuid4()),
                started_at=friction_time - timedelta(days=14), due_at=friction_time, library="oba", age_band="18-64",
            )  # fmt: skip
            event = CloudEvent.create(
                friction, id=str(uuid.uuid4()), subject=m, source=f"/journey/rules/{RULE}", library="oba",
                time=friction_time,
            )  # fmt: skip
            await (await send(event, "journey.frictions.v1"))
    finally:
        await producer.stop()

    async with notifications(configured, admin_key) as n:
        decided = await n.decided_for([withdrew, kept], within=60)
    assert [(d.type, d.data.get("reason")) for d in decided[withdrew]] == [("suppressed", "no_consent")]
    assert [d.type for d in decided[kept]] == ["sent"]
    assert decided[withdrew][0].data["campaign_id"] == campaign_id


async def test_a_broadcast_paused_halfway_and_resumed_messages_every_member_of_its_segment_once(
    settings: Settings, admin_key: str, seed_libraries: list[str]
) -> None:
    """A segment of 300 members, one member per page so that the pause lands halfway. It runs in the evening and
    the in-app inbox counts as interrupting here: every message waits for the end of quiet hours (so none is
    delivered while the campaign is paused). The cap and the holdout apply as for any trigger."""
    configured = notifications_settings(
        settings, notifications_broadcast_page=1, notifications_broadcast_tick_seconds=3600,
        notifications_frequency_cap=1, notifications_quiet_media=["in_app"],
    )  # fmt: skip
    clock = TestClock()
    async with notifications(configured, admin_key, clock=clock) as n:
        segment = await n.babies(300)
        # Three members had their one message of the week already: the cap holds the broadcast back.
        capped = segment[:3]
        await n.create(campaign())
        for m in capped:
            await n.friction(m)
        await n.decided_for(capped)

        send_at = NOON + timedelta(hours=9, minutes=30)  # 21:30 in Amsterdam
        campaign_id = await n.create(
            {
                "name": "BoekStart-week", "kind": "broadcast", "purpose": "service", "holdout_percent": 10,
                "audience": {"libraries": ["oba"], "age_bands": ["0-3"]},
                "schedule": {"send_at": send_at.isoformat()},
                "channels": ["in_app"],
                "messages": {"in_app": {"nl": {"title": "BoekStart-week", "body": "Voorlezen!"}}},
            }
        )  # fmt: skip
        clock.jump_to(send_at + timedelta(minutes=1))
        broadcaster = n.app.state.broadcaster
        run = asyncio.create_task(broadcaster.broadcast_due())

        async def halfway() -> bool:
            return (await n.stores.campaigns.broadcast_progress(campaign_id)).looked_at >= 60

        await eventually(halfway, every=0.005)
        assert (await n.client.post(f"/v1/campaigns/{campaign_id}/pause")).status_code == 200
        await run
        paused = await n.stores.campaigns.broadcast_progress(campaign_id)
        assert paused.status == "paused"
        assert 60 <= paused.looked_at < len(segment)

        assert (await n.client.post(f"/v1/campaigns/{campaign_id}/activate")).status_code == 200
        await broadcaster.broadcast_due()
        assert (await n.stores.campaigns.broadcast_progress(campaign_id)).status == "done"
        clock.jump_to(NOON + timedelta(hours=20, minutes=1))  # 08:01 the next morning

        decided = await n.decided_for(segment, within=60)
        results = await n.results(campaign_id)
    final = {
        m: [(d.type, d.data.get("reason")) for d in ds if d.data["campaign_id"] == campaign_id and d.type != "deferred"]
        for m, ds in decided.items()
    }
    held_out = {m for m in segment if in_holdout(campaign_id, m, 10)}
    for m in segment:
        if m in capped:
            assert final[m] == [("suppressed", "frequency_cap")], m
        elif m in held_out:
            assert final[m] == [("suppressed", "holdout")], m
        else:
            assert final[m] == [("sent", None)], m
    assert 0 < len(held_out) < len(segment)
    assert results["sent"] == len(set(segment) - held_out - set(capped))
    assert results["triggered"] == len(segment)
