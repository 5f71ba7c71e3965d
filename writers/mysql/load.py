"""Rows into a MySQL table: ``LOAD DATA LOCAL INFILE`` from Arrow text, or multi-row statements.

See "Fast path" in the package docs. Also what applying changes by key writes (deletes, then
``REPLACE`` of each key's last upsert).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from libs import cdc
from libs.mysql.connect import dirty_kind, error_text, is_row_error
from libs.mysql.text import Form, column_form, quote_ident, sql_values
from libs.mysql.types import mysql_type
from libs.sql import TableInfo
from libs.types import row_of
from sync.contract import DirtyRecord
from writers.sql import CdcTarget, WriteMode

__all__ = [
    "Destination",
    "Execute",
    "Insert",
    "apply_changes",
    "bit_columns",
    "qualified",
    "scratch_dir",
]

Execute = Callable[..., int]
"""Runs one statement (with optional parameters) in some transaction; the affected row count."""


@dataclass(frozen=True)
class Destination:
    """A table that rows are loaded or inserted into, and how they meet the rows there."""

    table: str
    """Quoted and qualified."""
    mode: WriteMode
    key: tuple[str, ...]
    """The key of replace/update (empty: plain inserts)."""
    bits: frozenset[str]
    """Columns of type BIT (loaded through ``CAST(... AS UNSIGNED)``)."""

    def forms(self, schema: pa.Schema) -> list[Form]:
        """How each column of ``schema`` is written."""
        return [column_form(f, f.name in self.bits) for f in schema]

    def insert(
        self, execute: Execute, batch: pa.RecordBatch, *, size: int, secret: str | None
    ) -> list[DirtyRecord]:
        """Multi-row statements of ``size`` rows; a failing one is split until the bad rows are
        found (they become dirty records)."""
        names = batch.schema.names
        columns = ", ".join(quote_ident(n) for n in names)
        verb = "REPLACE" if self.mode == "replace" and self.key else "INSERT"
        prefix = f"{verb} INTO {self.table} ({columns}) VALUES ".encode()
        suffix = b""
        if self.mode == "update" and self.key:
            updates = [n for n in names if n not in self.key] or [self.key[0]]
            suffix = (
                " ON DUPLICATE KEY UPDATE "
                + ", ".join(f"{quote_ident(n)} = VALUES({quote_ident(n)})" for n in updates)
            ).encode()
        rows = sql_values(batch, self.forms(batch.schema))
        dirty: list[DirtyRecord] = []
        pending = [(start, min(start + size, len(rows))) for start in range(0, len(rows), size)]
        while pending:
            start, end = pending.pop(0)
            try:
                execute(prefix + b",".join(rows[start:end]) + suffix)
            except Exception as exc:
                if not is_row_error(exc):
                    raise
                if end - start == 1:
                    dirty.append(
                        DirtyRecord(
                            row_of(batch, start), error_text(exc, [secret]), dirty_kind(exc)
                        )
                    )
                    continue
                middle = (start + end) // 2
                pending[0:0] = [(start, middle), (middle, end)]
        return dirty


Insert = Callable[[pa.RecordBatch, Destination], list[DirtyRecord]]
"""Writes rows into a destination in the caller's transaction; the rejected rows."""


def apply_changes(
    execute: Execute,
    target: CdcTarget,
    rows: pa.RecordBatch,
    upsert: list[bool],
    insert: Insert,
    *,
    size: int,
) -> list[DirtyRecord]:
    """Apply conformed changes to ``target`` in the caller's transaction: of each key's last
    change, delete the keys it deletes and ``REPLACE`` the rows it upserts; the rejected
    rows. ``REPLACE`` locks only the keys it writes, where a ``DELETE`` of keys that are not
    there may scan a small table and wait on every row another subtask is writing."""
    table = qualified(target.info.schema, target.info.name)
    into = Destination(table, "replace", tuple(target.key), bit_columns(target.info))
    keys = rows.select(target.key)
    values = list(zip(*(column.to_pylist() for column in keys.columns), strict=True))
    deletes, upserts = cdc.net_effect(values, upsert)
    literals = sql_values(keys.take(pa.array(deletes, pa.int64())), into.forms(keys.schema))
    where = ", ".join(quote_ident(k) for k in target.key)
    prefix = f"DELETE FROM {table} WHERE ({where}) IN (".encode()
    for start in range(0, len(literals), size):
        execute(prefix + b",".join(literals[start : start + size]) + b")")
    if not upserts:
        return []
    return insert(rows.take(pa.array(upserts, pa.int64())), into)


def qualified(schema: str | None, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}" if schema else quote_ident(name)


def bit_columns(info: TableInfo) -> frozenset[str]:
    return frozenset(c.name for c in info.columns if mysql_type(c.type).wire == "bit")


def scratch_dir() -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    return Path(tempfile.gettempdir())
