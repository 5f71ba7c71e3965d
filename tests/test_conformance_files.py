"""The conformance kit (:mod:`sync.testing`) run by the stream, file and HDFS plugins.

Each plugin is loaded by name and configured as a job file would configure it. The HDFS plugins
run on ``file://`` and on the WebHDFS test server. Crash rounds pair readers and writers of this
family so that every reader and writer here is killed and restored at least once.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.orc as paorc
import pyarrow.parquet as pq
import pytest

from libs.fs import FileSystem, LocalFileSystem, is_hidden
from libs.webhdfs import open_filesystem
from sync.testing import (
    CrashConformance,
    JobCase,
    ReaderCase,
    ReaderConformance,
    WriterCase,
    WriterConformance,
    build_reader,
)
from tests.crash import read_folder
from tests.servers.webhdfs import WebHdfsServer
from writers.file import STAGING
from writers.hdfs import LOCK

ROWS = 45
SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("amount", pa.float64())])
FILE_TYPES = ["parquet", "csv", "json"]
HDFS_TYPES = ["parquet", "orc", "text"]


def _rows(count: int = ROWS, first: int = 0) -> pa.Table:
    ids = list(range(first, first + count))
    return pa.table(
        {
            "id": ids,
            "name": [f"név-{i}" if i % 5 else None for i in ids],
            "amount": [i * 1.25 for i in ids],
        },
        schema=SCHEMA,
    )


def _write_files(folder: Path, file_type: str, table: pa.Table, files: int = 2) -> None:
    """``table`` in ``files`` files of one format (the reader's seeded data)."""
    folder.mkdir(parents=True, exist_ok=True)
    step = -(-table.num_rows // files)
    for index in range(files):
        part = table.slice(index * step, step)
        path = folder / f"part-{index}.{file_type}"
        if file_type == "parquet":
            pq.write_table(part, path, row_group_size=10)
        elif file_type == "csv":
            pacsv.write_csv(part, path)
        else:
            path.write_text(
                "".join(f"{json.dumps(row)}\n" for row in part.to_pylist()),
                encoding="utf-8",
            )


def _staged(fs: FileSystem, folder: str) -> list[str]:
    """Files a staged writer left under ``<folder>/.syncx-staging`` (its lock excluded)."""
    found: list[str] = []

    def walk(path: str) -> None:
        if not fs.exists(path):
            return
        for entry in fs.listdir(path):
            if entry.is_dir:
                walk(entry.path)
            elif entry.path.rsplit("/", 1)[-1] != LOCK:
                found.append(entry.path)

    walk(fs.join(folder, STAGING))
    return sorted(found)


def _read_visible(fs: FileSystem, folder: str, file_type: str) -> pa.Table:
    """Every visible file of a folder written by ``hdfswriter`` as a table of :data:`SCHEMA`."""
    tables = []
    if fs.exists(folder):
        for entry in fs.listdir(folder):
            name = entry.path.rsplit("/", 1)[-1]
            if entry.is_dir or is_hidden(name):
                continue
            data = pa.py_buffer(fs.read_bytes(entry.path))
            if file_type == "parquet":
                table = pq.read_table(pa.BufferReader(data))
            elif file_type == "orc":
                table = paorc.ORCFile(pa.BufferReader(data)).read()
            else:
                parse = pacsv.ParseOptions(delimiter="\x01")
                read = pacsv.ReadOptions(column_names=SCHEMA.names)
                convert = pacsv.ConvertOptions(
                    column_types={f.name: f.type for f in SCHEMA},
                    strings_can_be_null=True,
                    null_values=["\\N"],
                )
                table = pacsv.read_csv(pa.BufferReader(data), read, parse, convert)
            tables.append(table.select(SCHEMA.names).cast(SCHEMA))
    return pa.concat_tables(tables) if tables else SCHEMA.empty_table()


# -- streamreader / streamwriter -----------------------------------------------------------------

STREAM_COLUMNS = [{"name": "id", "type": "id"}, {"name": "s", "type": "string"}]
STREAM_SCHEMA = pa.schema([("id", pa.int64()), ("s", pa.string())])


def _stream_expected(parameters: dict[str, Any], channels: int, state: Path) -> pa.Table:
    """What ``streamreader`` generates, read in one go (with large batches)."""
    reader = build_reader("streamreader", parameters, state)
    tables = [
        pa.Table.from_batches([b])
        for split in reader.plan(channels)
        for b in reader.open(split, None).batches()
        if b is not None
    ]
    return pa.concat_tables(tables).cast(STREAM_SCHEMA)


class TestStreamReader(ReaderConformance):
    @pytest.fixture
    def reader_case(self, tmp_path: Path) -> ReaderCase:
        parameters = {"column": STREAM_COLUMNS, "sliceRecordCount": [30, 20]}
        expected = _stream_expected(parameters, 2, tmp_path)
        # ids restart at 0 per channel: a row is (channel's id, its random string)
        return ReaderCase("streamreader", parameters, expected, ["id", "s"], channels=2)


class TestStreamWriter(WriterConformance):
    @pytest.fixture
    def writer_case(self, capfd: pytest.CaptureFixture[str]) -> WriterCase:
        printed: list[str] = []

        def read_back() -> pa.Table:
            printed.append(capfd.readouterr().out)
            lines = [line for line in "".join(printed).splitlines() if line]
            ids, names = (
                zip(*(line.split("|") for line in lines), strict=True) if lines else ((), ())
            )
            return pa.table({"id": [int(i) for i in ids], "s": list(names)}, schema=STREAM_SCHEMA)

        rows = pa.table(
            {"id": list(range(12)), "s": [f"s{i}" for i in range(12)]}, schema=STREAM_SCHEMA
        )
        parameters = {"print": True, "fieldDelimiter": "|"}
        return WriterCase("streamwriter", parameters, rows, ["id"], read_back)


@pytest.mark.slow
class TestStreamToStreamCrash(CrashConformance):
    """streamwriter is at-least-once: rows printed after the last checkpoint print again."""

    exactly_once = False

    @pytest.fixture
    def job_case(self, tmp_path: Path) -> JobCase:
        parameters = {"column": STREAM_COLUMNS, "sliceRecordCount": [300]}
        expected = _stream_expected(parameters, 1, tmp_path)
        logs = tmp_path / "crash-state-logs"
        row = re.compile(r"^(\d+)\|(s\d+)$")

        def read_back() -> pa.Table:
            found = [
                match.groups()
                for log in sorted(logs.glob("run-*.log"))
                for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
                if (match := row.match(line))
            ]
            return pa.table(
                {"id": [int(i) for i, _ in found], "s": [s for _, s in found]}, schema=STREAM_SCHEMA
            )

        job = {
            "job": {
                "content": [
                    {
                        "reader": {"name": "streamreader", "parameter": parameters},
                        "writer": {
                            "name": "streamwriter",
                            "parameter": {"print": True, "fieldDelimiter": "|"},
                        },
                    }
                ]
            }
        }
        return JobCase(job, expected, ["id"], read_back)


# -- filereader / filewriter ---------------------------------------------------------------------


@pytest.fixture(params=FILE_TYPES)
def file_type(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class TestFileReader(ReaderConformance):
    @pytest.fixture
    def reader_case(self, tmp_path: Path, file_type: str) -> ReaderCase:
        table = _rows()
        _write_files(tmp_path / "in", file_type, table)
        (tmp_path / "in" / ".hidden.csv").write_text("id\n-1\n", encoding="utf-8")
        parameters = {
            "path": str(tmp_path / "in"),
            "fileType": file_type,
            "column": [
                {"name": "id", "type": "bigint"},
                {"name": "name", "type": "string"},
                {"name": "amount", "type": "double"},
            ],
        }
        return ReaderCase("filereader", parameters, table, ["id"], batch_rows=6)


class TestFileWriter(WriterConformance):
    @pytest.fixture
    def writer_case(self, tmp_path: Path, file_type: str) -> WriterCase:
        out = tmp_path / "out"
        parameters = {"path": str(out), "fileType": file_type, "fileName": "part"}
        return WriterCase(
            "filewriter",
            parameters,
            _rows(),
            ["id"],
            read_back=lambda: read_folder(out, file_type, SCHEMA),  # type: ignore[arg-type]
            leftovers=lambda _job: _staged(LocalFileSystem(), str(out)),
        )


def _file_job(reader: dict[str, Any], writer: dict[str, Any], channels: int = 2) -> dict[str, Any]:
    return {
        "job": {
            "content": [{"reader": reader, "writer": writer}],
            "setting": {"speed": {"channel": channels}},
        }
    }


@pytest.mark.slow
class TestStreamToFileCrash(CrashConformance):
    """streamreader → filewriter (Parquet), two channels."""

    @pytest.fixture
    def job_case(self, tmp_path: Path) -> JobCase:
        parameters = {"column": STREAM_COLUMNS, "sliceRecordCount": [150, 150]}
        expected = _stream_expected(parameters, 2, tmp_path)
        out = tmp_path / "out"
        job = _file_job(
            {"name": "streamreader", "parameter": parameters},
            {"name": "filewriter", "parameter": {"path": str(out), "fileType": "parquet"}},
        )
        return JobCase(
            job,
            expected,
            ["id", "s"],
            read_back=lambda: read_folder(out, "parquet", STREAM_SCHEMA),
            leftovers=lambda _job: _staged(LocalFileSystem(), str(out)),
        )


@pytest.mark.slow
class TestFileToFileCrash(CrashConformance):
    """filereader (CSV) → filewriter (JSON lines)."""

    @pytest.fixture
    def job_case(self, tmp_path: Path) -> JobCase:
        source, target = "csv", "json"
        table = _rows(300)
        _write_files(tmp_path / "in", source, table, files=3)
        out = tmp_path / "out"
        job = _file_job(
            {
                "name": "filereader",
                "parameter": {
                    "path": str(tmp_path / "in"),
                    "fileType": source,
                    "column": [
                        {"name": "id", "type": "bigint"},
                        {"name": "name", "type": "string"},
                        {"name": "amount", "type": "double"},
                    ],
                },
            },
            {"name": "filewriter", "parameter": {"path": str(out), "fileType": target}},
        )
        return JobCase(
            job,
            table,
            ["id"],
            read_back=lambda: read_folder(out, target, SCHEMA),
            leftovers=lambda _job: _staged(LocalFileSystem(), str(out)),
        )


# -- hdfsreader / hdfswriter ---------------------------------------------------------------------


class Place:
    """Where the HDFS plugins work: ``file://`` or the WebHDFS test server."""

    def __init__(self, default_fs: str, config: dict[str, Any], root: str) -> None:
        self.default_fs = default_fs
        self.config = config
        self.root = root
        self.fs = open_filesystem(default_fs, config, where="test", plugin="test")

    def params(self, **extra: Any) -> dict[str, Any]:
        return {"defaultFS": self.default_fs, "hadoopConfig": dict(self.config), **extra}

    def path(self, name: str) -> str:
        return self.fs.join(self.root, name)

    def seed(self, file_type: str, table: pa.Table, files: int = 2) -> str:
        """``table`` as ``files`` Hive files of ``file_type`` in a new folder; its path."""
        folder = self.path("in")
        self.fs.makedirs(folder)
        step = -(-table.num_rows // files)
        for index in range(files):
            part = table.slice(index * step, step)
            sink = pa.BufferOutputStream()
            if file_type == "parquet":
                pq.write_table(part, sink, row_group_size=10)
            elif file_type == "orc":
                paorc.write_table(part, sink, stripe_size=64 * 1024)
            else:
                lines = [
                    "\x01".join("\\N" if v is None else str(v) for v in row.values())
                    for row in part.to_pylist()
                ]
                sink.write(("\n".join(lines) + "\n").encode())
            with self.fs.open_write(self.fs.join(folder, f"00000{index}_0")) as out:
                out.write(sink.getvalue().to_pybytes())
        return folder


@contextlib.contextmanager
def _place(kind: str, tmp_path: Path) -> Iterator[Place]:
    if kind == "file":
        (tmp_path / "fs").mkdir()
        yield Place("file:///", {}, str(tmp_path / "fs"))
        return
    with WebHdfsServer(tmp_path / "hdfs") as server:
        config = {"hadoop.user.name": "syncx", "dfs.client.failover.max.attempts": 3}
        yield Place(f"webhdfs://127.0.0.1:{server.namenode_port}", config, "/conformance")


@pytest.fixture(params=["file", "webhdfs"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    with _place(request.param, tmp_path) as where:
        yield where


@pytest.fixture(params=HDFS_TYPES)
def hdfs_type(request: pytest.FixtureRequest) -> str:
    return str(request.param)


HDFS_COLUMNS = [
    {"name": "id", "type": "bigint"},
    {"name": "name", "type": "string"},
    {"name": "amount", "type": "double"},
]


class TestHdfsReader(ReaderConformance):
    @pytest.fixture
    def reader_case(self, place: Place, hdfs_type: str) -> ReaderCase:
        table = _rows()
        folder = place.seed(hdfs_type, table)
        columns = [{**c, "index": i} for i, c in enumerate(HDFS_COLUMNS)]
        parameters = place.params(path=folder, fileType=hdfs_type, column=columns)
        return ReaderCase("hdfsreader", parameters, table, ["id"], batch_rows=6)


class TestHdfsWriter(WriterConformance):
    @pytest.fixture
    def writer_case(self, place: Place, hdfs_type: str) -> WriterCase:
        out = place.path("out")
        # mergeSmallFiles (the default) shows committed rows only when a file is complete
        # (maxFileSize or the job's end); the kit looks after each commit, so one file each.
        parameters = place.params(
            path=out, fileType=hdfs_type, column=HDFS_COLUMNS, mergeSmallFiles=False
        )
        return WriterCase(
            "hdfswriter",
            parameters,
            _rows(),
            ["id"],
            read_back=lambda: _read_visible(place.fs, out, hdfs_type),
            leftovers=lambda _job: _staged(place.fs, out),
        )


@pytest.mark.slow
class TestHdfsCrash(CrashConformance):
    """hdfsreader (text) → hdfswriter (ORC) on the WebHDFS test server, files merged across
    checkpoints (the default)."""

    @pytest.fixture
    def job_case(self, tmp_path: Path) -> Iterator[JobCase]:
        source, target = "text", "orc"
        with _place("webhdfs", tmp_path) as place:
            table = _rows(300)
            folder = place.seed(source, table, files=3)
            out = place.path("out")
            columns = [{**c, "index": i} for i, c in enumerate(HDFS_COLUMNS)]
            job = _file_job(
                {
                    "name": "hdfsreader",
                    "parameter": place.params(path=folder, fileType=source, column=columns),
                },
                {
                    "name": "hdfswriter",
                    "parameter": place.params(path=out, fileType=target, column=HDFS_COLUMNS),
                },
            )
            yield JobCase(
                job,
                table,
                ["id"],
                read_back=lambda: _read_visible(place.fs, out, target),
                leftovers=lambda _job: _staged(place.fs, out),
            )


def test_csv_keeps_empty_strings_apart_from_null(tmp_path: Path) -> None:
    """The kit's row equality over CSV with both an empty string and a NULL in one column."""
    table = pa.table({"id": [1, 2, 3], "name": ["a", "", None]})
    (tmp_path / "in").mkdir()
    pacsv.write_csv(table, tmp_path / "in" / "part.csv")
    parameters = {"path": str(tmp_path / "in"), "fileType": "csv"}
    reader = build_reader("filereader", parameters, tmp_path / "state")
    read = [b for s in reader.plan(1) for b in reader.open(s, None).batches() if b is not None]
    assert pa.Table.from_batches(read).column("name").to_pylist() == ["a", "", None]
