"""Waiting out an outage (shared/retrying.py): the block is tried again while it fails with a listed error, the
failure is logged once (or every N-th attempt), and any other error is not retried."""

from __future__ import annotations

import logging

import pytest
from tenacity import wait_fixed

from shared.retrying import waiting_out

log = logging.getLogger("test.retrying")


async def test_a_listed_failure_is_retried_until_it_works_and_logged_on_the_first_attempt_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 5:
            raise ConnectionError("down")
        return "up"

    caplog.set_level(logging.WARNING, logger="test.retrying")
    async for attempt in waiting_out((ConnectionError,), wait=wait_fixed(0), log=log, what="waiting for x"):
        with attempt:
            result = await flaky()
    assert (result, calls) == ("up", 5)
    assert [r.getMessage() for r in caplog.records] == ["waiting for x (ConnectionError); trying again"]


async def test_every_nth_failure_is_logged_and_an_unlisted_error_goes_through_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("a bug") if calls == 7 else TimeoutError()

    caplog.set_level(logging.WARNING, logger="test.retrying")
    with pytest.raises(ValueError):
        async for attempt in waiting_out((TimeoutError,), wait=wait_fixed(0), log=log, what="w", log_every=3):
            with attempt:
                await failing()
    assert calls == 7
    assert len(caplog.records) == 2  # attempts 1 and 4
