"""The tables ``sqlwriter`` creates beside its targets: staging tables and commit markers.

In the target's schema: a **staging table** of rows per target layout
(``_syncx_stage_<hash of target>_<hash of its column names and types>``), a **change-staging
table** per CDC target (``_syncx_cdc_<hash of target>_<hash of its layout and key>``; the
target's columns plus ``_syncx_op``) — both with the target's columns, nullable and without
constraints, plus ``_syncx_job``, ``_syncx_run``, ``_syncx_subtask``, ``_syncx_segment``,
``_syncx_seq`` — and the **marker table** ``_syncx_commits``: one row per committed segment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection
from sqlalchemy.sql import sqltypes

from libs.sql import ColumnInfo, TableInfo, ident
from writers.sql.handles import SqlHandle

__all__ = [
    "CDC_STAGE_PREFIX",
    "MARKER_TABLE",
    "META",
    "STAGE_PREFIX",
    "CdcTarget",
    "Reflected",
    "Target",
    "cdc_staging_table",
    "marker_table",
    "name_hash",
    "segment_rows",
    "staging_table",
    "staging_view",
    "table_exists",
    "type_text",
]

STAGE_PREFIX = "_syncx_stage_"
MARKER_TABLE = "_syncx_commits"
META = ("_syncx_op", "_syncx_job", "_syncx_run", "_syncx_subtask", "_syncx_segment")
"""Metadata columns of the staging tables besides ``_syncx_seq`` (``_syncx_op``: changes only)."""


@dataclass(frozen=True)
class Reflected:
    """A reflected table the writer writes into, and its staging table."""

    info: TableInfo
    table: sa.Table
    """All its columns, identifiers always quoted."""
    fields: dict[str, pa.Field]
    """Arrow field per column (its type and nullability), for :func:`libs.types.conform`."""
    key: list[str]
    staging_name: str
    staging: sa.Table

    def resolve(self, name: str) -> str | None:
        """The column called ``name`` (case-insensitively when unambiguous)."""
        found = self.info.column(name)
        return found.name if found is not None else None


@dataclass(frozen=True)
class Target(Reflected):
    """The job's table for rows: ``key`` is the upsert key (replace/update), else empty; with
    its staging table of rows and the marker table."""

    markers: sa.Table


@dataclass(frozen=True)
class CdcTarget(Reflected):
    """A table that CDC changes are applied to: ``key`` is what they are applied by (primary
    key, or ``keyColumns``); with its change-staging table."""


def type_text(sql_type: Any, dialect: Any) -> str:
    try:
        return str(sql_type.compile(dialect=dialect))
    except sa_exc.CompileError:
        return type(sql_type).__name__


def _column_type(column: ColumnInfo, dialect: str) -> Any:
    if isinstance(column.type, sqltypes.NullType):
        return sqltypes.BLOB() if dialect == "sqlite" else sqltypes.Text()
    return column.type


def _new_staging(info: TableInfo, name: str, dialect: str, *, changes: bool) -> sa.Table:
    """A staging table: the target's columns (nullable, no constraints), ``_syncx_op`` when it
    holds changes, and the segment metadata."""
    columns: list[sa.Column[Any]] = [
        sa.Column(ident(c.name), _column_type(c, dialect), nullable=True) for c in info.columns
    ]
    if changes:
        columns.append(sa.Column("_syncx_op", sa.String(1), nullable=False))
    columns += [
        sa.Column("_syncx_job", sa.String(200), nullable=False),
        sa.Column("_syncx_run", sa.String(64), nullable=False),
        sa.Column("_syncx_subtask", sa.Integer, nullable=False),
        sa.Column("_syncx_segment", sa.String(32), nullable=False),
        sa.Column("_syncx_seq", sa.BigInteger, nullable=False),
    ]
    return sa.Table(
        ident(name), sa.MetaData(), *columns, schema=ident(info.schema) if info.schema else None
    )


def staging_table(info: TableInfo, name: str, dialect: str) -> sa.Table:
    """The staging table of rows, indexed by segment and by the target's unique keys."""
    table = _new_staging(info, name, dialect, changes=False)
    sa.Index(ident(f"{name}_seg"), table.c._syncx_job, table.c._syncx_segment)
    for position, key in enumerate(info.unique_keys):
        sa.Index(ident(f"{name}_k{position}"), *[table.c[k] for k in key])
    return table


def marker_table(schema: str | None) -> sa.Table:
    return sa.Table(
        MARKER_TABLE,
        sa.MetaData(),
        sa.Column("job", sa.String(200), primary_key=True),
        sa.Column("run", sa.String(64), primary_key=True),
        sa.Column("subtask", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("checkpoint", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("segment", sa.String(32), primary_key=True),
        sa.Column("target", sa.String(512), nullable=False),
        sa.Column("committed_at", sa.String(40), nullable=False),
        schema=ident(schema) if schema else None,
    )


CDC_STAGE_PREFIX = "_syncx_cdc_"
"""Change-staging tables: ``_syncx_cdc_<hash of target>_<hash of its columns and key>``."""


def name_hash(qualified: str) -> str:
    return hashlib.sha256(qualified.encode()).hexdigest()[:10]


def cdc_staging_table(info: TableInfo, name: str, dialect: str, key: list[str]) -> sa.Table:
    """The change-staging table, indexed by (job, segment, key, seq) for the commit's joins."""
    table = _new_staging(info, name, dialect, changes=True)
    sa.Index(
        ident(f"{name}_k"),
        table.c._syncx_job,
        table.c._syncx_segment,
        *[table.c[k] for k in key],
        table.c._syncx_seq,
    )
    return table


def staging_view(name: str, schema: str | None, columns: Sequence[str] = ()) -> sa.Table:
    """Enough of a staging table (of rows or of changes) to select from and delete by:
    ``columns`` and the metadata, untyped."""
    return sa.Table(
        ident(name),
        sa.MetaData(),
        *[sa.Column(ident(c)) for c in dict.fromkeys(columns)],
        *[sa.Column(c) for c in META],
        sa.Column("_syncx_seq", sa.BigInteger),
        schema=ident(schema) if schema else None,
    )


def segment_rows(staging: sa.Table, handle: SqlHandle) -> sa.ColumnElement[bool]:
    """The staged rows of a handle's segment."""
    return sa.and_(staging.c._syncx_job == handle.job, staging.c._syncx_segment == handle.segment)


def table_exists(conn: Connection, name: str, schema: str | None) -> bool:
    return bool(sa.inspect(conn).has_table(name, schema=schema))
