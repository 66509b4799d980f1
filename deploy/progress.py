"""Progress of the command line's long work, drawn by `rich` on stderr: a bar with the count, the rate and the time
left when the total is known, a spinner with what is being waited for otherwise. Nothing is drawn when stderr is
not a terminal (a pipe, a test, CI): stdout stays the result, and logs stay clean."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text


def _console() -> Console:
    # sys.stderr as it is now, not as it was at import (a test or a pager may have replaced it)
    return Console(stderr=True)


class _Rate(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self._unit = unit

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} {self._unit}/s", style="progress.data.speed")


class Progress:
    """`update(done)` as work goes on, `close()` at the end (or use it as a context manager)."""

    def __init__(self, total: int | None, *, unit: str = "events", what: str = "", console: Console | None = None):
        console = console or _console()
        columns: list[ProgressColumn | str] = [TextColumn("{task.description}")]
        if total:
            columns += [BarColumn(), MofNCompleteColumn(), TextColumn(unit), _Rate(unit), TimeRemainingColumn()]
        else:
            columns += [SpinnerColumn(), TextColumn("{task.completed:,.0f} " + unit), _Rate(unit), TimeElapsedColumn()]
        self._bar = RichProgress(*columns, console=console, disable=not console.is_terminal)
        self._task = self._bar.add_task(what or unit, total=total)
        self._bar.start()

    def update(self, done: int, *, what: str | None = None) -> None:
        if what is None:
            self._bar.update(self._task, completed=done)
        else:
            self._bar.update(self._task, completed=done, description=what)

    def close(self) -> None:
        self._bar.stop()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.close()


@contextmanager
def waiting(what: str, console: Console | None = None) -> Iterator[None]:
    """A spinner saying what is being waited for (one request that takes a while)."""
    console = console or _console()
    if not console.is_terminal:
        yield
        return
    with console.status(what):
        yield
