"""One journey instance in a process of its own, for the benchmark's scale-out figure (two processes on two cores).

    python -m bench.peers.journey_instance SETTINGS_JSON

Builds the journey service (no HTTP) with the settings given as JSON, says `{"ready": true}`, starts when a line
arrives on its standard input (so that every instance joins the group at once), then writes a line of JSON every
50 ms: `{"applied": <records applied>, "done": <of them stored and published>, "settled": <bool>}`. Stops when its
standard input closes. Its start-up heap is frozen out of the garbage collector's passes, as `serve()` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys

from services.journey.app import create_app
from services.journey.handlers import FrictionDetector
from services.journey.settings import JourneySettings
from shared.service import freeze_startup_heap


async def run(settings: JourneySettings) -> None:
    app = create_app(settings)
    freeze_startup_heap()
    print(json.dumps({"ready": True}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.readline() else None)
    async with app.router.lifespan_context(app):
        detector: FrictionDetector = app.state.detector
        while not stop.is_set():
            progress = {"applied": detector.applied, "done": detector.done, "settled": detector.settled()}
            print(json.dumps(progress), flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)


if __name__ == "__main__":
    asyncio.run(run(JourneySettings.model_validate_json(sys.argv[1])))
