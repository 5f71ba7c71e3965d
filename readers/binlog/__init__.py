"""``binlogreader``: MySQL/MariaDB row changes from the binary log, as CDC batches.

Built on ``mysql-replication`` (extra ``binlog``). ChunJun's parameters are accepted as ChunJun
spells them: ``jdbcUrl`` or ``host``/``port``, ``username``, ``password``, ``table`` (``db.table``
list), ``filter`` (a regex on ``db.table``, used when ``table`` is absent; with neither, every
table of the jdbcUrl's database), ``cat`` (``insert,update,delete``), ``start``
(``journalName``/``journal-name`` + ``position``, ``timestamp`` in ms, ``gtid``),
``pavingData``, ``splitUpdate``, ``slaveId``/``serverId``, ``isGTIDMode``, ``ddlSkip``; and
syncx's own ``snapshot``, ``ddl``, ``stopAt``, ``transactionBufferBytes``. The batch layouts are described in
:mod:`libs.cdc`.

**The server** must log ROW images with column names: ``log_bin``, ``binlog_format=ROW``,
``binlog_row_image=FULL``, ``binlog_row_metadata=FULL`` (MariaDB ≥ 10.5, MySQL ≥ 8.0.14).
``check()`` says which setting to change, and which privilege the user lacks (REPLICATION SLAVE,
REPLICATION CLIENT / BINLOG MONITOR, SELECT).

**Positions** are taken at transaction boundaries only: after the XID (or COMMIT, or the DDL
statement) of the last transaction whose rows were all emitted. A position
(:class:`~readers.binlog.positions.BinlogPosition`, a versioned ``State``) is
``{file, pos, gtid, ts, emitted}``: the binlog coordinates and the GTID state after that
transaction (MariaDB ``domain-server-seq`` list, MySQL's executed GTID set), and ``emitted``, a
count per table of changes after the boundary that were already emitted. The count exists
because the changes of a flush window (many transactions, many tables) leave as one batch *per
table*, and a checkpoint may fall between two of them: on restore the reader starts at the
boundary and drops, per table, that many changes, so nothing is emitted twice and nothing is
skipped. A window is never closed before those changes were dropped again. MariaDB resumes by
GTID (``mysql-replication`` ignores file/pos there), MySQL by GTID set when GTID mode is on,
else by file/pos. A lost connection, a server restart or a binlog rotation resume the same way
from the last emitted position, with backoff (0.5 s doubling to 10 s, for ``reconnectTimeout``
seconds, then the job fails as retriable and ``setting.restart`` takes over).

**Snapshot and handover** (``snapshot: initial | when_needed | never``). ``plan()`` opens
``START TRANSACTION WITH CONSISTENT SNAPSHOT`` and reads the snapshot's binlog position from
``binlog_snapshot_file/position`` (MariaDB; MySQL: a short ``FLUSH TABLES WITH READ LOCK``
around ``SHOW MASTER STATUS``), the GTID with ``BINLOG_GTID_POS``: that is the handover position
*P*, taken before any row is copied and without a global lock on MariaDB. The splits are then,
in this order: the tables' snapshot splits (the MySQL reader's key ranges,
:class:`readers.mysql.MysqlReader` built by composition from its public parameters: keyset
pagination in parallel, resumable after their last key, its fast drivers; rows become ``r``
changes), and the stream split, which starts at *P*. Each snapshot page sees the table at some moment after
*P*; the stream replays every change from *P* on, and since changes carry full row images and
are applied by key, the target converges to the source exactly (no row lost, none doubled)
however late a page was read — also after a restore in the middle of the snapshot, whose
remaining pages are read later still. What must hold is order: a key's snapshot row must be
applied before the stream's changes of that key. So the stream split emits nothing before
every snapshot split is done *and covered by a stored checkpoint* (commits of checkpoint *n* at
every writer precede those of *n* + 1, so snapshot rows are visible before any streamed change):
with one reader channel it simply runs after the snapshot splits; with several it waits until the engine reports a stored checkpoint that records every
snapshot split done (:meth:`BinlogReader.notify_checkpoint_complete`; that needs checkpoints:
``setting.restore.isRestore``). Until then its position is ``None`` (it has not started): a run
restored from a checkpoint taken while it waited, with snapshot splits still to read, waits
again rather than streaming beside them. ``when_needed`` snapshots when there is no position to resume
from or it was purged from the server. A bounded run (``stopAt``) saves its end position as the
job's incremental state, so the next run (``--restore latest-or-new``) continues from there
without a new snapshot.

**DDL** (``ddl: skip | fail | apply``; ChunJun's ``ddlSkip: true`` is ``skip``, the default):
statements on captured tables are logged and skipped, stop the job with the statement and its
position, or travel as DDL batches to a writer that applies them (``sqlwriter``/
``mysqlwriter``). Row events carry their table's columns (``binlog_row_metadata=FULL``), so the
layout of every change is right whatever happened before. A statement naming several captured
tables (``DROP TABLE a, b``) travels as one DDL batch per table (the writers apply one table per
batch); after all but the last the position is the one before the statement with the DDL
batches emitted counted in ``emitted`` (key ``(ddl)``), so a checkpoint between them resumes
with the remaining tables, never past them.

**XA transactions** of the source are emitted at their ``XA COMMIT`` (in commit order), not at
``XA PREPARE``; one rolled back after its prepare never reaches the target. While one is
prepared but not committed the position stays before it (later transactions' changes are
counted in ``emitted``), so a restore or the next run reads it again and emits it if it commits.

**Big transactions** (``transactionBufferBytes``, default 64 MiB): a transaction's changes wait
until its commit, built into batches as they come; past the bound per open transaction they wait
in a spill file (Arrow IPC, made already unlinked in the state folder's ``tmp/``, so nothing
outlives the process) and are read back batch by batch at the commit. Positions are unchanged:
the spill is below them (:mod:`~readers.binlog.spill`).

**Bounded runs** (``stopAt``): ``now`` reads up to the binlog end at start time; a
``{journalName, position}`` up to there; a timestamp (ms) up to the first transaction after it.
The run then ends (exit 0) with its position saved.

**Verify** (``syncx verify``): :meth:`BinlogReader.tables` gives each captured table's snapshot
reader (the table as it is now) and :meth:`BinlogReader.changes_since` the rows changed from a
checkpoint's stream position (its transaction boundary: a superset) to the binlog's end, read
by a stream split of its own (another replica id, every kind of change, DDL ignored), so that
verify compares a target that is behind at the position it reached.

**Modules**: :mod:`~readers.binlog.params` (parameters, table selection),
:mod:`~readers.binlog.server` (flavour, settings and privilege checks, start and handover
positions), :mod:`~readers.binlog.positions` (positions and split data as ``State`` s; older
checkpoints' plain dicts still load), :mod:`~readers.binlog.decoder` (table shapes, the binary
row decoder), :mod:`~readers.binlog.snapshot`, :mod:`~readers.binlog.stream`,
:mod:`~readers.binlog.spill` (changes waiting for their transaction's end),
:mod:`~readers.binlog.plugin` (:class:`BinlogReader`). Column types come from the one MySQL type
table, :mod:`libs.mysql.types`; where to connect and login errors from :mod:`libs.mysql.connect`.
"""

from __future__ import annotations

from readers.binlog.params import BinlogReaderParams, BinlogStart
from readers.binlog.plugin import BinlogReader

__all__ = ["BinlogReader", "BinlogReaderParams", "BinlogStart"]
