"""Reads side by side on the embedded store: each on a chDB session of its own.

One chDB session answers one query at a time (its query parameters are the session's state: two threads asking
with parameters at once get each other's), but any number of sessions may share the process's engine and data
folder, and their queries run in parallel. The dashboard asks its sections at once; writes stay on the store's
own session, one at a time (`AnalyticsStore`).
"""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Any, cast


class Readers:
    """Sessions for reads, made as needed and kept for the next read (as many as reads ever ran at once)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def query(self, sql: str, params: dict[str, Any]) -> bytes:
        """The answer of a read, as JSONEachRow lines."""
        try:
            reader = self._idle.get_nowait()
        except queue.Empty:
            from chdb import session

            reader = cast(Any, session).Session(str(self._path))
        try:
            return cast(bytes, reader.query(sql, "JSONEachRow", params=params).bytes())
        finally:
            self._idle.put(reader)

    def close(self) -> None:
        while not self._idle.empty():
            self._idle.get_nowait().close()
