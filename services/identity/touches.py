"""Where and when a member did something, and the events that say so: shared by identity's operations and its
CloudEvents ingest."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime

from services.identity import domain
from shared.events import CloudEvent, EventData, binary_headers
from shared.events.members import ChannelSwitched
from shared.idempotency import Ids
from shared.problems import Problem
from shared.publishing import Encoded

SOURCE = "/identity"


@dataclass(frozen=True)
class Touch:
    """Where and when a member did something."""

    library: str
    platform: str
    time: datetime
    source: str

    @functools.cached_property
    def channel(self) -> str:
        return domain.channel_of(self.platform)


def conflict(detail: str) -> Problem:
    return Problem(409, "Conflict", detail)


def member_event(data: EventData, member_id: str, touch: Touch, event_id: str) -> CloudEvent:
    return CloudEvent.create(
        data,
        id=event_id,
        subject=member_id,
        source=touch.source,
        library=touch.library,
        channel=domain.channel_of(touch.platform),
        platform=touch.platform,
        time=touch.time,
    )


def member_record(data: EventData, member_id: str, touch: Touch, event_id: str) -> Encoded:
    """`member_event` straight in its Kafka form, without the CloudEvent model in between: the ingest of a batch
    publishes thousands of these (the same key, value and headers as `encoded(member_event(…))`)."""
    headers = binary_headers(
        event_id, touch.source, data.event_type, touch.time, member_id, touch.library, touch.channel, touch.platform
    )
    value = type(data).__pydantic_serializer__.to_json(data)
    return Encoded(data.topic, event_id, data.event_type, member_id.encode(), value, headers)


def switch_data(previous: tuple[str, str] | None, touch: Touch) -> ChannelSwitched | None:
    """The channel_switched payload of a touch on another channel or platform than the member's `previous` one."""
    switch = domain.channel_switch(previous, (touch.channel, touch.platform))
    if switch is None:
        return None
    (from_channel, from_platform), (to_channel, to_platform) = switch
    return ChannelSwitched(
        from_channel=from_channel, from_platform=from_platform, to_channel=to_channel, to_platform=to_platform
    )


def channel_switched(previous: tuple[str, str] | None, member_id: str, touch: Touch, ids: Ids) -> CloudEvent | None:
    """The channel_switched of a touch on another channel or platform than the member's `previous` one."""
    data = switch_data(previous, touch)
    return None if data is None else member_event(data, member_id, touch, ids.new("channel_switched"))


def switch_events(previous: tuple[str, str] | None, member_id: str, touch: Touch, ids: Ids) -> list[CloudEvent]:
    """`channel_switched` as a list: what an operation publishes before the touch's own event.

    The operation stores the touch (`MemberStore.touched`) only once Kafka acknowledged: a retry after a 503 finds
    the same last touch and publishes the same switch again."""
    switched = channel_switched(previous, member_id, touch, ids)
    return [switched] if switched is not None else []
