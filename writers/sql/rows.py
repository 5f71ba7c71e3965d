"""Rows as Python values and inserting them chunk by chunk, a rejected row at a time."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection
from sqlalchemy.sql import sqltypes

from libs.types import row_of
from sync.contract import DirtyRecord

if TYPE_CHECKING:
    from writers.sql.writer import SqlWriter

__all__ = [
    "Insert",
    "Rows",
    "as_rows",
    "insert_all",
    "is_row_error",
    "last_per_key",
    "python_columns",
    "value_converters",
]

Rows = list[dict[str, Any]]
Insert = Callable[[Connection, sa.Table, Rows], None]
"""Inserts rows into a table in the caller's transaction (a dialect's bulk insert, an upsert)."""

_ROW_ERRORS = (sa_exc.IntegrityError, sa_exc.DataError)


def is_row_error(exc: BaseException) -> bool:
    """A statement error caused by the data (a bad row), not by the connection or the SQL."""
    if isinstance(exc, _ROW_ERRORS):
        return True
    return isinstance(exc, sa_exc.StatementError) and not isinstance(exc, sa_exc.DBAPIError)


def value_converters(names: Sequence[str], table: sa.Table) -> list[Callable[[Any], Any] | None]:
    """How Arrow's Python values become what a column's SQLAlchemy type binds."""
    converters: list[Callable[[Any], Any] | None] = []
    for name in names:
        sql_type = table.c[name].type
        if isinstance(sql_type, sqltypes.JSON):
            converters.append(json.loads)
        elif isinstance(sql_type, sqltypes.Uuid) and sql_type.as_uuid:
            converters.append(uuid.UUID)
        else:
            converters.append(None)
    return converters


def python_columns(
    batch: pa.RecordBatch, table: sa.Table
) -> tuple[list[list[Any]], list[DirtyRecord], list[int] | None]:
    """Column-wise Python values of ``batch`` for the columns of ``table``; values a column's
    type cannot bind become dirty. Also the rows kept (``None``: all)."""
    converters = value_converters(batch.schema.names, table)
    columns: list[list[Any]] = []
    bad: dict[int, DirtyRecord] = {}
    for position, convert in enumerate(converters):
        values = batch.column(position).to_pylist()
        if convert is not None:
            converted: list[Any] = []
            for index, value in enumerate(values):
                try:
                    converted.append(None if value is None else convert(value))
                except (ValueError, TypeError) as exc:
                    name = batch.schema.names[position]
                    bad.setdefault(
                        index,
                        DirtyRecord(row_of(batch, index), f"{name}: {exc}", "conversion", name),
                    )
                    converted.append(None)
            values = converted
        columns.append(values)
    keep = [i for i in range(batch.num_rows) if i not in bad] if bad else None
    return columns, list(bad.values()), keep


def as_rows(batch: pa.RecordBatch, table: sa.Table) -> tuple[Rows, list[DirtyRecord], list[int]]:
    """``batch`` as row dicts bound for ``table``, the rows that do not bind (dirty), and the
    batch row number of each row returned."""
    names = batch.schema.names
    columns, dirty, keep = python_columns(batch, table)
    rows = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    if keep is None:
        return rows, dirty, list(range(batch.num_rows))
    return [rows[i] for i in keep], dirty, keep


def insert_all(
    writer: SqlWriter,
    conn: Connection,
    table: sa.Table,
    rows: list[dict[str, Any]],
    batch: pa.RecordBatch,
    originals: list[int],
    insert: Callable[[Connection, sa.Table, list[dict[str, Any]]], None],
) -> list[DirtyRecord]:
    """Insert ``rows`` in chunks of ``batchSize``, each in a SAVEPOINT; a chunk the database
    rejects row by row. The rejected rows (dirty records of ``batch``'s ``originals``)."""
    size = writer.params.batch_size
    dirty: list[DirtyRecord] = []
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        try:
            with conn.begin_nested():
                insert(conn, table, chunk)
            continue
        except sa_exc.StatementError as exc:
            if not is_row_error(exc):
                raise
        for row, original in zip(chunk, originals[start : start + size], strict=True):
            try:
                with conn.begin_nested():
                    insert(conn, table, [row])
            except sa_exc.StatementError as exc:
                if not is_row_error(exc):
                    raise
                kind = writer.dialect.classify_error(exc)
                dirty.append(DirtyRecord(row_of(batch, original), writer.db_message(exc), kind))
    return dirty


def last_per_key(
    rows: list[dict[str, Any]], originals: list[int], key: Sequence[str]
) -> tuple[list[dict[str, Any]], list[int]]:
    """Keep the last row of each key (one upsert statement cannot touch a row twice)."""
    last: dict[Any, int] = {}
    for index, row in enumerate(rows):
        value = tuple(row[k] for k in key)
        last[value if None not in value else ("\0null", index)] = index
    if len(last) == len(rows):
        return rows, originals
    keep = sorted(last.values())
    return [rows[i] for i in keep], [originals[i] for i in keep]
