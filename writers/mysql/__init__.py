"""``mysqlwriter`` / ``mysqlsink``: rows into a MySQL or MariaDB table, with ChunJun's parameters.

Built on :class:`writers.sql.SqlWriter` (reflection, column mapping, type conversion, ``preSql``
/ ``postSql``) by composition: the MySQL dialect, MySQL's types and a transaction strategy of its
own (``xa``: XA or local transactions; ``session``: a subtask's connection, the fast path,
changes held or deferred; ``load``: LOAD DATA and statements; ``handles``; ``params``;
``writer``). A ChunJun
``mysqlwriter`` job runs unchanged: ``connection[{jdbcUrl, table}]`` (or ``host``/``port``/
``database``), ``username``, ``password``, ``column`` (names or ``{name, type}``: matched by
position to the incoming columns; the target's own types are what rows are converted to),
``writeMode`` / ``mode``, ``updateKey`` / ``uniqueKey``, ``batchSize``, ``preSql``, ``postSql``,
``semantic``, and syncx's ``readTimeout`` (*Stalls* below) and ``loadData``; ``fullcolumn`` and
``flushIntervalMills`` are accepted and ignored (commits follow checkpoints).

**Modes.** ``insert``: ``INSERT`` (a duplicate key is a dirty record); ``replace``: ``REPLACE
INTO``; ``update``: ``INSERT ... ON DUPLICATE KEY UPDATE`` of the written non-key columns. With
no ``updateKey`` the key is the primary key, else the first unique key; a table with neither is
written with inserts (ChunJun does the same). MySQL applies ``ON DUPLICATE KEY`` / ``REPLACE`` on
*any* unique key of the table, not only ``updateKey``.

**Fast path.** ``insert`` and ``replace`` load each batch with ``LOAD DATA LOCAL INFILE`` from
text that Arrow writes column-wise (tab-separated, ``\\`` escapes, ``\\N`` NULLs, binary columns as
hex loaded with ``UNHEX``, ``BIT`` columns through ``CAST(... AS UNSIGNED)``), inside the same
transaction as everything else. ``LOAD DATA LOCAL`` turns errors into warnings (a duplicate row
is skipped, a too-long value truncated), so each load runs in a ``SAVEPOINT``: when the server
reports any warning the load is rolled back to it and the batch is written again with multi-row
``INSERT`` statements (``batchSize`` rows each, values rendered by Arrow too), which fail on a bad
row; a failed statement is split in halves until the rejected rows are found. A rejected row
becomes a dirty record with the server's message (kind ``duplicate``, ``null`` or ``other``) and
the rest of its batch is written. ``update`` always uses the statements. ``loadData: false``
turns the fast path off; a server with ``local_infile`` off falls back by itself.

**Exactly-once** (``semantic: exactly-once``): each writer subtask writes in an XA transaction
per checkpoint: ``XA START`` at the first row after a checkpoint; at the barrier
(``prepare``) a row into ``_syncx_commits`` (job, run, subtask, checkpoint, xid), ``XA END``,
``XA PREPARE``; after the checkpoint is stored, ``XA COMMIT`` from a second connection (the
subtask's own is already in the next transaction). The xid is ``syncx-<job>-<run>`` /
``<subtask>-<attempt>-<sequence>`` (the checkpoint id is not known when ``XA START`` runs; the
handle maps the xid to it). ``begin`` (every start and restore) lists this job's prepared
transactions with ``XA RECOVER``, commits those of the restored checkpoint and rolls back every
other (work of checkpoints that never completed). A checkpoint without rows has no xid.

MariaDB keeps a prepared transaction attached to the connection that prepared it (others are
told "unknown XID" until it disconnects), so a subtask closes its connection after ``XA
PREPARE`` and opens a new one for the next transaction; a commit that finds the xid still
listed by ``XA RECOVER`` asks again for a while.

A prepared transaction keeps its tables locked until it is committed: by metadata lock while its
connection is open, by InnoDB's table lock once it is gone. So a ``DROP TABLE`` or ``DROP
DATABASE`` of the target while a job runs waits for the checkpoint's commit and fails (lock wait
timeout, 1205) after ``innodb_lock_wait_timeout`` if the commit does not come first; the
transaction is neither lost nor hidden (a server killed meanwhile replays that DROP as it starts,
waits as long, then gives it up). ``SHOW ENGINE INNODB STATUS`` shows a prepared transaction
whose connection is gone as ``ACTIVE (PREPARED) ... recovered trx`` with thread id 0, restart or
not; ``XA RECOVER`` lists it (MariaDB: to any user; MySQL 8: with ``XA_RECOVER_ADMIN``). A job
recovers only its own xids (``syncx-<job identity>-``, the identity being its name and state
folder): those of a job whose state folder was removed or moved are finished by no later run and
hold their locks until rolled back by hand (``XA RECOVER``, ``XA ROLLBACK``).

*Commit ambiguity.* A commit whose reply was lost, or a commit repeated after a restore, finds
the xid gone (``XAER_NOTA``): it counts as committed only if the transaction's own row in
``_syncx_commits`` is there (it became visible with the commit); otherwise the prepared work was
rolled back by someone else (``XA ROLLBACK`` by hand) and the job fails loudly instead of
reporting rows it does not have. Markers of other runs are removed after 7 days.

**At-least-once** (``semantic: at-least-once``, ChunJun's default): one local transaction per
subtask and checkpoint, committed at ``prepare``; rows after the last checkpoint may be written
again on restore (idempotent with ``replace`` / ``update``).

**Changes** (CDC batches from ``binlogreader``; ``table: "*"`` routes each source table to the
target table of its name) are applied by key in the transaction rows would go to: the XA
transaction of the checkpoint (exactly-once) or the local one (at-least-once). Per batch, each
key's last change is applied (a primary-key change is a delete of the old key and an upsert of
the new; :func:`libs.cdc.net_effect`): deletes with ``DELETE ... WHERE (key) IN (...)``, upserts
with the row path's ``LOAD DATA ... REPLACE`` / multi-row ``REPLACE`` (which locks only the keys
it writes: subtasks copying a snapshot into one table never wait on each other); batches apply
in arrival order, so each key's changes keep theirs. Sessions applying changes run in READ
COMMITTED (no gap locks). Nothing is staged: ``XA PREPARE`` makes the
checkpoint's changes durable and ``XA COMMIT`` visible, with the marker and recovery of rows.
The target needs a primary key, or ``keyColumns``.

*Held changes.* A prepared transaction keeps its row locks until ``XA COMMIT``, which this
subtask's own thread runs once the checkpoint is stored; a change arriving in between may touch
a key it locked, and waiting for that lock would wait for the commit that only comes after the
wait. So in exactly-once, changes that arrive while one of the subtask's transactions is prepared
and not committed are held in memory, and the commit applies them right after its own work (they
come after the barrier: a kill loses nothing the reader will not send again). If the next
barrier comes first, or they pass :data:`HELD_BYTES`, they are deferred (below) instead.

*DDL* (``ddl: apply``) cannot run inside an XA transaction (it commits implicitly), nor before
the transaction holding the changes that precede it is committed (a prepared transaction keeps
its tables' metadata locks). So in exactly-once a DDL record and every record after it in the
same transaction (held ones included) are **deferred**: stored as Arrow IPC in
``_syncx_deferred`` (owner = job identity, segment = the xid's branch, seq, payload) *inside*
the XA transaction, so they are prepared and committed with the changes before them. The commit
of that handle, after ``XA COMMIT``, replays them in order: a DDL runs (idempotently,
:func:`writers.sql.ddl.apply_ddl`) and then its record is deleted; a batch of changes is
applied in a local transaction that also deletes its record. A record gone means done, so a
commit interrupted anywhere — and repeated by a restore, which always holds that handle, since a
writer acknowledges its next checkpoint only after the commit returned — resumes where it
stopped, repeating at most the last DDL, which then finds its work done. Changes arriving while
such a handle waits for its commit are held as above, so they apply after the replay. A
transaction rolled back takes its deferred records with it; ``begin`` removes records of this job
that no restored handle names. A deferred change the target rejects at replay stops the job with
the reason (it stays deferred for the next run). In at-least-once the open transaction is
committed and the DDL runs at once.

Sessions use the UTC time zone (TIMESTAMP values are UTC), ``STRICT_TRANS_TABLES`` and
``NO_AUTO_VALUE_ON_ZERO`` (a 0 in an ``AUTO_INCREMENT`` column stays 0, as ``mysqldump`` does).
A lost connection fails the attempt as retriable: ``setting.restart`` restarts the job from its
last checkpoint (the open transaction is rolled back by the server, a prepared one waits).

*Stalls.* A ``LOAD DATA``, an ``XA COMMIT`` or a DDL may rightly run long, so the writer's
connections (sessions, commit connections and its pool) have no read timeout: a
:class:`~libs.mysql.stall.StallWatch` asks the server about a statement that has had no answer
for ``readTimeout`` seconds (default 60; else a jdbcUrl's ``socketTimeout`` in milliseconds) and
kills the session when the server is not running it, which fails it as a lost connection.
"""

from __future__ import annotations

from writers.mysql.handles import MysqlHandle, XaHandle
from writers.mysql.params import MysqlWriterParams
from writers.mysql.session import MysqlSession
from writers.mysql.writer import MysqlWriter
from writers.mysql.xa import LocalStrategy, MysqlStrategy, XaStrategy

__all__ = [
    "LocalStrategy",
    "MysqlHandle",
    "MysqlSession",
    "MysqlStrategy",
    "MysqlWriter",
    "MysqlWriterParams",
    "XaHandle",
    "XaStrategy",
]
