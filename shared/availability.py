"""Whether Kafka and Redis answer, as this process finds them: one log line when an outage starts, one when it ends.

Requests report what they find (`failed`, `succeeded`); while an outage lasts, a probe asks the dependency once a
second, so that its end is logged even when no request comes (a load balancer sends none to a process that is not
ready). `/readyz` asks `ready()`: a probe result at most `fresh_for` seconds old, one probe shared by concurrent
callers, so that probing often costs the dependency nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("klantreis.availability")

Probe = Callable[[], Awaitable[bool]]


class Availability:
    def __init__(
        self, name: str, probe: Probe, *, fresh_for: float = 1.0, probe_every: float = 1.0, probe_timeout: float = 1.0
    ) -> None:
        self.name = name
        self._probe = probe
        self._fresh_for = fresh_for
        self._probe_every = probe_every
        self._probe_timeout = probe_timeout
        self._down_since: float | None = None
        self._refused = 0
        self._watcher: asyncio.Task[None] | None = None
        self._checked: tuple[float, bool] | None = None
        self._checking = asyncio.Lock()

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, reason: str) -> None:
        """Something could not reach the dependency. Logs only the first failure of an outage."""
        self._refused += 1
        if self._down_since is not None:
            return
        self._down_since = time.monotonic()
        self._refused = 1
        self._checked = (self._down_since, False)
        log.error("%s unreachable (%s): writes are answered 503 until it is back", self.name, reason)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch(), name=f"watch {self.name}")

    def succeeded(self) -> None:
        """Something reached the dependency. Logs the end of an outage, if one was going on."""
        if self._down_since is None:
            return
        lasted = time.monotonic() - self._down_since
        self._down_since = None
        self._checked = (time.monotonic(), True)
        log.warning("%s reachable again after %.1f s (%d failed call(s) meanwhile)", self.name, lasted, self._refused)

    async def ready(self) -> bool:
        """A probe result at most `fresh_for` seconds old."""
        async with self._checking:
            if self._checked is not None and time.monotonic() - self._checked[0] < self._fresh_for:
                return self._checked[1]
            answered = await self._ask()
            self._checked = (time.monotonic(), answered)
            return answered

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    async def _ask(self) -> bool:
        try:
            answered = await asyncio.wait_for(self._probe(), self._probe_timeout)
        except Exception as exc:
            answered, reason = False, type(exc).__name__
        else:
            reason = "no answer"
        if answered:
            self.succeeded()
        else:
            self.failed(f"probe: {reason}")
        return answered

    async def _watch(self) -> None:
        while self._down_since is not None:
            await asyncio.sleep(self._probe_every)
            if self._down_since is not None:
                await self._ask()
