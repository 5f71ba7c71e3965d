"""Changes deferred behind a DDL until the checkpoint before them is committed.

A DDL must not run before the changes that precede it are committed: if the job is killed after
the DDL ran and before the next checkpoint, the restore replays those earlier changes into a
table whose layout they no longer fit (a dropped column). So ``sqlwriter`` exactly-once (like
``mysqlwriter``) *defers* a DDL and every change after it in the same segment: they are stored,
in order, as Arrow IPC in ``_syncx_deferred`` (owner = job identity, segment, seq, payload), each
in a short transaction. The segment's commit applies its staged changes, then *replays* the
deferred records in order: a DDL runs (idempotently) and then its record is deleted; a batch of
changes is applied by key in a transaction that also deletes its record. A record gone means
done, so a commit interrupted anywhere and repeated by a restore resumes where it stopped,
repeating at most the last DDL, which then finds its work done. An aborted segment's records
are deleted; ``begin`` deletes this job's records no restored handle names.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pyarrow as pa
import sqlalchemy as sa

from libs import cdc
from sync.errors import FatalError
from writers.sql.ddl import apply_ddl

if TYPE_CHECKING:
    from writers.sql.handles import SqlHandle
    from writers.sql.writer import SqlWriter

__all__ = ["DEFERRED_BYTES", "DEFERRED_TABLE", "Deferred", "deferred_table", "payloads"]

log = logging.getLogger(__name__)

DEFERRED_TABLE = "_syncx_deferred"
DEFERRED_BYTES = 4 << 20
"""A deferred batch is stored in slices of about this many bytes (below max_allowed_packet)."""


def deferred_table(schema: str | None) -> sa.Table:
    """``_syncx_deferred`` in ``schema`` (beside the marker table)."""
    return sa.Table(
        DEFERRED_TABLE,
        sa.MetaData(),
        sa.Column("owner", sa.String(32), primary_key=True),
        sa.Column("segment", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("payload", sa.LargeBinary(length=2**32 - 1), nullable=False),
        schema=schema,
    )


def payloads(batch: pa.RecordBatch) -> Iterator[bytes]:
    """``batch`` as Arrow IPC streams of about :data:`DEFERRED_BYTES` each, in order."""
    rows = max(1, batch.num_rows * DEFERRED_BYTES // max(batch.nbytes, 1))
    for start in range(0, batch.num_rows, rows):
        part = batch.slice(start, rows)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, part.schema) as stream:
            stream.write_batch(part)
        yield sink.getvalue().to_pybytes()


def read_payload(payload: bytes) -> cdc.Changes | cdc.DdlChange | None:
    """The change a stored payload holds."""
    return cdc.decode(pa.ipc.open_stream(pa.py_buffer(payload)).read_next_batch())


class Deferred:
    """``sqlwriter``'s deferred records: storing, replaying and removing them."""

    def __init__(self, writer: SqlWriter) -> None:
        self.writer = writer
        self._ready = False

    def table(self) -> sa.Table:
        """The deferred-records table (beside the marker table)."""
        return deferred_table(self.writer.markers().schema)

    def owner(self) -> str:
        """What marks this job's records (its identity: name and state folder)."""
        return self.writer.ctx.job_id

    def store(self, segment: str, seq: int, batch: pa.RecordBatch) -> int:
        """Store ``batch`` for ``segment`` from sequence number ``seq`` (durable, not applied);
        how many records it took."""
        writer = self.writer
        table = self.table()
        with writer.lock:
            if not self._ready:
                with writer.engine().begin() as conn:
                    table.create(conn, checkfirst=True)
                self._ready = True
        rows = [
            {"owner": self.owner(), "segment": segment, "seq": seq + i, "payload": payload}
            for i, payload in enumerate(payloads(batch))
        ]
        with writer.engine().begin() as conn:
            conn.execute(sa.insert(table), rows)
        return len(rows)

    def replay(self, handle: SqlHandle) -> None:
        """Apply, in order, what a committed segment deferred (see the module docs)."""
        writer = self.writer
        table = self.table()
        mine = sa.and_(table.c.owner == self.owner(), table.c.segment == handle.segment)
        first = sa.select(table.c.seq, table.c.payload).where(mine).order_by(table.c.seq).limit(1)
        engine = writer.engine()
        while True:
            with engine.connect() as conn:
                found = conn.execute(first).first()
            if found is None:
                return
            seq, payload = found
            done = sa.delete(table).where(mine, table.c.seq == seq)
            change = read_payload(bytes(payload))
            if isinstance(change, cdc.DdlChange):
                apply_ddl(writer, change)
                with engine.begin() as conn:
                    conn.execute(done)
                continue
            assert change is not None
            writer.changes.target(change.table)  # reflected before the transaction takes locks
            with engine.connect() as conn:
                writer.dialect.change_session(conn)
                with conn.begin():
                    dirty = writer.changes.apply_now(conn, change)
                    if dirty:
                        msg = (
                            f"{writer.plugin_name}: a change of {change.table} deferred behind a "
                            f"DDL (checkpoint {handle.checkpoint}) is rejected: {dirty[0].error}. "
                            f"It stays in {DEFERRED_TABLE}: change the target to accept it and "
                            "run again with --restore latest"
                        )
                        raise FatalError(msg)
                    conn.execute(done)

    def drop(self, segments: set[str] | None, *, keep: bool = False) -> None:
        """Delete this job's records of ``segments`` (``keep``: of every other segment)."""
        writer = self.writer
        table = self.table()
        with writer.engine().begin() as conn:
            if not sa.inspect(conn).has_table(table.name, schema=table.schema):
                return
            where = table.c.owner == self.owner()
            if segments:
                chosen = table.c.segment.in_(sorted(segments))
                where = sa.and_(where, ~chosen if keep else chosen)
            elif not keep:
                return
            deleted = conn.execute(sa.delete(table).where(where)).rowcount
        if deleted and keep:
            log.info("removed %d deferred record(s) of unfinished checkpoints", deleted)
