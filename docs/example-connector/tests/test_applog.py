"""``applogreader`` and ``applogwriter`` run the syncx conformance kit, plus their own checks.

Install the package beside syncx first (``pip install -e docs/example-connector``): the kit
loads the plugins by name, through their entry points, as a job file would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from syncx_applog.reader import AppLogReader, AppLogReaderParams, ByteOffset
from syncx_applog.writer import STAGING

from sync.contract import DirtyRecord, JobContext
from sync.model import Setting
from sync.testing import (
    CrashConformance,
    JobCase,
    ReaderCase,
    ReaderConformance,
    WriterCase,
    WriterConformance,
)

SCHEMA = pa.schema([("id", pa.int64()), ("user", pa.string()), ("ok", pa.bool_())])
COLUMNS = [
    {"name": "id", "type": "bigint"},
    {"name": "user", "type": "string"},
    {"name": "ok", "type": "boolean"},
]


def rows(count: int, first: int = 0) -> pa.Table:
    """``count`` log records with ids from ``first``."""
    ids = list(range(first, first + count))
    return pa.table(
        {"id": ids, "user": [f"u{i % 7}" for i in ids], "ok": [i % 3 != 0 for i in ids]},
        schema=SCHEMA,
    )


def write_log(path: Path, table: pa.Table) -> Path:
    """``table`` as a JSON-lines log file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as log:
        for record in table.to_pylist():
            log.write(json.dumps(record) + "\n")
    return path


def read_logs(folder: Path) -> pa.Table:
    """Every visible file ``applogwriter`` committed in ``folder``."""
    records = [
        json.loads(line)
        for path in sorted(folder.glob("*.jsonl"))
        if not path.name.startswith(".")
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    return pa.Table.from_pylist(records, schema=SCHEMA)


def staged(folder: Path) -> list[str]:
    """Whatever this job left in the staging folder."""
    staging = folder / STAGING
    return sorted(str(p) for p in staging.rglob("*") if p.is_file()) if staging.exists() else []


# -- the kit -------------------------------------------------------------------------------------


class TestAppLogReader(ReaderConformance):
    @pytest.fixture
    def reader_case(self, tmp_path: Path) -> ReaderCase:
        write_log(tmp_path / "logs" / "a.log", rows(20))
        write_log(tmp_path / "logs" / "b.log", rows(15, first=20))
        parameters = {"path": str(tmp_path / "logs" / "*.log"), "column": COLUMNS}
        return ReaderCase("applogreader", parameters, rows(35), ["id"], batch_rows=4)


class TestAppLogReaderFollowing(ReaderConformance):
    """``follow: true``: an endless stream with idle ticks (the kit reads it until it has the
    expected rows and ticks idle)."""

    @pytest.fixture
    def reader_case(self, tmp_path: Path) -> ReaderCase:
        log = write_log(tmp_path / "app.log", rows(18))
        parameters = {"path": str(log), "column": COLUMNS, "follow": True}
        return ReaderCase("applogreader", parameters, rows(18), ["id"], batch_rows=5)


class TestAppLogWriter(WriterConformance):
    @pytest.fixture
    def writer_case(self, tmp_path: Path) -> WriterCase:
        out = tmp_path / "out"
        return WriterCase(
            "applogwriter",
            {"path": str(out), "fileName": "events"},
            rows(30),
            ["id"],
            read_back=lambda: read_logs(out),
            leftovers=lambda _job_id: staged(out),
        )


class TestAppLogCrash(CrashConformance):
    @pytest.fixture
    def job_case(self, tmp_path: Path) -> JobCase:
        for part in range(3):
            write_log(tmp_path / "logs" / f"{part}.log", rows(100, first=part * 100))
        out = tmp_path / "out"
        job = {
            "job": {
                "content": [
                    {
                        "reader": {
                            "name": "applogreader",
                            "parameter": {
                                "path": str(tmp_path / "logs" / "*.log"),
                                "column": COLUMNS,
                            },
                        },
                        "writer": {"name": "applogwriter", "parameter": {"path": str(out)}},
                    }
                ],
                "setting": {"speed": {"channel": 2}},
            }
        }
        return JobCase(job, rows(300), ["id"], lambda: read_logs(out), lambda _: staged(out))


# -- what the kit does not know about this connector ---------------------------------------------


def reader(tmp_path: Path, **parameters: Any) -> tuple[AppLogReader, list[DirtyRecord]]:
    dirty: list[DirtyRecord] = []
    ctx = JobContext.of("t", tmp_path / "state", Setting(), run_id="r", report_dirty=dirty.append)
    params = AppLogReaderParams.model_validate({"column": COLUMNS, **parameters})
    return AppLogReader(params, ctx), dirty


def test_a_half_written_line_waits_and_bad_lines_are_dirty(tmp_path: Path) -> None:
    log = write_log(tmp_path / "a.log", rows(2))
    with log.open("a", encoding="utf-8") as out:
        out.write('not json\n{"id": "x"}\n{"id": 9, "us')
    plugin, dirty = reader(tmp_path, path=str(log))
    (split,) = plugin.plan(1)
    opened = plugin.open(split, None)
    read = [b for b in opened.batches() if b is not None]
    assert pa.Table.from_batches(read).column("id").to_pylist() == [0, 1]
    assert [d.error for d in dirty] == [f"{log}: not a JSON object", f"{log}: id is not a bigint"]
    position = opened.snapshot()
    opened.close()
    with log.open("a", encoding="utf-8") as out:
        out.write('er": "late", "ok": true}\n')
    resumed = plugin.open(split, position)
    assert [b.to_pylist() for b in resumed.batches() if b is not None] == [
        [{"id": 9, "user": "late", "ok": True}]
    ]
    resumed.close()


def test_a_version_1_position_upgrades_and_a_replaced_file_is_refused(tmp_path: Path) -> None:
    assert ByteOffset.from_json({"v": 1, "offset": 12}) == ByteOffset(12, None)
    log = write_log(tmp_path / "a.log", rows(3))
    plugin, _ = reader(tmp_path, path=str(log))
    (split,) = plugin.plan(1)
    opened = plugin.open(split, None)
    list(opened.batches())
    position = opened.snapshot()
    opened.close()
    write_log(tmp_path / "other.log", rows(5)).rename(log)  # rotated: another inode
    with pytest.raises(Exception, match="was replaced since the checkpoint"):
        plugin.open(split, position)


def test_no_file_names_the_parameter(tmp_path: Path) -> None:
    plugin, _ = reader(tmp_path, path=str(tmp_path / "none*.log"))
    with pytest.raises(Exception, match=r"job.content\[0\].reader.parameter.path: no log file"):
        plugin.check()
