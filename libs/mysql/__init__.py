"""Shared pieces of ``mysqlreader`` / ``mysqlwriter`` (MySQL 5.7+/8, MariaDB 10.5+).

What the two plugins (and ``binlogreader``) share, on top of :mod:`libs.sql`, one module each:

- **Where to connect** (``connect``). ``jdbc:mysql://host:port/db?k=v`` (and ``jdbc:mariadb:``) map to
  SQLAlchemy's ``mysql+pymysql`` through the MySQL dialect of :mod:`libs.sql` (a static table:
  ``sqlreader``/``sqlwriter`` get it too, whatever else is loaded); :class:`MysqlEndpoint` adds
  the plain ``host`` / ``port`` / ``database`` form. Every connection — the dialect's engines and
  :func:`connect`'s DB-API ones — uses ``utf8mb4`` and the session time zone ``+00:00``, so
  ``TIMESTAMP`` values travel as UTC. JDBC driver properties (``useSSL``, ...) are ignored,
  but for ``mysqlwriter``'s ``socketTimeout`` (its ``readTimeout``).
- **Types** (``types``: :class:`MysqlType`, :func:`mysql_type`, :func:`mysql_type_of_field`): one Arrow
  type per MySQL column type, the same for every driver; the table is in the README ("MySQL
  type mapping").
- **Drivers** (``fetch``: :class:`Fetcher`): rows are read with ``connectorx`` (Arrow straight from Rust,
  no per-value Python work), ``mysqlclient`` (C, values as raw bytes) or ``pymysql`` (pure
  Python, always there). The text drivers' values are parsed column-wise with Arrow casts
  (:func:`decode_text`); connectorx's Arrow columns are cast to the same types
  (:func:`from_connectorx`). Where connectorx cannot hold a type exactly (``TIME`` beyond a day,
  ``DECIMAL`` wider than 28 digits or 10 decimals) the column is selected as text; where it
  fails on a value (zero dates) the query is read again with a text driver. connectorx reads a
  whole page (``pageSize`` rows) with the GIL released (its ``arrow_stream`` mode holds the GIL
  while it waits for the next batch, which stalled the job's other threads for a third of the
  run); the page is cut into ``fetchSize`` batches without copying. Memory: glibc's
  arenas are capped at two (:func:`limit_malloc_arenas`), and what C/Rust code freed is given
  back to the system after a page once the process has grown by 64 MiB since the last time
  (:func:`trim_malloc`: a trim after every page cost the next page its page faults). The cap is
  set when a split starts reading, not when a plugin is built (``syncx validate`` and other
  plugins are left alone).
- **Errors** (``connect``): MySQL error codes sorted into lost connections (retried, then
  :class:`~sync.errors.RetriableError`), rejected rows (dirty records) and the rest.
- **Stalls** (``stall``: :class:`StallWatch`): the writer's connections have no read timeout; a
  statement without an answer for ``readTimeout`` is checked with the server, and broken (its
  session killed) only when the server is not running it.
- **Writing** (``text``: :func:`tsv_text`, :func:`sql_values`): an Arrow batch as ``LOAD DATA`` text or as
  SQL ``VALUES`` rows, built with Arrow compute (no per-value Python).
- **XA** (``xa``: :class:`Xid`, :func:`xa_recover`): transaction ids of the exactly-once writer.
"""
