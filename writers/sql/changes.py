"""CDC changes applied by key: change-staging tables, the commit that applies them, and
conforming changes to a target's columns.

Exactly-once ``sqlwriter`` stages changes, in order, in a change-staging table per target
(:mod:`writers.sql.tables`); the commit, in one transaction with the marker, deletes per target
every key with a staged change and inserts each key's last upsert. Both statements are linear in
the number of staged changes on every database: the delete is a join (``DELETE ... USING`` on
PostgreSQL, a multi-table ``DELETE`` on MySQL) or ``IN (SELECT ...)`` on SQLite, and each key's
last change is picked with ``ROW_NUMBER() OVER (PARTITION BY key ORDER BY seq DESC)`` — one sort —
instead of a ``NOT EXISTS (later change of the same key)`` per change, which PostgreSQL and
MariaDB ran as a nested loop over a staging table they had no statistics for. A deadlock with
another subtask's commit is retried (the transaction was rolled back whole).
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection
from sqlalchemy.sql import sqltypes

from libs import cdc
from libs.sql import ColumnInfo, TableInfo, ident, key_in
from libs.types import conform
from sync.contract import DirtyRecord
from sync.errors import ConfigIssue, JobFailedError, JobFileError
from writers.sql.handles import CdcEntry, CdcHandle
from writers.sql.rows import Rows, as_rows, insert_all
from writers.sql.tables import (
    CDC_STAGE_PREFIX,
    CdcTarget,
    cdc_staging_table,
    name_hash,
    staging_view,
    table_exists,
    type_text,
)

if TYPE_CHECKING:
    from writers.sql.writer import SqlWriter

__all__ = ["ChangeTables", "apply_by_key", "conform_changes"]

log = logging.getLogger(__name__)

COMMIT_ATTEMPTS = 10
"""Tries of a commit that loses a deadlock (or a lock wait) to another subtask's."""


class _TransientCommitError(Exception):
    """A commit lost a deadlock or timed out on a lock: try it again."""


class ChangeTables:
    """The writer-wide side of changes: targets by source table, their change-staging tables,
    committing and purging staged changes."""

    def __init__(self, writer: SqlWriter) -> None:
        self.writer = writer
        self._targets: dict[str, CdcTarget] = {}
        self._ready: set[str] = set()

    # -- targets -----------------------------------------------------------------------------

    def target_name(self, source_table: str) -> str:
        """The target table of a source table's changes (``db.table``)."""
        writer = self.writer
        if writer.routes_by_source():
            return source_table.rpartition(".")[2]
        name = writer.params.table_name()
        assert name is not None
        return name

    def target(self, source_table: str) -> CdcTarget:
        """The reflected target of ``source_table``'s changes (cached until a DDL changes it)."""
        name = self.target_name(source_table)
        with self.writer.lock:
            found = self._targets.get(name)
            if found is None:
                found = self._reflect(name)
                self._targets[name] = found
            return found

    def forget(self, name: str) -> None:
        """Reflect ``name`` again on next use (its layout changed)."""
        with self.writer.lock:
            self._targets.pop(name, None)

    def ensure_staging(self, target: CdcTarget) -> None:
        """Create the target's change-staging table and the marker table when missing."""
        writer = self.writer
        with writer.lock:
            if target.staging_name in self._ready:
                return
            with writer.engine().begin() as conn:
                target.staging.create(conn, checkfirst=True)
                writer.markers().create(conn, checkfirst=True)
            self._ready.add(target.staging_name)

    def field(self, column: ColumnInfo) -> pa.Field:
        """The Arrow field changes are converted to for ``column``: the writer's column field,
        except where the generic mapping cannot hold a MySQL value (BIT as an integer, not
        text; TIME as a duration, which may be negative or beyond a day)."""
        field = self.writer.column_field(column)
        if type(column.type).__name__ == "BIT" and pa.types.is_string(field.type):
            field = pa.field(column.name, pa.int64())
        elif isinstance(column.type, sqltypes.Time) and pa.types.is_time(field.type):
            field = pa.field(column.name, pa.duration("us"))
        return field.with_nullable(True)

    def _reflect(self, name: str) -> CdcTarget:
        writer = self.writer
        params = writer.params
        engine = writer.engine()
        info = writer.reflect(name)
        if params.key_columns:
            key = []
            for index, column in enumerate(params.key_columns):
                found = info.column(column)
                if found is None:
                    path = f"{writer.param_path}.keyColumns[{index}]"
                    raise JobFileError([ConfigIssue(path, info.missing(column))])
                key.append(found.name)
        elif info.primary_key:
            key = list(info.primary_key)
        elif params.update_key:
            key = [c for c in (_resolve_in(info, k) for k in params.update_key) if c]
        else:
            msg = (
                f"table '{info.qualified}' has no primary key, so changes cannot be applied to it "
                f"by key: add a primary key to it, or name the key columns in "
                f"{writer.param_path}.keyColumns"
            )
            raise JobFailedError(msg)
        fields = {c.name: self.field(c) for c in info.columns}
        signature = (
            "|".join(f"{c.name}:{type_text(c.type, engine.dialect)}" for c in info.columns)
            + "|key:"
            + ",".join(key)
        )
        staging_name = (
            f"{CDC_STAGE_PREFIX}{name_hash(info.qualified)}_"
            f"{hashlib.sha256(signature.encode()).hexdigest()[:10]}"
        )
        staging = cdc_staging_table(info, staging_name, engine.dialect.name, key)
        return CdcTarget(info, info.sa_table(), fields, key, staging_name, staging)

    # -- committing --------------------------------------------------------------------------

    def commit(self, handle: CdcHandle) -> None:
        """Apply a sealed segment of staged changes, once: per target (in order of first use),
        delete every key with a staged change, then insert each key's last upsert; then replay
        what the segment deferred behind a DDL."""
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                self._commit_once(handle)
                break
            except _TransientCommitError as exc:
                if attempt == COMMIT_ATTEMPTS:
                    raise JobFailedError(str(exc)) from exc.__cause__
                log.info("cdc: commit of checkpoint %s retried: %s", handle.checkpoint, exc)
                time.sleep(0.05 * attempt + random.random() * 0.1)
        if handle.deferred:
            self.writer.deferred.replay(handle)

    def apply_now(self, conn: Connection, change: cdc.Changes) -> list[DirtyRecord]:
        """Apply a batch of changes by key in ``conn``'s transaction; the rejected rows."""
        target = self.target(change.table)
        batch, upsert, dirty = conform_changes(target, change)
        if not batch.num_rows:
            return dirty
        rows, unbound, originals = as_rows(batch, target.table)
        upsert = [upsert[i] for i in originals]
        return (
            dirty
            + unbound
            + apply_by_key(self.writer, conn, target, batch, rows, upsert, originals)
        )

    def _commit_once(self, handle: CdcHandle) -> None:
        writer = self.writer
        with writer.engine().connect() as conn:
            writer.dialect.change_session(conn)
            conn.begin()
            if not writer.staging.claim(conn, handle, "cdc"):
                return
            try:
                for entry in handle.targets:
                    self._apply_entry(conn, handle, entry)
                conn.commit()
            except sa_exc.DBAPIError as exc:
                conn.rollback()
                if writer.dialect.is_transient(exc):
                    raise _TransientCommitError(writer.db_message(exc)) from exc
                msg = (
                    f"applying the changes of checkpoint {handle.checkpoint} (subtask "
                    f"{handle.subtask}) failed: {writer.db_message(exc)}. They stay staged "
                    f"(_syncx_segment = '{handle.segment}'); remove the cause and run again "
                    "with --restore latest"
                )
                raise JobFailedError(msg) from exc

    def _apply_entry(self, conn: Connection, handle: CdcHandle, entry: CdcEntry) -> None:
        """Apply one target's staged changes of a segment: delete the keys, insert each key's
        last upsert (picked by a window function: linear, see the module docs)."""
        schema = handle.schema
        name = entry.table
        if not table_exists(conn, entry.staging, schema):
            return
        if not table_exists(conn, name, schema):
            log.warning("cdc: target table %s is gone; its staged changes are dropped", name)
            return
        current = {c["name"] for c in sa.inspect(conn).get_columns(name, schema=schema)}
        columns = [c for c in entry.columns if c in current]
        key = list(entry.key)
        staging = staging_view(entry.staging, schema, [*entry.columns, *key])
        target = sa.Table(
            ident(name),
            sa.MetaData(),
            *[sa.Column(ident(c)) for c in sorted(set(columns) | set(key))],
            schema=ident(schema) if schema else None,
        )
        low, high = entry.seq
        mine = sa.and_(
            staging.c._syncx_job == handle.job,
            staging.c._syncx_segment == handle.segment,
            staging.c._syncx_seq.between(low, high),
        )
        self.writer.dialect.delete_staged_keys(conn, target, staging, key, mine)
        rank = (
            sa.func.row_number()
            .over(
                partition_by=[staging.c[k] for k in key],
                order_by=staging.c._syncx_seq.desc(),
            )
            .label("_syncx_rank")
        )
        ranked = (
            sa.select(*[staging.c[c] for c in columns], staging.c._syncx_op, rank)
            .where(mine)
            .subquery("_syncx_latest")
        )
        latest = sa.select(*[ranked.c[c] for c in columns]).where(
            ranked.c._syncx_rank == 1, ranked.c._syncx_op == "u"
        )
        conn.execute(sa.insert(target).from_select(columns, latest))
        conn.execute(sa.delete(staging).where(mine))

    def purge(self, target_name: str) -> None:
        """Delete every staged change of this job for ``target_name`` (a DROP or TRUNCATE of
        the table makes them moot; committing them later would be wrong)."""
        writer = self.writer
        prefix = f"{CDC_STAGE_PREFIX}{name_hash(writer.qualified_target(target_name))}_"
        writer.staging.delete(
            writer.params.schema_name(),
            lambda name: name.startswith(prefix),
            lambda staging: staging.c._syncx_job == writer.ctx.job_name,
        )


def apply_by_key(
    writer: SqlWriter,
    conn: Connection,
    target: CdcTarget,
    batch: pa.RecordBatch,
    rows: Rows,
    upsert: list[bool],
    originals: list[int],
) -> list[DirtyRecord]:
    """Delete every key the changes touch and insert each key's last upsert, in ``conn``'s
    transaction (idempotent: applied again, it ends in the same rows); the rejected rows."""
    keys = [tuple(row[k] for k in target.key) for row in rows]
    deletes, inserts = cdc.net_effect(keys, upsert)
    columns = [target.table.c[k] for k in target.key]
    for condition in key_in(columns, [keys[i] for i in deletes + inserts]):
        conn.execute(sa.delete(target.table).where(condition))
    return insert_all(
        writer,
        conn,
        target.table,
        [rows[i] for i in inserts],
        batch,
        [originals[i] for i in inserts],
        writer.dialect.insert_rows,
    )


def _resolve_in(info: TableInfo, name: str) -> str | None:
    found = info.column(name)
    return found.name if found is not None else None


def conform_changes(
    target: CdcTarget, changes: cdc.Changes
) -> tuple[pa.RecordBatch, list[bool], list[DirtyRecord]]:
    """The changes' rows under the target's column names and types, with whether each upserts;
    rows that do not convert are dirty. Delete rows keep only their key (other columns cannot
    be bad)."""
    rows = changes.rows
    names: list[str] = []
    missing: list[str] = []
    for name in rows.schema.names:
        found = target.resolve(name)
        if found is None:
            missing.append(name)
        names.append(found or name)
    if missing:
        msg = (
            f"changes of {changes.table} carry column(s) {', '.join(missing)} that target "
            f"table '{target.info.qualified}' lacks: the source table's layout changed (a DDL "
            "skipped with ddl: skip?). Change the target to match (or use ddl: apply) and "
            "resume with --restore latest"
        )
        raise JobFailedError(msg)
    absent = [k for k in target.key if k not in names]
    if absent:
        msg = (
            f"changes of {changes.table} lack the key column(s) {', '.join(absent)} of "
            f"target '{target.info.qualified}'"
        )
        raise JobFailedError(msg)
    mask = pa.array(changes.upsert, pa.bool_())
    arrays = []
    for name, column in zip(names, rows.columns, strict=True):
        if name not in target.key and not all(changes.upsert):
            arrays.append(pc.if_else(mask, column, pa.nulls(len(column), column.type)))
        else:
            arrays.append(column)
    marker = "__syncx_row"
    arrays.append(pa.array(range(rows.num_rows), pa.int64()))
    tagged = pa.RecordBatch.from_arrays(arrays, names=[*names, marker])
    schema = pa.schema([target.fields[n] for n in names] + [pa.field(marker, pa.int64())])
    conformed, dirty = conform(tagged, schema)
    kept = conformed.column(marker).to_pylist()
    upsert = [changes.upsert[i] for i in kept]
    return conformed.select(names), upsert, dirty
