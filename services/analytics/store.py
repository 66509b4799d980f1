"""The analytics store: one pseudonymous row per event in ClickHouse, the same schema and SQL on two engines.

`Chdb` runs ClickHouse's engine inside this process (PyPI `chdb`; data in a folder that one process at a time
may open); `ClickHouseServer` talks to a server over HTTP (`clickhouse-connect`). Both do three things — run a
statement, read rows, insert rows — and everything else (`AnalyticsStore`) is SQL they share. Calls block, so
they run in a worker thread: writes one at a time per store, chDB's reads side by side (`readers`).

Layout (docs/reports.md): `events` is a ReplacingMergeTree ordered by (member_key, time, event_id), member_key
being a 64-bit hash of the member id: a member's events lie together (per-member aggregation streams) and an
event id is looked up through the primary index. Inserting skips event ids already stored, so a redelivered or
replayed event adds nothing (the engine's replacing merge collapses any duplicate that two writers raced in).
`merges` and `erasures` remember merged and erased member ids, so late events follow a merge and an erased
member's replayed events stay out.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import msgspec
import pyarrow as pa

from services.analytics.facts import COLUMNS, SIGNED_UP, Fact
from services.analytics.readers import Readers
from services.analytics.schema import ACTIVITY as ACTIVITY  # population_store's
from services.analytics.schema import MEMBER_OF_EVENT, MEMBER_TABLES, SCHEMA
from services.analytics.settings import AnalyticsSettings
from services.analytics.tables import arrow_rows, external, keys

Params = Mapping[str, str | int | float]
OF_MEMBER = "member_key = cityHash64({m:String}) AND member_id = {m:String}"


def array_literal(values: Sequence[str]) -> str:
    """A ClickHouse array of strings as a query parameter's text: `['a','b']`."""
    escaped = (v.replace("\\", "\\\\").replace("'", "\\'") for v in values)
    return "[" + ",".join(f"'{v}'" for v in escaped) + "]"


def json_rows(lines: bytes) -> list[dict[str, Any]]:
    """JSONEachRow's lines as dicts, decoded in one call (a JSON text holds no raw line break)."""
    body = lines.strip()
    return [] if not body else cast(list[dict[str, Any]], msgspec.json.decode(b"[" + body.replace(b"\n", b",") + b"]"))


class Engine(Protocol):
    """What a ClickHouse engine does for the store; blocking calls. `batch`: a table of text columns the
    statement reads as `{batch}`."""

    def command(self, sql: str, params: Params | None = None, batch: pa.Table | None = None) -> None: ...
    def rows(self, sql: str, params: Params | None = None, batch: pa.Table | None = None) -> list[dict[str, Any]]: ...
    def insert(self, table: str, rows: pa.Table) -> None: ...
    def close(self) -> None: ...


class Chdb:
    """ClickHouse's engine in this process. A data folder belongs to one process, and a process holds one folder
    at a time (chDB's embedded server), so close the store before opening another."""

    def __init__(self, path: Path) -> None:
        from chdb import session

        path.mkdir(parents=True, exist_ok=True)
        self._session: Any = cast(Any, session).Session(str(path))
        self.readers = Readers(path)  # reads side by side, each on a session of its own

    def command(self, sql: str, params: Params | None = None, batch: pa.Table | None = None) -> None:
        self._query(sql, "Null", params, batch)

    def rows(self, sql: str, params: Params | None = None, batch: pa.Table | None = None) -> list[dict[str, Any]]:
        return json_rows(self._query(sql, "JSONEachRow", params, batch).bytes())

    def _query(self, sql: str, fmt: str, params: Params | None, batch: pa.Table | None) -> Any:
        # `Python(batch)` reads the Arrow table of this frame's variable `batch` in place.
        return self._session.query(sql.replace("{batch}", "Python(batch)"), fmt, params=dict(params or {}))

    def insert(self, table: str, rows: pa.Table) -> None:
        # chDB reads the Arrow table in place (`Python(name)` names a variable of this frame): no text to parse.
        columns = ", ".join(rows.column_names)
        self._session.query(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM Python(rows)")

    def read(self, sql: str, params: Params | None = None) -> list[dict[str, Any]]:
        return json_rows(self.readers.query(sql, dict(params or {})))

    def close(self) -> None:
        self.readers.close()
        self._session.close()


class ClickHouseServer:
    """A ClickHouse server over HTTP (production)."""

    def __init__(self, settings: AnalyticsSettings) -> None:
        import clickhouse_connect

        self._client = clickhouse_connect.get_client(
            dsn=settings.analytics_clickhouse_url,
            username=settings.analytics_clickhouse_user,
            password=settings.analytics_clickhouse_password.get_secret_value(),
        )

    def command(self, sql: str, params: Params | None = None, batch: pa.Table | None = None) -> None:
        self._client.command(
            sql.replace("{batch}", "batch"), parameters=dict(params or {}), external_data=external(batch)
        )

    def rows(self, sql: str, params: Params | None = None, batch: pa.Table | None = None) -> list[dict[str, Any]]:
        sql = sql.replace("{batch}", "batch")
        answer = self._client.raw_query(
            sql, parameters=dict(params or {}), fmt="JSONEachRow", external_data=external(batch)
        )
        return json_rows(answer)

    def insert(self, table: str, rows: pa.Table) -> None:
        self._client.insert_arrow(table, rows)

    def close(self) -> None:
        self._client.close()


class AnalyticsStore:
    """The event facts and the questions asked of them; every method is one or a few SQL statements."""

    def __init__(self, settings: AnalyticsSettings, engine: Engine | None = None) -> None:
        self._settings = settings
        self._engine = engine
        self._lock = threading.Lock()
        self.db = settings.analytics_database

    def _open(self) -> Engine:
        if self._engine is None:
            settings = self._settings
            self._engine = (
                Chdb(settings.analytics_path) if settings.analytics_store == "chdb" else ClickHouseServer(settings)
            )
            self._engine.command(f"CREATE DATABASE IF NOT EXISTS {self.db}")
            for statement in SCHEMA:
                self._engine.command(statement.format(db=self.db))
        return self._engine

    def _call(self, work: Any) -> Any:
        with self._lock:
            return work(self._open())

    async def _run(self, work: Any) -> Any:
        return await asyncio.to_thread(self._call, work)

    # ------------------------------------------------------------------------------------------- generic

    async def open(self) -> None:
        await self._run(lambda engine: None)

    async def rows(self, sql: str, params: Params | None = None) -> list[dict[str, Any]]:
        """The rows of a query; `{db}` in the SQL is the store's database. On chDB reads run side by side (the
        dashboard asks its sections at once); the lock keeps writes one at a time."""
        engine, sql = await self._run(lambda e: e), sql.replace("{db}", self.db)
        if isinstance(engine, Chdb):
            return await asyncio.to_thread(engine.read, sql, params)
        result: list[dict[str, Any]] = await self._run(lambda e: e.rows(sql, params))
        return result

    async def command(self, sql: str, params: Params | None = None, batch: pa.Table | None = None) -> None:
        """Run a statement; `batch`: a table of text columns (`keys`) it reads as `{batch}`."""
        await self._run(lambda e: e.command(sql.replace("{db}", self.db), params, batch))

    async def close(self) -> None:
        def close() -> None:
            with self._lock:
                if self._engine is not None:
                    self._engine.close()
                    self._engine = None

        await asyncio.to_thread(close)

    # ------------------------------------------------------------------------------------------- writing

    async def add(self, rows: Sequence[Fact]) -> int:
        """Insert the rows whose event ids are not stored yet, under the survivor's id when the member was merged,
        and none of erased members. Two look-ups (merged or erased members, stored ids) and one insert, the batch's
        ids passed as a table (`keys`); returns the rows inserted."""
        if not rows:
            return 0

        def work(engine: Engine) -> int:
            members = keys(member_id=list({r.member_id: None for r in rows}))
            known = engine.rows(
                f"SELECT member_id, survivor_id FROM {self.db}.merges FINAL "
                f"WHERE member_id IN (SELECT member_id FROM {{batch}}) UNION ALL SELECT member_id, '' "
                f"FROM {self.db}.erasures WHERE member_id IN (SELECT member_id FROM {{batch}})",
                batch=members,
            )
            fresh = list(rows)
            if known:
                survivors = {r["member_id"]: r["survivor_id"] for r in known if r["survivor_id"]}
                erased = {r["member_id"] for r in known if not r["survivor_id"]}
                fresh = [
                    row if row.member_id not in survivors
                    else row._replace(member_id=survivors[row.member_id], merged_from=row.member_id)
                    for row in rows if row.member_id not in erased
                ]  # fmt: skip
            if not fresh:
                return 0
            batch = keys(member_id=[r.member_id for r in fresh], event_id=[r.event_id for r in fresh])
            stored = {
                r["event_id"]
                for r in engine.rows(
                    f"SELECT event_id FROM {self.db}.events WHERE member_key IN "
                    f"(SELECT cityHash64(member_id) FROM {{batch}}) AND event_id IN (SELECT event_id FROM {{batch}})",
                    batch=batch,
                )
            }
            new = list({r.event_id: r for r in fresh if r.event_id not in stored}.values())
            if new:
                engine.insert(f"{self.db}.events", arrow_rows(new))
                self._forget_profiles(engine, list({r.member_id: None for r in new if r.type == SIGNED_UP}))
            return len(new)

        inserted: int = await self._run(work)
        return inserted

    def _forget_profiles(self, engine: Engine, members: Sequence[str]) -> None:
        """Drop the windows of other starts than a sign-up that these members' windows kept the profile of
        before it changed (a sign-up read after the member's usage events, a merge): the window derivation that
        follows derives them again with the profile as it is now. Usually there are none: one look-up."""
        if not members:
            return
        stale = engine.rows(
            f"SELECT DISTINCT member_id FROM {self.db}.windows WHERE member_key IN "
            f"(SELECT cityHash64(member_id) FROM {{batch}}) AND member_id IN (SELECT member_id FROM {{batch}}) "
            "AND signed_up = 0",
            batch=keys(member_id=members),
        )
        if stale:
            # The deletion names the members in the text: chDB's DELETE cannot read a Python table (it crashes).
            among = "member_key IN (SELECT cityHash64(arrayJoin({m:Array(String)}))) AND member_id IN {m:Array(String)}"
            params = {"m": array_literal([r["member_id"] for r in stale])}
            engine.command(f"DELETE FROM {self.db}.windows WHERE {among} AND signed_up = 0", params)

    async def merge(self, member_id: str, survivor_id: str) -> None:
        """The merged member's events become the survivor's (once, also when the merge is delivered again)."""
        params = {"m": member_id, "s": survivor_id}
        columns = ", ".join(c for c in COLUMNS if c not in ("member_id", "merged_from"))

        def work(engine: Engine) -> None:
            engine.command(f"INSERT INTO {self.db}.merges VALUES ({{m:String}}, {{s:String}})", params)
            # Members merged into this one earlier now belong to its survivor (a replacing table: the last wins).
            engine.command(
                f"INSERT INTO {self.db}.merges SELECT member_id, {{s:String}} FROM {self.db}.merges FINAL "
                f"WHERE survivor_id = {{m:String}}",
                params,
            )
            engine.command(
                f"INSERT INTO {self.db}.events (member_id, merged_from, {columns}) "
                f"SELECT {{s:String}}, if(merged_from = '', member_id, merged_from), {columns} FROM {self.db}.events "
                f"WHERE member_key = cityHash64({{m:String}}) AND member_id = {{m:String}} AND event_id NOT IN "
                f"(SELECT event_id FROM {self.db}.events WHERE member_key = cityHash64({{s:String}}))",
                params,
            )
            self._delete_member(engine, member_id)
            self._forget_profiles(engine, [survivor_id])

        await self._run(work)

    async def erase(self, member_id: str) -> None:
        """Every row of the member goes; their id is kept (pseudonymous) so that replayed events stay out."""

        def work(engine: Engine) -> None:
            engine.command(f"INSERT INTO {self.db}.erasures VALUES ({{m:String}})", {"m": member_id})
            self._delete_member(engine, member_id)

        await self._run(work)

    def _delete_member(self, engine: Engine, member_id: str) -> None:
        params = {"m": member_id}
        for table in MEMBER_TABLES:
            engine.command(f"DELETE FROM {self.db}.{table} WHERE {OF_MEMBER}", params)
        engine.command(f"DELETE FROM {self.db}.next_steps WHERE member_key = cityHash64({{m:String}})", params)

    async def windows_for(self, fingerprint: str, derive_all: Sequence[tuple[str, Params]]) -> bool:
        """The derived tables (windows, frictions) for the rule catalogue in force: derived again from every event
        when the catalogue or their layout is not the one they were derived with (True then); `members` too when
        the store was derived before (another layout)."""

        def work(engine: Engine) -> bool:
            latest = engine.rows(f"SELECT fingerprint FROM {self.db}.catalogue ORDER BY at DESC LIMIT 1")
            if latest and latest[0]["fingerprint"] == fingerprint:
                return False
            if latest:  # a store of another layout: its members too (a fresh store's view filled them)
                engine.command(f"TRUNCATE TABLE {self.db}.members")
                engine.command(f"INSERT INTO {self.db}.members SELECT {MEMBER_OF_EVENT} FROM {self.db}.events")
            for table in ("windows", "frictions"):
                engine.command(f"TRUNCATE TABLE {self.db}.{table}")
            for sql, params in derive_all:
                engine.command(sql.replace("{db}", self.db), params)
            engine.command(f"INSERT INTO {self.db}.catalogue (fingerprint) VALUES ({{f:String}})", {"f": fingerprint})
            return True

        derived: bool = await self._run(work)
        return derived

    async def insert_select(self, sql: str) -> None:
        """Bulk loading (the benchmark): an `INSERT INTO {db}.events ... SELECT` run as is."""
        await self.command(sql)
