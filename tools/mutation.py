"""Mutation testing of the pure domain modules against their own unit tests (`make mutation`).

Each module gets small planted mistakes (mutants), one at a time: a comparison flipped (``<`` ↔ ``<=``, ``==`` ↔
``!=``, ``in`` ↔ ``not in``), arithmetic swapped, ``and`` ↔ ``or``, a ``not`` dropped, a number one higher, a boolean
flipped, a return value replaced by ``None``, or a statement with an effect removed. Only the unit test files listed
for that module run against each mutant; a mutant is *caught* when they fail (or hang past the timeout), *survived*
when they pass. Mutants on lines the tests never execute survive without a run.

Speed on a shared machine: per module one process imports the libraries once; every mutant runs in a fork of it that
re-imports only the mutated module and what depends on it, so a mutant costs a test run, not an interpreter start.

Survivors that no test could catch, because the program behaves the same (equivalent mutants), are listed in
``tools/mutation-equivalents.txt``, each with a one-line reason; the score leaves them out. Their ids name the
function and the change, not line numbers, so the list survives edits elsewhere in the file.

    .venv/bin/python tools/mutation.py                 # every module, two at a time
    .venv/bin/python tools/mutation.py -j 1 services/identity/domain.py
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType, FrameType, ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Mutants are planted in the sources: journey's engine must run them as Python, not its compiled build (which the
# planted mutant's module, served by this tool's importer, would meet as a stranger: services/journey/compiled.py).
os.environ["KLANTREIS_JOURNEY_COMPILED"] = "off"
EQUIVALENTS = ROOT / "tools" / "mutation-equivalents.txt"
RESULTS = ROOT / ".mutation"  # each module's latest outcome, for --summary
GOAL_TOTAL, GOAL_MODULE = 90.0, 85.0

REPORT_TESTS = ("tests/unit/test_analytics_reports.py", "tests/unit/test_reports_at_the_edges.py")
# Each pure domain module and the unit test files that are its specification.
MODULES: dict[str, tuple[str, ...]] = {
    "services/journey/engine.py": (
        "tests/unit/test_frictions_at_the_edges.py",
        "tests/unit/test_journey_engine.py",
        "tests/unit/test_partition_clocks.py",
    ),
    "services/journey/pruning.py": (
        "tests/unit/test_journey_pruning.py",
        "tests/unit/test_frictions_at_the_edges.py",
        "tests/unit/test_journey_engine.py",
        "tests/unit/test_partition_clocks.py",
    ),
    "services/journey/rules.py": (
        "tests/unit/test_friction_rule_catalogue.py",
        "tests/unit/test_frictions_at_the_edges.py",
        "tests/unit/test_journey_engine.py",
    ),
    # Not test_journey_partition.py: its racing-topics test replays a simulated network of 1,500 members three
    # times (some 7 s), which per mutant would make this module alone take an hour on two shared cores.
    "services/journey/partition.py": (
        "tests/unit/test_partition_clocks.py",
        "tests/unit/test_frictions_at_the_edges.py",
        "tests/unit/test_journey_engine.py",
    ),
    "services/notifications/rules.py": (
        "tests/unit/test_notifications_rules.py",
        "tests/unit/test_messages_at_the_edges.py",
    ),
    "services/notifications/campaigns.py": (
        "tests/unit/test_notifications_campaigns.py",
        "tests/unit/test_messages_at_the_edges.py",
        "tests/unit/test_notifications_rules.py",
    ),
    "services/notifications/templates.py": (
        "tests/unit/test_notifications_templates.py",
        "tests/unit/test_messages_at_the_edges.py",
    ),
    "services/identity/domain.py": ("tests/unit/test_identity_domain.py", "tests/unit/test_members_at_the_edges.py"),
    "services/propositions/domain.py": (
        "tests/unit/test_propositions_domain.py",
        "tests/unit/test_propositions_at_the_edges.py",
    ),
    "services/analytics/reports.py": REPORT_TESTS,
    "services/analytics/cohorts.py": REPORT_TESTS,
}

COMPARE_FLIPS: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
ARITHMETIC_SWAPS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult,
    ast.BitOr: ast.BitAnd,
    ast.BitAnd: ast.BitOr,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
}


@dataclass(frozen=True)
class Mutant:
    id: str  # "<function>: <before> → <after>", with " #n" when the same change occurs more than once
    line: int
    end_line: int
    node: int  # index of the changed node in ast.walk order of the freshly parsed module
    change: str  # which alternative to apply to that node


@dataclass
class Outcome:
    module: str
    total: int = 0
    caught: int = 0
    equivalent: int = 0
    survived: list[tuple[int, str]] = field(default_factory=list)
    not_covered: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    used_equivalents: set[str] = field(default_factory=set)

    @property
    def score(self) -> float:
        counted = self.total - self.equivalent
        return 100.0 * self.caught / counted if counted else 100.0


# --- planting the mutants ---------------------------------------------------------------------------------------


def _short(node: ast.AST, limit: int = 70) -> str:
    text = " ".join(ast.unparse(node).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _skipped_subtrees(tree: ast.Module) -> set[int]:
    """Annotations, docstrings, decorators, f-strings, ``if TYPE_CHECKING`` and ``__all__``: not behaviour."""
    skipped: set[int] = set()

    def skip(node: ast.AST | None) -> None:
        if node is not None:
            skipped.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            skip(node.returns)
            args = node.args
            for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
                if a is not None:
                    skip(a.annotation)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            for decorator in node.decorator_list:
                skip(decorator)
        if isinstance(node, ast.AnnAssign):
            skip(node.annotation)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skip(first)
        if isinstance(node, ast.JoinedStr):
            skip(node)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip(node)
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            skip(node)
    return skipped


def _removable(statement: ast.stmt) -> bool:
    """Statements whose removal leaves valid code that behaves differently (not a plain local assignment)."""
    if isinstance(statement, ast.Expr):
        return isinstance(statement.value, ast.Call | ast.Await)
    if isinstance(statement, ast.Assign):
        return all(isinstance(t, ast.Attribute | ast.Subscript) for t in statement.targets)
    return isinstance(statement, ast.AugAssign | ast.Raise | ast.Continue | ast.Break | ast.Delete)


def _changes(node: ast.AST) -> Iterator[str]:
    """The mutants of one node, by the name of the change."""
    if isinstance(node, ast.Compare):
        yield from (f"compare:{i}" for i, op in enumerate(node.ops) if type(op) in COMPARE_FLIPS)
    elif isinstance(node, ast.BinOp | ast.AugAssign) and type(node.op) in ARITHMETIC_SWAPS:
        yield "arith"
    elif isinstance(node, ast.BoolOp):
        yield "boolop"
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.USub):
        yield "unary"
    elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
        yield "flip"
    elif isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        yield "plus1"
    elif isinstance(node, ast.Return) and node.value is not None and not _is_none(node.value):
        yield "none"
    if isinstance(node, ast.stmt) and _removable(node):
        yield "remove"


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _apply(node: ast.AST, change: str, parents: dict[int, tuple[ast.AST, str, int | None]]) -> None:
    if change.startswith("compare:"):
        assert isinstance(node, ast.Compare)
        i = int(change.split(":")[1])
        node.ops[i] = COMPARE_FLIPS[type(node.ops[i])]()
    elif change == "arith":
        assert isinstance(node, ast.BinOp | ast.AugAssign)
        node.op = ARITHMETIC_SWAPS[type(node.op)]()
    elif change == "boolop":
        assert isinstance(node, ast.BoolOp)
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif change == "unary":
        assert isinstance(node, ast.UnaryOp)
        _replace(node, node.operand, parents)
    elif change == "flip":
        assert isinstance(node, ast.Constant)
        node.value = not node.value
    elif change == "plus1":
        assert isinstance(node, ast.Constant)
        node.value = node.value + 1
    elif change == "none":
        assert isinstance(node, ast.Return)
        node.value = ast.Constant(value=None)
    elif change == "remove":
        _replace(node, ast.Pass(), parents)
    else:
        raise ValueError(change)


def _replace(old: ast.AST, new: ast.AST, parents: dict[int, tuple[ast.AST, str, int | None]]) -> None:
    parent, name, index = parents[id(old)]
    ast.copy_location(new, old)
    if index is None:
        setattr(parent, name, new)
    else:
        getattr(parent, name)[index] = new


def _parents(tree: ast.AST) -> dict[int, tuple[ast.AST, str, int | None]]:
    found: dict[int, tuple[ast.AST, str, int | None]] = {}
    for parent in ast.walk(tree):
        for name, value in ast.iter_fields(parent):
            if isinstance(value, list):
                for i, child in enumerate(value):
                    if isinstance(child, ast.AST):
                        found[id(child)] = (parent, name, i)
            elif isinstance(value, ast.AST):
                found[id(value)] = (parent, name, None)
    return found


def _qualnames(tree: ast.Module) -> dict[int, str]:
    names: dict[int, str] = {}

    def visit(node: ast.AST, scope: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                inner = f"{scope}.{child.name}" if scope else child.name
            names[id(child)] = inner or "<module>"
            visit(child, inner)

    visit(tree, "")
    return names


def plant(source: str) -> list[Mutant]:
    tree = ast.parse(source)
    skipped = _skipped_subtrees(tree)
    scopes = _qualnames(tree)
    parents = _parents(tree)
    found: list[tuple[int, str, int, int, str]] = []
    for index, node in enumerate(ast.walk(tree)):
        if id(node) in skipped or not hasattr(node, "lineno"):
            continue
        for change in _changes(node):
            parent = parents[id(node)][0]
            if change == "remove":
                described = f"{_short(node)} → (removed)"
            elif change == "unary":
                assert isinstance(node, ast.UnaryOp)
                described = f"{_short(node)} → {_short(node.operand)}"
            elif isinstance(node, ast.Constant) and isinstance(parent, ast.arguments):
                described = f"default {node.value!r} → {_changed_constant(node.value)!r}"
            elif isinstance(node, ast.Constant) and isinstance(parent, ast.Dict) and node in parent.values:
                key = parent.keys[parent.values.index(node)]
                name = _short(key) if key is not None else "**"
                described = f"{name}: {node.value!r} → {name}: {_changed_constant(node.value)!r}"
            else:
                # a constant shows with the expression around it
                framed = isinstance(node, ast.Constant) and isinstance(parent, ast.expr | ast.keyword)
                shown = parent if framed else node
                position = next(i for i, n in enumerate(ast.walk(shown)) if n is node)
                after = copy.deepcopy(shown)
                holder = ast.Module(body=[ast.Expr(value=after)] if isinstance(after, ast.expr) else [after])
                _apply(list(ast.walk(after))[position], change, _parents(holder))
                described = f"{_short(shown)} → {_short(holder.body[0])}"
            end = getattr(node, "end_lineno", None) or node.lineno
            found.append((index, change, node.lineno, end, f"{scopes[id(node)]}: {described}"))
    seen: dict[str, int] = {}
    mutants = []
    for index, change, line, end_line, described in sorted(found, key=lambda f: (f[2], f[0], f[1])):
        seen[described] = seen.get(described, 0) + 1
        key = described if seen[described] == 1 else f"{described} #{seen[described]}"
        mutants.append(Mutant(id=key, line=line, end_line=end_line, node=index, change=change))
    return mutants


def _changed_constant(value: object) -> object:
    return (not value) if isinstance(value, bool) else value + 1  # type: ignore[operator]


def mutated_code(source: str, path: str, mutant: Mutant | None) -> CodeType:
    tree = ast.parse(source)
    if mutant is not None:
        target = list(ast.walk(tree))[mutant.node]
        _apply(target, mutant.change, _parents(tree))
        ast.fix_missing_locations(tree)
    return compile(tree, path, "exec", dont_inherit=True)


# --- running the tests against one mutant -----------------------------------------------------------------------


class _Serve(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves the mutated code when the module is imported, ahead of the file on disk."""

    def __init__(self, name: str, path: str, code: CodeType) -> None:
        self.name, self.path, self.code = name, path, code

    def find_spec(self, fullname: str, path: Any = None, target: ModuleType | None = None) -> Any:
        if fullname != self.name:
            return None
        return importlib.util.spec_from_loader(fullname, self, origin=self.path)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        module.__file__ = self.path
        exec(self.code, module.__dict__)  # noqa: S102 - the module's own code, with one planted change


def _pytest_args(tests: Sequence[str]) -> list[str]:
    return [
        *tests,
        "-x",
        "-q",
        "--no-header",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:timeout",
        "-p",
        "no:randomly",
        "-o",
        "addopts=",
    ]


IMPORT = ""  # lines run while the module is imported (module level, class bodies, defaults): every test


def _child(name: str, path: str, code: CodeType, tests: Sequence[str], coverage_file: str | None) -> None:
    """In a forked process: import the (mutated) module afresh, run the tests, exit with pytest's status. With
    `coverage_file`, also write which tests ran each line of the module (the baseline run)."""
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the unit tests need none of the installed plugins
    import pytest

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    sys.meta_path.insert(0, _Serve(name, path, code))
    if coverage_file is None:
        os._exit(int(pytest.main(_pytest_args(tests))))

    ran: dict[int, set[str]] = {}
    order: list[str] = []

    class Current:
        test = IMPORT

        @pytest.hookimpl(wrapper=True)
        def pytest_runtest_protocol(self, item: Any, nextitem: Any) -> Any:
            self.test = item.nodeid
            order.append(item.nodeid)
            try:
                return (yield)
            finally:
                self.test = IMPORT

    current = Current()

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            ran.setdefault(frame.f_lineno, set()).add(current.test)
        return local

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename != path:
            return None
        ran.setdefault(frame.f_lineno, set()).add(current.test)
        return local

    sys.settrace(tracer)
    status = pytest.main(_pytest_args(tests), plugins=[current])
    sys.settrace(None)
    Path(coverage_file).write_text(json.dumps({"order": order, "lines": {n: sorted(t) for n, t in ran.items()}}))
    os._exit(int(status))


def _tests_of(
    mutant: Mutant, coverage: Mapping[int, set[str]], order: Sequence[str], files: Sequence[str]
) -> list[str]:
    """The tests that run the mutated lines, in the order the baseline ran them; every file for import-time lines."""
    tests: set[str] = set()
    for line in range(mutant.line, mutant.end_line + 1):
        tests |= coverage.get(line, set())
    if IMPORT in tests:
        return list(files)
    return [t for t in order if t in tests]


def _forget(target: str) -> None:
    """Drop the target module, everything in the project that imports it (transitively), and the tests."""
    project = ("services", "shared", "tests", "deploy", "bench")
    loaded = {n: m for n, m in sys.modules.items() if n.split(".")[0] in project}
    imports: dict[str, set[str]] = {}
    for name, module in loaded.items():
        file = getattr(module, "__file__", None)
        if not file or not file.endswith(".py"):
            imports[name] = set()
            continue
        names: set[str] = set()
        for node in ast.walk(ast.parse(Path(file).read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        imports[name] = names
    doomed = {target} | {n for n in loaded if n.split(".")[0] == "tests"}
    grew = True
    while grew:
        grew = False
        for name, names in imports.items():
            if name not in doomed and names & doomed:
                doomed.add(name)
                grew = True
    for name in doomed:
        sys.modules.pop(name, None)
        package, _, last = name.rpartition(".")
        if package in sys.modules and getattr(sys.modules[package], last, None) is not None:
            delattr(sys.modules[package], last)


def _warm_up(tests: tuple[str, ...]) -> None:
    """Import the libraries the tests use once, in this process, so each fork starts warm."""
    import pytest

    saved = os.dup(1), os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        pytest.main([*_pytest_args(tests), "--collect-only"])
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)


def _equivalents() -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    if not EQUIVALENTS.exists():
        return found
    for raw in EQUIVALENTS.read_text().splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        module, mutant_id, why = (part.strip() for part in raw.split(" | ", 2))
        found[(module, mutant_id)] = why
    return found


def measure(module_path: str, jobs: int) -> Outcome:
    """Every mutant of one module against its tests; runs in its own process (see main)."""
    started = time.monotonic()
    tests = tuple(t for t in MODULES[module_path] if (ROOT / t).exists())
    path = str(ROOT / module_path)
    name = module_path.removesuffix(".py").replace("/", ".")
    source = Path(path).read_text()
    mutants = plant(source)
    outcome = Outcome(module_path, total=len(mutants))
    outcome.notes.extend(f"test file missing: {t}" for t in MODULES[module_path] if t not in tests)
    equivalents = {m: why for (mod, m), why in _equivalents().items() if mod == module_path}
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    _warm_up(tests)
    _forget(name)

    coverage_file = str(ROOT / f".mutation-coverage-{os.getpid()}.json")
    baseline_started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(name, path, mutated_code(source, path, None), tests, coverage_file)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        outcome.notes.append("the unit tests fail without any mutant: fix them first")
        outcome.caught = 0
        return outcome
    timeout = max(15.0, 4 * (time.monotonic() - baseline_started))
    baseline = json.loads(Path(coverage_file).read_text())
    Path(coverage_file).unlink()
    coverage = {int(line): set(ids) for line, ids in baseline["lines"].items()}

    running: dict[int, tuple[Mutant, float]] = {}
    queue: list[tuple[Mutant, list[str]]] = []
    for mutant in mutants:
        selected = _tests_of(mutant, coverage, baseline["order"], tests)
        if selected:
            queue.append((mutant, selected))
        else:
            outcome.not_covered += 1
            _record(outcome, mutant, caught=False, equivalents=equivalents)
    queue.reverse()
    while queue or running:
        while queue and len(running) < jobs:
            mutant, selected = queue.pop()
            code = mutated_code(source, path, mutant)
            pid = os.fork()
            if pid == 0:
                _child(name, path, code, selected, None)
            running[pid] = (mutant, time.monotonic())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            for pid, (_, since) in list(running.items()):
                if time.monotonic() - since > timeout:
                    os.kill(pid, signal.SIGKILL)  # a mutant that hangs the tests is caught by the timeout
            time.sleep(0.005)
            continue
        mutant, _ = running.pop(pid)
        _record(outcome, mutant, caught=os.waitstatus_to_exitcode(status) != 0, equivalents=equivalents)
        done = outcome.caught + outcome.equivalent + len(outcome.survived)
        if done % 25 == 0:
            print(f"  {module_path}: {done}/{outcome.total}", file=sys.stderr, flush=True)
    unused = set(equivalents) - outcome.used_equivalents
    outcome.notes.extend(f"listed as equivalent but no longer planted or now caught: {m}" for m in sorted(unused))
    outcome.seconds = time.monotonic() - started
    return outcome


def _record(outcome: Outcome, mutant: Mutant, *, caught: bool, equivalents: dict[str, str]) -> None:
    if caught:
        outcome.caught += 1
    elif mutant.id in equivalents:
        outcome.equivalent += 1
        outcome.used_equivalents.add(mutant.id)
    else:
        outcome.survived.append((mutant.line, mutant.id))


# --- the command ------------------------------------------------------------------------------------------------


def _report(outcome: Outcome, verbose: bool) -> None:
    counted = outcome.total - outcome.equivalent
    print(
        f"{outcome.module:40} {outcome.caught:5}/{counted:<5} caught  {outcome.equivalent:3} equivalent  "
        f"{outcome.not_covered:3} not run  {outcome.score:5.1f}%  ({outcome.seconds:.0f} s)",
        flush=True,
    )
    for note in outcome.notes:
        print(f"    note: {note}")
    if verbose:
        for line, mutant_id in sorted(outcome.survived):
            print(f"    survived {outcome.module}:{line}  {mutant_id}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help="module paths (default: all of MODULES)")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="mutants run at once (default 2)")
    parser.add_argument("-q", "--quiet", action="store_true", help="do not list the surviving mutants")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one module, print JSON
    parser.add_argument("--list", action="store_true", help="only list the mutants of the modules")
    parser.add_argument(
        "--summary", action="store_true", help="the scores of the latest run of each module (runs nothing)"
    )
    args = parser.parse_args()
    if args.one:
        outcome = measure(args.one, args.jobs)
        print(json.dumps({k: v for k, v in outcome.__dict__.items() if k != "used_equivalents"}))
        return 0
    modules = args.modules or list(MODULES)
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        parser.error(f"not a measured module: {', '.join(unknown)} (see MODULES in tools/mutation.py)")
    if args.list:
        for module in modules:
            for mutant in plant((ROOT / module).read_text()):
                print(f"{module}:{mutant.line}  {mutant.id}")
        return 0
    caught = counted = 0
    failed = False
    for module in modules:
        saved = RESULTS / (module.replace("/", "_") + ".json")
        if args.summary:
            if not saved.exists():
                print(f"{module}: not measured yet")
                failed = True
                continue
            outcome = Outcome(**json.loads(saved.read_text()))
            # The equivalent list as it is now: a survivor reviewed since the run no longer counts against it.
            listed = {m for (mod, m) in _equivalents() if mod == module}
            outcome.equivalent += sum(1 for _, m in outcome.survived if m in listed)
            outcome.survived = [(line, m) for line, m in outcome.survived if m not in listed]
            _report(outcome, not args.quiet)
            caught += outcome.caught
            counted += outcome.total - outcome.equivalent
            failed |= outcome.score < GOAL_MODULE or bool(outcome.notes)
            continue
        done = subprocess.run(
            [sys.executable, __file__, "--one", module, "-j", str(args.jobs)],
            stdout=subprocess.PIPE,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            print(f"{module}: the runner failed (its error is above)")
            failed = True
            continue
        result = done.stdout.strip().splitlines()[-1]
        RESULTS.mkdir(exist_ok=True)
        saved.write_text(result)
        outcome = Outcome(**json.loads(result))
        _report(outcome, not args.quiet)
        caught += outcome.caught
        counted += outcome.total - outcome.equivalent
        failed |= outcome.score < GOAL_MODULE or bool(outcome.notes)
    total = 100.0 * caught / counted if counted else 100.0
    print(f"{'total':40} {caught:5}/{counted:<5} caught")
    print(f"mutation score: {total:.1f}%")
    return 1 if failed or total < GOAL_TOTAL else 0


if __name__ == "__main__":
    sys.exit(main())
