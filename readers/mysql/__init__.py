"""``mysqlreader`` / ``mysqlsource``: a MySQL or MariaDB table (or query), ChunJun's parameters.

Built on :class:`readers.sql.SqlReader` (reflection, splits, keyset queries, ``customSql``,
``where``, restore columns) through its public hooks; this package adds MySQL's drivers, types
and ChunJun's incremental and polling modes (``params``, ``state``: typed split data, positions
and the watermark, ``reader``, ``split``). ``MysqlReader(params, ctx, layout=schema)`` casts
every batch to ``schema`` (what a CDC reader reading a table's snapshot wants). A ChunJun ``mysqlreader`` job runs unchanged: ``connection[{jdbcUrl: [...],
table: [...]}]`` (or ``host``/``port``/``database``), ``username``, ``password``, ``column``
(names, ``*``, or ``{name, type, format, value}``), ``where``, ``customSql``, ``splitPk``,
``splitStrategy``, ``fetchSize``, ``queryTimeOut``, ``increColumn``, ``startLocation``,
``useMaxFunc``, ``polling``, ``pollingInterval``, ``orderByColumn``.

**Splits.** With ``splitPk`` (an indexed integer column) and more than one reader channel the
key range is cut into one range per channel: equal widths from ``MIN``/``MAX``, unless the
server's row estimates for those ranges (``EXPLAIN``, index dives, no scan) show a skewed key;
then the cut points are quantiles of the estimated rows of finer buckets. ``splitStrategy: mod``
is ChunJun's other strategy: channel *i* of *n* reads ``MOD(splitPk, n) = i``. Every split is read
by keyset pagination: ``... WHERE <split> AND key > :last ORDER BY key LIMIT pageSize``, each a
short statement streamed in batches of ``fetchSize`` rows, so memory stays flat, no channel
scans the whole table and no cursor stays open across it. A split's position is the key of the
last row emitted; a restore continues after it. glibc's malloc arenas are capped when a split
opens (:func:`libs.mysql.fetch.limit_malloc_arenas`), not when the plugin is built.

**Drivers** (``driver: auto``, the default, takes the first installed): ``connectorx`` (Arrow
from Rust, no per-value Python work: the fast path), ``mysqlclient`` (C, raw bytes parsed
column-wise), ``pymysql`` (always there). Every driver gives the same Arrow types and values
(see the README's "MySQL type mapping"); a page connectorx cannot read (a zero date) is read
again with a text driver.

**Types.** ``column[].type`` of the same family as the column's own type (``decimal`` for
``DECIMAL(12,2)``, ``int`` for ``INT UNSIGNED``, ``timestamp`` for ``DATETIME(6)``) keeps the
column's exact type; another family converts (``decimal`` → ``string``), and a value that does
not convert is a dirty record. ``value`` is a constant column when the table has no column of that
name, else the value of NULLs; ``format`` (Java date pattern) parses a string column as a date.

**Incremental** (``increColumn``: a name or an index into ``column``). The first run reads rows
after ``startLocation`` (``>`` — ``>=`` with ``useMaxFunc``, as ChunJun), or every row. When
the run succeeds, its *watermark* goes into the job's state: the largest ``increColumn`` value
read and the keys (primary key, else a unique key column) of the rows read with that value. The
next run reads ``inc > W OR (inc = W AND key NOT IN (those keys))``: rows inserted later with
the boundary value are read, none twice. Beyond 1,000 keys at the boundary value the state
keeps the largest key instead (``inc = W AND key > K``: exact when keys grow within a value).
Without a key the boundary is exclusive (``inc > W``, ChunJun's behavior). A stored watermark
wins over ``startLocation``. ``useMaxFunc: true`` takes ``MAX(increColumn)`` when the job
starts as an inclusive upper bound, so rows written during the run wait for the next run (set
it for cron jobs on tables being written; without it a row inserted into an already read key
range during the run is only read if its value is above the final watermark). ChunJun leaves
the rows equal to that maximum for the next run; with the boundary keys syncx reads them now
and still never twice.

**Polling** (``polling: true``): one unbounded split reading ``ORDER BY increColumn, key``
after its cursor; when a query returns less than a page it waits ``pollingInterval`` ms
(yielding idle ticks, so checkpoints go on) and asks again. The cursor is checkpointed; a fresh
start begins at the stored watermark, else ``startLocation``, else the current ``MAX`` (only
new rows, as ChunJun).

**Lost connections** are retried with backoff (0.5 s … 4 s), then the job fails as retriable and
``setting.restart`` restarts it from its last checkpoint.
"""

from __future__ import annotations

from readers.mysql.params import MysqlColumn, MysqlReaderParams
from readers.mysql.reader import MysqlReader
from readers.mysql.split import MysqlSplitReader
from readers.mysql.state import MysqlPosition, MysqlSplit, Watermark

__all__ = [
    "MysqlColumn",
    "MysqlPosition",
    "MysqlReader",
    "MysqlReaderParams",
    "MysqlSplit",
    "MysqlSplitReader",
    "Watermark",
]
