"""journey's engine compiled by mypyc (services/journey/compiled.py): used only while built from the sources as they
are, and deciding exactly what the engine decides as Python."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from services.journey import compiled

ROOT = Path(__file__).resolve().parents[2]

# A simulated network of 1,500 members through every rule, as back-testing replays it; what was decided, in full.
REPLAY = """
import json
from datetime import UTC, datetime, timedelta
import services.journey
from services.journey.offline.memory import InMemoryJourneys
from services.journey.offline.simulator import simulate
from services.journey.rules import load_rules
journeys = InMemoryJourneys(load_rules(), lateness=timedelta(minutes=1))
journeys.feed(simulate(1500, seed=11, end=datetime(2026, 6, 1, tzinfo=UTC)).events)  # the same history twice
done = journeys.finish()
print(json.dumps({
    "engine": services.journey.ENGINE,
    "module": services.journey.engine.__file__,
    "decided": sorted(repr(x) for x in [*done.detected, *done.resolved, *done.closed]),
}))
"""


def replayed(setting: str) -> dict[str, object]:
    env = {**os.environ, compiled.SETTING: setting}
    done = subprocess.run([sys.executable, "-c", REPLAY], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_the_compiled_engine_decides_exactly_what_the_python_engine_decides() -> None:
    as_python, as_compiled = replayed("off"), replayed("auto")
    assert as_python["engine"] == "Python (KLANTREIS_JOURNEY_COMPILED=off)"
    assert str(as_python["module"]).endswith("services/journey/engine.py")
    # `make test` bootstraps first, which builds the engine (`klantreis prepare`): here it must be current.
    assert as_compiled["engine"] == "compiled (mypyc)", "no current build: run `.venv/bin/klantreis prepare`"
    assert str(as_compiled["module"]).endswith(".so")
    decided = as_python["decided"]
    assert isinstance(decided, list) and len(decided) > 1000  # frictions, resolutions and closed windows
    assert as_compiled["decided"] == decided


def built_copy(tmp_path: Path) -> Path:
    if not compiled.current():
        pytest.fail("no current build of journey's engine: run `.venv/bin/klantreis prepare`")
    copy = tmp_path / "build"
    shutil.copytree(compiled.BUILD, copy)
    return copy


def test_a_build_is_current_while_the_sources_are_those_it_was_built_from(tmp_path: Path) -> None:
    assert compiled.current(built_copy(tmp_path))


def test_a_build_of_other_sources_is_not_used(tmp_path: Path) -> None:
    build = built_copy(tmp_path)
    stamp = json.loads((build / compiled.STAMP).read_text())
    (build / compiled.STAMP).write_text(json.dumps({**stamp, "sources": "0" * 64}))  # an edit since the build
    assert not compiled.current(build)


def test_a_build_for_another_python_is_not_used(tmp_path: Path) -> None:
    build = built_copy(tmp_path)
    stamp = json.loads((build / compiled.STAMP).read_text())
    (build / compiled.STAMP).write_text(json.dumps({**stamp, "python": "3.12.0"}))
    assert not compiled.current(build)


def test_a_build_missing_a_module_is_not_used(tmp_path: Path) -> None:
    build = built_copy(tmp_path)
    next((build / "services" / "journey").glob("partition.*")).unlink()
    assert not compiled.current(build)
    assert not compiled.current(tmp_path / "nothing built")
