"""ChunJun's ``transformer.transformSql``: a SQL projection/filter applied to every batch.

ChunJun runs it as Flink SQL over the reader's rows (``select id, name from sourceTable where
...``). syncx runs the same statement with DuckDB over each Arrow batch, so it must be row-wise
(projection, filter, scalar functions): aggregates or joins would see one batch at a time and are
refused before the job starts.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

import pyarrow as pa

from sync.errors import JobFileError
from sync.model import TableRef, TransformerSpec
from sync.registry import require

__all__ = ["build_transform"]

_NOT_ROW_WISE = re.compile(
    r"\b(group\s+by|join|over\s*\(|having|count\s*\(|sum\s*\(|avg\s*\(|min\s*\(|max\s*\()", re.I
)
_DEFAULT_TABLE = "sourceTable"


def build_transform(
    spec: TransformerSpec | None, table: TableRef | None
) -> Callable[[pa.RecordBatch], pa.RecordBatch] | None:
    """A batch → batch function for ``spec``, or ``None`` when the job has no transformer."""
    if spec is None:
        return None
    sql = spec.transform_sql
    found = _NOT_ROW_WISE.search(sql)
    if found:
        msg = (
            f"job.content[0].transformer.transformSql: '{found.group(0)}' is not row-wise; syncx "
            "applies the statement to each batch, so only projections, filters and scalar "
            "functions are supported"
        )
        raise JobFileError(msg)
    duckdb = require("duckdb", "transform", "transformer.transformSql")
    name = table.table_name if table else _DEFAULT_TABLE
    local = threading.local()

    def transform(batch: pa.RecordBatch) -> pa.RecordBatch:
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = duckdb.connect()
        connection.register(name, pa.Table.from_batches([batch]))
        try:
            relation = connection.sql(sql)
            result = (
                relation.to_arrow_table()
                if hasattr(relation, "to_arrow_table")
                else relation.arrow()
            )
        except duckdb.Error as exc:
            msg = f"job.content[0].transformer.transformSql failed: {exc}"
            raise JobFileError(msg) from exc
        finally:
            connection.unregister(name)
        batches = result.combine_chunks().to_batches()
        return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=result.schema)

    return transform
