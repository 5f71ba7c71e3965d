"""MySQL → HDFS: ``mysqlreader`` into ``hdfswriter`` against the private MariaDB (port 3307) and
the WebHDFS test server (and ``file://``), compared value by value with the source.

- the example jobs (``jobs/mysql_to_hdfs_parquet.yaml`` and its ChunJun JSON twin) through the
  ``syncx`` command line, on both targets;
- a table with every MySQL column type migrated to Parquet, ORC and Hive text, read back with
  pyarrow (text: split on the delimiter, ``\\N`` is NULL) and compared with the source as pymysql
  reads it, including the widenings of columns Hive has no type for;
- SIGKILLs at random moments and at exact checkpoint steps of a two-channel MySQL → HDFS Parquet
  run, resumed each time: every row once, values equal, no staging file left.

The source is read with pymysql (``SET time_zone = '+00:00'``, as syncx's sessions), so the
expected values do not come from the code under test.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.orc as paorc
import pyarrow.parquet as pq
import pytest

from bench.orders import create_orders
from sync.job import RunOptions, run_job
from sync.jobfile import load_job
from tests.conftest import REPO, RunCli
from tests.crash import assert_exact, read_folder, run_with_kills, staging_leftovers
from tests.servers.mariadb import MariaDB, ensure_server
from tests.servers.webhdfs import WebHdfsServer
from writers.file import STAGING
from writers.hdfs import LOCK

pytestmark = [pytest.mark.mysql, pytest.mark.hdfs]

JOBS = REPO / "jobs"
ORDERS_ROWS = 20_000
CRASH_ROWS = 120_000
CRASH_RATE = 12_000
HIVE_NULL = "\\N"


# -- the source ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """A database of this module on the test server, and pymysql access to it."""

    server: MariaDB
    name: str

    def execute(self, *statements: str) -> None:
        conn = self.server.connect(self.name)
        try:
            with conn.cursor() as cur:
                cur.execute("SET time_zone = '+00:00'")
                for statement in statements:
                    cur.execute(statement)
        finally:
            conn.close()

    def rows(self, query: str) -> list[dict[str, Any]]:
        """Rows of ``query`` as pymysql gives them (UTC session)."""
        conn = self.server.connect(self.name)
        try:
            with conn.cursor() as cur:
                cur.execute("SET time_zone = '+00:00'")
                cur.execute(query)
                names = [d[0] for d in cur.description]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        finally:
            conn.close()


@pytest.fixture(scope="module")
def source() -> Iterator[Source]:
    """One database for the module: ``orders`` (bench/orders.py), ``every`` and ``crash``."""
    server = ensure_server()
    name = server.create_database("syncx_mh")
    conn = server.connect(name)
    try:
        create_orders(conn, name, ORDERS_ROWS)
    finally:
        conn.close()
    database = Source(server, name)
    database.execute(
        f"CREATE TABLE every ({', '.join(f'{c} {ddl}' for c, ddl, _ in EVERY_COLUMNS)}) "
        "DEFAULT CHARSET=utf8mb4",
        "INSERT INTO every VALUES " + ", ".join(EVERY_ROWS),
        "CREATE TABLE crash (id BIGINT PRIMARY KEY, v VARCHAR(40) NOT NULL, n DECIMAL(12,3), "
        "t DATETIME(6), u INT UNSIGNED, b VARBINARY(8))",
        "INSERT INTO crash SELECT seq, CONCAT('v-', seq, '-😀'), seq / 7, "
        "'2024-01-01' + INTERVAL seq SECOND, 4294967295 - seq, UNHEX(HEX(seq)) "
        f"FROM seq_1_to_{CRASH_ROWS}",
    )
    try:
        yield database
    finally:
        server.drop_database(name)


def _orders_table(source: Source, updated_at: pa.DataType) -> pa.Table:
    """``orders`` as pymysql reads it, typed as the Parquet files hold it."""
    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("user_id", pa.int32()),
            ("sku", pa.string()),
            ("qty", pa.int32()),
            ("price", pa.decimal128(12, 2)),
            ("status", pa.string()),
            ("note", pa.string()),
            ("created_at", pa.timestamp("us")),
            ("updated_at", updated_at),
        ]
    )
    return pa.Table.from_pylist(source.rows("SELECT * FROM orders"), schema=schema)


# -- the example jobs ----------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["file", "webhdfs"])
@pytest.mark.parametrize("job", ["mysql_to_hdfs_parquet.yaml", "mysql_to_hdfs_chunjun.json"])
def test_example_job_migrates_orders_exactly(
    source: Source, tmp_path: Path, run_cli: RunCli, job: str, target: str
) -> None:
    """The example job, unchanged but for its placeholders: one Snappy Parquet file per channel
    in ``path/pt=20240101/``, holding exactly the table (the YAML job keeps TIMESTAMP's UTC
    type; the ChunJun job declares Hive's ``timestamp``)."""
    args = ["-p", f"mysql_port={source.server.port}", "-p", f"mysql_db={source.name}"]
    with WebHdfsServer(tmp_path / "hdfs") as server:
        if target == "webhdfs":
            warehouse = "/user/hive/warehouse/shop.db/orders"
            args += ["-p", f"defaultFS=webhdfs://127.0.0.1:{server.namenode_port}"]
            args += ["-p", f"path={warehouse}"]
            folder = tmp_path / "hdfs" / warehouse.lstrip("/") / "pt=20240101"
        else:
            args += ["-p", f"path={tmp_path / 'orders'}"]
            folder = tmp_path / "orders" / "pt=20240101"
        done = run_cli("run", JOBS / job, *args, "--state-dir", tmp_path / "state")
    assert done.returncode == 0, done.stderr
    files = sorted(p for p in folder.iterdir() if not p.name.startswith((".", "_")))
    # at most one file per channel, whatever the checkpoints (splits come from a shared pool, so
    # one channel may read both key ranges and write the only file)
    assert 1 <= len(files) <= 2, files
    assert all(
        pq.ParquetFile(p).metadata.row_group(0).column(0).compression == "SNAPPY" for p in files
    )
    declared = job.endswith(".json")
    updated_at = pa.timestamp("us") if declared else pa.timestamp("us", "UTC")
    assert pq.read_schema(files[0]).field("updated_at").type == updated_at
    expected = _orders_table(source, updated_at)
    actual = read_folder(folder, "parquet", expected.schema)
    assert pq.read_schema(files[0]).names == expected.schema.names
    assert_exact(expected, actual, ["id"])
    assert staging_leftovers(folder, Path(job).stem) == []
    assert not (folder / STAGING / LOCK).exists()


# -- every column type ---------------------------------------------------------------------------

EVERY_COLUMNS: list[tuple[str, str, str]] = [
    # name, MySQL type, how values compare
    ("id", "INT NOT NULL PRIMARY KEY", "int"),
    ("ti", "TINYINT", "int"),
    ("tiu", "TINYINT UNSIGNED", "int"),
    ("si", "SMALLINT", "int"),
    ("siu", "SMALLINT UNSIGNED", "int"),
    ("mi", "MEDIUMINT", "int"),
    ("miu", "MEDIUMINT UNSIGNED", "int"),
    ("i", "INT", "int"),
    ("iu", "INT UNSIGNED", "int"),
    ("bi", "BIGINT", "int"),
    ("biu", "BIGINT UNSIGNED", "int"),
    ("b1", "TINYINT(1)", "int"),
    ("dec_big", "DECIMAL(65,30)", "decimal"),
    ("dec_money", "DECIMAL(12,2)", "decimal"),
    ("dec_frac", "DECIMAL(5,5)", "decimal"),
    ("dec38", "DECIMAL(38,0)", "decimal"),
    ("f", "FLOAT", "float32"),
    ("d", "DOUBLE", "float64"),
    ("dt", "DATE", "date"),
    ("dtm", "DATETIME", "datetime"),
    ("dtm6", "DATETIME(6)", "datetime"),
    ("ts", "TIMESTAMP(6) NULL DEFAULT NULL", "datetime"),
    ("tm", "TIME", "time"),
    ("tm6", "TIME(6)", "time"),
    ("y", "YEAR", "int"),
    ("bit1", "BIT(1)", "bool"),
    ("bit8", "BIT(8)", "bits"),
    ("bit64", "BIT(64)", "bits"),
    ("c", "CHAR(10)", "str"),
    ("vc", "VARCHAR(100)", "str"),
    ("tx", "TEXT", "str"),
    ("lat", "VARCHAR(20) CHARACTER SET latin1", "str"),
    ("j", "JSON", "str"),
    ("e", "ENUM('a','b','c d')", "str"),
    ("s", "SET('x','y','z')", "str"),
    ("bn", "BINARY(4)", "bytes"),
    ("vb", "VARBINARY(20)", "bytes"),
    ("bl", "BLOB", "bytes"),
]
EVERY_ROWS = [
    r"""(1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
     -9223372036854775808, 18446744073709551615, 1,
     12345678901234567890123456789012345.123456789012345678901234567891, 1234567890.12, 0.12345,
     99999999999999999999999999999999999999, 3.40282e38, 1.7976931348623157e308, '1000-01-01',
     '9999-12-31 23:59:59', '2024-02-29 12:34:56.123456', '2038-01-19 03:14:07.999999',
     '-838:59:59', '838:59:59', 2155, b'1', b'10101010', b'1111111111111111111111111111111111111111111111111111111111111111',
     'abc', 'héllo 😀 wörld', 'tab\there and 中文', 'café', '{"a": [1, 2, {"b": null}], "c": "😀"}',
     'c d', 'x,z', x'00010203', x'00ff0a0d095c4e01', x'deadbeef00')""",
    "(2, " + ", ".join(["NULL"] * (len(EVERY_COLUMNS) - 1)) + ")",
    r"""(3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -0.000000000000000000000000000001, -0.01, -0.00001,
     -1, 0.1234567, 0.30000000000000004, '1970-01-01', '1970-01-01 00:00:00',
     '2024-01-01 00:00:00.000001', '1970-01-01 00:00:01', '00:00:00', '-00:00:00.000001', 1901,
     b'0', b'0', b'0', '', '', 'NULL', 'ÿ', '[]', 'a', '', x'', x'', x'')""",
    r"""(4, 127, 1, 32767, 1, 8388607, 1, 2147483647, 1, 9223372036854775807, 9223372036854775808,
     0, 0, 99.99, 0.99999, 0, -1.5, -2.5e-300, '2000-02-29', '2000-01-01 23:59:59',
     '1999-12-31 23:59:59.5', '2000-01-01 00:00:00', '12:34:56', '-12:34:56.654321', 2000,
     b'1', b'11111111', b'1', 'x', '𠜎 4-byte 🎉', 'back\\slash "quotes"', 'x', '{}', 'b',
     'x,y,z', x'ffffffff', x'5c', x'09')""",
]
WIDENED = {
    # what the columns Hive has no type for become (no declared writer type)
    "tiu": pa.int16(),
    "siu": pa.int32(),
    "miu": pa.int64(),
    "iu": pa.int64(),
    "biu": pa.decimal128(20, 0),
    "dec_big": pa.string(),
    "tm": pa.string(),
    "tm6": pa.string(),
    "bit8": pa.decimal128(20, 0),
    "bit64": pa.decimal128(20, 0),
}
KEPT = {
    "id": pa.int32(),
    "ti": pa.int8(),
    "si": pa.int16(),
    "mi": pa.int32(),
    "i": pa.int32(),
    "bi": pa.int64(),
    "b1": pa.int8(),
    "dec_money": pa.decimal128(12, 2),
    "dec_frac": pa.decimal128(5, 5),
    "dec38": pa.decimal128(38, 0),
    "f": pa.float32(),
    "d": pa.float64(),
    "dt": pa.date32(),
    "dtm": pa.timestamp("us"),
    "dtm6": pa.timestamp("us"),
    "ts": pa.timestamp("us", "UTC"),
    "y": pa.int16(),
    "bit1": pa.bool_(),
    **dict.fromkeys(["c", "vc", "tx", "lat", "j", "e", "s"], pa.string()),
    **dict.fromkeys(["bn", "vb", "bl"], pa.binary()),
}


def _mysql_time_text(value: dt.timedelta) -> str:
    """MySQL's text of a TIME value: ``[-]HH:MM:SS[.ffffff]`` (the fraction when there is one)."""
    micros = abs(value) // dt.timedelta(microseconds=1)
    seconds, fraction = divmod(micros, 1_000_000)
    text = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    text += f".{fraction:06d}" if fraction else ""
    return ("-" if value < dt.timedelta(0) else "") + text


def _from_text(kind: str, text: str | None) -> Any:
    """One Hive text field as the Python value a typed file would give."""
    if text is None:
        return None
    parse: dict[str, Callable[[str], Any]] = {
        "int": int,
        "float32": float,
        "float64": float,
        "date": dt.date.fromisoformat,
        "datetime": dt.datetime.fromisoformat,
        "bool": {"true": True, "false": False}.__getitem__,
        "bits": int,
        "bytes": base64.b64decode,
    }
    return parse[kind](text) if kind in parse else text


def _check_value(name: str, kind: str, expected: Any, got: Any) -> None:
    """``got`` (from a file) is ``expected`` (pymysql's value of the source), exactly."""
    where = f"column {name}: {got!r} for {expected!r}"
    if expected is None or got is None:
        assert expected is None and got is None, where
    elif kind == "decimal":
        assert Decimal(got) == expected, where
        if isinstance(got, str):  # text keeps the scale, in plain notation
            assert got == format(expected, "f"), where
    elif kind == "float32":
        assert np.float32(got) == np.float32(expected), where
    elif kind == "datetime" and isinstance(got, dt.datetime) and got.tzinfo is not None:
        assert got.astimezone(dt.UTC).replace(tzinfo=None) == expected, where
    elif kind == "time":
        assert got == _mysql_time_text(expected), where
    elif kind in ("bool", "bits"):
        assert got == int.from_bytes(expected, "big"), where
    else:
        assert got == expected, where


def _typed_rows(files: list[Path], file_type: str) -> list[dict[str, Any]]:
    """The rows of Parquet or ORC files, checking their Hive types on the way. pyarrow reads
    ORC timestamps as nanoseconds: ``dtm``, holding 9999-12-31 23:59:59, is only type-checked."""
    names = [name for name, _, _ in EVERY_COLUMNS]
    types = {**KEPT, **WIDENED}
    if file_type == "parquet":
        table = pa.concat_tables(pq.read_table(p) for p in files)
    else:  # ORC timestamps are the UTC wall clock, read back in ns
        types |= dict.fromkeys(["dtm", "dtm6", "ts"], pa.timestamp("ns"))
        assert paorc.ORCFile(files[0]).schema.field("dtm").type == types["dtm"]
        names.remove("dtm")
        table = pa.concat_tables(paorc.ORCFile(p).read(columns=names) for p in files)
        table = table.cast(
            pa.schema(
                f.with_type(pa.timestamp("us")) if f.type == pa.timestamp("ns") else f
                for f in table.schema
            )
        )
        types |= dict.fromkeys(["dtm6", "ts"], pa.timestamp("us"))
    assert {f.name: f.type for f in table.schema} == {n: types[n] for n in names}
    return table.to_pylist()


def _every_job(target: dict[str, Any], file_type: str, writer: dict[str, Any]) -> dict[str, Any]:
    return {
        "job": {
            "content": [
                {
                    "reader": {
                        "name": "mysqlreader",
                        "parameter": {
                            "connection": [{"jdbcUrl": [target["jdbc"]], "table": ["every"]}],
                            "username": "root",
                            "password": "",
                            "column": ["*"],
                            "splitPk": "id",
                        },
                    },
                    "writer": {
                        "name": "hdfswriter",
                        "parameter": {
                            "defaultFS": target["defaultFS"],
                            "hadoopConfig": {"hadoop.user.name": "syncx"},
                            "path": "/warehouse/every",
                            "fileType": file_type,
                            **writer,
                        },
                    },
                }
            ],
            "setting": {"speed": {"channel": 2}, "errorLimit": {"record": 0}},
        }
    }


@pytest.mark.parametrize("file_type", ["parquet", "orc", "text"])
def test_every_mysql_type_migrates_exactly(source: Source, tmp_path: Path, file_type: str) -> None:
    """Every MySQL type to HDFS with no declared writer types: the files hold the source's
    values exactly, with Hive's types (unsigned and BIT widened, TIME and 65-digit decimals as
    text, TIMESTAMP a UTC timestamp; ORC's timestamps hold the UTC wall clock)."""
    with WebHdfsServer(tmp_path / "hdfs") as server:
        target = {
            "jdbc": f"jdbc:mysql://127.0.0.1:{source.server.port}/{source.name}",
            "defaultFS": f"webhdfs://127.0.0.1:{server.namenode_port}",
        }
        path = tmp_path / "every.json"
        # ORC: a 9999-12-31 timestamp cannot be merged (tests/test_hdfs.py), one file per channel
        writer = {"mergeSmallFiles": False} if file_type == "orc" else {}
        path.write_text(json.dumps(_every_job(target, file_type, writer)), encoding="utf-8")
        report = run_job(load_job(path), RunOptions(state_dir=tmp_path / "state"))
    assert report.metrics["numWrite"] == len(EVERY_ROWS)
    folder = tmp_path / "hdfs" / "warehouse" / "every"
    files = sorted(p for p in folder.iterdir() if not p.name.startswith((".", "_")))
    # at most one file per channel: a channel whose key range (cut from the server's row
    # estimates of this tiny table) holds no row writes none
    assert 1 <= len(files) <= 2, files
    names = [name for name, _, _ in EVERY_COLUMNS]
    if file_type == "text":
        content = "".join(p.read_text(encoding="utf-8") for p in files)
        assert content.endswith("\n")
        lines = content.removesuffix("\n").split("\n")  # Hive splits on \n only
        fields = [line.split("\x01") for line in lines]
        assert all(len(f) == len(names) for f in fields)
        got = [
            {
                name: _from_text(kind, None if text == HIVE_NULL else text)
                for (name, _, kind), text in zip(EVERY_COLUMNS, row, strict=True)
            }
            for row in fields
        ]
    else:
        got = _typed_rows(files, file_type)
    select = ", ".join("f + 0e0 AS f" if name == "f" else f"`{name}`" for name in names)
    expected = source.rows(f"SELECT {select} FROM every ORDER BY id")
    assert sorted(row["id"] for row in got) == [row["id"] for row in expected]
    by_id = {row["id"]: row for row in got}
    for row in expected:
        for name, _, kind in EVERY_COLUMNS:
            if name in by_id[row["id"]]:
                _check_value(name, kind, row[name], by_id[row["id"]][name])


# -- SIGKILL at many points ----------------------------------------------------------------------


@pytest.mark.slow
def test_killed_mysql_to_hdfs_job_resumes_exactly(source: Source, tmp_path: Path) -> None:
    """A two-channel MySQL → HDFS Parquet run (range splits on ``id``, files rolling at
    maxFileSize and merged across checkpoints), SIGKILLed at random moments and at exact
    checkpoint steps, restored each time: the files on the WebHDFS server hold every row once
    with the source's values, and no staging file or lock is left."""
    with WebHdfsServer(tmp_path / "hdfs") as server:
        job = {
            "job": {
                "content": [
                    {
                        "reader": {
                            "name": "mysqlreader",
                            "parameter": {
                                "connection": [
                                    {
                                        "jdbcUrl": [
                                            f"jdbc:mysql://127.0.0.1:{source.server.port}/"
                                            f"{source.name}"
                                        ],
                                        "table": ["crash"],
                                    }
                                ],
                                "username": "root",
                                "column": ["*"],
                                "splitPk": "id",
                                "fetchSize": 1000,
                                "pageSize": 5000,
                            },
                        },
                        "writer": {
                            "name": "hdfswriter",
                            "parameter": {
                                "defaultFS": f"webhdfs://127.0.0.1:{server.namenode_port}",
                                "hadoopConfig": {"hadoop.user.name": "syncx"},
                                "path": "/warehouse/crash",
                                "fileType": "parquet",
                                "maxFileSize": 300_000,
                            },
                        },
                    }
                ],
                "setting": {
                    "speed": {"channel": 2, "record": CRASH_RATE},
                    "restore": {"isRestore": True},
                },
            }
        }
        report = run_with_kills(
            job, tmp_path, "mysql-hdfs-crash", random_kills=3, window=(1.0, 3.0), progress_kills=3
        )
    context = report.summary()
    folder = tmp_path / "hdfs" / "warehouse" / "crash"
    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("v", pa.string()),
            ("n", pa.decimal128(12, 3)),
            ("t", pa.timestamp("us")),
            ("u", pa.int64()),  # INT UNSIGNED, widened
            ("b", pa.binary()),
        ]
    )
    written = pq.read_schema(next(folder.glob("*.parquet")))
    assert {f.name: f.type for f in written} == {f.name: f.type for f in schema}, context
    expected = pa.Table.from_pylist(source.rows("SELECT * FROM crash"), schema=schema)
    assert_exact(expected, read_folder(folder, "parquet", schema), ["id"], context)
    assert staging_leftovers(folder, "mysql-hdfs-crash") == [], context
    assert not (folder / STAGING / LOCK).exists(), context
    assert report.kills >= 8, context
