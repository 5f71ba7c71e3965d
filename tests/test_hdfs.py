"""hdfswriter / hdfsreader against the WebHDFS test server (through the real ``hdfs`` client), the
local disk (``file://``), and a real cluster when ``WEBHDFS_URL`` is set.

One test body runs on every backend that supports it (``backend`` fixture): ``webhdfs`` (the
protocol-faithful server of :mod:`tests.servers.webhdfs`, started per test), ``file`` and, with
``WEBHDFS_URL=http://namenode:9870`` (optionally ``WEBHDFS_USER``), ``cluster``. Tests that need
to break the server (standby, pause, permissions) run on the test server only.
"""

from __future__ import annotations

import base64
import bz2
import dataclasses
import datetime as dt
import getpass
import importlib.util
import io
import json
import logging
import os
import random
import re
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.orc as paorc
import pyarrow.parquet as pq
import pytest

from libs.fs import FileSystem, LocalFileSystem, is_hidden
from libs.types import arrow_type, java_date_format
from libs.webhdfs import (
    RetryPolicy,
    filesystem_path,
    hadoop_user,
    open_filesystem,
    resolve_namenodes,
    unescape_delimiter,
)
from readers.hdfs import HdfsReader, HdfsReaderParams
from readers.stream import RowsRead, StreamReader, StreamReaderParams
from sync.contract import DirtyRecord, JobContext, Split, WriterTask
from sync.errors import FatalError, JobFailedError, JobFileError, RetriableError
from sync.job import RunOptions, RunReport, run_job
from sync.jobfile import load_job
from sync.model import Setting
from sync.ratelimit import RateLimiter
from tests.conftest import REPO, RunCli, compat_file, compat_files
from tests.crash import assert_exact, read_folder, run_with_kills, staging_leftovers
from tests.servers.webhdfs import WebHdfsServer
from writers import file as file_writers
from writers.file import STAGING
from writers.hdfs import LOCK, HdfsWriter, HdfsWriterParams

pytestmark = pytest.mark.hdfs

WEBHDFS_URL = os.environ.get("WEBHDFS_URL")
BACKENDS = ["webhdfs", "file", *(["cluster"] if WEBHDFS_URL else [])]
FAST_RETRY = {
    "dfs.client.failover.max.attempts": 3,
    "dfs.client.failover.sleep.base.millis": 20,
    "dfs.client.failover.sleep.max.millis": 100,
}
FORMATS = ["parquet", "orc", "text"]
W = "job.content[0].writer.parameter"
R = "job.content[0].reader.parameter"
WX, RX = re.escape(W), re.escape(R)


# -- backends ------------------------------------------------------------------------------------


@dataclass
class Backend:
    """Where a test writes: a defaultFS, its hadoopConfig, a folder of its own, and a way in."""

    kind: str
    default_fs: str
    hadoop_config: dict[str, Any]
    root: str
    fs: FileSystem
    server: WebHdfsServer | None = None
    extra_servers: list[WebHdfsServer] = field(default_factory=list)

    def path(self, *parts: str) -> str:
        return self.fs.join(self.root, *parts)

    def params(self, **extra: Any) -> dict[str, Any]:
        return {"defaultFS": self.default_fs, "hadoopConfig": dict(self.hadoop_config), **extra}

    def visible(self, folder: str) -> list[str]:
        """Visible files under ``folder`` (recursive), relative to it, sorted."""
        found: list[str] = []

        def walk(path: str, prefix: str) -> None:
            for entry in self.fs.listdir(path):
                name = entry.path.rsplit("/", 1)[-1]
                if is_hidden(name):
                    continue
                if entry.is_dir:
                    walk(entry.path, f"{prefix}{name}/")
                else:
                    found.append(prefix + name)

        walk(folder, "")
        return sorted(found)

    def files(self, folder: str) -> list[str]:
        return [self.fs.join(folder, name) for name in self.visible(folder)]

    def staged(self, folder: str, job: str = "job") -> list[str]:
        return sorted(
            e.path.rsplit("/", 1)[-1] for e in self.fs.listdir(self.fs.join(folder, STAGING, job))
        )

    def read(self, path: str) -> bytes:
        return self.fs.read_bytes(path)


def _webhdfs_backend(root: Path) -> Iterator[Backend]:
    with WebHdfsServer(root) as server:
        url = f"webhdfs://127.0.0.1:{server.namenode_port}"
        config = {"hadoop.user.name": "syncx", **FAST_RETRY}
        fs = open_filesystem(url, config, where="test", plugin="test")
        yield Backend("webhdfs", url, config, f"/t/{uuid.uuid4().hex[:8]}", fs, server)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    kind = request.param
    if kind == "webhdfs":
        yield from _webhdfs_backend(tmp_path / "hdfs")
    elif kind == "file":
        (tmp_path / "fs").mkdir()
        yield Backend("file", "file:///", {}, str(tmp_path / "fs"), LocalFileSystem())
    else:
        assert WEBHDFS_URL is not None
        parts = urlsplit(WEBHDFS_URL)
        url = f"webhdfs://{parts.netloc}" if parts.scheme in ("http", "webhdfs") else WEBHDFS_URL
        user = (
            os.environ.get("WEBHDFS_USER")
            or os.environ.get("HADOOP_USER_NAME")
            or getpass.getuser()
        )
        config = {"hadoop.user.name": user}
        fs = open_filesystem(url, config, where="test", plugin="test")
        root = f"/tmp/syncx-tests/{uuid.uuid4().hex[:8]}"
        try:
            yield Backend("cluster", url, config, root, fs)
        finally:
            fs.delete(root, recursive=True)


@pytest.fixture
def server_backend(tmp_path: Path) -> Iterator[Backend]:
    """The WebHDFS test server only (for tests that break it on purpose)."""
    yield from _webhdfs_backend(tmp_path / "hdfs")


# -- helpers -------------------------------------------------------------------------------------


@dataclass
class Dirt:
    records: list[DirtyRecord] = field(default_factory=list)

    def __call__(self, record: DirtyRecord) -> None:
        self.records.append(record)


def _ctx(
    tmp_path: Path, job: str = "job", run_id: str = "run1", dirt: Dirt | None = None
) -> JobContext:
    return JobContext.of(
        job,
        tmp_path / "state",
        Setting(),
        run_id=run_id,
        batch_rows=1000,
        report_dirty=dirt or Dirt(),
    )


def _writer(
    backend: Backend, tmp_path: Path, *, job: str = "job", run_id: str = "run1", **params: Any
) -> HdfsWriter:
    model = HdfsWriterParams.model_validate(backend.params(**params))
    return HdfsWriter(model, _ctx(tmp_path, job, run_id))


def _reader(
    backend: Backend, tmp_path: Path, dirt: Dirt | None = None, **params: Any
) -> HdfsReader:
    model = HdfsReaderParams.model_validate(backend.params(**params))
    return HdfsReader(model, _ctx(tmp_path, dirt=dirt))


def _write_all(writer: HdfsWriter, batches: list[pa.RecordBatch], *, subtasks: int = 1) -> None:
    """One fresh run: begin, write round robin, one checkpoint, commit, finish."""
    writer.check()
    writer.begin([], fresh=True)
    tasks = [writer.open(i, subtasks, None) for i in range(subtasks)]
    for i, batch in enumerate(batches):
        assert tasks[i % subtasks].write(batch) == []
    handles = [task.prepare(1) for task in tasks]
    for task, handle in zip(tasks, handles, strict=True):
        if handle is not None:
            task.commit(handle)
        task.close()
    writer.finish()


def _begun(backend: Backend, tmp_path: Path, **params: Any) -> tuple[HdfsWriter, WriterTask]:
    """A writer checked and begun as a fresh run, and its one subtask."""
    writer = _writer(backend, tmp_path, **params)
    writer.check()
    writer.begin([], fresh=True)
    return writer, writer.open(0, 1, None)


def _assert_refused(task: WriterTask, batch: pa.RecordBatch, match: str) -> None:
    """Writing ``batch`` fails with a :class:`JobFileError` matching ``match``; the task ends."""
    with pytest.raises(JobFileError, match=match):
        task.write(batch)
    task.discard()
    task.close()


def _read_back(backend: Backend, path: str, file_type: str) -> pa.Table:
    data = backend.read(path)
    if file_type == "parquet":
        return pq.read_table(pa.BufferReader(data))
    if file_type == "orc":
        return paorc.ORCFile(pa.BufferReader(data)).read()
    raise AssertionError(file_type)


def _read_all(reader: HdfsReader) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for split in reader.plan(1):
        opened = reader.open(split, None)
        try:
            for batch in opened.batches():
                assert batch is not None
                rows.extend(batch.to_pylist())
        finally:
            opened.close()
    return rows


def _stream_rows(
    counts: list[int], columns: list[dict[str, Any]], batch_rows: int = 4096
) -> pa.Table:
    """What streamreader generates (its values depend on batch boundaries: pass the job's)."""
    params = StreamReaderParams.model_validate({"column": columns, "sliceRecordCount": counts})
    ctx = JobContext.of("x", Path(), Setting(), run_id="r", batch_rows=batch_rows)
    reader = StreamReader(params, ctx)
    batches = [
        batch
        for split in reader.plan(len(counts))
        for batch in reader.open(split, None).batches()
        if batch is not None
    ]
    return pa.Table.from_batches(batches, schema=reader.schema())


def _job(reader: dict[str, Any], writer_params: dict[str, Any], **setting: Any) -> dict[str, Any]:
    return {
        "job": {
            "content": [
                {"reader": reader, "writer": {"name": "hdfswriter", "parameter": writer_params}}
            ],
            "setting": setting,
        }
    }


def _stream(counts: list[int], columns: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "name": "streamreader",
        "parameter": {"column": columns, "sliceRecordCount": counts, **extra},
    }


def _run(tmp_path: Path, job: dict[str, Any], name: str = "job", **options: Any) -> RunReport:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(job), encoding="utf-8")
    return run_job(load_job(path), RunOptions(state_dir=tmp_path / f"state-{name}", **options))


# -- defaultFS and hadoopConfig ------------------------------------------------------------------


HA = {
    "dfs.nameservices": "ns1",
    "dfs.ha.namenodes.ns1": "nn1,nn2",
    "dfs.namenode.rpc-address.ns1.nn1": "host1:9000",
    "dfs.namenode.rpc-address.ns1.nn2": "host2:9000",
    "dfs.client.failover.proxy.provider.ns1": "org.apache...ConfiguredFailoverProxyProvider",
}


@pytest.mark.parametrize(
    ("default_fs", "config", "expected"),
    [
        ("webhdfs://nn:50070", {}, ["http://nn:50070"]),
        ("webhdfs://nn", {}, ["http://nn:9870"]),
        ("swebhdfs://nn", {}, ["https://nn:9871"]),
        ("http://nn:9870", {}, ["http://nn:9870"]),
        ("hdfs://nn:8020", {}, ["http://nn:9870"]),
        ("hdfs://nn:8020", {"dfs.namenode.http-address": "0.0.0.0:50070"}, ["http://nn:50070"]),
        ("hdfs://nn:8020", {"dfs.namenode.http-address": "web:1234"}, ["http://web:1234"]),
        ("hdfs://nn", {"dfs.http.policy": "HTTPS_ONLY"}, ["https://nn:9871"]),
        ("hdfs://ns1", HA, ["http://host1:9870", "http://host2:9870"]),
        (
            "hdfs://ns1",
            {**HA, "dfs.namenode.http-address.ns1.nn2": "web2:50070"},
            ["http://host1:9870", "http://web2:50070"],
        ),
        (
            "hdfs://",
            {**HA, "fs.defaultFS": "hdfs://ns1"},
            ["http://host1:9870", "http://host2:9870"],
        ),
    ],
)
def test_resolve_namenodes(default_fs: str, config: dict[str, Any], expected: list[str]) -> None:
    assert resolve_namenodes(default_fs, config) == expected


@pytest.mark.parametrize(
    ("default_fs", "config", "message"),
    [
        ("s3://bucket", {}, "unsupported scheme 's3://'"),
        ("hdfs://ns1", {"dfs.nameservices": "ns1"}, "needs dfs.ha.namenodes.ns1"),
        (
            "hdfs://ns1",
            {"dfs.nameservices": "ns1", "dfs.ha.namenodes.ns1": "nn1"},
            "needs dfs.namenode.http-address.ns1.nn1 or dfs.namenode.rpc-address.ns1.nn1",
        ),
        ("webhdfs://", {}, "names no host"),
    ],
)
def test_resolve_namenodes_errors(default_fs: str, config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_namenodes(default_fs, config)


def test_paths_users_delimiters_and_retry_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert filesystem_path("hdfs://ns1", "hdfs://ns1/user/hive/t") == "/user/hive/t"
    assert filesystem_path("hdfs://ns1", "/abs/t") == "/abs/t"
    assert filesystem_path("hdfs://ns1", "rel/t", "bob") == "/user/bob/rel/t"
    assert filesystem_path("file:///base", "rel") == "/base/rel"
    assert filesystem_path("file:///", "rel") == "rel"
    assert hadoop_user({"hadoop.user.name": "hive"}) == "hive"
    monkeypatch.setenv("HADOOP_USER_NAME", "etl")
    assert hadoop_user({}) == "etl"
    assert [unescape_delimiter(d) for d in ("\\001", "\\u0001", "\\x01", "\\t", "|", "\x01")] == [
        "\x01",
        "\x01",
        "\x01",
        "\t",
        "|",
        "\x01",
    ]
    policy = RetryPolicy.from_config({"dfs.client.failover.max.attempts": "4"})
    assert (policy.attempts, policy.base, policy.ceiling) == (4, 0.5, 15.0)
    assert java_date_format("yyyy-MM-dd HH:mm:ss") == "%Y-%m-%d %H:%M:%S"


def test_kerberos_needs_its_extra() -> None:
    if importlib.util.find_spec("requests_kerberos") is not None:
        pytest.skip("requests-kerberos is installed")
    with pytest.raises(JobFileError, match=r"pip install 'syncx\[kerberos\]'"):
        open_filesystem(
            "webhdfs://nn:9870",
            {"hadoop.security.authentication": "kerberos"},
            where=W,
            plugin="hdfswriter",
        )


@pytest.mark.parametrize("path", compat_files("chunjun/hdfs__*.json"), ids=str)
def test_chunjun_hdfs_examples_validate_unchanged(path: Path) -> None:
    job = load_job(path)
    names = {job.reader_cls.__name__, job.writer_cls.__name__}
    assert names & {"HdfsReader", "HdfsWriter"}


def test_chunjun_mysql_to_hdfs_example_validates() -> None:
    """ChunJun's MySQL -> HDFS example, unchanged (the runs are in tests/test_mysql_hdfs.py)."""
    job = load_job(compat_file("chunjun/mysql__mysql_hdfs_polling.json"))
    assert job.writer_cls is HdfsWriter


def test_chunjun_110_doc_examples_validate(tmp_path: Path) -> None:
    """The JSON examples of the Flinkx 1.10 hdfswriter/hdfsreader pages."""
    docs = compat_file("chunjun-1.10-docs")
    count = 0
    for page in ("offline__writer__hdfswriter.md", "offline__reader__hdfsreader.md"):
        text = (docs / page).read_text(encoding="utf-8")
        for index, block in enumerate(text.split("```json")[1:]):
            body = block.split("```")[0]
            if '"job"' not in body:
                continue
            path = tmp_path / f"{page}-{index}.json"
            path.write_text(body, encoding="utf-8")
            try:
                load_job(path)
            except JobFileError as exc:
                assert "invalid JSON" in str(exc)  # the reader page's last example is cut off
                continue
            count += 1
    assert count >= 4


# -- types ---------------------------------------------------------------------------------------

COLUMNS = [
    ("c_tinyint", "tinyint"),
    ("c_smallint", "smallint"),
    ("c_int", "int"),
    ("c_bigint", "bigint"),
    ("c_float", "float"),
    ("c_double", "double"),
    ("c_decimal", "decimal(20,4)"),
    ("c_string", "string"),
    ("c_varchar", "varchar(64)"),
    ("c_boolean", "boolean"),
    ("c_date", "date"),
    ("c_timestamp", "timestamp"),
    ("c_binary", "binary"),
]
ROWS: list[dict[str, Any]] = [
    {
        "c_tinyint": -128,
        "c_smallint": 32767,
        "c_int": -2147483648,
        "c_bigint": 9223372036854775807,
        "c_float": 1.5,
        "c_double": 1e300,
        "c_decimal": Decimal("12345678901234.5678"),
        "c_string": "zażółć gęślą jaźń 😀 中文",
        "c_varchar": "",
        "c_boolean": True,
        "c_date": dt.date(1970, 1, 1),
        "c_timestamp": dt.datetime(2024, 2, 29, 23, 59, 59, 123456),
        "c_binary": b"\x00\xff\x01binary",
    },
    dict.fromkeys((name for name, _ in COLUMNS), None),
    {
        "c_tinyint": 0,
        "c_smallint": -1,
        "c_int": 42,
        "c_bigint": -1,
        "c_float": -0.25,
        "c_double": float("-inf"),
        "c_decimal": Decimal("-0.0001"),
        "c_string": "tab\tand spaces  ",
        "c_varchar": "x" * 64,
        "c_boolean": False,
        "c_date": dt.date(2999, 12, 31),
        "c_timestamp": dt.datetime(1969, 7, 20, 20, 17, 40),
        "c_binary": b"",
    },
]


def _typed_table(rows: list[dict[str, Any]] | None = None) -> pa.Table:
    schema = pa.schema([(name, arrow_type(kind)) for name, kind in COLUMNS])
    return pa.Table.from_pylist(rows or ROWS, schema=schema)


def _hive_text_value(value: Any, kind: str) -> Any:
    """Parse one Hive text field back to a Python value, as Hive's LazySimpleSerDe would."""
    if value == "\\N":
        return None
    if kind in ("tinyint", "smallint", "int", "bigint"):
        return int(value)
    if kind in ("float", "double"):
        return float(value.replace("Infinity", "inf"))
    if kind.startswith("decimal"):
        return Decimal(value)
    if kind == "boolean":
        assert value in ("true", "false")
        return value == "true"
    if kind == "date":
        return dt.date.fromisoformat(value)
    if kind == "timestamp":
        assert "T" not in value
        return dt.datetime.fromisoformat(value)
    if kind == "binary":
        return base64.b64decode(value)
    return value


@pytest.mark.parametrize("file_type", FORMATS)
def test_every_type_round_trips(backend: Backend, tmp_path: Path, file_type: str) -> None:
    table = _typed_table()
    folder = backend.path("types")
    writer = _writer(
        backend,
        tmp_path,
        path=folder,
        fileType=file_type,
        column=[{"name": n, "type": t} for n, t in COLUMNS],
    )
    _write_all(writer, table.to_batches(max_chunksize=2))
    (name,) = backend.visible(folder)
    path = backend.fs.join(folder, name)
    if file_type == "text":
        assert name.endswith(".txt")
        text = backend.read(path).decode("utf-8")
        lines = text.split("\n")
        assert lines[-1] == "" and len(lines) == len(ROWS) + 1
        fields = [line.split("\x01") for line in lines[:-1]]
        assert fields[1] == ["\\N"] * len(COLUMNS)  # NULL is \N, as Hive expects
        assert (
            fields[0][COLUMNS.index(("c_timestamp", "timestamp"))] == "2024-02-29 23:59:59.123456"
        )
        assert fields[2][COLUMNS.index(("c_timestamp", "timestamp"))] == "1969-07-20 20:17:40"
        assert fields[2][COLUMNS.index(("c_decimal", "decimal(20,4)"))] == "-0.0001"
        assert fields[0][COLUMNS.index(("c_varchar", "varchar(64)"))] == ""  # not NULL
        parsed = [
            {n: _hive_text_value(v, t) for (n, t), v in zip(COLUMNS, row, strict=True)}
            for row in fields
        ]
        assert parsed == ROWS
    else:
        got = _read_back(backend, path, file_type)
        assert got.column_names == [n for n, _ in COLUMNS]
        assert got.schema.field("c_decimal").type == pa.decimal128(20, 4)
        assert pa.types.is_timestamp(got.schema.field("c_timestamp").type)
        assert got.schema.field("c_date").type == pa.date32()
        assert got.cast(table.schema).to_pylist() == ROWS
        if file_type == "parquet":
            schema = pq.ParquetFile(pa.BufferReader(backend.read(path))).schema
            ts = schema.column(COLUMNS.index(("c_timestamp", "timestamp")))
            assert ts.physical_type == "INT64"
            assert "timeUnit=microseconds" in str(ts.logical_type)
            decimal = schema.column(COLUMNS.index(("c_decimal", "decimal(20,4)")))
            assert "precision=20, scale=4" in str(decimal.logical_type)
        else:
            orc = paorc.ORCFile(pa.BufferReader(backend.read(path)))
            assert orc.compression == "ZLIB"  # ChunJun's default for ORC
    # and back through hdfsreader, typed
    reader = _reader(
        backend,
        tmp_path,
        path=folder,
        fileType=file_type,
        column=[{"name": n, "type": t, "index": i} for i, (n, t) in enumerate(COLUMNS)],
    )
    assert _read_all(reader) == ROWS


def test_int96_timestamps_on_request(backend: Backend, tmp_path: Path) -> None:
    folder = backend.path("int96")
    writer = _writer(
        backend, tmp_path, path=folder, fileType="parquet", timestampType="int96", compress="gzip"
    )
    _write_all(writer, _typed_table().to_batches())
    (path,) = backend.files(folder)
    parquet = pq.ParquetFile(pa.BufferReader(backend.read(path)))
    column = parquet.schema.column(COLUMNS.index(("c_timestamp", "timestamp")))
    assert column.physical_type == "INT96"
    assert parquet.metadata.row_group(0).column(0).compression == "GZIP"
    got = parquet.read().cast(_typed_table().schema)
    assert got["c_timestamp"].to_pylist() == [r["c_timestamp"] for r in ROWS]


@pytest.mark.parametrize("enable", [True, False])
def test_parquet_dictionaries_only_where_values_repeat(
    backend: Backend, tmp_path: Path, enable: bool
) -> None:
    """``enableDictionary`` gives a dictionary to the columns whose values repeat, and writes
    keys and other mostly distinct columns plain (hashing them all was half the encoding
    time); ``false`` gives none."""
    rows = 50_000
    table = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "status": pa.array([("new", "paid", "sent")[i % 3] for i in range(rows)]),
            "half": pa.array([i // 2 for i in range(rows)], pa.int64()),  # exactly half distinct
            "note": pa.array([f"note {i * 7919 % rows}" for i in range(rows)]),
        }
    )
    folder = backend.path("dictionaries")
    writer = _writer(backend, tmp_path, path=folder, fileType="parquet", enableDictionary=enable)
    _write_all(writer, table.to_batches(max_chunksize=4096))
    (path,) = backend.files(folder)
    parquet = pq.ParquetFile(pa.BufferReader(backend.read(path)))
    group = parquet.metadata.row_group(0)
    encoded = {
        group.column(i).path_in_schema: group.column(i).has_dictionary_page
        for i in range(group.num_columns)
    }
    assert encoded == {"id": False, "status": enable, "half": enable, "note": False}
    assert parquet.read().equals(table)


@pytest.mark.parametrize(("compress", "suffix"), [("gzip", ".txt.gz"), ("bzip2", ".txt.bz2")])
def test_compressed_text_gzip_bzip2(
    backend: Backend, tmp_path: Path, compress: str, suffix: str
) -> None:
    folder = backend.path(compress)
    writer, task = _begun(
        backend,
        tmp_path,
        path=folder,
        fileType="text",
        compress=compress.upper(),
        fieldDelimiter="\\t",
        maxFileSize=10 * 1024 * 1024,
        mergeSmallFiles=True,
    )
    table = pa.table({"id": range(3000), "s": [f"value {i}" for i in range(3000)]})
    for checkpoint, batch in enumerate(table.to_batches(max_chunksize=1000), 1):
        task.write(batch)
        task.commit(task.prepare(checkpoint))  # three segments, merged at the end
    task.close()
    writer.finish()
    (name,) = backend.visible(folder)
    assert name.endswith(suffix)
    raw = backend.read(backend.fs.join(folder, name))
    data = zlib.decompress(raw, 47) if compress == "gzip" else bz2.decompress(raw)
    if compress == "gzip":  # concatenated gzip members (one per segment): read them all
        data = b""
        stream = raw
        while stream:
            decomp = zlib.decompressobj(47)
            data += decomp.decompress(stream)
            stream = decomp.unused_data
    lines = data.decode().splitlines()
    assert lines == [f"{i}\tvalue {i}" for i in range(3000)]
    reader = _reader(
        backend,
        tmp_path,
        path=folder,
        fileType="text",
        fieldDelimiter="\\t",
        column=[{"name": "id", "type": "bigint"}, {"name": "s", "type": "string"}],
    )
    assert _read_all(reader) == table.to_pylist()


def test_text_in_another_encoding(backend: Backend, tmp_path: Path) -> None:
    folder = backend.path("gbk")
    writer = _writer(backend, tmp_path, path=folder, fileType="text", encoding="GBK")
    _write_all(writer, [pa.record_batch({"id": [1, 2], "s": ["中文", "plain"]})])
    (path,) = backend.files(folder)
    assert backend.read(path).decode("gbk") == "1\x01中文\n2\x01plain\n"
    reader = _reader(
        backend,
        tmp_path,
        path=folder,
        fileType="text",
        encoding="gbk",
        column=[{"name": "id", "type": "int"}, {"name": "s", "type": "string"}],
    )
    assert _read_all(reader) == [{"id": 1, "s": "中文"}, {"id": 2, "s": "plain"}]
    _, task = _begun(
        backend, tmp_path, path=backend.path("latin"), fileType="text", encoding="latin-1"
    )
    _assert_refused(
        task, pa.record_batch({"s": ["中"]}), rf"^{WX}.encoding: iso8859-1 cannot represent '中'"
    )


def test_full_column_name_and_indexes(backend: Backend, tmp_path: Path) -> None:
    folder = backend.path("full")
    writer = _writer(
        backend,
        tmp_path,
        path=folder,
        fileType="orc",
        column=[{"name": "b", "index": 2, "type": "string"}, {"name": "a", "index": 0}],
        fullColumnName=["a", "b", "missing"],
        fullColumnType=["bigint", "string", "decimal(10,2)"],
    )
    batch = pa.record_batch({"x": [1, 2], "y": ["skip", "skip"], "z": ["p", "q"]})
    _write_all(writer, [batch])
    (path,) = backend.files(folder)
    got = _read_back(backend, path, "orc")
    assert got.schema == pa.schema(
        [("a", pa.int64()), ("b", pa.string()), ("missing", pa.decimal128(10, 2))]
    )
    assert got.to_pylist() == [
        {"a": 1, "b": "p", "missing": None},
        {"a": 2, "b": "q", "missing": None},
    ]


# -- layout: fileName, partitions, write modes, staging --------------------------------------------


def test_partition_folders(backend: Backend, tmp_path: Path) -> None:
    base = backend.path("part")
    writer = _writer(
        backend,
        tmp_path,
        path=base,
        fileName="pt=20240101",
        fileType="parquet",
        column=[
            {"name": "id", "type": "bigint"},
            {"name": "dt", "type": "date"},
            {"name": "region", "type": "string"},
        ],
        partition=["dt", "region"],
    )
    batch = pa.record_batch(
        {
            "id": [1, 2, 3, 4, 5],
            "dt": [dt.date(2024, 1, 1), dt.date(2024, 1, 1), dt.date(2024, 1, 2), None, None],
            "region": ["eu", "us", "eu", "a/b:c", "eu"],
        }
    )
    _write_all(writer, [batch])
    files = backend.visible(base)
    folders = sorted({f.rsplit("/", 1)[0] for f in files})
    assert folders == [
        "pt=20240101/dt=2024-01-01/region=eu",
        "pt=20240101/dt=2024-01-01/region=us",
        "pt=20240101/dt=2024-01-02/region=eu",
        "pt=20240101/dt=__HIVE_DEFAULT_PARTITION__/region=a%2Fb%3Ac",
        "pt=20240101/dt=__HIVE_DEFAULT_PARTITION__/region=eu",
    ]
    first = _read_back(backend, backend.fs.join(base, files[0]), "parquet")
    assert first.column_names == ["id"]  # partition columns live in the folder names
    reader = _reader(
        backend,
        tmp_path,
        path=base,
        fileName="pt=20240101",
        fileType="parquet",
        column=[
            {"name": "id", "type": "bigint"},
            {"name": "dt", "type": "string", "isPart": True},
            {"name": "region", "type": "string", "isPart": True},
        ],
    )
    rows = sorted(_read_all(reader), key=lambda r: r["id"])
    assert [(r["id"], r["dt"], r["region"]) for r in rows] == [
        (1, "2024-01-01", "eu"),
        (2, "2024-01-01", "us"),
        (3, "2024-01-02", "eu"),
        (4, "__HIVE_DEFAULT_PARTITION__", "a/b:c"),
        (5, "__HIVE_DEFAULT_PARTITION__", "eu"),
    ]


def test_many_partitions_share_one_buffer_budget(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subtask writing many partitions at once writes its largest row groups out early once
    its files together hold ``BUFFER_BUDGET`` bytes, rather than a full row group each."""
    monkeypatch.setattr(file_writers, "BUFFER_BUDGET", 256 * 1024)
    base = backend.path("many")
    writer = _writer(
        backend,
        tmp_path,
        path=base,
        fileType="parquet",
        column=[
            {"name": "id", "type": "bigint"},
            {"name": "part", "type": "int"},
            {"name": "v", "type": "string"},
        ],
        partition=["part"],
    )
    parts, rows = 40, 40_000
    table = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "part": pa.array([i % parts for i in range(rows)], pa.int32()),
            "v": pa.array([f"{i:08d}" * 8 for i in range(rows)]),
        }
    )
    _write_all(writer, table.to_batches(max_chunksize=2000))
    files = backend.visible(base)
    assert len(files) == parts
    groups = [
        pq.ParquetFile(pa.BufferReader(backend.read(backend.fs.join(base, f)))).num_row_groups
        for f in files
    ]
    # 1,000 rows of ~80 bytes a partition fit one row group; the budget cut them into several
    assert min(groups) > 1, groups
    reader = _reader(
        backend,
        tmp_path,
        path=base,
        fileType="parquet",
        column=[
            {"name": "id", "type": "bigint"},
            {"name": "part", "type": "int", "isPart": True},
            {"name": "v", "type": "string"},
        ],
    )
    got = sorted((r["id"], int(r["part"]), r["v"]) for r in _read_all(reader))
    assert got == [(i, i % parts, f"{i:08d}" * 8) for i in range(rows)]


def _seed_folder(backend: Backend, folder: str) -> None:
    backend.fs.makedirs(backend.fs.join(folder, "old=1"))
    with backend.fs.open_write(backend.fs.join(folder, "old.parquet")) as stream:
        pq.write_table(pa.table({"a": [1]}), stream)
    with backend.fs.open_write(backend.fs.join(folder, "old=1", "x.parquet")) as stream:
        pq.write_table(pa.table({"a": [2]}), stream)
    with backend.fs.open_write(backend.fs.join(folder, "_SUCCESS")) as stream:
        stream.write(b"")


def test_overwrite_empties_the_folder_once_append_keeps(backend: Backend, tmp_path: Path) -> None:
    folder = backend.path("modes")
    _seed_folder(backend, folder)
    batch = pa.record_batch({"a": [10, 11]})
    appender = _writer(backend, tmp_path, path=folder, fileType="parquet", writeMode="append")
    _write_all(appender, [batch])
    assert len(backend.visible(folder)) == 3
    overwriter = _writer(backend, tmp_path, path=folder, fileType="parquet", writeMode="overwrite")
    overwriter.check()
    overwriter.begin([], fresh=False)  # a restore never empties the folder
    assert len(backend.visible(folder)) == 3
    overwriter.finish()
    overwriter = _writer(backend, tmp_path, path=folder, fileType="parquet", writeMode="overwrite")
    _write_all(overwriter, [batch])
    (name,) = backend.visible(folder)
    assert name.startswith("part-")
    assert backend.fs.exists(backend.fs.join(folder, "_SUCCESS"))  # hidden names are not data
    assert _read_back(backend, backend.fs.join(folder, name), "parquet")["a"].to_pylist() == [
        10,
        11,
    ]


def test_staging_is_never_visible_and_commit_is_idempotent(
    backend: Backend, tmp_path: Path
) -> None:
    folder = backend.path("stage")
    writer, task = _begun(backend, tmp_path, path=folder, fileType="parquet")
    batches = pa.table({"id": range(3000)}).to_batches(max_chunksize=1000)
    task.write(batches[0])
    first = task.prepare(1)
    assert backend.visible(folder) == []  # durable, not visible
    assert [n for n in backend.staged(folder) if n.endswith("-c1.parquet")]
    task.commit(first)
    task.commit(first)  # idempotent
    assert backend.visible(folder) == []  # committed, kept open below maxFileSize
    task.write(batches[1])
    assert backend.visible(folder) == []
    second = task.prepare(2)
    task.commit(second)
    task.write(batches[2])
    third = task.prepare(3)
    task.commit(third)
    task.close()
    writer.finish()
    (path,) = backend.files(folder)
    assert _read_back(backend, path, "parquet")["id"].to_pylist() == list(range(3000))
    assert backend.staged(folder) == []
    writer.staged.commit(
        dataclasses.replace(third, groups=[{**g, "closed": True} for g in third.groups])
    )
    assert backend.files(folder) == [path]  # publishing again changes nothing
    assert not backend.fs.exists(backend.fs.join(folder, STAGING, LOCK))


def test_merge_small_files_off_gives_one_file_per_checkpoint(
    backend: Backend, tmp_path: Path
) -> None:
    folder = backend.path("nomerge")
    writer, task = _begun(backend, tmp_path, path=folder, fileType="orc", mergeSmallFiles=False)
    for checkpoint in (1, 2, 3):
        task.write(pa.record_batch({"id": [checkpoint]}))
        task.commit(task.prepare(checkpoint))
        assert len(backend.visible(folder)) == checkpoint  # visible at each commit
    task.close()
    writer.finish()


def test_restore_commits_the_restored_checkpoint_and_drops_later_work(
    backend: Backend, tmp_path: Path
) -> None:
    folder = backend.path("restore")
    _, task = _begun(backend, tmp_path, path=folder, fileType="parquet", maxFileSize=1)
    rows = pa.table({"id": range(600)}).to_batches(max_chunksize=100)
    task.write(rows[0])  # maxFileSize 1: each write closes its file
    task.write(rows[1])
    first = task.prepare(1)  # prepared, stored in checkpoint 1, never committed (crash)
    task.write(rows[2])
    task.prepare(2)  # checkpoint 2 never completed
    task.write(rows[3])  # in progress
    assert backend.visible(folder) == []
    # the next run restores checkpoint 1
    again = _writer(backend, tmp_path, path=folder, fileType="parquet", run_id="run1")
    again.check()
    again.begin([first], fresh=False)
    assert backend.staged(folder) == []
    ids = sorted(
        i
        for p in backend.files(folder)
        for i in _read_back(backend, p, "parquet")["id"].to_pylist()
    )
    assert ids == list(range(200))
    again.begin([first], fresh=False)  # restoring twice is harmless
    assert len(backend.files(folder)) == 2


@pytest.mark.parametrize("file_type", ["orc", "parquet"])
def test_restore_merges_a_group_kept_open_across_checkpoints(
    backend: Backend, tmp_path: Path, file_type: str
) -> None:
    folder = backend.path("open-group")
    _, task = _begun(backend, tmp_path, path=folder, fileType=file_type)
    handles = []
    for checkpoint in (1, 2, 3):
        task.write(pa.record_batch({"id": list(range(checkpoint * 10, checkpoint * 10 + 10))}))
        handles.append(task.prepare(checkpoint))
    task.commit(handles[0])
    # crash: checkpoints 2 and 3 were stored with every uncommitted handle (the runtime does
    # that), then the run died; the restore gets them all, in any order
    again = _writer(backend, tmp_path, path=folder, fileType=file_type)
    again.check()
    again.begin([handles[2], handles[1], handles[0]], fresh=False)
    (path,) = backend.files(folder)
    assert _read_back(backend, path, file_type)["id"].to_pylist() == list(range(10, 40))
    assert backend.staged(folder) == []


def test_a_second_job_writing_the_same_folder_is_refused(backend: Backend, tmp_path: Path) -> None:
    folder = backend.path("locked")
    first = _writer(backend, tmp_path, path=folder, fileType="text", job="first")
    first.check()
    first.begin([], fresh=True)
    second = _writer(backend, tmp_path, path=folder, fileType="text", job="second")
    second.check()
    with pytest.raises(JobFailedError) as caught:
        second.begin([], fresh=True)
    message = str(caught.value)
    assert message.startswith(f"{W}.path: ")
    assert "is being written by job 'first'" in message
    assert LOCK in message
    # the same job (a restart, another attempt) takes its own lock over
    restart = _writer(backend, tmp_path, path=folder, fileType="text", job="first")
    restart.begin([], fresh=False)
    restart.finish()  # releases it
    second.begin([], fresh=True)
    second.finish()
    # a lock left by a process that is gone is stale
    backend.fs.create_exclusive(
        backend.fs.join(folder, STAGING, LOCK),
        json.dumps({"job": "dead", "host": os.uname().nodename, "pid": 2**22 + 7}).encode(),
    )
    second.begin([], fresh=True)
    second.finish()


# -- bad input -----------------------------------------------------------------------------------


def _issues(
    tmp_path: Path, writer: dict[str, Any] | None = None, reader: dict[str, Any] | None = None
) -> list[str]:
    job = _job(
        reader or _stream([1], [{"name": "id", "type": "id"}]),
        writer or {},
    )
    if reader is not None:
        job["job"]["content"][0]["writer"] = {"name": "streamwriter", "parameter": {}}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(job), encoding="utf-8")
    with pytest.raises(JobFileError) as caught:
        load_job(path)
    return [str(issue) for issue in caught.value.issues]


def test_bad_parameters_are_named_before_anything_connects(tmp_path: Path) -> None:
    base = {"defaultFS": "webhdfs://nn:9870", "path": "/t"}
    assert _issues(
        tmp_path, {**base, "fileType": "orc", "column": [{"name": "t", "type": "time"}]}
    ) == [
        f"{W}.column[0].type: type time cannot be written to orc files: ORC has no TIME type; "
        "declare the column string"
    ]
    assert _issues(
        tmp_path, {**base, "fileType": "parquet", "column": [{"name": "t", "type": "time"}]}
    ) == [
        f"{W}.column[0].type: type time cannot be written to parquet files: Hive and Spark cannot "
        "read Parquet TIME columns; declare the column string"
    ]
    assert _issues(
        tmp_path,
        {**base, "fileType": "orc", "fullColumnName": ["a"], "fullColumnType": ["bigint unsigned"]},
    )[0].startswith(f"{W}.fullColumnType[0]: type bigint unsigned cannot be written to orc files")
    assert _issues(tmp_path, {**base, "fileType": "text", "compress": "snappy"}) == [
        f"{W}.compress: text files can be compressed with bzip2, gzip, none (LZO is not supported)"
    ]
    assert _issues(tmp_path, {**base, "fileType": "orc", "compress": "LZO"})[0].startswith(
        f"{W}.compress: orc files can be compressed with lz4, none, snappy, zlib, zstd"
    )
    assert _issues(tmp_path, {**base, "fileType": "avro"}) == [
        f"{W}.fileType: must be one of 'text', 'orc' or 'parquet'"
    ]
    assert _issues(
        tmp_path,
        {
            **base,
            "defaultFS": "hdfs://ns9",
            "fileType": "orc",
            "hadoopConfig": {"dfs.nameservices": "ns9"},
        },
    ) == [f"{W}.defaultFS: nameservice 'ns9' needs dfs.ha.namenodes.ns9 in hadoopConfig"]
    assert _issues(tmp_path, {**base, "fileType": "text", "encoding": "klingon"}) == [
        f"{W}.encoding: unknown encoding 'klingon' (e.g. utf-8, gbk, latin-1)"
    ]
    assert _issues(
        tmp_path,
        {**base, "fileType": "text", "column": [{"name": "a", "type": "int"}], "partition": ["b"]},
    ) == [f"{W}.partition[0]: 'b' is not one of the columns"]
    assert _issues(tmp_path, {**base, "fileType": "text", "maxFileSiz": 1}) == [
        f"{W}.maxFileSiz: unknown key (did you mean 'maxFileSize'?)"
    ]
    assert _issues(tmp_path, {"defaultFS": "webhdfs://nn"}) == [
        f"{W}.path: is required",
        f"{W}.fileType: is required",
    ]
    assert _issues(tmp_path, {"path": "/t", "fileType": "orc"}) == [
        f"{W}.defaultFS: is required (webhdfs://namenode:9870, hdfs://namenode:8020, "
        "hdfs://nameservice, or file:/// for the local disk)"
    ]
    # a fully qualified path, or fs.defaultFS in hadoopConfig, is enough
    no_default = {"path": "hdfs://ns1/t", "fileType": "orc", "hadoopConfig": HA}
    model = HdfsWriterParams.model_validate(no_default)
    assert model.effective_default_fs(model.path) == "hdfs://ns1/"
    reader = {
        "name": "hdfsreader",
        "parameter": {"path": "/x", "filterRegex": "(", "defaultFS": "ftp://x"},
    }
    assert _issues(tmp_path, reader=reader) == [
        f"{R}.filterRegex: not a regular expression: missing ), unterminated subpattern at position 0"
    ]


def test_unreachable_namenode_names_default_fs(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = Backend(
        "gone", f"webhdfs://127.0.0.1:{port}", dict(FAST_RETRY), "/t", LocalFileSystem()
    )
    writer = _writer(backend, tmp_path, path="/t", fileType="text")
    with pytest.raises(RetriableError) as caught:
        writer.check()
    message = str(caught.value)
    assert message.startswith(f"{W}.defaultFS: no active NameNode at http://127.0.0.1:{port}")
    assert "3 attempt(s)" in message
    assert "ConnectionError" in message


def test_permission_denied_names_path(server_backend: Backend, tmp_path: Path) -> None:
    backend = server_backend
    assert backend.server is not None
    backend.fs.makedirs(backend.path("ro"))
    backend.server.deny_writes(backend.path("ro"))
    writer = _writer(backend, tmp_path, path=backend.path("ro", "t"), fileType="orc")
    with pytest.raises(JobFileError) as caught:
        writer.check()
    assert str(caught.value).startswith(f"{W}.path: permission denied (MKDIRS ")
    assert "user=syncx, access=WRITE" in str(caught.value)


def test_path_that_is_a_file(backend: Backend, tmp_path: Path) -> None:
    with backend.fs.open_write(backend.path("afile")) as stream:
        stream.write(b"x")
    writer = _writer(backend, tmp_path, path=backend.path("afile"), fileType="text")
    with pytest.raises(JobFileError, match=rf"^{WX}.path: .*afile is a file, not a folder$"):
        writer.check()
    writer = _writer(backend, tmp_path, path=backend.root, fileName="afile", fileType="text")
    with pytest.raises(JobFileError, match=rf"^{WX}.fileName: .*afile is a file, not a folder$"):
        writer.check()


def test_append_refuses_a_folder_of_another_format(backend: Backend, tmp_path: Path) -> None:
    folder = backend.path("mixed")
    _write_all(
        _writer(backend, tmp_path, path=folder, fileType="orc"), [pa.record_batch({"a": [1]})]
    )
    writer = _writer(backend, tmp_path, path=folder, fileType="parquet")
    with pytest.raises(JobFileError) as caught:
        writer.check()
    assert str(caught.value).startswith(f"{W}.fileType: parquet, but ")
    assert "is a orc file; in append mode a folder's files must all be parquet" in str(caught.value)
    _writer(backend, tmp_path, path=folder, fileType="parquet", writeMode="overwrite").check()
    _writer(backend, tmp_path, path=folder, fileType="orc").check()


WIDE_VALUES: dict[str, tuple[pa.Array, pa.DataType, list[str | None]]] = {
    # column: (what the reader delivers, what Parquet holds, the text Hive reads)
    "tiu": (pa.array([255, 0, None], pa.uint8()), pa.int16(), ["255", "0", None]),
    "siu": (pa.array([65535, 0, None], pa.uint16()), pa.int32(), ["65535", "0", None]),
    "iu": (pa.array([2**32 - 1, 0, None], pa.uint32()), pa.int64(), ["4294967295", "0", None]),
    "biu": (
        pa.array([2**64 - 1, 2**63, None], pa.uint64()),
        pa.decimal128(20, 0),
        ["18446744073709551615", "9223372036854775808", None],
    ),
    "tm": (
        pa.array(
            [-dt.timedelta(hours=838, minutes=59, seconds=59), dt.timedelta(hours=25), None],
            pa.duration("us"),
        ),
        pa.string(),
        ["-838:59:59", "25:00:00", None],
    ),
    "tod": (
        pa.array([dt.time(1, 2, 3, 4), dt.time(0), None], pa.time64("us")),
        pa.string(),
        ["01:02:03.000004", "00:00:00", None],
    ),
    "big": (
        pa.array([Decimal("-1E-30"), Decimal(f"{10**34}.5"), None], pa.decimal256(65, 30)),
        pa.string(),
        [
            "-0.000000000000000000000000000001",
            "10000000000000000000000000000000000.500000000000000000000000000000",
            None,
        ],
    ),
    "at": (
        pa.array(
            [dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC), None, None], pa.timestamp("us", "UTC")
        ),
        pa.timestamp("us", "UTC"),  # ORC: timestamp("us"), the same instant in UTC
        ["2024-01-01 12:00:00", None, None],
    ),
}


@pytest.mark.parametrize("file_type", FORMATS)
def test_undeclared_types_hive_has_not_are_widened(
    backend: Backend, tmp_path: Path, file_type: str, caplog: pytest.LogCaptureFixture
) -> None:
    """No declared type: unsigned integers widen to the next signed type (BIGINT UNSIGNED to
    decimal(20,0)), TIME to MySQL's text, 65-digit decimals to text; every value is kept. Logged
    once per column, though two subtasks resolve the columns."""
    table = pa.table({name: array for name, (array, _, _) in WIDE_VALUES.items()})
    folder = backend.path("wide")
    writer = _writer(backend, tmp_path, path=folder, fileType=file_type)
    with caplog.at_level(logging.INFO, logger="writers.hdfs"):
        _write_all(writer, table.to_batches(max_chunksize=2), subtasks=2)
    logged = [r.getMessage() for r in caplog.records if " is written as " in r.getMessage()]
    widened = [n for n in WIDE_VALUES if n != "at" or file_type == "orc"]
    assert sorted(message.split()[2] for message in logged) == sorted(widened), logged
    assert (
        f"{W}.column: column biu (uint64) is written as decimal(20,0): Hive has no unsigned types"
        in "\n".join(logged)
    )
    files = backend.files(folder)
    assert len(files) == 2  # one per subtask
    if file_type == "text":
        fields = [
            line.split("\x01") for p in files for line in backend.read(p).decode().splitlines()
        ]
        expected = [[texts[i] or "\\N" for _, _, texts in WIDE_VALUES.values()] for i in range(3)]
        assert sorted(fields) == sorted(expected)
        return
    got = pa.concat_tables(_read_back(backend, p, file_type) for p in files)
    at = got.column("at")
    if file_type == "orc":  # a TIMESTAMP in UTC
        assert at.type.tz is None
        got = got.set_column(
            got.schema.get_field_index("at"), "at", at.cast(pa.timestamp("us", "UTC"))
        )
    assert {f.name: f.type for f in got.schema} == {n: k for n, (_, k, _) in WIDE_VALUES.items()}
    rows = sorted(got.to_pylist(), key=lambda row: -1 if row["tiu"] is None else row["tiu"])
    for name, (array, kind, texts) in WIDE_VALUES.items():
        wanted = texts if pa.types.is_string(kind) else array.to_pylist()
        assert [row[name] for row in rows] == [wanted[i] for i in (2, 1, 0)], name


def test_declared_types_text_forms_and_refusals(backend: Backend, tmp_path: Path) -> None:
    """A declared type is taken as declared: TIME declared string is MySQL's text, decimals in
    text keep plain notation and their scale (not Arrow's 0E-10); a nested column text cannot
    hold is an error naming the parameter."""
    folder = backend.path("declared")
    declared = [{"name": "tm", "type": "string"}, {"name": "d", "type": "decimal(38,10)"}]
    writer = _writer(backend, tmp_path, path=folder, fileType="text", column=declared)
    batch = pa.record_batch(
        {
            "tm": pa.array([dt.timedelta(hours=-1), dt.timedelta(0)], pa.duration("us")),
            "d": pa.array([Decimal(0), Decimal("1E-7")], pa.decimal128(38, 10)),
        }
    )
    _write_all(writer, [batch])
    (path,) = backend.files(folder)
    assert backend.read(path).decode() == "-01:00:00\x010.0000000000\n00:00:00\x010.0000001000\n"
    _, task = _begun(backend, tmp_path, path=backend.path("t"), fileType="text")
    batch = pa.record_batch({"id": [1], "tags": pa.array([[1, 2]], pa.list_(pa.int64()))})
    _assert_refused(task, batch, rf"^{WX}.column: column tags of type list<item: int64> cannot")


def test_orc_timestamps_pyarrow_cannot_read_back(backend: Backend, tmp_path: Path) -> None:
    """pyarrow reads ORC timestamps as nanoseconds (1677-2262): merging ORC segments holding
    others would fail at every commit and restore, so they are refused before they are staged,
    naming the parameter; without merging they are written (Hive reads them), and reading them
    back with hdfsreader fails with a message saying why."""
    far = pa.record_batch(
        {"at": pa.array([dt.datetime(9999, 12, 31, 23, 59, 59)], pa.timestamp("us"))}
    )
    _, task = _begun(backend, tmp_path, path=backend.path("merged"), fileType="orc")
    _assert_refused(task, far, rf"^{WX}.mergeSmallFiles: column at holds 9999-12-31 23:59:59, a")
    folder = backend.path("unmerged")
    writer = _writer(backend, tmp_path, path=folder, fileType="orc", mergeSmallFiles=False)
    _write_all(writer, [far])
    assert len(backend.files(folder)) == 1
    reader = _reader(backend, tmp_path, path=folder, fileType="orc")
    with pytest.raises(FatalError, match="holds a timestamp before 1677-09-21 or after 2262-04-11"):
        _read_all(reader)


# -- NameNode HA and failures ---------------------------------------------------------------------


def test_ha_failover_between_two_namenodes(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    with WebHdfsServer(shared) as nn1, WebHdfsServer(shared) as nn2:
        nn1.standby = True
        config = {
            "dfs.nameservices": "ns",
            "dfs.ha.namenodes.ns": "nn1,nn2",
            "dfs.namenode.rpc-address.ns.nn1": "127.0.0.1:8020",
            "dfs.namenode.http-address.ns.nn1": f"127.0.0.1:{nn1.namenode_port}",
            "dfs.namenode.http-address.ns.nn2": f"127.0.0.1:{nn2.namenode_port}",
            "hadoop.user.name": "syncx",
            **FAST_RETRY,
        }
        backend = Backend("ha", "hdfs://ns", config, "/ha", LocalFileSystem())
        writer, task = _begun(backend, tmp_path, path="hdfs://ns/ha/t", fileType="parquet")
        batches = pa.table({"id": range(4000)}).to_batches(max_chunksize=1000)
        task.write(batches[0])
        task.commit(task.prepare(1))
        nn1.standby, nn2.standby = False, True  # fail over
        task.write(batches[1])
        task.commit(task.prepare(2))
        nn1.standby, nn2.standby = True, False  # and back
        task.write(batches[2])
        task.write(batches[3])
        task.commit(task.prepare(3))
        task.close()
        writer.finish()
        (part,) = [p for p in (shared / "ha" / "t").iterdir() if not p.name.startswith(".")]
        assert pq.read_table(part)["id"].to_pylist() == list(range(4000))
        standby_answers = [r for r in nn1.requests + nn2.requests if r.status == 403]
        assert standby_answers  # both were asked while standby, and the client moved on


def test_namenode_down_mid_write_raises_retriable(server_backend: Backend, tmp_path: Path) -> None:
    backend = server_backend
    assert backend.server is not None
    _, task = _begun(backend, tmp_path, path=backend.path("down"), fileType="parquet")
    task.write(pa.record_batch({"id": list(range(1000))}))
    backend.server.pause()
    started = time.monotonic()
    with pytest.raises(RetriableError) as caught:
        task.prepare(1)
    assert time.monotonic() - started < 5  # retried with backoff, then gave up
    assert str(caught.value).startswith(f"{W}.defaultFS: ")
    assert "StandbyException" in str(caught.value) or "was cut" in str(caught.value)
    backend.server.resume()
    task.discard()
    task.close()
    assert backend.staged(backend.path("down")) == []


def test_namenode_away_mid_run_restarts_from_the_checkpoint(
    server_backend: Backend, tmp_path: Path
) -> None:
    backend = server_backend
    assert backend.server is not None
    server = backend.server
    columns = [{"name": "id", "type": "id"}, {"name": "s", "type": "string"}]
    counts = [12_000, 12_000]
    job = _job(
        _stream(counts, columns, permitsPerSecond=6000),
        backend.params(
            path=backend.path("restart"),
            fileType="parquet",
            column=[{"name": "id", "type": "bigint"}, {"name": "s", "type": "string"}],
        ),
        speed={"channel": 2},
        restart={"strategy": "fixedDelay", "restartAttempts": 20, "delayInterval": 0.3},
    )

    def outage() -> None:
        time.sleep(0.8)
        server.pause()
        time.sleep(1.0)
        server.resume()

    thread = threading.Thread(target=outage)
    thread.start()
    try:
        report = _run(tmp_path, job, checkpoint_interval=0.2)
    finally:
        thread.join()
    assert report.status == "succeeded"
    assert report.restarts >= 1
    expected = _stream_rows(counts, columns, batch_rows=600)  # permitsPerSecond / 10
    got = pa.concat_tables(
        _read_back(backend, p, "parquet") for p in backend.files(backend.path("restart"))
    )
    assert got.num_rows == expected.num_rows
    assert sorted(zip(got["id"].to_pylist(), got["s"].to_pylist(), strict=True)) == sorted(
        zip(expected["id"].to_pylist(), expected["s"].to_pylist(), strict=True)
    )
    assert backend.staged(backend.path("restart")) == []


# -- hdfsreader ---------------------------------------------------------------------------------


ROWS_BIG = 61_234
"""Not a multiple of the row group size: the last row group (or stripe) is short."""


@pytest.mark.parametrize("file_type", ["parquet", "orc"])
def test_large_files_split_by_row_group_or_stripe_and_resume(
    backend: Backend, tmp_path: Path, file_type: str
) -> None:
    rng = random.Random(7)
    table = pa.table(
        {"id": range(ROWS_BIG), "s": [f"{rng.random():.12f}" for _ in range(ROWS_BIG)]}
    )
    sink = io.BytesIO()
    if file_type == "parquet":
        pq.write_table(table, sink, row_group_size=5_000, compression="none")
    else:
        paorc.write_table(table, sink, stripe_size=64 * 1024)
    path = backend.path("big", f"data.{file_type}")
    with backend.fs.open_write(path) as stream:
        stream.write(sink.getvalue())
    reader = _reader(
        backend, tmp_path, path=backend.path("big"), fileType=file_type, splitSize=200_000
    )
    splits = reader.plan(4)
    assert len(splits) >= 3, splits
    assert all(s.data.units is not None for s in splits)
    rows: list[int] = []
    for split in splits:
        opened = reader.open(split, None)
        head: list[int] = []
        for batch in opened.batches():
            assert batch is not None
            head.extend(batch["id"].to_pylist())
            if len(head) >= 1500:
                break
        position = opened.snapshot()
        assert position.rows == len(head)
        opened.close()
        resumed = reader.open(Split.from_json(split.to_json(), HdfsReader.split_type), position)
        rest = [i for b in resumed.batches() if b is not None for i in b["id"].to_pylist()]
        resumed.close()
        rows.extend(head + rest)
    assert rows == list(range(ROWS_BIG))


def test_text_reader_columns_positions_and_dirty_values(backend: Backend, tmp_path: Path) -> None:
    folder = backend.path("txt", "pt=7")
    lines = [
        "1\x012024-01-02\x01aGk=\x01x\x01extra",
        "2\x01not a date\x01\\N\x01y",
        "3\x0120240105",  # short line: missing fields are NULL
        "oops\x012024-01-04\x01\x01z",
    ]
    with backend.fs.open_write(backend.fs.join(folder, "000000_0")) as stream:
        stream.write(("\n".join(lines) + "\n").encode())
    with backend.fs.open_write(backend.fs.join(folder, "_SUCCESS")) as stream:
        stream.write(b"")
    dirt = Dirt()
    reader = _reader(
        backend,
        tmp_path,
        dirt,
        path=backend.path("txt"),
        column=[
            {"name": "id", "type": "int"},
            {"name": "day", "type": "date", "format": "yyyy-MM-dd"},
            {"name": "blob", "type": "binary"},
            {"name": "s", "index": 3, "type": "string"},
            {"name": "pt", "type": "int", "isPart": True},
            {"name": "source", "type": "string", "value": "hdfs"},
        ],
    )
    rows = _read_all(reader)
    assert rows == [
        {"id": 1, "day": dt.date(2024, 1, 2), "blob": b"hi", "s": "x", "pt": 7, "source": "hdfs"},
    ]
    assert [(r.kind, r.field, r.error) for r in dirt.records] == [
        ("conversion", "day", "day: 'not a date' does not match yyyy-MM-dd"),
        ("conversion", "day", "day: '20240105' does not match yyyy-MM-dd"),
        (
            "conversion",
            "id",
            "id: cannot convert string to int32: Failed to parse string: 'oops' as a scalar of "
            "type int32",
        ),
    ]
    # resume by line: a split's position counts every line, dirty ones included
    (split,) = reader.plan(1)
    opened = reader.open(split, RowsRead(rows=2))
    assert [b.num_rows for b in opened.batches() if b is not None] == [0]
    assert opened.snapshot().rows == 4


def test_reader_errors_name_the_parameter(backend: Backend, tmp_path: Path) -> None:
    reader = _reader(backend, tmp_path, path=backend.path("nothing-here"), fileType="orc")
    with pytest.raises(JobFileError, match=rf"^{RX}.path: no files match "):
        reader.check()
    folder = backend.path("nopart")
    with backend.fs.open_write(backend.fs.join(folder, "f.txt")) as stream:
        stream.write(b"1\n")
    reader = _reader(
        backend, tmp_path, path=folder, column=[{"name": "pt", "type": "string", "isPart": True}]
    )
    with pytest.raises(JobFileError, match=rf"^{RX}.column\[0\]: isPart, but .* 'pt=...' folder"):
        _read_all(reader)


# -- jobs: file sizes, the example, crash recovery -------------------------------------------------


ORDER_COLUMNS = [
    {"name": "id", "type": "id"},
    {"name": "customer", "type": "string"},
    {"name": "qty", "type": "int"},
    {"name": "price", "type": "decimal(12,2)"},
    {"name": "paid", "type": "boolean"},
    {"name": "created_at", "type": "timestamp"},
]


@pytest.mark.slow
def test_two_million_rows_make_files_near_max_file_size(
    server_backend: Backend, tmp_path: Path
) -> None:
    """Many checkpoints, few files: each subtask's files fill up to maxFileSize before they roll,
    whatever the checkpoint interval; without merging there would be one per checkpoint."""
    backend = server_backend
    limit = 16 * 1024 * 1024
    folder = backend.path("sizes")
    job = _job(
        _stream([1_000_000, 1_000_000], ORDER_COLUMNS),
        backend.params(path=folder, fileType="parquet", maxFileSize=limit),
        speed={"channel": 2},
    )
    report = _run(tmp_path, job, checkpoint_interval=0.1)
    checkpoints = int(report.metrics["numCheckpoints"])
    files = backend.fs.listdir(folder)
    sizes = {e.path.rsplit("/", 1)[-1]: e.size for e in files if not e.is_dir}
    total = sum(sizes.values())
    by_subtask: dict[str, list[int]] = {}
    for name, size in sorted(sizes.items()):
        by_subtask.setdefault(name.split("-")[3], []).append(size)
    print(f"{checkpoints} checkpoints, {len(sizes)} files, {total / 2**20:.1f} MiB: {by_subtask}")
    assert set(by_subtask) == {"000", "001"}
    for subtask_sizes in by_subtask.values():
        (first, *full), _last = subtask_sizes[:-1], subtask_sizes[-1]
        # a merged Parquet file is the sum of its segments (concatenated); a format whose
        # segments are re-encoded in larger units makes it smaller: the writer learns by how
        # much at its first merge, so a first file may be ~10% short of maxFileSize
        assert 0.85 * limit <= first <= 1.1 * limit, subtask_sizes
        assert all(0.9 * limit <= size <= 1.1 * limit for size in full), subtask_sizes
    assert len(sizes) <= total / limit + 2
    # one file per checkpoint and subtask would be 2 x checkpoints files
    assert checkpoints >= 4
    assert len(sizes) < 2 * checkpoints
    rows = sum(
        pq.ParquetFile(pa.BufferReader(backend.read(backend.fs.join(folder, n)))).metadata.num_rows
        for n in sizes
    )
    assert rows == 2_000_000


def test_default_max_file_size_gives_one_file_per_subtask(backend: Backend, tmp_path: Path) -> None:
    folder = backend.path("one-each")
    job = _job(
        _stream([40_000, 40_000], ORDER_COLUMNS, permitsPerSecond=80_000),
        backend.params(path=folder, fileType="orc"),
        speed={"channel": 2},
    )
    report = _run(tmp_path, job, checkpoint_interval=0.1)
    assert int(report.metrics["numCheckpoints"]) >= 3
    files = backend.files(folder)
    assert len(files) == 2
    assert sum(_read_back(backend, p, "orc").num_rows for p in files) == 80_000


@pytest.mark.parametrize("kind", ["file", "webhdfs"])
def test_example_job_stream_to_hdfs_orc(kind: str, tmp_path: Path, run_cli: RunCli) -> None:
    job = REPO / "jobs" / "stream_to_hdfs_orc.yaml"
    if kind == "file":
        done = run_cli("run", job, "-p", f"path={tmp_path / 'orders'}")
        assert done.returncode == 0, done.stderr
        folder = tmp_path / "orders" / "pt=20240101" / "channel=web"
    else:
        with WebHdfsServer(tmp_path / "hdfs") as server:
            done = run_cli(
                "run",
                job,
                "-p",
                f"defaultFS=webhdfs://127.0.0.1:{server.namenode_port}",
                "-p",
                "path=/user/hive/warehouse/shop.db/orders",
            )
        assert done.returncode == 0, done.stderr
        folder = tmp_path / "hdfs/user/hive/warehouse/shop.db/orders/pt=20240101/channel=web"
    files = [p for p in folder.iterdir() if not p.name.startswith(".")]
    assert len(files) == 2  # one per subtask
    tables = [paorc.ORCFile(str(p)).read() for p in files]
    assert sum(t.num_rows for t in tables) == 200_000
    assert tables[0].column_names == ["id", "customer", "qty", "price", "paid", "created_at"]
    assert tables[0].schema.field("price").type == pa.decimal128(12, 2)


@pytest.mark.slow
def test_killed_stream_to_hdfs_job_resumes_exactly(tmp_path: Path) -> None:
    """SIGKILLed at random moments and at every crash point, resumed each time: the files on
    the WebHDFS server hold every row once, and no staging file is left."""
    columns = [
        {"name": "id", "type": "id"},
        {"name": "s", "type": "string"},
        {"name": "v", "type": "double"},
    ]
    counts = [150_000, 150_000]
    with WebHdfsServer(tmp_path / "hdfs") as server:
        job = _job(
            _stream(counts, columns),
            {
                "defaultFS": f"webhdfs://127.0.0.1:{server.namenode_port}",
                "hadoopConfig": {"hadoop.user.name": "syncx"},
                "path": "/warehouse/crash",
                "fileType": "parquet",
                "maxFileSize": 400_000,
            },
            speed={"channel": 2, "record": 40_000},
        )
        report = run_with_kills(job, tmp_path, "hdfs-crash", random_kills=6, window=(0.7, 1.8))
    context = report.summary()
    folder = tmp_path / "hdfs" / "warehouse" / "crash"
    schema = pa.schema([("id", pa.int64()), ("s", pa.string()), ("v", pa.float64())])
    actual = read_folder(folder, "parquet", schema)
    expected = _stream_rows(counts, columns, RateLimiter(0, 40_000).batch_rows(4096)).cast(schema)
    assert_exact(expected, actual, ["id", "s"], context)
    assert staging_leftovers(folder, "hdfs-crash") == [], context
    assert not (folder / STAGING / LOCK).exists(), context
    assert report.kills >= 8, context
