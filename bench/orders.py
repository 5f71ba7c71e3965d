"""Deterministic generator for the ``orders`` benchmark table.

Rows are generated with numpy in fixed-size chunks (each chunk has its own
seeded RNG, so row *i* is the same whatever ``--rows`` is), written to a
temporary TSV file and loaded with a single ``LOAD DATA LOCAL INFILE``.
2,000,000 rows are roughly 340 MB of TSV.

By default the load is kept out of the binlog (``sql_log_bin=0``) so CDC
benchmarks start from a clean binlog; pass ``--binlog`` to log it.

Usage::

    python bench/orders.py --rows 2000000 --database syncx_bench
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pymysql
import pymysql.connections

DEFAULT_ROWS = 2_000_000
DEFAULT_SEED = 20240101
CHUNK_ROWS = 100_000

STATUSES: tuple[str, ...] = (
    "new",
    "paid",
    "packed",
    "shipped",
    "delivered",
    "cancelled",
    "refunded",
    "returned",
)
NOTE_MIN, NOTE_MAX = 20, 120
CREATED_FROM = np.datetime64("2023-01-01T00:00:00", "us")
CREATED_SPAN_US = 730 * 86_400 * 1_000_000  # two years
UPDATED_LAG_S = 30 * 86_400  # updated_at is up to 30 days after created_at

_WORDS: tuple[str, ...] = (
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "order",
    "parcel",
    "express",
    "gift",
    "wrap",
    "leave",
    "at",
    "door",
    "call",
    "before",
    "delivery",
    "fragile",
    "handle",
    "with",
    "care",
    "customer",
    "requested",
    "invoice",
    "please",
    "weekend",
    "back",
    "entrance",
)


COLUMNS: list[tuple[str, str, pa.DataType]] = [
    ("id", "bigint", pa.int64()),
    ("user_id", "int", pa.int32()),
    ("sku", "string", pa.string()),
    ("qty", "int", pa.int32()),
    ("price", "decimal(12,2)", pa.decimal128(12, 2)),
    ("status", "string", pa.string()),
    ("note", "string", pa.string()),
    ("created_at", "timestamp", pa.timestamp("us")),
    ("updated_at", "timestamp", pa.timestamp("us")),
]
"""The table's columns: name, Hive type (what an HDFS job declares), Arrow type in Parquet."""
HIVE_COLUMNS = [{"name": name, "type": hive} for name, hive, _ in COLUMNS]
"""The writer's ``column`` list of a job declaring the Hive table, as ChunJun jobs do."""
ARROW_SCHEMA = pa.schema([(name, kind) for name, _, kind in COLUMNS])


def ddl(table: str) -> str:
    """CREATE TABLE statement for the orders table."""
    return f"""
        CREATE TABLE `{table}` (
            id BIGINT NOT NULL PRIMARY KEY,
            user_id INT NOT NULL,
            sku VARCHAR(32) NOT NULL,
            qty INT NOT NULL,
            price DECIMAL(12,2) NOT NULL,
            status VARCHAR(16) NOT NULL,
            note VARCHAR(200) NOT NULL,
            created_at DATETIME(6) NOT NULL,
            updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
                ON UPDATE CURRENT_TIMESTAMP
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci
    """


def _note_corpus(seed: int, size: int = 1 << 20) -> tuple[str, np.ndarray]:
    """A fixed pseudo-text (lowercase words and spaces only) notes are cut from.

    Returns the text and the offsets of its word starts that leave room for
    a note of maximum length.
    """
    rng = np.random.default_rng([seed, 0xC0FFEE])
    words = np.array(_WORDS)[rng.integers(0, len(_WORDS), size // 4)]
    text = " ".join(words.tolist())[:size]
    spaces = np.frombuffer(text.encode("ascii"), dtype=np.uint8) == ord(" ")
    starts = np.flatnonzero(spaces) + 1
    return text, starts[starts < len(text) - NOTE_MAX]


def chunk_tsv(
    chunk: int, first_id: int, count: int, seed: int, corpus: tuple[str, np.ndarray]
) -> str:
    """TSV text (one line per row, no escaping needed) for ``count`` rows from ``first_id``."""
    text, word_starts = corpus
    rng = np.random.default_rng([seed, chunk])
    ids = np.arange(first_id, first_id + count, dtype=np.int64)
    user_id = rng.integers(1, 1_000_000, count)
    sku = rng.integers(0, 100_000, count)
    qty = rng.integers(1, 10, count)
    cents = rng.integers(99, 100_000_00, count)
    status = rng.integers(0, len(STATUSES), count)
    note_len = rng.integers(NOTE_MIN, NOTE_MAX + 1, count)
    note_off = word_starts[rng.integers(0, len(word_starts), count)]
    created = CREATED_FROM + rng.integers(0, CREATED_SPAN_US, count).astype("timedelta64[us]")
    lag = rng.integers(0, UPDATED_LAG_S, count).astype("timedelta64[s]")
    updated = created.astype("datetime64[s]") + lag

    cols = (
        map(str, ids.tolist()),
        map(str, user_id.tolist()),
        map("SKU-{:05d}".format, sku.tolist()),
        map(str, qty.tolist()),
        map("{}.{:02d}".format, (cents // 100).tolist(), (cents % 100).tolist()),
        map(STATUSES.__getitem__, status.tolist()),
        (text[o : o + n] for o, n in zip(note_off.tolist(), note_len.tolist(), strict=True)),
        np.datetime_as_string(created, unit="us").tolist(),  # 'T' separator is accepted
        np.datetime_as_string(updated, unit="s").tolist(),
    )
    return "\n".join(map("\t".join, zip(*cols, strict=True))) + "\n"


def write_tsv(path: Path, rows: int, seed: int = DEFAULT_SEED) -> None:
    """Write ``rows`` deterministic orders rows to ``path`` as TSV."""
    corpus = _note_corpus(seed)
    with path.open("w", encoding="ascii", newline="\n") as out:
        for chunk, start in enumerate(range(0, rows, CHUNK_ROWS)):
            count = min(CHUNK_ROWS, rows - start)
            out.write(chunk_tsv(chunk, start + 1, count, seed, corpus))


def settle(conn: pymysql.connections.Connection, timeout: float = 120.0) -> None:
    """Wait until InnoDB has flushed its dirty pages (forced by a 0% dirty-page target for the
    wait): a measurement that starts right after a bulk load or a DROP shares the cores with
    the server's background flushing. Gives up quietly after ``timeout`` seconds."""
    with conn.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.innodb_max_dirty_pages_pct")
        (saved,) = cur.fetchone()
        cur.execute("SET GLOBAL innodb_max_dirty_pages_pct = 0")
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                cur.execute("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'")
                if int(cur.fetchone()[1]) == 0:
                    return
                time.sleep(0.2)
        finally:
            cur.execute("SET GLOBAL innodb_max_dirty_pages_pct = %s", (saved,))


def create_orders(
    conn: pymysql.connections.Connection,
    database: str,
    rows: int,
    table: str = "orders",
    *,
    seed: int = DEFAULT_SEED,
    log_bin: bool = False,
) -> None:
    """(Re)create ``database.table`` and fill it with ``rows`` deterministic orders.

    ``conn`` must have been opened with ``local_infile=True``.  The connection's
    current database and session settings are changed.
    """
    with tempfile.TemporaryDirectory(prefix="syncx-orders-") as tmp:
        tsv = Path(tmp) / f"{table}.tsv"
        write_tsv(tsv, rows, seed)
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4")
            cur.execute(f"USE `{database}`")
            cur.execute("SET SESSION time_zone = '+00:00'")
            if not log_bin:
                cur.execute("SET SESSION sql_log_bin = 0")
            cur.execute(f"DROP TABLE IF EXISTS `{table}`")
            cur.execute(ddl(table))
            # Empty table + these off lets InnoDB use its bulk-load path.
            cur.execute("SET SESSION unique_checks = 0, foreign_key_checks = 0")
            try:
                cur.execute("BEGIN")
                loaded = cur.execute(
                    f"LOAD DATA LOCAL INFILE %s INTO TABLE `{table}` CHARACTER SET ascii "
                    "FIELDS TERMINATED BY '\\t' ESCAPED BY '' LINES TERMINATED BY '\\n'",
                    (str(tsv),),
                )
                cur.execute("COMMIT")
            except BaseException:
                conn.rollback()
                raise
            finally:
                cur.execute("SET SESSION unique_checks = 1, foreign_key_checks = 1")
                if not log_bin:
                    cur.execute("SET SESSION sql_log_bin = 1")
            if loaded != rows:
                msg = f"LOAD DATA loaded {loaded} rows, expected {rows}"
                raise RuntimeError(msg)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=os.environ.get("SYNCX_TEST_MYSQL_HOST", "127.0.0.1"))
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("SYNCX_TEST_MYSQL_PORT", "3307"))
    )
    parser.add_argument("--user", default=os.environ.get("SYNCX_TEST_MYSQL_USER", "root"))
    parser.add_argument("--password", default=os.environ.get("SYNCX_TEST_MYSQL_PASSWORD", ""))
    parser.add_argument("--database", default="syncx_bench")
    parser.add_argument("--table", default="orders")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--binlog", action="store_true", help="write the load to the binlog (default: skip it)"
    )
    args = parser.parse_args(argv)

    conn = pymysql.connect(
        host=args.host,
        port=args.port,
        user=args.user,
        password=args.password,
        autocommit=True,
        charset="utf8mb4",
        local_infile=True,
    )
    try:
        started = time.perf_counter()
        create_orders(
            conn, args.database, args.rows, args.table, seed=args.seed, log_bin=args.binlog
        )
        elapsed = time.perf_counter() - started
        with conn.cursor() as cur:
            cur.execute(
                "SELECT data_length + index_length FROM information_schema.tables "
                "WHERE table_schema = %s AND table_name = %s",
                (args.database, args.table),
            )
            row = cur.fetchone()
        size_mb = (row[0] if row else 0) / 1e6
        print(
            f"loaded {args.rows:,} rows into {args.database}.{args.table} "
            f"in {elapsed:.1f}s ({size_mb:.0f} MB on disk)"
        )
    finally:
        conn.close()


if __name__ == "__main__":
    main()
