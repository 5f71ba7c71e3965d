"""``mysqlreader`` / ``mysqlwriter`` against the project's private MariaDB (ROW binlog, port 3307).

Every test gets a fresh uuid-named database. The plugins are driven through the contract (plan /
open / batches / snapshot; begin / open / write / prepare / commit / abort) and through the
``syncx`` command line, with ChunJun's job files as they are. Source and target are compared
exactly: ``CHECKSUM TABLE`` of tables with the same definition, and row by row.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import json
import os
import random
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pymysql
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from libs.mysql import fetch
from libs.mysql.connect import DRIVERS, connect
from libs.mysql.fetch import Fetcher
from libs.mysql.xa import Xid, xa_recover
from readers.mysql import MysqlPosition, MysqlReader, MysqlReaderParams, MysqlSplit, Watermark
from sync.contract import DirtyRecord, JobContext, decode, job_identity
from sync.errors import JobFailedError
from sync.jobfile import load_job
from sync.model import Setting
from tests.conftest import REPO, RunCli, compat_file, compat_files, syncx_command
from tests.crash import Kill, mixed_kill_plan, run_until_done
from tests.servers.mariadb import MariaDB, ensure_server
from writers.mysql import MysqlWriter, MysqlWriterParams, XaHandle

pytestmark = pytest.mark.mysql


def _installed(driver: str) -> bool:
    module = {"connectorx": "connectorx", "mysqlclient": "MySQLdb", "pymysql": "pymysql"}[driver]
    try:
        __import__(module)
    except ImportError:
        return False
    return True


INSTALLED_DRIVERS = [d for d in DRIVERS if _installed(d)]

EVERY_TYPE_DDL = """
CREATE TABLE {name} (
  id INT NOT NULL PRIMARY KEY,
  ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
  mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED,
  b1 TINYINT(1), bool1 BOOLEAN,
  dec1 DECIMAL(12,2), dec2 DECIMAL(65,30), dec3 DECIMAL(38,0), dec4 DECIMAL(5,5),
  f FLOAT, d DOUBLE,
  dt DATE, dtm DATETIME, dtm6 DATETIME(6), ts TIMESTAMP(6) NULL DEFAULT NULL,
  tm TIME, tm6 TIME(6), y YEAR,
  bit1 BIT(1), bit8 BIT(8), bit64 BIT(64),
  c CHAR(10), vc VARCHAR(100), tx TEXT, mtx MEDIUMTEXT, ltx LONGTEXT,
  j JSON, e ENUM('a','b','c d'), s SET('x','y','z'),
  bn BINARY(4), vb VARBINARY(20), bl BLOB, lbl LONGBLOB,
  lat VARCHAR(20) CHARACTER SET latin1
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
"""
EVERY_TYPE_ROWS = [
    """(1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
     -9223372036854775808, 18446744073709551615, 1, 0,
     1234567890.12, 12345678901234567890123456789012345.123456789012345678901234567891,
     12345678901234567890123456789012345678, 0.12345,
     3.40282e38, 1.7976931348623157e308, '1000-01-01', '9999-12-31 23:59:59',
     '2024-02-29 12:34:56.123456', '2038-01-19 03:14:07.999999', '-838:59:59',
     '12:34:56.654321', 2155, b'1', b'10101010',
     b'1111111111111111111111111111111111111111111111111111111111111111',
     'abc', 'héllo 😀 wörld', 'text\\ttab\\nnewline\\\\back', REPEAT('m', 1000), '',
     '{"a": [1, 2, {"b": null}], "c": "😀"}', 'c d', 'x,z',
     x'00010203', x'00ff0a0d095c4e', x'deadbeef00', x'', 'café')""",
    "(2, " + ", ".join(["NULL"] * 41) + ")",
    """(3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, -0.01, -0.000000000000000000000000000001, -1,
     -0.00001, 0.1234567, 0.30000000000000004, '2024-01-01', '2024-01-01 00:00:00',
     '2024-01-01 00:00:00.000001', '1970-01-01 00:00:01', '00:00:00', '23:59:59.999999', 1901,
     b'0', b'0', b'0', '', '', 'NULL', '\\\\N', 'a"b''c\\r\\0z', 'null', 'a', '', x'', x'',
     x'', x'', '')""",
    """(4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 9223372036854775808, 0, 0, 99.99, 1E-30, 0, 0, 16777217,
     -2.5e-300, '2000-02-29', '2000-01-01 23:59:59', '1999-12-31 23:59:59.5', NOW(6),
     '838:59:59', '-00:00:00.000001', 2000, b'1', b'11111111', b'1', 'tab\\there',
     'quote''s', '𠜎 4-byte 🎉', 'back\\\\slash', 'multi\\nline\\n', '[]', 'b', 'x,y,z',
     x'ffffffff', x'5c', x'09', x'0a', 'ÿ')""",
]


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> MariaDB:
    return ensure_server()


@dataclass
class Db:
    """A fresh database for one test, with helpers to fill and inspect it."""

    server: MariaDB
    name: str
    plugins: list[Any] = field(default_factory=list)

    @property
    def jdbc(self) -> str:
        return f"jdbc:mysql://{self.server.host}:{self.server.port}/{self.name}?useSSL=false"

    def connect(self) -> pymysql.connections.Connection:
        conn = self.server.connect(self.name)
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
        return conn

    def execute(self, *statements: str, args: Any = None) -> None:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement, args)
        finally:
            conn.close()

    def query(self, statement: str, args: Any = None) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(statement, args)
                return list(cur.fetchall())
        finally:
            conn.close()

    def checksum(self, table: str) -> int:
        return int(self.query(f"CHECKSUM TABLE `{table}` EXTENDED")[0][1])

    def count(self, table: str) -> int:
        return int(self.query(f"SELECT COUNT(*) FROM `{table}`")[0][0])

    def prepared(self, job_file: Path, state_dir: Path) -> list[Xid]:
        """The prepared XA transactions of the job in ``job_file`` run with ``state_dir``.

        XA RECOVER lists the whole server's, and other tests (other workers) hold theirs
        prepared for a moment between a checkpoint and its commit.
        """
        prefix = f"syncx-{job_identity(load_job(job_file).name, state_dir)}-"
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                return [x for x in xa_recover(cur) if x.gtrid.startswith(prefix)]
        finally:
            conn.close()

    def every_type_table(self, name: str, rows: list[str] | None = None) -> None:
        self.execute(EVERY_TYPE_DDL.format(name=f"`{name}`"))
        values = EVERY_TYPE_ROWS if rows is None else rows
        if values:
            self.execute(f"INSERT INTO `{name}` VALUES " + ", ".join(values))

    def connection(self, table: str) -> dict[str, Any]:
        return {"jdbcUrl": [self.jdbc], "table": [table]}

    def ctx(
        self, job: str = "job", run: str | None = None, state: dict | None = None, **setting: Any
    ) -> JobContext:
        dirty: list[DirtyRecord] = []
        context = JobContext.of(
            job,
            Path("/tmp/syncx-test-state") / self.name,
            Setting.model_validate(setting),
            run_id=run or time.strftime("%Y%m%d%H%M%S-") + uuid.uuid4().hex[:6],
            job_state=state or {},
            report_dirty=dirty.append,
        )
        context.dirty = dirty  # type: ignore[attr-defined]
        return context

    def reader(
        self, table: str | None = None, ctx: JobContext | None = None, **params: Any
    ) -> MysqlReader:
        params.setdefault("username", "root")
        if table is not None:
            params.setdefault("connection", [self.connection(table)])
        else:
            params.setdefault("connection", [{"jdbcUrl": [self.jdbc]}])
        reader = MysqlReader(MysqlReaderParams.model_validate(params), ctx or self.ctx())
        self.plugins.append(reader)
        return reader

    def writer(self, table: str, ctx: JobContext | None = None, **params: Any) -> MysqlWriter:
        params.setdefault("username", "root")
        params.setdefault("connection", [{"jdbcUrl": self.jdbc, "table": [table]}])
        writer = MysqlWriter(MysqlWriterParams.model_validate(params), ctx or self.ctx())
        self.plugins.append(writer)
        return writer


@pytest.fixture
def db(server: MariaDB) -> Iterator[Db]:
    name = server.create_database("syncx_my")
    database = Db(server, name)
    try:
        yield database
    finally:
        for plugin in database.plugins:
            with contextlib.suppress(Exception):
                plugin.close()
        _rollback_prepared(server, name)
        server.drop_database(name)


def _rollback_prepared(server: MariaDB, name: str) -> None:
    """End what a failed test left behind in ``name``: its sessions (killed) and its prepared
    XA transactions (rolled back), which would hold the locks ``DROP DATABASE`` waits for.

    A prepared transaction is this database's when its commit marker (written inside it,
    read here uncommitted) is in this database: other jobs on the server are left alone.
    """
    conn = server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM information_schema.processlist WHERE db = %s", (name,))
            killed = [int(session) for (session,) in cur.fetchall()]
            for session in killed:
                with contextlib.suppress(Exception):
                    cur.execute(f"KILL CONNECTION {session}")
            # a killed session's prepared transaction is in no list while the session ends
            deadline = time.monotonic() + 10
            while killed and time.monotonic() < deadline:
                cur.execute(
                    "SELECT COUNT(*) FROM information_schema.processlist WHERE id IN %s",
                    (killed,),
                )
                if cur.fetchone()[0] == 0:
                    break
                time.sleep(0.1)
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ UNCOMMITTED")
            try:
                cur.execute(f"SELECT `run`, `segment` FROM `{name}`.`_syncx_commits`")
                mine = {(str(run), str(segment)) for run, segment in cur.fetchall()}
            except pymysql.err.ProgrammingError:  # no marker table: no XA
                mine = set()
            deadline = time.monotonic() + 10
            while mine and time.monotonic() < deadline:
                left = [
                    x
                    for x in xa_recover(cur)
                    if any(x.gtrid.endswith(run) and x.bqual == seg for run, seg in mine)
                ]
                for xid in left:
                    with contextlib.suppress(Exception):
                        cur.execute(f"XA ROLLBACK {xid.sql()}")
                if not left:
                    break
                time.sleep(0.1)
    finally:
        conn.close()


def read_all(reader: MysqlReader, parallelism: int = 1) -> tuple[pa.Table, list[Any]]:
    """Every batch of every split (and the splits' final positions)."""
    reader.check()
    batches: list[pa.RecordBatch] = []
    positions = []
    for split in reader.plan(parallelism):
        opened = reader.open(split, None)
        for batch in opened.batches():
            if batch is not None:
                batches.append(batch)
        positions.append(opened.snapshot())
        opened.close()
    schema = reader.schema()
    return pa.Table.from_batches(batches, schema=schema), positions


def mysql_job(
    reader: dict[str, Any], writer: dict[str, Any], setting: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"job": {"content": [{"reader": reader, "writer": writer}], "setting": setting or {}}}


def write_json(path: Path, job: dict[str, Any]) -> Path:
    path.write_text(json.dumps(job, indent=1), encoding="utf-8")
    return path


# -- types and drivers --------------------------------------------------------------------------

EXPECTED_TYPES = {
    "id": pa.int32(),
    "ti": pa.int8(),
    "tiu": pa.uint8(),
    "si": pa.int16(),
    "siu": pa.uint16(),
    "mi": pa.int32(),
    "miu": pa.uint32(),
    "i": pa.int32(),
    "iu": pa.uint32(),
    "bi": pa.int64(),
    "biu": pa.uint64(),
    "b1": pa.int8(),
    "bool1": pa.int8(),
    "dec1": pa.decimal128(12, 2),
    "dec2": pa.decimal256(65, 30),
    "dec3": pa.decimal128(38, 0),
    "dec4": pa.decimal128(5, 5),
    "f": pa.float32(),
    "d": pa.float64(),
    "dt": pa.date32(),
    "dtm": pa.timestamp("us"),
    "dtm6": pa.timestamp("us"),
    "ts": pa.timestamp("us", tz="UTC"),
    "tm": pa.duration("us"),
    "tm6": pa.duration("us"),
    "y": pa.int16(),
    "bit1": pa.bool_(),
    "bit8": pa.uint64(),
    "bit64": pa.uint64(),
    "c": pa.string(),
    "vc": pa.string(),
    "tx": pa.string(),
    "mtx": pa.string(),
    "ltx": pa.string(),
    "j": pa.string(),
    "e": pa.string(),
    "s": pa.string(),
    "bn": pa.binary(),
    "vb": pa.binary(),
    "bl": pa.binary(),
    "lbl": pa.binary(),
    "lat": pa.string(),
}


def test_every_type_maps_exactly_and_every_driver_agrees(db: Db) -> None:
    db.every_type_table("t")
    tables = {}
    for driver in INSTALLED_DRIVERS:
        reader = db.reader("t", driver=driver)
        tables[driver], _ = read_all(reader)
        assert not reader.ctx.dirty  # type: ignore[attr-defined]
    reference = tables["pymysql"]
    assert {f.name: f.type for f in reference.schema} == EXPECTED_TYPES
    for driver, table in tables.items():
        assert table.equals(reference), f"{driver} differs from pymysql"
    rows = {r["id"]: r for r in reference.to_pylist()}
    first, nulls, third, fourth = rows[1], rows[2], rows[3], rows[4]
    assert all(v is None for k, v in nulls.items() if k != "id")
    assert first["biu"] == 18446744073709551615
    assert first["bi"] == -9223372036854775808
    assert first["dec2"] == Decimal(
        "12345678901234567890123456789012345.123456789012345678901234567891"
    )
    assert first["dec3"] == Decimal("12345678901234567890123456789012345678")
    assert third["dec2"] == Decimal("-0.000000000000000000000000000001")
    assert first["dtm6"] == dt.datetime(2024, 2, 29, 12, 34, 56, 123456)
    assert first["ts"] == dt.datetime(2038, 1, 19, 3, 14, 7, 999999, tzinfo=dt.UTC)
    assert first["tm"] == -dt.timedelta(hours=838, minutes=59, seconds=59)
    assert fourth["tm"] == dt.timedelta(hours=838, minutes=59, seconds=59)
    assert fourth["tm6"] == -dt.timedelta(microseconds=1)
    assert first["tm6"] == dt.timedelta(hours=12, minutes=34, seconds=56, microseconds=654321)
    assert first["y"] == 2155
    assert (first["bit1"], first["bit8"], first["bit64"]) == (True, 0b10101010, 2**64 - 1)
    assert first["vc"] == "héllo 😀 wörld"
    assert fourth["tx"] == "𠜎 4-byte 🎉"
    assert first["tx"] == "text\ttab\nnewline\\back"
    assert third["ltx"] == "a\"b'c\r\x00z"
    assert third["mtx"] == "\\N"
    assert first["j"] == '{"a": [1, 2, {"b": null}], "c": "😀"}'
    assert (first["e"], first["s"]) == ("c d", "x,z")
    assert first["vb"] == b"\x00\xff\n\r\t\\N"
    assert first["bn"] == b"\x00\x01\x02\x03"
    assert first["lat"] == "café"
    assert third["f"] == pytest.approx(0.1234567, rel=1e-7)
    assert pa.array([third["f"]], pa.float32())[0].as_py() == third["f"]
    assert third["d"] == 0.30000000000000004
    assert fourth["dtm6"] == dt.datetime(1999, 12, 31, 23, 59, 59, 500000)


def test_connectorx_is_the_fast_path_and_falls_back_on_zero_dates(db: Db) -> None:
    if "connectorx" not in INSTALLED_DRIVERS:
        pytest.skip("connectorx is not installed")
    db.execute("CREATE TABLE z (id INT PRIMARY KEY, d DATE, v INT)")
    db.execute(
        "SET SESSION sql_mode = ''",
        "INSERT INTO z VALUES (1, '2024-01-01', 1), (2, '2024-01-02', 2), "
        "(3, '0000-00-00', 3), (4, NULL, 4), (5, '2024-01-05', 5)",
    )
    before = Fetcher.connectorx_rows
    reader = db.reader("z", pageSize=2)  # pages [1, 2], [3, 4] (a zero date), [5]
    assert reader.driver() == "connectorx"
    table, _ = read_all(reader)
    assert Fetcher.connectorx_rows - before == 2  # the first page came through connectorx
    assert table.column("id").to_pylist() == [1, 2, 4, 5]  # the zero date is a dirty record
    dirty = reader.ctx.dirty  # type: ignore[attr-defined]
    assert len(dirty) == 1 and "0000-00-00" in dirty[0].error and dirty[0].kind == "conversion"


_TRIM_PROBE = """
import ctypes
from libs.mysql import fetch

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
MB = 1 << 20


def freed(size):
    # 64 KiB blocks (below glibc's mmap threshold: they come from the heap), written to, then
    # freed but the last, which keeps them off the heap's top (glibc gives the top back itself)
    blocks = [libc.malloc(64 << 10) for _ in range(size // (64 << 10) + 1)]
    for block in blocks:
        ctypes.memset(block, 1, 64 << 10)
    for block in blocks[:-1]:
        libc.free(block)
    return blocks[-1]


fetch.trim_malloc()  # the first page sets the mark
start = fetch.resident_bytes()
pins = [freed(fetch.TRIM_GROWTH // 4)]
small = fetch.resident_bytes()
fetch.trim_malloc()
after_small = fetch.resident_bytes()
pins.append(freed(fetch.TRIM_GROWTH * 2))
big = fetch.resident_bytes()
fetch.trim_malloc()
print((small - start) // MB, (after_small - start) // MB, (big - start) // MB,
      (fetch.resident_bytes() - start) // MB)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc_trim")
def test_freed_memory_is_given_back_once_the_process_has_grown() -> None:
    """A page's trim runs only when the process grew by TRIM_GROWTH since the last one: a trim
    after every page made the next page fault its memory in again."""
    done = subprocess.run(
        [sys.executable, "-c", _TRIM_PROBE],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    growth = fetch.TRIM_GROWTH >> 20
    small, after_small, big, after_big = (int(v) for v in done.stdout.split())
    assert small >= growth // 4 - 2  # the freed blocks stay resident...
    assert after_small >= small - 1  # ...below the growth: kept for the next page
    assert big >= 2 * growth - 2
    assert after_big < big - growth  # past it: given back


def test_declared_types_keep_the_exact_type_of_the_same_family(db: Db) -> None:
    db.execute(
        "CREATE TABLE t (id INT UNSIGNED PRIMARY KEY, money DECIMAL(12,2), ts TIMESTAMP(6) NULL, "
        "flag TINYINT(1), name VARCHAR(10))",
        "INSERT INTO t VALUES (4294967295, 12.30, '2024-01-01 00:00:00.5', 1, 'x')",
    )
    columns = [
        {"name": "id", "type": "int"},
        {"name": "money", "type": "decimal"},
        {"name": "ts", "type": "timestamp"},
        {"name": "flag", "type": "boolean"},
        {"name": "name", "type": "varchar"},
        {"name": "money", "type": "string"},
    ]
    table, _ = read_all(db.reader("t", column=columns))
    assert [f.type for f in table.schema] == [
        pa.uint32(),
        pa.decimal128(12, 2),
        pa.timestamp("us", tz="UTC"),
        pa.bool_(),
        pa.string(),
        pa.string(),
    ]
    assert table.to_pylist()[0]["money"] == "12.30"  # last duplicate name wins in to_pylist
    assert table.column(0).to_pylist() == [4294967295]


def test_constant_and_default_values_and_formats(db: Db) -> None:
    db.execute(
        "CREATE TABLE t (id INT PRIMARY KEY, note VARCHAR(20), day VARCHAR(20))",
        "INSERT INTO t VALUES (1, NULL, '2024/03/01 10:11:12'), (2, 'x', NULL)",
    )
    columns = [
        {"name": "id", "type": "int"},
        {"name": "note", "type": "string", "value": "none"},
        {"name": "day", "type": "timestamp", "format": "yyyy/MM/dd HH:mm:ss"},
        {"name": "raw_date", "type": "string", "value": "2014-12-12 14:24:16"},
    ]
    table, _ = read_all(db.reader("t", column=columns))
    assert table.column_names == ["id", "note", "day", "raw_date"]
    assert table.to_pylist() == [
        {
            "id": 1,
            "note": "none",
            "day": dt.datetime(2024, 3, 1, 10, 11, 12),
            "raw_date": "2014-12-12 14:24:16",
        },
        {"id": 2, "note": "x", "day": None, "raw_date": "2014-12-12 14:24:16"},
    ]


# -- MySQL → MySQL through the command line -----------------------------------------------------


def _copy_job(db: Db, source: str, target: str, **writer: Any) -> dict[str, Any]:
    setting = writer.pop("setting", {"speed": {"channel": 1}})
    reader_params = writer.pop("reader", {})
    return mysql_job(
        {
            "name": "mysqlreader",
            "parameter": {
                "username": "root",
                "password": "",
                "connection": [db.connection(source)],
                "column": ["*"],
                **reader_params,
            },
        },
        {
            "name": "mysqlwriter",
            "parameter": {
                "username": "root",
                "password": "",
                "connection": [{"jdbcUrl": db.jdbc, "table": [target]}],
                **writer,
            },
        },
        setting,
    )


def _assert_same_rows(db: Db, source: str, target: str) -> None:
    """Exact comparison: the checksums of two tables of one definition, and row by row."""
    order = "ORDER BY id"
    expected = db.query(f"SELECT * FROM `{source}` {order}")
    actual = db.query(f"SELECT * FROM `{target}` {order}")
    assert len(actual) == len(expected)
    for want, got in zip(expected, actual, strict=True):
        assert got == want
    assert db.checksum(target) == db.checksum(source)


@pytest.mark.parametrize("semantic", ["exactly-once", "at-least-once"])
@pytest.mark.parametrize("load_data", [True, False], ids=["load-data", "statements"])
def test_every_type_copies_exactly(
    db: Db, tmp_path: Path, run_cli: RunCli, semantic: str, load_data: bool
) -> None:
    db.every_type_table("src")
    db.execute("CREATE TABLE dst LIKE src")
    job = _copy_job(db, "src", "dst", semantic=semantic, loadData=load_data)
    path = write_json(tmp_path / "copy.json", job)
    done = run_cli("run", path, "--state-dir", tmp_path / "st")
    assert done.returncode == 0, done.stderr
    assert f"; {semantic}" in done.stderr
    _assert_same_rows(db, "src", "dst")
    assert db.prepared(path, tmp_path / "st") == []


def test_two_channels_copy_exactly_with_checkpoints(
    db: Db, tmp_path: Path, run_cli: RunCli
) -> None:
    db.execute("CREATE TABLE src (id BIGINT PRIMARY KEY, v VARCHAR(20), n DECIMAL(10,3))")
    db.execute("INSERT INTO src SELECT seq, CONCAT('v', seq), seq / 7 FROM seq_1_to_30000")
    db.execute("CREATE TABLE dst LIKE src")
    job = _copy_job(
        db,
        "src",
        "dst",
        semantic="exactly-once",
        reader={"splitPk": "id", "fetchSize": 1000, "pageSize": 5000},
        setting={"speed": {"channel": 2, "record": 20000}, "restore": {"isRestore": True}},
    )
    path = write_json(tmp_path / "two.json", job)
    done = run_cli("run", path, "--state-dir", tmp_path / "st", "--checkpoint-interval", "0.3")
    assert done.returncode == 0, done.stderr
    _assert_same_rows(db, "src", "dst")
    checkpoints = db.query("SELECT COUNT(DISTINCT `checkpoint`) FROM _syncx_commits")[0][0]
    assert checkpoints >= 3  # one XA transaction per checkpoint and subtask


# -- write modes and rejected rows --------------------------------------------------------------


def _rows_batch(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(rows, schema=schema)


KV = pa.schema([("id", pa.int64()), ("name", pa.string()), ("qty", pa.int64())])


def _write(writer: MysqlWriter, *batches: pa.RecordBatch, checkpoint: int = 1) -> list[DirtyRecord]:
    """begin, one task, write, prepare, commit (a whole run in one checkpoint)."""
    writer.check()
    writer.begin([], fresh=True)
    task = writer.open(0, 1, batches[0].schema)
    dirty: list[DirtyRecord] = []
    try:
        for batch in batches:
            dirty.extend(task.write(batch))
        handle = task.prepare(checkpoint)
        if handle is not None:
            task.commit(handle)
    finally:
        task.close()
    writer.finish()
    return dirty


@pytest.mark.parametrize("load_data", [True, False], ids=["load-data", "statements"])
@pytest.mark.parametrize("semantic", ["exactly-once", "at-least-once"])
def test_rejected_rows_are_dirty_and_the_rest_is_written(
    db: Db, load_data: bool, semantic: str
) -> None:
    db.execute(
        "CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(5) NOT NULL, qty INT UNSIGNED, "
        "CONSTRAINT qty_small CHECK (qty < 1000))",
        "INSERT INTO t VALUES (1, 'old', 1)",
    )
    rows: list[dict[str, Any]] = [
        {"id": 2, "name": "ok", "qty": 2},
        {"id": 1, "name": "dup", "qty": 3},  # duplicate key
        {"id": 3, "name": "toolongname", "qty": 4},  # data too long
        {"id": 4, "name": None, "qty": 5},  # NOT NULL (found before the server)
        {"id": 5, "name": "chk", "qty": 5000},  # CHECK constraint
        {"id": 6, "name": "neg", "qty": -1},  # out of range for UNSIGNED
        {"id": 7, "name": "ok2", "qty": None},
        {"id": 2, "name": "dup2", "qty": 8},  # duplicate within the batch
    ]
    writer = db.writer("t", semantic=semantic, loadData=load_data, writeMode="insert")
    dirty = _write(writer, _rows_batch(rows, KV))
    assert db.query("SELECT id, name, qty FROM t ORDER BY id") == [
        (1, "old", 1),
        (2, "ok", 2),
        (7, "ok2", None),
    ]
    by_id = {d.row["id"]: d for d in dirty}
    assert sorted(by_id) == [1, 2, 3, 4, 5, 6]
    assert by_id[1].kind == "duplicate" and "Duplicate entry '1'" in by_id[1].error
    assert by_id[2].kind == "duplicate"
    assert "too long" in by_id[3].error.lower()
    assert by_id[4].kind == "null"
    assert "qty_small" in by_id[5].error
    assert "qty" in by_id[6].error


@pytest.mark.parametrize("semantic", ["exactly-once", "at-least-once"])
def test_replace_and_update_modes(db: Db, semantic: str) -> None:
    db.execute(
        "CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20), qty INT, note VARCHAR(10) DEFAULT 'keep')",
        "INSERT INTO t (id, name, qty) VALUES (1, 'a', 1), (2, 'b', 2)",
    )
    batch = _rows_batch(
        [
            {"id": 2, "name": "B", "qty": 20},
            {"id": 3, "name": "C", "qty": 30},
            {"id": 3, "name": "C2", "qty": 31},
        ],
        KV,
    )
    db.execute("UPDATE t SET note = 'mine' WHERE id = 2")
    dirty = _write(db.writer("t", semantic=semantic, writeMode="replace"), batch)
    assert not dirty
    # REPLACE deletes and inserts: the unwritten column gets its default again
    assert db.query("SELECT id, name, qty, note FROM t ORDER BY id") == [
        (1, "a", 1, "keep"),
        (2, "B", 20, "keep"),
        (3, "C2", 31, "keep"),
    ]
    db.execute("UPDATE t SET note = 'mine' WHERE id = 2")
    update = _rows_batch(
        [{"id": 2, "name": "BB", "qty": 200}, {"id": 4, "name": "D", "qty": 4}], KV
    )
    dirty = _write(
        db.writer("t", semantic=semantic, writeMode="update", updateKey={"key": ["id"]}), update
    )
    assert not dirty
    # ON DUPLICATE KEY UPDATE changes only the written columns
    assert db.query("SELECT id, name, qty, note FROM t ORDER BY id") == [
        (1, "a", 1, "keep"),
        (2, "BB", 200, "mine"),
        (3, "C2", 31, "keep"),
        (4, "D", 4, "keep"),
    ]


def test_update_without_any_unique_key_writes_inserts(db: Db) -> None:
    db.execute("CREATE TABLE t (id INT, name VARCHAR(20), qty INT)")
    batch = _rows_batch([{"id": 1, "name": "a", "qty": 1}, {"id": 1, "name": "a", "qty": 1}], KV)
    assert not _write(db.writer("t", writeMode="update"), batch)
    assert db.count("t") == 2  # as ChunJun: no unique key, plain inserts


def test_column_mapping_by_position_and_pre_post_sql(db: Db) -> None:
    db.execute(
        "CREATE TABLE t (a INT PRIMARY KEY, b VARCHAR(20), c INT)",
        "INSERT INTO t VALUES (99, 'gone', 0)",
    )
    batch = _rows_batch([{"id": 1, "name": "x", "qty": 5}], KV)
    writer = db.writer(
        "t",
        column=[{"name": "a", "type": "int"}, {"name": "b", "type": "varchar"}, "c"],
        preSql=["truncate table t;"],
        postSql=["update t set c = c + 1;"],
    )
    assert not _write(writer, batch)
    assert db.query("SELECT * FROM t") == [(1, "x", 6)]


# -- XA: two-phase commit through the contract -------------------------------------------------


def _ids(first: int, count: int) -> pa.RecordBatch:
    return _rows_batch(
        [{"id": i, "name": f"n{i}", "qty": i} for i in range(first, first + count)], KV
    )


def _prepared(db: Db, writer: MysqlWriter) -> list[Xid]:
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            return [x for x in xa_recover(cur) if x.gtrid.startswith(writer.xid_prefix())]
    finally:
        conn.close()


def test_xa_prepared_rows_are_invisible_until_committed(db: Db) -> None:
    db.execute("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20), qty INT)")
    writer = db.writer("t", semantic="exactly-once")
    assert writer.effective_semantic() == "exactly-once"
    writer.check()
    writer.begin([], fresh=True)
    task = writer.open(0, 1, KV)
    assert task.prepare(1) is None  # nothing written: no transaction, no xid
    assert not task.write(_ids(1, 100))
    first = task.prepare(2)
    assert isinstance(first, XaHandle) and first.checkpoint == 2 and first.rows == 100
    assert db.count("t") == 0
    assert [str(x) for x in _prepared(db, writer)] == [str(first.xa)]
    assert not task.write(_ids(101, 50))  # the next transaction, on a new connection
    task.commit(first)
    assert db.count("t") == 100
    task.commit(first)  # again: the xid is gone, its marker row proves the commit
    assert db.count("t") == 100
    second = task.prepare(3)
    task.abort(second)
    task.abort(second)
    assert db.count("t") == 100
    assert _prepared(db, writer) == []
    task.close()


def test_xa_restore_commits_the_checkpoint_and_rolls_back_later_work(db: Db) -> None:
    db.execute("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20), qty INT)")
    ctx = db.ctx(job="restore", run="20240101000000-aaaaaa")
    writer = db.writer("t", ctx=ctx, semantic="exactly-once")
    writer.check()
    writer.begin([], fresh=True)
    tasks = [writer.open(i, 2, KV) for i in range(2)]
    tasks[0].write(_ids(1, 10))
    tasks[1].write(_ids(11, 10))
    stored = [tasks[0].prepare(1), tasks[1].prepare(1)]  # checkpoint 1 is stored...
    tasks[0].write(_ids(21, 10))
    later = tasks[0].prepare(2)  # ... checkpoint 2 is prepared but never stored
    tasks[1].write(_ids(31, 10))  # open, not prepared
    for task in tasks:  # the process dies: its connections close
        raw = task.session._raw  # type: ignore[attr-defined]
        if raw is not None:
            raw.close()
    writer.close()
    assert later is not None
    assert len(_prepared(db, writer)) == 3
    restored = db.writer(
        "t", ctx=db.ctx(job="restore", run="20240101000000-aaaaaa"), semantic="exactly-once"
    )
    restored.check()
    # the checkpoint was written by the previous version of syncx: handles were plain dicts
    legacy = [
        {k: v for k, v in h.to_json().items() if k not in ("v", "schema", "deferred")}
        for h in stored
        if h is not None
    ]
    assert all(h["kind"] == "xa" for h in legacy)
    assert [decode(restored.handle_type, h) for h in legacy] == stored
    restored.begin([decode(restored.handle_type, h) for h in legacy], fresh=False)
    assert db.query("SELECT MIN(id), MAX(id), COUNT(*) FROM t") == [(1, 20, 20)]
    assert _prepared(db, restored) == []
    restored.begin(stored, fresh=False)  # a second restore of the same checkpoint: no change
    assert db.count("t") == 20


def test_xa_commit_of_a_transaction_rolled_back_by_hand_fails_loudly(db: Db) -> None:
    db.execute("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20), qty INT)")
    writer = db.writer("t", semantic="exactly-once")
    writer.check()
    writer.begin([], fresh=True)
    task = writer.open(0, 1, KV)
    task.write(_ids(1, 5))
    handle = task.prepare(1)
    task.close()
    assert isinstance(handle, XaHandle)
    db.execute(f"XA ROLLBACK {handle.xa.sql()}")
    with pytest.raises(JobFailedError, match="rolled back outside syncx"):
        writer.commit_handle(handle)
    assert db.count("t") == 0


def test_xa_ids_separate_jobs_of_the_same_name(db: Db) -> None:
    db.execute("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20), qty INT)")
    one = db.writer("t", ctx=db.ctx(job="same"), semantic="exactly-once")
    other_ctx = db.ctx(job="same")
    other_ctx.job_id = job_identity("same", Path("/tmp/another-state-dir"))
    other = db.writer("t", ctx=other_ctx, semantic="exactly-once")
    one.check()
    one.begin([], fresh=True)
    task = one.open(0, 1, KV)
    task.write(_ids(1, 3))
    handle = task.prepare(1)
    task.close()
    other.check()
    other.begin([], fresh=True)  # rolls back its own leftovers only
    assert len(_prepared(db, one)) == 1
    one.commit_handle(handle)
    assert db.count("t") == 3


# -- killed for real, restored, exact -----------------------------------------------------------

CRASH_ROWS = 160_000
CRASH_RATE = 20_000


def _crash_source(db: Db) -> None:
    db.execute(
        "CREATE TABLE src (id BIGINT PRIMARY KEY, v VARCHAR(40) NOT NULL, n DECIMAL(12,3), "
        "t DATETIME(6), b VARBINARY(8))"
    )
    db.execute(
        f"INSERT INTO src SELECT seq, CONCAT('v-', seq, '-😀'), seq / 7, "
        f"'2024-01-01' + INTERVAL seq SECOND, UNHEX(HEX(seq)) FROM seq_1_to_{CRASH_ROWS}"
    )
    db.execute("CREATE TABLE dst LIKE src")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("semantic", "mode"), [("exactly-once", "insert"), ("at-least-once", "replace")]
)
def test_sigkill_during_writes_then_restore_is_exact(
    db: Db, tmp_path: Path, semantic: str, mode: str
) -> None:
    _crash_source(db)
    job = _copy_job(
        db,
        "src",
        "dst",
        semantic=semantic,
        writeMode=mode,
        reader={"splitPk": "id", "fetchSize": 1000, "pageSize": 8000},
        setting={
            "speed": {"readerChannel": 2, "writerChannel": 2, "record": CRASH_RATE},
            "restore": {"isRestore": True},
        },
    )
    path = write_json(tmp_path / "crash.json", job)
    seed = int(os.environ.get("SYNCX_CRASH_SEED", "20240607"))
    rng = random.Random(seed)
    plan = mixed_kill_plan(
        rng,
        random_kills=2,
        window=(0.8, 2.0),
        progress_kills=3,
        crash_points=[
            "writer-prepared@2",
            "checkpoint-stored@2",
            f"barrier-sent@{rng.randint(1, 4)}",
            # at-least-once has nothing to commit after a checkpoint
            *(["writer-committed@1"] if semantic == "exactly-once" else []),
        ],
    )
    plan.insert(2, Kill(after=0.3, after_output=" stored"))
    report = run_until_done(
        path, tmp_path / "state", plan, seed=seed, extra_args=["--checkpoint-interval", "0.4"]
    )
    context = report.summary()
    print(context)
    assert db.query("SELECT COUNT(*), COUNT(DISTINCT id) FROM dst") == [(CRASH_ROWS, CRASH_ROWS)], (
        context
    )
    assert db.checksum("dst") == db.checksum("src"), context
    assert db.prepared(path, tmp_path / "state") == []
    assert report.kills >= (8 if semantic == "exactly-once" else 7), context


# -- splits -------------------------------------------------------------------------------------


def _split_counts(reader: MysqlReader, parallelism: int) -> tuple[list[int], pa.Table]:
    reader.check()
    counts = []
    tables = []
    for split in reader.plan(parallelism):
        rows = [b for b in reader.open(split, None).batches() if b is not None]
        table = pa.Table.from_batches(rows, schema=reader.schema())
        counts.append(table.num_rows)
        tables.append(table)
    return counts, pa.concat_tables(tables)


def test_range_splits_on_a_skewed_key_are_balanced(db: Db) -> None:
    # 18,000 dense ids near the bottom and 2,000 spread up to 10^9: equal widths would give
    # one channel 90% of the rows
    db.execute("CREATE TABLE t (id BIGINT PRIMARY KEY, v INT)")
    db.execute("INSERT INTO t SELECT seq, seq FROM seq_1_to_18000")
    db.execute("INSERT INTO t SELECT 1000000 * seq + 7, seq FROM seq_1_to_2000")
    reader = db.reader("t", splitPk="id", fetchSize=2000, pageSize=3000)
    counts, table = _split_counts(reader, 4)
    assert sum(counts) == 20000
    assert sorted(table.column("id").to_pylist()) == sorted(
        r[0] for r in db.query("SELECT id FROM t")
    )
    assert max(counts) <= 2 * 20000 / 4, counts  # balanced within a factor of 2


def test_range_splits_on_a_uniform_key_have_equal_widths(db: Db) -> None:
    db.execute("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
    db.execute("INSERT INTO t SELECT seq, seq FROM seq_1_to_10000")
    reader = db.reader("t", splitPk="id")
    reader.check()
    spans = [s.data.range for s in reader.plan(4)]
    assert [(s["lo"], s["hi"]) for s in spans] == [
        (None, 2501),
        (2501, 5001),
        (5001, 7501),
        (7501, None),
    ]
    counts, _ = _split_counts(reader, 4)
    assert counts == [2500, 2500, 2500, 2500]


def test_mod_strategy_nullable_split_key_and_where(db: Db) -> None:
    db.execute("CREATE TABLE t (id INT PRIMARY KEY, g INT NULL, v INT, KEY (g))")
    db.execute("INSERT INTO t SELECT seq, IF(seq % 10 = 0, NULL, seq % 97), seq FROM seq_1_to_3000")
    reader = db.reader("t", splitPk="g", splitStrategy="mod", where="v > 100")
    counts, table = _split_counts(reader, 3)
    expected = sorted(r[0] for r in db.query("SELECT id FROM t WHERE v > 100"))
    assert sorted(table.column("id").to_pylist()) == expected
    assert len(counts) == 3 and all(c > 0 for c in counts)


def test_non_unique_restore_column_resumes_exactly(db: Db) -> None:
    db.execute("CREATE TABLE t (id INT PRIMARY KEY, grp INT NOT NULL, KEY (grp))")
    db.execute("INSERT INTO t SELECT seq, seq DIV 7 FROM seq_1_to_2000")  # runs of 7 equal keys
    ctx = db.ctx(restore={"isRestore": True, "restoreColumnName": "grp"})
    reader = db.reader("t", ctx=ctx, fetchSize=5, pageSize=12)
    reader.check()
    (split,) = reader.plan(1)
    seen: list[int] = []
    position = None
    while True:  # reopen after every batch: each position must continue exactly
        opened = reader.open(split, position)
        batch = next((b for b in opened.batches() if b is not None), None)
        if batch is None:
            break
        seen.extend(batch.column("id").to_pylist())
        position = json.loads(json.dumps(opened.snapshot().to_json()))  # as a checkpoint
        opened.close()
    assert sorted(seen) == list(range(1, 2001)) and len(seen) == 2000


def test_split_data_and_positions_of_the_previous_version_still_load() -> None:
    """Plain dicts (no version) as the previous syncx stored them; ``from``/``to`` renamed."""
    mark = {"value": 5, "inclusive": True, "keys": [1]}
    old = {"mode": "keyset", "key": "id", "range": None, "nulls": False, "from": mark, "to": 9}
    split = decode(MysqlReader.split_type, old)
    assert split == MysqlSplit(mode="keyset", key="id", start=mark, stop=9)
    assert decode(MysqlReader.split_type, split.to_json()) == split
    position = decode(MysqlReader.position_type, {"after": 7, "inc": mark})
    assert position == MysqlPosition(after=7, inc=mark)
    assert position.to_json() == {"v": 1, "after": 7, "inc": mark}


def test_layout_casts_every_batch_and_arenas_are_capped_only_when_reading(db: Db) -> None:
    """``layout=`` (what binlogreader's snapshot reader gives): batches take its names and
    types, values that do not fit are dirty. glibc's arenas are capped when a split opens, not
    when the plugin is built or checked (``syncx validate``)."""
    db.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))")
    db.execute("INSERT INTO t VALUES (1, '10'), (2, 'x'), (3, NULL)")
    layout = pa.schema([("key", pa.int64()), ("value", pa.int32())])
    ctx = db.ctx()
    params = {"username": "root", "connection": [db.connection("t")]}
    fetch._ARENAS_LIMITED = False  # as in a fresh process
    reader = MysqlReader(MysqlReaderParams.model_validate(params), ctx, layout=layout)
    db.plugins.append(reader)
    reader.check()
    (split,) = reader.plan(1)
    assert reader.schema() == layout
    assert not fetch._ARENAS_LIMITED
    opened = reader.open(split, None)
    assert (
        sys.platform == "linux" and not os.environ.get("MALLOC_ARENA_MAX")
    ) == fetch._ARENAS_LIMITED
    batches = [b for b in opened.batches() if b is not None]
    opened.close()
    assert all(b.schema == layout for b in batches)
    assert pa.Table.from_batches(batches).to_pylist() == [
        {"key": 1, "value": 10},
        {"key": 3, "value": None},
    ]
    assert [d.row for d in ctx.dirty] == [{"key": 2, "value": "x"}]  # type: ignore[attr-defined]


def test_restore_from_a_position_rereads_nothing(db: Db) -> None:
    db.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))")
    db.execute("INSERT INTO t SELECT seq, CONCAT('x', seq) FROM seq_1_to_1000")
    for driver in INSTALLED_DRIVERS:
        reader = db.reader("t", driver=driver, fetchSize=100, pageSize=250)
        reader.check()
        (split,) = reader.plan(1)
        opened = reader.open(split, None)
        batches = opened.batches()
        first = [b for b in (next(batches) for _ in range(3)) if b is not None]
        position = opened.snapshot()
        opened.close()
        assert position == MysqlPosition(after=first[-1].column("id")[-1].as_py())
        rest = [b for b in reader.open(split, position).batches() if b is not None]
        ids = [i for b in first + rest for i in b.column("id").to_pylist()]
        assert ids == list(range(1, 1001)), driver


# -- incremental runs and polling ---------------------------------------------------------------


def _events(db: Db) -> None:
    db.execute(
        "CREATE TABLE ev (id INT PRIMARY KEY, ts DATETIME(6) NOT NULL, v VARCHAR(20), KEY (ts))"
    )
    db.execute(
        "INSERT INTO ev SELECT seq * 10, '2024-01-01' + INTERVAL seq MINUTE, CONCAT('v', seq) "
        "FROM seq_1_to_100"
    )
    # three rows share the newest value
    db.execute(
        "INSERT INTO ev VALUES (2000, '2024-01-01 01:40:00', 'tie1'), "
        "(3000, '2024-01-01 01:40:00', 'tie2')"
    )
    db.execute("CREATE TABLE ev_copy LIKE ev")


def _incremental_job(db: Db, **reader: Any) -> dict[str, Any]:
    return _copy_job(
        db,
        "ev",
        "ev_copy",
        semantic="exactly-once",
        reader={"increColumn": "ts", **reader},
        setting={"speed": {"channel": 2}, "restore": {"isRestore": True}},
    )


def _run_metrics(run_cli: RunCli, path: Path, state: Path, tmp_path: Path) -> dict[str, Any]:
    metrics = tmp_path / f"metrics-{uuid.uuid4().hex[:6]}.json"
    done = run_cli("run", path, "--state-dir", state, "--metrics-file", metrics)
    assert done.returncode == 0, done.stderr
    return json.loads(metrics.read_text())["metrics"]


@pytest.mark.parametrize("use_max_func", [False, True])
def test_incremental_runs_back_to_back_read_only_new_rows(
    db: Db, tmp_path: Path, run_cli: RunCli, use_max_func: bool
) -> None:
    _events(db)
    job = _incremental_job(db, useMaxFunc=use_max_func, splitPk="id")
    path = write_json(tmp_path / "inc.json", job)
    state = tmp_path / "state"
    first = _run_metrics(run_cli, path, state, tmp_path)
    assert first["numRead"] == 102 and first["nErrors"] == 0
    _assert_same_rows(db, "ev", "ev_copy")
    stored = json.loads((state / "job-state.json").read_text())
    assert "01:40:00" in json.dumps(stored)
    # new rows: two more with the boundary value (one with a smaller key than those read),
    # one newer, and one older than the watermark (never read: below it, as documented)
    db.execute(
        "INSERT INTO ev VALUES (15, '2024-01-01 01:40:00', 'late tie, small key'), "
        "(4000, '2024-01-01 01:40:00', 'late tie'), (4001, '2024-01-02', 'newer'), "
        "(4002, '2023-12-31', 'older')"
    )
    second = _run_metrics(run_cli, path, state, tmp_path)
    assert second["numRead"] == 3 and second["nErrors"] == 0
    assert db.count("ev_copy") == 105
    third = _run_metrics(run_cli, path, state, tmp_path)
    assert third["numRead"] == 0
    assert db.query("SELECT id FROM ev WHERE id NOT IN (SELECT id FROM ev_copy)") == [(4002,)]


@pytest.mark.parametrize(("use_max_func", "expected"), [(False, 40), (True, 41)])
def test_start_location_is_exclusive_or_inclusive_with_use_max_func(
    db: Db, use_max_func: bool, expected: int
) -> None:
    _events(db)
    reader = db.reader(
        "ev", increColumn="ts", startLocation="2024-01-01 01:00:00", useMaxFunc=use_max_func
    )
    table, positions = read_all(reader)
    assert table.num_rows == expected + 2  # + the two boundary rows at 01:40
    state = reader.next_job_state({str(i): p for i, p in enumerate(positions)})
    assert state is not None
    mark = Watermark.from_json(state["watermark"])
    assert mark.value == dt.datetime(2024, 1, 1, 1, 40)
    assert mark.keys == {1000, 2000, 3000}


def test_use_max_func_leaves_rows_written_during_the_run_for_the_next(db: Db) -> None:
    _events(db)
    reader = db.reader("ev", increColumn=1, column=["id", "ts", "v"], useMaxFunc=True)
    reader.check()
    splits = reader.plan(1)
    db.execute("INSERT INTO ev VALUES (5000, '2024-02-01', 'during the run')")
    rows = []
    positions = {}
    for split in splits:
        opened = reader.open(split, None)
        rows += [b for b in opened.batches() if b is not None]
        positions[split.id] = opened.snapshot()
    assert sum(b.num_rows for b in rows) == 102
    state = reader.next_job_state(positions)
    again = db.reader("ev", ctx=db.ctx(state=state), increColumn="ts", useMaxFunc=True)
    table, _ = read_all(again)
    assert table.column("id").to_pylist() == [5000]


def test_incremental_without_a_key_is_exclusive(db: Db) -> None:
    db.execute("CREATE TABLE nk (ts INT NOT NULL, v VARCHAR(10))")
    db.execute("INSERT INTO nk VALUES (1, 'a'), (2, 'b'), (2, 'c')")
    reader = db.reader("nk", increColumn="ts")
    table, positions = read_all(reader)
    state = reader.next_job_state({"s": positions[0]})
    assert state is not None and state["watermark"] == {"value": 2, "inclusive": False, "keys": []}
    db.execute("INSERT INTO nk VALUES (2, 'late'), (3, 'd')")
    table, _ = read_all(db.reader("nk", ctx=db.ctx(state=state), increColumn="ts"))
    assert table.column("v").to_pylist() == ["d"]


def _wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out waiting")


def test_polling_emits_new_rows_and_resumes_from_its_checkpoint(db: Db, tmp_path: Path) -> None:
    db.execute("CREATE TABLE ev (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(20))")
    db.execute("INSERT INTO ev (v) SELECT CONCAT('v', seq) FROM seq_1_to_50")
    db.execute("CREATE TABLE ev_copy LIKE ev")
    job = _copy_job(
        db,
        "ev",
        "ev_copy",
        semantic="exactly-once",
        reader={"increColumn": "id", "startLocation": "0", "polling": True, "pollingInterval": 300},
        setting={"restore": {"isRestore": True}},
    )
    path = write_json(tmp_path / "poll.json", job)
    state = tmp_path / "state"

    def start(*extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                *syncx_command(),
                "run",
                str(path),
                "--state-dir",
                str(state),
                "--checkpoint-interval",
                "0.5",
                *extra,
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    process = start()
    try:
        _wait_for(lambda: db.count("ev_copy") == 50)
        db.execute("INSERT INTO ev (v) SELECT CONCAT('w', seq) FROM seq_1_to_30")
        _wait_for(lambda: db.count("ev_copy") == 80)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    db.execute("INSERT INTO ev (v) SELECT CONCAT('x', seq) FROM seq_1_to_20")
    process = start("--restore", "latest")
    try:
        _wait_for(lambda: db.count("ev_copy") == 100)
        time.sleep(1.0)  # a few more polls: nothing is read twice
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    _assert_same_rows(db, "ev", "ev_copy")
    assert "dirty 0" in err


# -- bad input ----------------------------------------------------------------------------------


def _reader_job(db: Db, **parameter: Any) -> dict[str, Any]:
    parameter.setdefault("username", "root")
    parameter.setdefault("connection", [db.connection("t")])
    return mysql_job(
        {"name": "mysqlreader", "parameter": parameter},
        {"name": "streamwriter", "parameter": {"print": False}},
    )


BAD_AT_RUN = [
    (
        "wrong password",
        {"password": "Wr0ng-pa55-q7"},
        "reader.parameter.connection[0].jdbcUrl",
        "Access denied",
    ),
    (
        "unreachable host",
        {"connection": [{"jdbcUrl": ["jdbc:mysql://127.0.0.1:1/x"], "table": ["t"]}]},
        "reader.parameter.connection[0].jdbcUrl",
        "127.0.0.1:1",
    ),
    (
        "unknown database",
        {"connection": [{"jdbcUrl": ["jdbc:mysql://127.0.0.1:3307/no_such_db_x"], "table": ["t"]}]},
        "reader.parameter.connection[0].jdbcUrl",
        "no_such_db_x",
    ),
    (
        "unknown table",
        {"connection": "TABLE:nope"},
        "reader.parameter.connection[0].table[0]",
        "table 'nope' not found",
    ),
    (
        "unknown column",
        {"column": ["id", "nope"]},
        "reader.parameter.column[1]",
        "column 'nope' not found",
    ),
    (
        "splitPk not numeric",
        {"splitPk": "name"},
        "reader.parameter.splitPk",
        "must be a numeric column",
    ),
    ("splitPk not indexed", {"splitPk": "qty"}, "reader.parameter.splitPk", "not indexed"),
    (
        "customSql fails",
        {"customSql": "select nope from t"},
        "reader.parameter.customSql",
        "Unknown column 'nope'",
    ),
    ("where fails", {"where": "nope > 1"}, "reader.parameter.where", "Unknown column 'nope'"),
    (
        "increColumn unknown",
        {"increColumn": "nope"},
        "reader.parameter.increColumn",
        "column 'nope' not found",
    ),
    (
        "startLocation not a value",
        {"increColumn": "day", "startLocation": "yesterday"},
        "reader.parameter.startLocation",
        "'yesterday' is not a value",
    ),
]


@pytest.mark.parametrize(
    ("case", "params", "path", "text"), BAD_AT_RUN, ids=[c[0] for c in BAD_AT_RUN]
)
def test_bad_input_found_by_the_server_exits_1_naming_the_parameter(
    db: Db, tmp_path: Path, run_cli: RunCli, case: str, params: dict[str, Any], path: str, text: str
) -> None:
    db.execute(
        "CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(10), qty INT, day DATETIME)",
        "INSERT INTO t VALUES (1, 'a', 1, NOW())",
    )
    params = dict(params)
    if params.get("connection") == "TABLE:nope":
        params["connection"] = [db.connection("nope")]
    job = write_json(tmp_path / "bad.json", _reader_job(db, **params))
    done = run_cli("run", job, "--state-dir", tmp_path / "st", timeout=60)
    assert done.returncode == 1, (case, done.stderr)
    assert path in done.stderr, done.stderr
    assert text in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert "Wr0ng-pa55-q7" not in done.stderr + done.stdout


BAD_OFFLINE = [
    ("polling without increColumn", {"polling": True}, "`polling` needs `increColumn`"),
    ("increColumn index outside column", {"column": ["id"], "increColumn": 3}, "outside `column`"),
    (
        "unknown column type",
        {"column": [{"name": "id", "type": "nosuchtype"}]},
        "unknown column type 'nosuchtype'",
    ),
    ("bad splitStrategy", {"splitStrategy": "hash"}, "splitStrategy"),
    ("bad driver", {"driver": "jdbc"}, "driver"),
    (
        "not a jdbc url",
        {"connection": [{"jdbcUrl": ["jdbc:oracle:thin:@x"], "table": ["t"]}]},
        "jdbc:oracle",
    ),
]


@pytest.mark.parametrize(("case", "params", "text"), BAD_OFFLINE, ids=[c[0] for c in BAD_OFFLINE])
def test_bad_input_known_offline_exits_2_on_validate(
    db: Db, tmp_path: Path, run_cli: RunCli, case: str, params: dict[str, Any], text: str
) -> None:
    job = write_json(tmp_path / "bad.json", _reader_job(db, **params))
    done = run_cli("validate", job)
    assert done.returncode == 2, (case, done.stderr)
    assert "job.content[0].reader.parameter" in done.stderr and text in done.stderr, done.stderr


def test_bad_writer_input_exits_with_the_parameter(db: Db, tmp_path: Path, run_cli: RunCli) -> None:
    db.execute("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(10), qty INT)")
    cases: list[tuple[dict[str, Any], int, str]] = [
        (
            {"connection": [{"jdbcUrl": db.jdbc, "table": ["nope"]}]},
            1,
            "writer.parameter.connection[0].table[0]",
        ),
        ({"column": ["id", "nope"]}, 1, "writer.parameter.column[1]"),
        ({"writeMode": "update", "updateKey": {"key": ["name"]}}, 1, "writer.parameter.updateKey"),
        ({"writeMode": "upsert"}, 2, "writer.parameter.writeMode"),
        ({"semantic": "twice"}, 2, "writer.parameter.semantic"),
    ]
    for extra, code, path in cases:
        writer = {"username": "root", "connection": [{"jdbcUrl": db.jdbc, "table": ["t"]}], **extra}
        job = mysql_job(
            {
                "name": "streamreader",
                "parameter": {"column": [{"name": "id", "type": "id"}], "sliceRecordCount": [1]},
            },
            {"name": "mysqlwriter", "parameter": writer},
        )
        done = run_cli("run", write_json(tmp_path / "w.json", job), "--state-dir", tmp_path / "st")
        assert done.returncode == code, (extra, done.stderr)
        assert path in done.stderr, done.stderr


def test_password_never_appears_anywhere(
    db: Db, server: MariaDB, tmp_path: Path, run_cli: RunCli
) -> None:
    user = f"syncx_{uuid.uuid4().hex[:8]}"
    secret = "S3cret-" + uuid.uuid4().hex[:10]
    db.execute(
        f"CREATE USER '{user}'@'%' IDENTIFIED BY '{secret}'",
        f"GRANT ALL ON `{db.name}`.* TO '{user}'@'%'",
        "GRANT ALL ON *.* TO '" + user + "'@'%'",
    )
    try:
        db.execute("CREATE TABLE src (id INT PRIMARY KEY, name VARCHAR(10))")
        db.execute("INSERT INTO src VALUES (1, 'ok'), (2, 'too long')")
        db.execute("CREATE TABLE dst (id INT PRIMARY KEY, name VARCHAR(3))")
        job = _copy_job(
            db, "src", "dst", semantic="exactly-once", setting={"errorLimit": {"record": 5}}
        )
        content = job["job"]["content"][0]
        content["reader"]["parameter"].pop("password")
        content["reader"]["parameter"]["username"] = user
        content["reader"]["parameter"]["connection"][0]["jdbcUrl"] = [
            f"{db.jdbc}&password={secret}"
        ]
        content["writer"]["parameter"].update({"username": user, "password": secret})
        path = write_json(tmp_path / "secret.json", job)
        metrics = tmp_path / "m.json"
        done = run_cli("run", path, "--state-dir", tmp_path / "st", "--metrics-file", metrics)
        assert done.returncode == 0, done.stderr
        assert db.count("dst") == 1
        content["writer"]["parameter"]["password"] = "not-" + secret
        bad = run_cli(
            "run", write_json(tmp_path / "bad.json", job), "--state-dir", tmp_path / "st2"
        )
        assert bad.returncode == 1
        produced = done.stdout + done.stderr + bad.stdout + bad.stderr + metrics.read_text()
        for file in (tmp_path / "st").rglob("*"):
            if file.is_file():
                produced += file.read_text(errors="replace")
        assert "dirty" in produced
        assert secret not in produced
        assert secret not in json.dumps(db.query("SELECT * FROM _syncx_commits"), default=str)
    finally:
        db.execute(f"DROP USER '{user}'@'%'")


def test_pymysql_connections_share_one_tls_context(db: Db) -> None:
    """The default ``preferred`` TLS mode's context is built once per process, not per
    connection, and without the system's CA certificates (~25 ms of CPU to load), which it never
    verifies against; an explicit one is the caller's."""
    url = make_url(f"mysql+pymysql://{db.server.user}@{db.server.host}:{db.server.port}/{db.name}")
    first, second = connect(url), connect(url)
    try:
        assert first.ctx is not None
        assert first.ctx is second.ctx
        assert first.ctx.verify_mode == ssl.CERT_NONE
        assert first.ctx.cert_store_stats()["x509_ca"] == 0
        assert first.query("SELECT 1") == second.query("SELECT 1") == 1
    finally:
        first.close()
        second.close()


def test_the_reader_pool_shares_the_tls_context(db: Db) -> None:
    """mysqlreader's SQLAlchemy pool opens syncx's pymysql connections too: no CA certificates
    loaded for a connection (the TLS context of the process is reused)."""
    db.execute("CREATE TABLE tls (id INT PRIMARY KEY)")
    reader = db.reader("tls")
    with reader.engine().connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        assert raw.ctx is not None
        assert raw.ctx.cert_store_stats()["x509_ca"] == 0
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1


def test_lost_connections_are_retried_then_the_job_restarts_from_its_checkpoint(
    db: Db, tmp_path: Path, run_cli: RunCli
) -> None:
    db.execute("CREATE TABLE src (id INT PRIMARY KEY, v VARCHAR(20))")
    db.execute("INSERT INTO src SELECT seq, CONCAT('v', seq) FROM seq_1_to_30000")
    db.execute("CREATE TABLE dst LIKE src")
    job = _copy_job(
        db,
        "src",
        "dst",
        semantic="exactly-once",
        reader={"fetchSize": 500, "pageSize": 2000},
        setting={
            "speed": {"channel": 1, "record": 10000},
            "restore": {"isRestore": True},
            "restart": {"strategy": "fixedDelay", "restartAttempts": 5, "delayInterval": 0.5},
        },
    )
    path = write_json(tmp_path / "lost.json", job)
    killed: list[int] = []
    finished = threading.Event()

    def kill_sessions() -> None:
        """Twice, once the job has sessions (it starts slower on a busy machine): kill them."""
        conn = db.server.connect()
        try:
            with conn.cursor() as cur:
                for _ in range(2):
                    sessions: list[tuple[int]] = []
                    while not sessions and not finished.wait(0.05):
                        cur.execute(
                            "SELECT id FROM information_schema.processlist WHERE db = %s "
                            "AND id <> CONNECTION_ID()",
                            (db.name,),
                        )
                        sessions = list(cur.fetchall())
                    for (session,) in sessions:
                        with contextlib.suppress(Exception):
                            cur.execute(f"KILL CONNECTION {int(session)}")
                            killed.append(session)
                    finished.wait(0.8)  # let the job go on before the second round
        finally:
            conn.close()

    killer = threading.Thread(target=kill_sessions)
    killer.start()
    try:
        done = run_cli(
            "run", path, "--state-dir", tmp_path / "st", "--checkpoint-interval", "0.5", timeout=120
        )
    finally:
        finished.set()
        killer.join()
    assert killed
    assert done.returncode == 0, done.stderr
    assert "lost" in done.stderr.lower() or "restart" in done.stderr.lower(), done.stderr
    _assert_same_rows(db, "src", "dst")


# -- ChunJun's job files, and the jobs/ examples ------------------------------------------------

BASEROW_DDL = """CREATE TABLE {name} (
  id INT PRIMARY KEY, name VARCHAR(50), money DECIMAL(10,2), aphone BIGINT, aqq VARCHAR(20),
  awechat VARCHAR(20), aincome DECIMAL(12,4), abirthday DATETIME, atoday DATE, atimecurrent TIME,
  bphone BIGINT, bqq VARCHAR(20), bwechat VARCHAR(20), bincome DECIMAL(12,4), bbirthday DATETIME,
  btoday DATE, btimecurrent TIME, {extra} aboolean BOOLEAN, adouble DOUBLE, afloat FLOAT,
  achar CHAR(5), abinary VARBINARY(16), atinyint TINYINT, areal DOUBLE, atext TEXT)"""


def _chunjun_copy(text: str, db: Db) -> str:
    """A ChunJun example with its placeholder hosts and credentials replaced, nothing else."""
    text = re.sub(
        r"jdbc:mysql://[^/\"]+/[A-Za-z0-9_]+",
        f"jdbc:mysql://{db.server.host}:{db.server.port}/{db.name}",
        text,
    )
    return re.sub(r'"password"\s*:\s*"[^"]*"', '"password": ""', text)


@pytest.mark.parametrize(
    "path",
    compat_files(
        "chunjun/mysql__*.json",
        "chunjun-1.10-docs/example__mysql_stream.json",
        "chunjun-1.10-docs/example__stream_mysql.json",
    ),
    ids=str,
)
def test_chunjun_mysql_examples_validate_unchanged(path: Path, run_cli: RunCli) -> None:
    done = run_cli("validate", path)
    assert done.returncode == 0, done.stderr


def test_chunjun_mysql_batch_job_runs_unchanged(db: Db, tmp_path: Path, run_cli: RunCli) -> None:
    db.execute(
        "CREATE TABLE test (id INT PRIMARY KEY, name VARCHAR(50), idcard VARCHAR(20), birthday DATE, "
        "mobile VARCHAR(20), email VARCHAR(50), gender TINYINT, create_time TIMESTAMP NULL, "
        "type_smallint SMALLINT, type_mediumint MEDIUMINT, type_bigint BIGINT, "
        "type_decimal DECIMAL(10,2), type_float FLOAT, type_double DOUBLE, type_text TEXT)"
    )
    db.execute(
        "INSERT INTO test SELECT seq, CONCAT('name ', seq, ' 😀'), LPAD(seq, 18, '0'), "
        "'1990-01-01' + INTERVAL seq DAY, CONCAT('138', LPAD(seq, 8, '0')), CONCAT(seq, '@x.y'), "
        "seq % 2, '2024-01-01' + INTERVAL seq SECOND, seq % 30000, seq * 3, seq * 1000000007, "
        "seq / 3, seq / 7, seq / 11, REPEAT('t', seq % 50) FROM seq_1_to_3000"
    )
    db.execute("INSERT INTO test (id) VALUES (0)")
    db.execute("CREATE TABLE test_sink LIKE test")
    text = _chunjun_copy(compat_file("chunjun/mysql__mysql_mysql_batch.json").read_text(), db)
    job = tmp_path / "mysql_mysql_batch.json"
    job.write_text(text)
    done = run_cli("run", job, "--state-dir", tmp_path / "st")
    assert done.returncode == 0, done.stderr
    _assert_same_rows(db, "test", "test_sink")


def test_chunjun_mysql_transform_job_runs_unchanged(
    db: Db, tmp_path: Path, run_cli: RunCli
) -> None:
    pytest.importorskip("duckdb")
    db.execute(BASEROW_DDL.format(name="baserow", extra=""))
    db.execute(BASEROW_DDL.format(name="baserow_sync", extra="raw_date VARCHAR(30),"))
    db.execute(
        "INSERT INTO baserow SELECT seq, CONCAT('n', seq), seq / 4, 13800000000 + seq, seq, 'we', "
        "seq / 8, '2000-01-01' + INTERVAL seq HOUR, '2000-01-01' + INTERVAL seq DAY, "
        "SEC_TO_TIME(seq * 37), NULL, NULL, NULL, NULL, NULL, NULL, '-01:02:03', seq % 2, seq / 9, "
        "seq / 13, 'c', UNHEX('00FF'), seq % 100, seq / 3, 'text' FROM seq_1_to_200"
    )
    text = _chunjun_copy(
        compat_file("chunjun/mysql__mysql_mysql_batch_transform.json").read_text(), db
    )
    job = tmp_path / "mysql_mysql_batch_transform.json"
    job.write_text(text)
    done = run_cli("run", job, "--state-dir", tmp_path / "st")
    assert done.returncode == 0, done.stderr
    assert db.count("baserow_sync") == 190  # id > 10
    columns = "id, name, money, aphone, aincome, abirthday, atoday, atimecurrent, btimecurrent, aboolean, adouble, afloat, achar, atinyint"
    assert db.query(f"SELECT {columns} FROM baserow WHERE id > 10 ORDER BY id") == db.query(
        f"SELECT {columns} FROM baserow_sync ORDER BY id"
    )
    assert db.query("SELECT DISTINCT raw_date FROM baserow_sync") == [("2014-12-12 14:24:16",)]


def test_chunjun_mysql_realtime_job_polls_unchanged(db: Db, tmp_path: Path) -> None:
    db.execute(BASEROW_DDL.format(name="baserow", extra="raw_date VARCHAR(30),"))
    db.execute(BASEROW_DDL.format(name="baserow_sync", extra="raw_date VARCHAR(30),"))
    insert = (
        "INSERT INTO baserow (id, name, money, atimecurrent, aboolean, abinary) SELECT seq, "
        "CONCAT('n', seq), seq, '12:00:00', 1, UNHEX('AB') FROM seq_{}_to_{}"
    )
    db.execute(insert.format(1, 20))
    text = _chunjun_copy(compat_file("chunjun/mysql__mysql_mysql_realtime.json").read_text(), db)
    job = tmp_path / "mysql_mysql_realtime.json"
    job.write_text(text)
    process = subprocess.Popen(
        [
            *syncx_command(),
            "run",
            str(job),
            "--state-dir",
            str(tmp_path / "st"),
            "--checkpoint-interval",
            "0.5",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: db.count("baserow_sync") == 18)  # startLocation 2: ids 3..20
        db.execute(insert.format(21, 30))
        _wait_for(lambda: db.count("baserow_sync") == 28)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert db.query("SELECT MIN(id), MAX(id), COUNT(DISTINCT id) FROM baserow_sync") == [
        (3, 30, 28)
    ]


def _orders(db: Db, rows: int) -> None:
    """The benchmark's ``orders`` table (bench/orders.py), ``rows`` rows."""
    spec = importlib.util.spec_from_file_location(
        "syncx_bench_orders", REPO / "bench" / "orders.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    conn = db.server.connect(db.name)
    try:
        module.create_orders(conn, db.name, rows)
    finally:
        conn.close()


def test_job_mysql_to_mysql(db: Db, tmp_path: Path, run_cli: RunCli) -> None:
    _orders(db, 20_000)
    db.execute("CREATE TABLE orders_copy LIKE orders")
    done = run_cli(
        "run",
        REPO / "jobs" / "mysql_to_mysql.json",
        "-p",
        f"mysql_db={db.name}",
        "--state-dir",
        tmp_path / "st",
    )
    assert done.returncode == 0, done.stderr
    assert "exactly-once" in done.stderr
    _assert_same_rows(db, "orders", "orders_copy")


def test_job_mysql_to_parquet(db: Db, tmp_path: Path, run_cli: RunCli) -> None:
    _orders(db, 20_000)
    out = tmp_path / "out"
    done = run_cli(
        "run",
        REPO / "jobs" / "mysql_to_parquet.yaml",
        "-p",
        f"mysql_db={db.name}",
        "-p",
        f"out={out}",
        "--state-dir",
        tmp_path / "st",
    )
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out)
    assert table.num_rows == 20_000
    assert table.schema.field("price").type == pa.decimal128(12, 2)
    assert table.schema.field("created_at").type == pa.timestamp("us")
    assert table.schema.field("updated_at").type == pa.timestamp("us", tz="UTC")
    expected = db.query("SELECT SUM(price), COUNT(DISTINCT id), MAX(created_at) FROM orders")[0]
    assert pc.sum(table.column("price")).as_py() == expected[0]
    assert pc.count_distinct(table.column("id")).as_py() == expected[1]
    assert pc.max(table.column("created_at")).as_py() == expected[2]


def test_job_mysql_incremental(db: Db, tmp_path: Path, run_cli: RunCli) -> None:
    _orders(db, 5_000)
    out = tmp_path / "out"
    args = ["-p", f"mysql_db={db.name}", "-p", f"out={out}", "--state-dir", str(tmp_path / "st")]
    job = REPO / "jobs" / "mysql_incremental.yaml"
    done = run_cli("run", job, *args)
    assert done.returncode == 0, done.stderr
    assert pq.read_table(out).num_rows == 5_000
    db.execute(
        "UPDATE orders SET status = 'changed', updated_at = '2030-01-01' WHERE id IN (7, 70, 700)"
    )
    done = run_cli("run", job, *args)
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out)
    assert table.num_rows == 5_003
    changed = table.filter(pc.equal(table.column("status"), "changed"))
    assert sorted(changed.column("id").to_pylist()) == [7, 70, 700]
    done = run_cli("run", job, *args)
    assert done.returncode == 0 and pq.read_table(out).num_rows == 5_003, done.stderr


# -- smaller pieces -----------------------------------------------------------------------------


def test_host_port_database_form_and_order_by_column(db: Db) -> None:
    db.execute("CREATE TABLE nk (grp INT NOT NULL, v VARCHAR(10), KEY (grp))")
    db.execute("INSERT INTO nk SELECT seq % 50, CONCAT('v', seq) FROM seq_1_to_500")
    params = MysqlReaderParams.model_validate(
        {
            "host": db.server.host,
            "port": str(db.server.port),
            "database": db.name,
            "username": "root",
            "table": "nk",
            "orderByColumn": "grp",
            "fetchSize": 64,
            "pageSize": 100,
        }
    )
    reader = MysqlReader(params, db.ctx())
    db.plugins.append(reader)
    table, positions = read_all(reader)
    assert table.num_rows == 500
    assert sorted(table.column("v").to_pylist()) == sorted(f"v{i}" for i in range(1, 501))
    assert positions == [MysqlPosition(after=49)]
    assert "password" not in json.dumps(reader.params.model_dump(mode="json", by_alias=True)["url"])


def test_custom_sql_reads_the_exact_types_of_its_result(db: Db) -> None:
    db.every_type_table("t")
    sql = "select id, dec2, ts, tm, biu, f, bit8, vb, d / 2 AS half, COUNT(*) OVER () AS n from t"
    tables = {
        driver: read_all(db.reader(customSql=sql, driver=driver, splitPk="id"), 2)[0]
        for driver in INSTALLED_DRIVERS
    }
    reference = tables["pymysql"]
    assert [f.type for f in reference.schema][:8] == [
        EXPECTED_TYPES[n] for n in ("id", "dec2", "ts", "tm", "biu", "f", "bit8", "vb")
    ]
    assert reference.schema.field("n").type == pa.int64()
    for driver, table in tables.items():
        assert table.sort_by("id").equals(reference.sort_by("id")), driver


def test_watermark_keeps_boundary_keys_then_the_largest_key() -> None:
    mark = Watermark()
    mark.update(pa.array([1, 2, 2, None]), pa.array([10, 20, 21, 99]))
    assert (mark.value, mark.keys, mark.key_max) == (2, {20, 21}, None)
    mark.update(pa.array([1]), pa.array([5]))  # older values change nothing
    assert mark.keys == {20, 21}
    many = pa.array(list(range(1000, 2200)))
    mark.update(pa.array([2] * len(many)), many)
    assert (mark.keys, mark.key_max) == (set(), 2199)
    other = Watermark.from_json(Watermark(value=2, keys={3000}, seen=True).to_json())
    mark.merge(other)
    assert mark.key_max == 3000
    newer = Watermark(value=3, keys={1}, seen=True)
    mark.merge(newer)
    assert (mark.value, mark.keys, mark.key_max) == (3, {1}, None)
    assert Watermark.from_json(json.loads(json.dumps(mark.to_json()))) == mark


def test_old_commit_markers_of_other_runs_are_pruned(db: Db) -> None:
    db.execute("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20), qty INT)")
    writer = db.writer("t", ctx=db.ctx(job="prune"), semantic="exactly-once")
    writer.check()
    writer.begin([], fresh=True)
    db.execute(
        "INSERT INTO _syncx_commits VALUES "
        "('prune', 'old-run', 0, 1, 'x', 't', '2000-01-01T00:00:00+00:00'), "
        "('prune', 'recent-run', 0, 1, 'y', 't', '2999-01-01T00:00:00+00:00'), "
        "('other-job', 'old-run', 0, 1, 'z', 't', '2000-01-01T00:00:00+00:00')"
    )
    again = db.writer("t", ctx=db.ctx(job="prune"), semantic="exactly-once")
    again.check()
    again.begin([], fresh=True)
    assert sorted(r[:2] for r in db.query("SELECT job, run FROM _syncx_commits")) == [
        ("other-job", "old-run"),
        ("prune", "recent-run"),
    ]


@pytest.mark.parametrize("load_data", [True, False], ids=["load-data", "statements"])
def test_odd_table_and_column_names_are_quoted(
    db: Db, tmp_path: Path, run_cli: RunCli, load_data: bool
) -> None:
    db.execute(
        "CREATE TABLE `we``ird tab` (`select` INT PRIMARY KEY, `from x` VARCHAR(10), "
        "`b``q` VARBINARY(4), `bit` BIT(3))",
        "INSERT INTO `we``ird tab` VALUES (1, 'a', x'00', b'101'), (2, NULL, NULL, NULL)",
        "CREATE TABLE `dest; drop` LIKE `we``ird tab`",
    )
    job = _copy_job(
        db,
        "we`ird tab",
        "dest; drop",
        semantic="exactly-once",
        loadData=load_data,
        reader={"splitPk": "select"},
        setting={"speed": {"channel": 2}},
    )
    done = run_cli("run", write_json(tmp_path / "odd.json", job), "--state-dir", tmp_path / "st")
    assert done.returncode == 0, done.stderr
    assert db.query("SELECT * FROM `dest; drop` ORDER BY `select`") == db.query(
        "SELECT * FROM `we``ird tab` ORDER BY `select`"
    )


def test_a_parameter_the_server_refutes_is_not_retried(
    db: Db, tmp_path: Path, run_cli: RunCli
) -> None:
    job = _reader_job(db, connection=[db.connection("nope")])
    job["job"]["setting"] = {
        "restart": {"strategy": "fixedDelay", "restartAttempts": 3, "delayInterval": 5}
    }
    started = time.monotonic()
    done = run_cli("run", write_json(tmp_path / "nope.json", job), "--state-dir", tmp_path / "st")
    assert done.returncode == 1 and "table 'nope' not found" in done.stderr
    assert "restart" not in done.stderr and time.monotonic() - started < 5
