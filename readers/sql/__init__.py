"""``sqlreader``: a table (or a query) of any SQLAlchemy database, read by keyset pagination.

SQLite works with nothing installed; PostgreSQL needs ``psycopg`` (``pip install
'psycopg[binary]'``), MySQL/MariaDB ``PyMySQL`` (sessions in UTC, ``utf8mb4``: the MySQL
:class:`~libs.sql.Dialect`). ``mysqlreader`` builds on :class:`SqlReader` through its public
hooks. One module per part: ``params``, ``state`` (typed split data and positions), ``source``
(what a split reads from), ``reader``, ``split``.

**Splits.** With ``splitPk`` (a numeric column) and more than one reader channel, ``[MIN, MAX]``
of ``splitPk`` (under ``where``) is cut into that many disjoint key ranges of equal width; the
first range is open below and the last open above, so rows outside ``[MIN, MAX]`` are read too,
and each bound says whether it is inclusive (:attr:`SqlSplit.range`). Otherwise one split.

**Keyset pagination.** A split is read page by page with
``SELECT cols FROM t WHERE (where) AND <range> AND key > :last ORDER BY key LIMIT :n`` (values are
bound parameters; names are always quoted by the dialect; ``where`` is inserted as SQL, by
design). Each page is a short transaction, so no cursor stays open across the table. The key is
``setting.restore.restoreColumnName`` (or the column at ``restoreColumnIndex`` when the name is
blank and ``isRestore`` is on), else ``splitPk``, else the table's single-column primary key, else
SQLite's ``rowid``. A key that is not unique is handled exactly: when a page ends inside a run
of equal key values, the whole run is fetched before the page is emitted. A split's position
(:class:`SqlPosition`) is ``after``: the last key value (ints stay ints; dates, decimals, bytes are tagged so they
round-trip with their type); a restore from it re-reads nothing.

**NULL keys.** ``key > :last`` never matches NULL, so when the key (or ``splitPk``) column is
nullable, the first split first reads the rows whose key is NULL, ordered by every column and
resumable by offset (position ``nulls``: rows read).

**No key at all** (a view, or a table without primary key on a server without ``rowid``): one
split streamed with a server-side cursor, ``ORDER BY`` every column so that the order is
deterministic; the position is ``offset`` (rows read) and a restore skips that many rows (exact
while the table does not change; rows that are equal in every column are interchangeable).
When a column cannot be sorted (PostgreSQL ``json``) the position stays ``None`` and a restore
reads the split again from its start: rows committed before the failure are then written
again (at-least-once for that job). A warning says so.

**customSql** replaces the table: ``SELECT <column> FROM (<customSql>) AS syncx_q WHERE (where)``.
With ``splitPk`` or a restore column among its result columns it is paginated and split like a
table. Without one it is a single split streamed with one cursor whose position stays ``None``:
a restore re-reads the whole query (at-least-once). Give ``column`` as ``{name, type}`` to fix
the batch schema; otherwise types are inferred from each page.

**Types** come from reflection (:func:`libs.sql.arrow_type_of`); ``column: [{name, type}]``
casts a column to a ChunJun type name. A value that does not convert is a dirty record (kind
``conversion``) and the rest of its page goes on. ``restoreColumnType`` is informational: the
reflected type of the column is what counts.

``fetchSize`` is the page size, capped by the runtime's batch size; ``queryTimeOut`` (seconds)
becomes PostgreSQL's ``statement_timeout`` (SQLite has none).
"""

from __future__ import annotations

from readers.sql.params import SqlColumn, SqlReaderParams
from readers.sql.reader import SqlReader, explain
from readers.sql.source import START, KeyColumn, Source, SourceColumn
from readers.sql.split import SqlSplitReader
from readers.sql.state import SqlPosition, SqlSplit, as_state

__all__ = [
    "START",
    "KeyColumn",
    "Source",
    "SourceColumn",
    "SqlColumn",
    "SqlPosition",
    "SqlReader",
    "SqlReaderParams",
    "SqlSplit",
    "SqlSplitReader",
    "as_state",
    "explain",
]
