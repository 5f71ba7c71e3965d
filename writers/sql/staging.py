"""Committing staged work exactly once: commit markers, moving staged rows, cleaning up.

``commit`` of a handle is one transaction: if ``_syncx_commits`` has no row for (job, run,
subtask, checkpoint, segment), insert that marker, move the segment's rows (``INSERT INTO target
(cols) SELECT cols FROM staging``; upsert modes keep the last row per key) or apply its changes
(:mod:`writers.sql.changes`), and delete them from staging. A second commit of the same handle
finds the marker (and nothing staged): a no-op. ``abort`` deletes the segment's staged rows.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from sync.errors import JobFailedError
from writers.sql.handles import CdcHandle, RowsHandle, SqlHandle
from writers.sql.tables import CDC_STAGE_PREFIX, segment_rows, staging_view

if TYPE_CHECKING:
    from writers.sql.writer import SqlWriter

__all__ = ["Staging"]

log = logging.getLogger(__name__)


class Staging:
    """The writer-wide side of staged work: markers, commit, abort and clean-up of segments."""

    def __init__(self, writer: SqlWriter) -> None:
        self.writer = writer

    # -- handles -----------------------------------------------------------------------------

    def commit(self, handle: SqlHandle) -> None:
        """Make a staged segment visible, once."""
        if isinstance(handle, CdcHandle):
            self.writer.changes.commit(handle)
        elif isinstance(handle, RowsHandle):
            self._commit_rows(handle)
        else:
            msg = f"{self.writer.plugin_name}: cannot commit a {type(handle).__name__}"
            raise JobFailedError(msg)

    def abort(self, handle: SqlHandle) -> None:
        """Delete a segment's staged rows or changes (idempotent)."""
        if isinstance(handle, CdcHandle):
            names = {e.staging for e in handle.targets}
            if handle.deferred:
                self.writer.deferred.drop({handle.segment})
        elif isinstance(handle, RowsHandle):
            names = {handle.table}
        else:
            return
        self.delete(
            handle.schema,
            lambda name: name in names,
            lambda staging: segment_rows(staging, handle),
        )

    def claim(self, conn: Connection, handle: SqlHandle, target: str) -> bool:
        """Insert a handle's commit marker in ``conn``'s open transaction; False (and the
        transaction rolled back) when it is there: committed before, or at this moment by
        another process."""
        markers = self.writer.markers()
        key = {
            "job": handle.job,
            "run": handle.run,
            "subtask": int(handle.subtask),
            "checkpoint": int(handle.checkpoint),
            "segment": handle.segment,
        }
        done = conn.execute(
            sa.select(sa.literal(1))
            .select_from(markers)
            .where(*[markers.c[k] == v for k, v in key.items()])
        ).first()
        if done is None:
            try:
                conn.execute(
                    sa.insert(markers).values(
                        **key,
                        target=target,
                        committed_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    )
                )
                return True
            except sa_exc.IntegrityError:
                pass
        conn.rollback()
        return False

    # -- clean-up ----------------------------------------------------------------------------

    def recover(self, handles: list[SqlHandle]) -> None:
        """Commit ``handles``; delete this job's other staged rows and changes (work of
        checkpoints that never completed) and the markers of older runs."""
        writer = self.writer
        keep = {h.segment for h in handles}
        for handle in handles:
            self.commit(handle)
        if not writer.routes_by_source():
            target = writer.target()
            self.clean(target.info.schema, target.staging_name.rsplit("_", 1)[0], keep)
        self.clean(writer.staging_schema(), CDC_STAGE_PREFIX, keep)
        writer.deferred.drop(keep, keep=True)
        self.prune_markers({h.run for h in handles} | {writer.ctx.run_id})

    def delete(
        self,
        schema: str | None,
        chosen: Callable[[str], bool],
        where: Callable[[sa.Table], sa.ColumnElement[bool]],
    ) -> int:
        """Delete the rows ``where`` selects from every staging table (rows or changes) of
        ``schema`` that ``chosen`` picks by name; how many were deleted."""
        deleted = 0
        with self.writer.engine().begin() as conn:
            for name in sa.inspect(conn).get_table_names(schema=schema):
                if chosen(name):
                    staging = staging_view(name, schema)
                    deleted += conn.execute(sa.delete(staging).where(where(staging))).rowcount
        return deleted

    def clean(self, schema: str | None, prefix: str, keep: set[str]) -> None:
        """Delete this job's staged rows or changes outside the ``keep`` segments from every
        staging table of ``schema`` whose name starts with ``prefix``."""
        job = self.writer.ctx.job_name

        def unfinished(staging: sa.Table) -> sa.ColumnElement[bool]:
            condition = staging.c._syncx_job == job
            if keep:
                condition = sa.and_(condition, staging.c._syncx_segment.not_in(sorted(keep)))
            return condition

        deleted = self.delete(schema, lambda name: name.startswith(prefix), unfinished)
        if deleted:
            log.info("removed %d staged row(s) of unfinished checkpoints", deleted)

    def prune_markers(self, runs: set[str]) -> None:
        """Delete this job's commit markers of runs other than ``runs``."""
        writer = self.writer
        markers = writer.markers()
        with writer.engine().begin() as conn:
            conn.execute(
                sa.delete(markers).where(
                    markers.c.job == writer.ctx.job_name, markers.c.run.not_in(sorted(runs))
                )
            )

    # -- rows --------------------------------------------------------------------------------

    def _commit_rows(self, handle: RowsHandle) -> None:
        """Move a sealed segment of rows from staging into the target, once."""
        writer = self.writer
        target = writer.target()
        staging = staging_view(handle.table, handle.schema, handle.columns)
        mine = segment_rows(staging, handle)
        columns = list(handle.columns)
        selected = sa.select(*[staging.c[c] for c in columns]).where(mine)
        if target.key:
            latest = (
                sa.select(sa.func.max(staging.c._syncx_seq))
                .where(mine)
                .group_by(*[staging.c[k] for k in target.key])
            )
            nulls = [staging.c[k].is_(None) for k in target.key]  # NULL keys never conflict
            selected = selected.where(sa.or_(staging.c._syncx_seq.in_(latest), *nulls))
            statement = writer.upsert_statement(target.table, target.key, columns, selected)
        else:
            statement = sa.insert(target.table).from_select(
                columns, selected.order_by(staging.c._syncx_seq)
            )
        with writer.engine().connect() as conn:
            conn.begin()
            if not self.claim(conn, handle, target.info.qualified):
                return
            try:
                moved = conn.execute(statement).rowcount
                conn.execute(sa.delete(staging).where(mine))
                conn.commit()
            except sa_exc.DBAPIError as exc:
                conn.rollback()
                msg = (
                    f"commit of checkpoint {handle.checkpoint} (subtask {handle.subtask}) into "
                    f"'{target.info.qualified}' failed: {writer.db_message(exc)}. The rows stay "
                    f"in the staging table '{handle.table}' (_syncx_segment = "
                    f"'{handle.segment}'); remove the conflict and run again with --restore latest"
                )
                raise JobFailedError(msg) from exc
        log.debug(
            "committed %s rows of checkpoint %s subtask %s",
            moved,
            handle.checkpoint,
            handle.subtask,
        )
