"""journey pauses the cyclic garbage collector while a batch is in hand, and always turns it back on: a process
whose collector stayed off would keep every reference cycle it ever made."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from services.journey.handlers import _collector_paused


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    gc.enable()
    yield
    gc.enable()


def test_the_collector_is_off_during_a_batch_and_on_again_after_it_even_when_it_fails() -> None:
    with _collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), _collector_paused():
        raise RuntimeError("Redis went away")
    assert gc.isenabled()


def test_two_detectors_in_one_process_turn_it_on_only_when_both_batches_are_done() -> None:
    with _collector_paused():
        with _collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_collector_someone_else_turned_off_stays_off() -> None:
    gc.disable()
    with _collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()
