"""journey's engine compiled to C by mypyc: the same typed sources (`MODULES`), about a sixth less CPU per event
(docs/journey.md, "Ninth round").

`build()` compiles them into `build/journey-compiled/` (`klantreis prepare` does, and so `make bootstrap`, `make run`
and `make test`; quick when the build is current). `use()`, called when the journey package is imported, puts that
build ahead of the sources only while it is current: built from exactly the project's Python sources as they are now
(`stamp`), for this Python. Otherwise, or with `KLANTREIS_JOURNEY_COMPILED=off` (to debug or profile it as Python),
the engine runs as Python: the same decisions, slower. An edited source is never shadowed by an older build (nor is a
mutant, `make mutation`): a compiled module reads others' fields by position (named tuples), so any source counts.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.machinery
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

# Compiled together, so that they call one another as C functions. Not state.py (msgspec's structs, which mypyc
# does not compile), rules.py (pydantic's models) nor the adapters (awaiting Kafka and Redis: little to gain).
MODULES = ("pruning", "engine", "partition", "decoding")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BUILD = ROOT / "build" / "journey-compiled"
STAMP = "stamp.json"
SETTING = "KLANTREIS_JOURNEY_COMPILED"  # "auto" (default): the build when it is current; "off": Python always


@functools.cache  # once per process: the journey package's import asks, and then `klantreis prepare`'s build
def stamp() -> dict[str, str]:
    """What a build is valid for: every Python source of the project's packages, and this Python."""
    digest = hashlib.sha256()
    for path in sorted(p for package in ("shared", "services") for p in (ROOT / package).rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return {
        "sources": digest.hexdigest(),
        "python": platform.python_version(),  # a build for 3.11.7 is used by 3.11.7 only
        "extension": importlib.machinery.EXTENSION_SUFFIXES[0],
    }


def current(build: Path = BUILD) -> bool:
    """Whether `build` holds the modules compiled from the sources as they are now."""
    try:
        built = json.loads((build / STAMP).read_text())
        return bool(built == stamp() and all(_module_file(build, m).is_file() for m in MODULES))
    except (OSError, ValueError):
        return False


def _module_file(build: Path, module: str) -> Path:
    return build / "services" / "journey" / f"{module}{importlib.machinery.EXTENSION_SUFFIXES[0]}"


def use(package_path: list[str]) -> str:
    """Put the build ahead of the sources in the journey package's path when it is current; says what runs."""
    if os.environ.get(SETTING, "auto").lower() == "off":
        return f"Python ({SETTING}=off)"
    if not current():
        return "Python (no current compiled build: `klantreis prepare` makes one)"
    sys.path.append(str(BUILD))  # the modules' shared C library (`journey_engine__mypyc`) is a top-level module
    package_path.insert(0, str(BUILD / "services" / "journey"))
    return "compiled (mypyc)"


def build() -> bool:
    """Compile `MODULES` into BUILD unless it is current; False when this machine cannot (no C compiler, no mypyc):
    then the engine runs as Python."""
    if current():
        return True
    try:
        from mypyc.build import mypycify
        from setuptools import Distribution  # type: ignore[import-untyped]
    except ImportError:
        return False
    if shutil.which(os.environ.get("CC", "cc")) is None:
        return False
    print("compiling journey's engine with mypyc (about 25 s) …", flush=True)
    made = stamp()
    with tempfile.TemporaryDirectory(prefix="journey-compiled-") as work:
        staging = Path(work) / "lib"
        cwd = Path.cwd()
        os.chdir(ROOT)  # module names come from the paths, relative to the project
        try:
            extensions = mypycify(
                [f"services/journey/{m}.py" for m in MODULES],
                opt_level="3", target_dir=str(Path(work) / "c"), group_name="journey_engine",
            )  # fmt: skip
            distribution = Distribution({"name": "klantreis-journey-compiled", "ext_modules": extensions})
            command = distribution.get_command_obj("build_ext")
            command.build_lib, command.build_temp = str(staging), str(Path(work) / "o")
            distribution.run_command("build_ext")
        except (SystemExit, Exception) as exc:  # a failed build leaves Python running: say why
            print(f"journey's engine was not compiled ({exc}); it runs as Python", file=sys.stderr)
            return False
        finally:
            os.chdir(cwd)
        (staging / STAMP).write_text(json.dumps(made))
        shutil.rmtree(BUILD, ignore_errors=True)
        BUILD.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(staging, BUILD)
    return current()
