"""The streaming core through the real command line: channels, rate limit, dirty data, stopping."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pytest

from readers.stream import StreamReader, StreamReaderParams
from sync.contract import JobContext
from sync.model import Setting
from tests.conftest import RunCli, stream_job, syncx_command


def _read_folder(path: Path, fmt: str = "parquet") -> pa.Table:
    return ds.dataset(path, format=fmt).to_table()


def _write(path: Path, job: dict) -> Path:
    path.write_text(json.dumps(job), encoding="utf-8")
    return path


def _stream_rows(counts: list[int]) -> set[tuple[int, str]]:
    """What the stream reader generates for these channel counts: (id, s) pairs, via a real run."""
    params = StreamReaderParams.model_validate(
        {
            "column": [{"name": "id", "type": "id"}, {"name": "s", "type": "string"}],
            "sliceRecordCount": counts,
        }
    )
    ctx = JobContext.of("x", Path(), Setting(), run_id="r")
    reader = StreamReader(params, ctx)
    rows: set[tuple[int, str]] = set()
    for split in reader.plan(len(counts)):
        for batch in reader.open(split, None).batches():
            assert batch is not None
            rows.update(zip(batch["id"].to_pylist(), batch["s"].to_pylist(), strict=True))
    return rows


@pytest.mark.parametrize(
    ("readers", "writers"), [(2, 2), (2, 3), (3, 1)], ids=["chained", "fan-out", "fan-in"]
)
def test_channels_deliver_every_row_once(
    tmp_path: Path, run_cli: RunCli, readers: int, writers: int
) -> None:
    counts = [30000 + 1000 * i for i in range(readers)]
    job = stream_job(
        counts=counts,
        writer={"name": "filewriter", "parameter": {"path": "out", "fileType": "parquet"}},
        setting={
            "speed": {"readerChannel": readers, "writerChannel": writers},
            "restore": {"isRestore": True, "checkpointInterval": 0.05},
        },
    )
    done = run_cli("run", _write(tmp_path / "job.json", job), "--metrics-file", "m.json")
    assert done.returncode == 0, done.stderr
    table = _read_folder(tmp_path / "out")
    got = list(zip(table["id"].to_pylist(), table["s"].to_pylist(), strict=True))
    assert len(got) == sum(counts)
    assert set(got) == _stream_rows(counts)
    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert metrics["numRead"] == metrics["numWrite"] == sum(counts)
    files = {p.name.split("-")[3] for p in (tmp_path / "out").glob("*.parquet")}
    assert files == {f"{i:03d}" for i in range(writers)}  # every writer subtask wrote


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_backpressure_keeps_reader_close_to_writer(tmp_path: Path) -> None:
    """A slow writer (printing into a pipe nobody reads fast) holds the reader back."""
    job = stream_job(counts=[0], setting={"speed": {"channel": 1}})
    job["job"]["content"][0]["reader"]["parameter"]["column"].append(
        {"name": "pad", "type": "string", "value": "x" * 200}
    )
    path = _write(tmp_path / "job.json", job)
    proc = subprocess.Popen(
        syncx_command("run", str(path)),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        time.sleep(3)  # let the reader run against a writer blocked on the pipe
        read_before = proc.stdout.read(1 << 20)
        assert read_before
        rss = _rss(proc.pid)
        time.sleep(2)
        rss_later = _rss(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    # an unbounded reader with no backpressure would grow by hundreds of MB in these seconds
    assert rss_later < 400 * 1024 * 1024
    assert rss_later - rss < 50 * 1024 * 1024


@pytest.mark.parametrize(("limit", "value"), [("record", 2000), ("bytes", 400_000)])
def test_rate_limit_within_ten_percent_over_ten_seconds(
    tmp_path: Path, run_cli: RunCli, limit: str, value: int
) -> None:
    columns = [{"name": "id", "type": "id"}, {"name": "pad", "type": "string", "value": "y" * 92}]
    # one row is 8 bytes of id + 92 bytes of string + 4 bytes of offset = 104 bytes in Arrow
    rows_per_second = value if limit == "record" else value / 104
    rows = int(rows_per_second * 10)
    job = stream_job(
        columns=columns,
        counts=[rows // 2, rows - rows // 2],
        writer={"name": "streamwriter", "parameter": {"print": False}},
        setting={"speed": {"channel": 2, limit: value}},
    )
    start = time.monotonic()
    done = run_cli("run", _write(tmp_path / "job.json", job), "--metrics-file", "m.json")
    elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert metrics["numRead"] == rows
    measured = metrics["elapsedSeconds"]
    assert 9.0 <= measured <= 11.0, (measured, elapsed)


def _bad_csv(path: Path, rows: int, bad_every: int) -> int:
    qty = [("oops" if i % bad_every == 0 else str(i)) for i in range(rows)]
    table = pa.table({"id": list(range(rows)), "qty": qty})
    pacsv.write_csv(table, path)
    return sum(1 for i in range(rows) if i % bad_every == 0)


def _dirty_job(source: Path, error_limit: dict, where: str) -> dict:
    """Reader converts (typed reader column) or writer rejects (typed writer column)."""
    reader_columns = [
        {"name": "id", "type": "long"},
        {"name": "qty", "type": "int" if where == "reader" else "string"},
    ]
    writer_columns = [{"name": "id", "type": "bigint"}, {"name": "qty", "type": "int"}]
    return {
        "job": {
            "content": [
                {
                    "reader": {
                        "name": "filereader",
                        "parameter": {
                            "path": str(source),
                            "fileType": "csv",
                            "column": reader_columns,
                        },
                    },
                    "writer": {
                        "name": "filewriter",
                        "parameter": {
                            "path": "out",
                            "fileType": "parquet",
                            "column": writer_columns,
                        },
                    },
                }
            ],
            "setting": {"errorLimit": error_limit, "dirty": {"path": "dirty"}},
        }
    }


@pytest.mark.parametrize("where", ["reader", "writer"])
@pytest.mark.parametrize(
    ("error_limit", "passes"),
    [
        ({"record": 9}, False),
        ({"record": 10}, True),
        ({"percentage": 0.05}, False),
        ({"percentage": 0.2}, True),
        ({"record": 100, "percentage": 0.01}, False),
    ],
    ids=["record-exceeded", "record-ok", "ratio-exceeded", "ratio-ok", "both-ratio-exceeded"],
)
def test_error_limit_and_dirty_records(
    tmp_path: Path, run_cli: RunCli, where: str, error_limit: dict, passes: bool
) -> None:
    bad = _bad_csv(tmp_path / "in.csv", 100, 10)
    assert bad == 10
    job = _dirty_job(tmp_path / "in.csv", error_limit, where)
    done = run_cli("run", _write(tmp_path / "job.json", job), "--metrics-file", "m.json")
    dirty_files = list((tmp_path / "dirty").glob("*.jsonl"))
    assert len(dirty_files) == 1
    records = [json.loads(line) for line in dirty_files[0].read_text().splitlines()]
    assert all(r["kind"] == "conversion" and "qty" in r["error"] for r in records)
    assert {r["row"]["qty"] for r in records} == {"oops"}
    if passes:
        assert done.returncode == 0, done.stderr
        assert len(records) == 10
        table = _read_folder(tmp_path / "out")
        assert sorted(table["id"].to_pylist()) == [i for i in range(100) if i % 10]
        assert table.schema.field("qty").type == pa.int32()
        metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
        assert metrics["nErrors"] == metrics["conversionErrors"] == 10
        assert metrics["numWrite"] == 90
    else:
        assert done.returncode == 1, done.stderr
        limit = (
            "record"
            if "record-exceeded" in str(error_limit) or "percentage" not in error_limit
            else "percentage"
        )
        assert f"setting.errorLimit.{limit}" in done.stderr
        assert str(dirty_files[0].name) in done.stderr
        assert "Traceback" not in done.stderr
        visible = [p for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")]
        assert visible == []  # a failed job leaves nothing half-written


def _start(tmp_path: Path, job: dict) -> tuple[subprocess.Popen[str], str]:
    """Start ``syncx run`` and return once it stored its first checkpoint (a signal sent
    earlier, while a slow machine still imports, would test the imports), with its output."""
    path = _write(tmp_path / "job.json", job)
    proc = subprocess.Popen(
        syncx_command("run", str(path)), cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    seen = ""
    for line in proc.stderr:
        seen += line
        if "checkpoint 1 stored" in line:
            return proc, seen
    proc.wait(timeout=30)
    raise AssertionError(f"the job ended before its first checkpoint:\n{seen}")


def _visible_ids(folder: Path) -> list[int]:
    files = list(folder.glob("*.parquet"))
    if not files:
        return []
    return sorted(ds.dataset(files, format="parquet").to_table()["id"].to_pylist())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_after_a_final_checkpoint_and_restore_completes(
    tmp_path: Path, run_cli: RunCli, signum: int
) -> None:
    job = stream_job(
        counts=[20000],
        writer={"name": "filewriter", "parameter": {"path": "out", "fileType": "parquet"}},
        setting={"restore": {"isRestore": True, "checkpointInterval": 0.5}},
    )
    job["job"]["content"][0]["reader"]["parameter"]["permitsPerSecond"] = 5000
    proc, seen = _start(tmp_path, job)
    proc.send_signal(signum)
    stderr = seen + proc.communicate(timeout=30)[1]
    assert proc.returncode == 130, stderr
    assert "resume with --restore latest" in stderr
    ids = _visible_ids(tmp_path / "out")
    assert ids == list(range(len(ids)))  # a prefix: nothing lost, nothing twice
    assert 0 < len(ids) < 20000
    staging = tmp_path / "out" / ".syncx-staging" / "job"
    assert list(staging.iterdir()) == []
    done = run_cli("run", tmp_path / "job.json", "--restore", "latest")
    assert done.returncode == 0, done.stderr
    assert _visible_ids(tmp_path / "out") == list(range(20000))


def test_unbounded_job_stopped_by_sigterm_exits_zero(tmp_path: Path) -> None:
    job = stream_job(
        counts=[0],
        writer={"name": "filewriter", "parameter": {"path": "out", "fileType": "parquet"}},
    )
    job["job"]["content"][0]["reader"]["parameter"]["permitsPerSecond"] = 2000
    job["job"]["setting"] = {"restore": {"checkpointInterval": 0.5}}
    proc, seen = _start(tmp_path, job)
    proc.send_signal(signal.SIGTERM)
    stderr = seen + proc.communicate(timeout=30)[1]
    assert proc.returncode == 0, stderr
    ids = _visible_ids(tmp_path / "out")
    assert ids == list(range(len(ids)))
    assert len(ids) > 0
