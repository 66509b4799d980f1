"""`GET /v1/status`: has the journey service caught up with its input, and where do its event-time clocks stand?

For operators (is it keeping up?) and for tools that load history and then want the frictions of it
(`klantreis simulate --check`): `settled` means every record of the partitions this instance owns is applied and
no timer is due by the clocks, so nothing more will be decided until new events arrive or the clock moves on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from services.journey.handlers import FrictionDetector
from shared import consumers
from shared.auth import AUTH_RESPONSES, Principal, require
from shared.schemas import example_answer

StatusKey = Annotated[Principal, Depends(require("operator", "analyst"))]


class PartitionStatus(BaseModel):
    topic: str
    partition: int
    end_offset: int = Field(description="the broker's end offset: the next record's offset")
    applied_offset: int | None = Field(description="the last offset whose effect is stored (None: nothing yet)")
    lag: int = Field(description="records not applied yet")
    clock: datetime | None = Field(description="the latest event time applied on this partition")


class JourneyStatus(BaseModel):
    model_config = example_answer(
        settled=True,
        caught_up=True,
        applied_events=5210,
        partitions=[
            {
                "topic": "identity.members.v1",
                "partition": 0,
                "end_offset": 2605,
                "applied_offset": 2604,
                "lag": 0,
                "clock": "2026-11-23T10:00:00+00:00",
            }
        ],
    )

    settled: bool = Field(description="caught up, quiet, and no timer due: the frictions so far are all out")
    caught_up: bool = Field(description="every record of the owned input partitions is applied")
    applied_events: int = Field(description="events applied by this process since it started")
    partitions: list[PartitionStatus] = Field(description="the input partitions this instance owns")


def status_router(detector: FrictionDetector) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["operations"], responses=AUTH_RESPONSES)

    @router.get(
        "/status",
        summary="Caught up? The journey clocks and the lag of each input partition (operator or analyst)",
        description="`settled` turns true once every record of the input partitions this instance owns is "
        "applied, no new one arrived for `KLANTREIS_JOURNEY_IDLE_SECONDS` and no timer is due by the clocks.",
    )
    async def status(caller: StatusKey) -> JourneyStatus:
        consumer: Any = detector.consumer.consumer
        assignment = sorted(consumer.assignment()) if consumer is not None else []
        ends = await consumers.end_offsets(consumer, assignment)
        partitions = []
        for tp in assignment:
            owned = detector.owned.get(tp.partition)
            last = owned.offsets.get(tp.topic) if owned is not None else None
            clocks = [c for (topic, _), c in owned.partition.clocks.items() if topic == tp.topic] if owned else []
            clock = max(clocks, default=None)
            partitions.append(
                PartitionStatus(
                    topic=tp.topic,
                    partition=tp.partition,
                    end_offset=ends[tp],
                    applied_offset=last,
                    lag=max(0, ends[tp] - (last if last is not None else -1) - 1),
                    clock=datetime.fromtimestamp(clock / 1000, UTC) if clock else None,
                )
            )
        return JourneyStatus(
            settled=detector.settled(),
            caught_up=bool(partitions) and all(p.lag == 0 for p in partitions),
            applied_events=detector.applied,
            partitions=partitions,
        )

    return router
