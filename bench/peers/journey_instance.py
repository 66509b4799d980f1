"""One journey instance in a process of its own, as the service runs in production, for every journey figure of the
benchmark (bench/journey_throughput.py): the one-rule and all-rules runs (one process) and the scale-out (two).

    python -m bench.peers.journey_instance SETTINGS_JSON

Builds the journey service (no HTTP) with the settings given as JSON (`JourneySettings.model_dump_json()`; fields
left out, such as the secrets, are read from the `KLANTREIS_*` environment as a service reads them), says
`{"ready": true}`, starts when a line arrives on its standard input (so that every instance joins the group at
once), then looks at its progress every 2 ms and writes a line of JSON whenever it changed: `{"applied": <records
applied>, "done": <of them stored and published>, "settled": <bool>, "first_batch_at": <when its first batch came
in>, "done_at": <when done last grew>, "settled_at": <when settled last became true>}`, the times this process's
`time.monotonic()` (system-wide on Linux: comparable between processes), `null` until they happened. The first is
the service's own stamp (`FrictionDetector.first_batch_at`), taken before that batch is applied: this loop runs only
between batches. The benchmark times a run by these stamps, not by when the lines reach it. Stops when its standard
input closes. Its start-up heap is frozen out of the garbage collector's passes, as `serve()` does.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

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
        done_at: float | None = None
        settled_at: float | None = None
        last: tuple[int, int, bool] | None = None
        while not stop.is_set():
            now = time.monotonic()
            applied, done, settled = detector.applied, detector.done, detector.settled()
            if last is None or done != last[1]:
                done_at = now if done > 0 else None
            if not settled:
                settled_at = None
            elif settled_at is None:
                settled_at = now
            if (applied, done, settled) != last:
                last = (applied, done, settled)
                progress = {"applied": applied, "done": done, "settled": settled,
                            "first_batch_at": detector.first_batch_at, "done_at": done_at,
                            "settled_at": settled_at}  # fmt: skip
                print(json.dumps(progress), flush=True)
            await asyncio.sleep(0.002)


if __name__ == "__main__":
    asyncio.run(run(JourneySettings.model_validate_json(sys.argv[1])))
