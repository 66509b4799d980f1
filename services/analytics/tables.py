"""The store's input as Arrow tables, which both engines read without parsing text: a batch's rows
(`arrow_rows`), its keys (`keys`, read by a statement as `{batch}`), and those as a ClickHouse server's external
data (`external`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from services.analytics.facts import COLUMNS, TIMES, Fact


def arrow_rows(rows: Sequence[Fact]) -> pa.Table:
    """Rows as one columnar Arrow table: both engines insert it without parsing text (20x faster than JSON). The
    rows are tuples: one `zip` makes the columns. Instants are epoch milliseconds."""
    columns: dict[str, pa.Array] = {}
    for name, values in zip(COLUMNS, zip(*rows, strict=True), strict=False):
        if name in TIMES:
            columns[name] = pa.array(values, type=pa.int64()).cast(_INSTANT)
        else:
            columns[name] = pa.array(values, type=pa.float64() if name == "seconds" else pa.string())
    return pa.table(columns)


_INSTANT = pa.timestamp("ms", tz="UTC")


def keys(**columns: Sequence[str]) -> pa.Table:
    """A batch's keys (member and event ids) as the table a statement reads as `{batch}`: on either engine a
    column read in place, not a text parameter parsed (a 20,000-id array literal costs 0.1 s each time)."""
    return pa.table({name: pa.array(values, type=pa.string()) for name, values in columns.items()})


def external(batch: pa.Table | None) -> Any:
    """The batch as the server's external table `batch` (Arrow stream, text columns), sent with the query."""
    if batch is None:
        return None
    from clickhouse_connect.driver.external import ExternalData

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as stream:
        stream.write_table(batch)
    structure = ", ".join(f"{name} String" for name in batch.column_names)
    return ExternalData(file_name="batch", data=sink.getvalue().to_pybytes(), fmt="ArrowStream", structure=structure)
