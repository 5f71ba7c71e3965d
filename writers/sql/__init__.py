"""``sqlwriter``: rows into an existing table of any SQLAlchemy database, exactly once, without XA.

SQLite works with nothing installed; PostgreSQL needs ``psycopg``; MySQL/MariaDB ``PyMySQL``.
What differs per database is the :class:`~libs.sql.Dialect` chosen from the URL (upserts, bulk
inserts, sessions); how work becomes durable and visible is the transaction
:class:`~writers.sql.strategy.Strategy` chosen from ``semantic`` (``mysqlwriter`` plugs in its XA
one). One module per part: ``params``, ``handles`` (typed handles), ``tables`` (staging and
marker tables), ``strategy`` (staged / at-least-once sessions), ``staging`` (commit markers,
committing staged rows), ``changes`` (CDC apply), ``ddl``, ``task``, ``writer``.

The writer never creates the target table (a missing one is an error at ``check()``); the only
things it creates are, in the target's schema, a **staging table**
``_syncx_stage_<hash of target>_<hash of its column names and types>`` (the target's columns,
all nullable and without constraints, plus ``_syncx_job``, ``_syncx_run``, ``_syncx_subtask``,
``_syncx_segment``, ``_syncx_seq``; a changed target gets a new one) and the **marker table**
``_syncx_commits``.

**Exactly-once** (``semantic: exactly-once``, the default), for any SQL database:

- ``write``: the batch goes into the staging table, tagged with this subtask's current
  *segment* (a fresh random id), in a short transaction per batch: staged rows are durable but
  invisible in the target.
- ``prepare(n)``: seals the segment and returns its handle (:class:`~writers.sql.handles.RowsHandle`:
  table, schema, job, run, subtask, checkpoint, segment, columns; ``None`` when nothing was
  written since the last one).
- ``commit(handle)``: one transaction: if ``_syncx_commits`` has no row for (job, run, subtask,
  checkpoint, segment), insert that marker, ``INSERT INTO target (cols) SELECT cols FROM
  staging`` for the segment (upsert modes keep the last row per key), and delete the staged
  rows. A second commit of the same handle finds the marker (and no staged rows): a no-op.
- ``abort(handle)`` deletes the segment's staged rows; ``discard()`` those of the unsealed one.
- ``begin(handles, fresh)`` commits ``handles``, then deletes every staged row of this job that
  is not in them (work of an attempt that died before its checkpoint) and the markers of older
  runs; on a fresh run it then runs ``preSql``. ``postSql`` runs in ``finish()``.

**Dirty rows.** Values that do not convert to the target's column types (:func:`libs.types.conform`)
and NULLs in NOT NULL columns are dirty before anything is written. A row the database rejects
(too long, bad value, and in direct writes duplicate keys, NOT NULL, CHECK) is found by writing
each chunk of ``batchSize`` rows inside a SAVEPOINT and, when that fails, each row in its own:
the rejected rows become dirty records with the database's message (kind ``duplicate`` for
unique violations, ``null`` for NOT NULL, else ``other``) and the rest is written.

*Uniqueness in exactly-once insert mode* is checked when rows are written, not only at commit:
before a batch is staged, its rows whose primary or unique key (every key whose columns are all
written) already exists in the target, is already staged (by any subtask), or repeats within the
batch, become ``duplicate`` dirty records. What that check cannot see — a concurrent writer
inserting the same key between the check and the commit, or CHECK and foreign-key constraints
(the staging table has none) — makes ``commit`` fail loudly with the database's message: the
staged rows stay where they are, so nothing is lost, and a restore commits them once the
conflict is removed.

Rows are written with one executemany per ``batchSize`` rows, or ``COPY ... FROM STDIN`` on
PostgreSQL with psycopg (:meth:`libs.sql.Dialect.insert_rows`).

**At-least-once** (``semantic: at-least-once``): rows go straight into the target in one
transaction per subtask that commits at ``prepare`` (per batch on SQLite, where one writer holds
the database lock); no staging, nothing to recover, rows after the last checkpoint may repeat.

**Changes** (CDC batches, :mod:`libs.cdc`; ``table: "*"`` routes each source table to the target
table of its name; the target needs a primary key or ``keyColumns``): exactly-once stages them,
in order, in a change-staging table per target (``_syncx_cdc_<hash of target>_<hash of its
layout>``: the target's columns, ``_syncx_op`` and the segment metadata); the commit, in one
transaction with the marker, deletes per target every key with a staged change and inserts each
key's last upsert, picked by a window function so the commit is linear in the number of staged
changes (a deadlock with another subtask's commit is retried). At-least-once applies
each batch the same way at once. ``ddl: apply`` (:func:`writers.sql.ddl.apply_ddl`,
idempotent): exactly-once defers a DDL and what follows it until the changes before it are
committed (:mod:`writers.sql.deferred`), so a restore can replay those changes into the layout
they were captured in; at-least-once commits what is open and runs the DDL at once. ``mysqlwriter`` applies changes inside its own
transactions instead, XA when exactly-once, with nothing staged.

``writeMode``: ``insert``; ``replace`` and ``update`` both upsert on ``updateKey`` (or the
primary key) with ``INSERT ... ON CONFLICT (key) DO UPDATE`` on SQLite and PostgreSQL, setting
the written columns (a dialect plugin may give ``replace`` its own meaning, as MySQL's ``REPLACE
INTO``). The key must be the primary key or a unique key of the target, and be written.
``column`` maps the incoming columns by position (ChunJun); absent, the incoming column names are
used. A ``type`` given in ``column`` is informational: the target's reflected types are what rows
are converted to.
"""

from __future__ import annotations

from writers.sql.changes import conform_changes
from writers.sql.handles import CdcEntry, CdcHandle, RowsHandle, SqlHandle
from writers.sql.params import SqlWriterParams, WriteMode
from writers.sql.strategy import DirectStrategy, Session, StagedStrategy, Strategy
from writers.sql.tables import CDC_STAGE_PREFIX, MARKER_TABLE, STAGE_PREFIX, CdcTarget, Target
from writers.sql.task import SqlWriterTask
from writers.sql.writer import SqlWriter

__all__ = [
    "CDC_STAGE_PREFIX",
    "MARKER_TABLE",
    "STAGE_PREFIX",
    "CdcEntry",
    "CdcHandle",
    "CdcTarget",
    "DirectStrategy",
    "RowsHandle",
    "Session",
    "SqlHandle",
    "SqlWriter",
    "SqlWriterParams",
    "SqlWriterTask",
    "StagedStrategy",
    "Strategy",
    "Target",
    "WriteMode",
    "conform_changes",
]
