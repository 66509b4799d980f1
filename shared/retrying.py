"""Waiting out an outage with tenacity, the one way the services retry in-process (docs/retries.md).

`waiting_out` retries the block while it fails with one of `errors`, for as long as it takes (a dependency that is
down is waited for, never a reason to give up on a record), with the given wait between attempts, and logs the
failure on the first attempt and every `log_every`-th one after (one line, not one per attempt).
"""

from __future__ import annotations

import logging

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type
from tenacity.wait import wait_base


def waiting_out(
    errors: tuple[type[BaseException], ...],
    *,
    wait: wait_base,
    log: logging.Logger,
    what: str,
    log_every: int = 1_000_000,
) -> AsyncRetrying:
    """`async for attempt in waiting_out(...): with attempt: ...`; `what` names what is waited for, in the log."""

    def say(state: RetryCallState) -> None:
        if (state.attempt_number - 1) % log_every == 0:
            failure = state.outcome.exception() if state.outcome is not None else None
            log.warning("%s (%s); trying again", what, type(failure).__name__)

    return AsyncRetrying(retry=retry_if_exception_type(errors), wait=wait, before_sleep=say, reraise=True)
