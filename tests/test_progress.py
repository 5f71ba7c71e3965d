"""Progress that answers "how long?": readers' estimates, the share done and the ETA."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

from readers.binlog.positions import binlog_bytes
from sync.contract import Estimate, JobContext, Reader
from sync.job import RunOptions, run_job
from sync.jobfile import load_job
from sync.metrics import Metric, Metrics, ProgressLine, format_duration
from tests.conftest import RunCli, stream_job
from tests.servers.mariadb import MariaDB, ensure_server
from tests.servers.webhdfs import WebHdfsServer


def _load(tmp_path: Path, job: dict[str, Any]) -> Any:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job), encoding="utf-8")
    return load_job(path)


def _reader(tmp_path: Path, job: dict[str, Any]) -> Reader:
    loaded = _load(tmp_path, job)
    setting = loaded.file.job.setting
    ctx = JobContext.of(loaded.name, tmp_path / "state", setting, run_id="test")
    return loaded.reader_cls(loaded.reader_params, ctx)


def _job(reader: dict[str, Any], channels: int = 1) -> dict[str, Any]:
    return {
        "job": {
            "content": [{"reader": reader, "writer": {"name": "streamwriter", "parameter": {}}}],
            "setting": {"speed": {"channel": channels}},
        }
    }


# -- the share done and the ETA ---------------------------------------------------------------


def test_share_and_eta_from_rows() -> None:
    metrics = Metrics()
    progress = metrics.progress
    assert progress.share() is None  # no estimate: no share, no ETA
    metrics.add(Metric.NUM_READ, 500)  # read before this attempt (a restored checkpoint)
    progress.begin(Estimate(rows=1000), now=100.0)
    assert progress.share() == 0
    assert progress.eta(now=101.0) is None
    metrics.add(Metric.NUM_READ, 250)
    assert progress.share() == 0.25
    assert progress.eta(now=110.0) == pytest.approx(30.0)  # 10 s for a quarter: 30 s to go
    metrics.add(Metric.NUM_READ, 2000)  # more than estimated: never 100% before the end
    assert progress.share() == 0.99


def test_share_from_bytes_wins_over_rows() -> None:
    metrics = Metrics()
    progress = metrics.progress
    progress.begin(Estimate(rows=10, bytes=1000), now=0.0)
    metrics.add(Metric.NUM_READ, 10)
    progress.consumed("a", 100)
    progress.consumed("b", 200)
    progress.consumed("a", 300)  # a split reports its total so far, not an increment
    assert progress.share() == 0.5
    assert progress.eta(now=4.0) == pytest.approx(4.0)


def test_status_line_text() -> None:
    metrics = Metrics()
    metrics.progress.begin(Estimate(rows=1000), now=-8.0)
    line = ProgressLine(metrics)
    line.status(now=0.0)
    metrics.add(Metric.NUM_READ, 400)
    metrics.add(Metric.BYTE_READ, 4_000_000)
    metrics.add(Metric.NUM_WRITE, 300)
    metrics.dirty("conversion")
    metrics.add(Metric.CHECKPOINTS, 1)
    status = line.status(now=2.0)
    assert status.rows_per_second == 200
    assert status.checkpoint_age == 0
    text = status.text()
    assert text.startswith("40% ETA 15s | read 400 rows 200 rows/s 2.0 MB/s")
    assert "written 300 | dirty 1 | checkpoint 0s ago" in text
    assert format_duration(75) == "1m15s"
    assert format_duration(3725) == "1h02m"


def test_eta_on_a_small_job(tmp_path: Path) -> None:
    """A job of known speed (two channels generating 1,500 rows/s each for 4 s): from the
    second second on, the time elapsed plus the ETA is the job's real duration."""
    job = stream_job(counts=[6000], writer={"name": "streamwriter", "parameter": {}})
    reader = job["job"]["content"][0]["reader"]["parameter"]
    reader["permitsPerSecond"] = 1500
    job["job"]["setting"] = {"speed": {"channel": 2}}
    loaded = _load(tmp_path, job)
    samples: list[tuple[float, float | None, float | None]] = []
    done = threading.Event()

    def sample(metrics: Metrics) -> None:
        def loop() -> None:
            started = time.monotonic()
            while not done.wait(0.25):
                elapsed = time.monotonic() - started
                samples.append((elapsed, metrics.progress.share(), metrics.progress.eta()))

        threading.Thread(target=loop, daemon=True).start()

    started = time.monotonic()
    report = run_job(loaded, RunOptions(state_dir=tmp_path / "state", on_start=sample))
    duration = time.monotonic() - started
    done.set()
    assert report.metrics["numRead"] == 12000
    assert 3.5 < duration < 8
    predictions = [
        (elapsed, elapsed + eta) for elapsed, _, eta in samples if eta is not None and elapsed > 1
    ]
    assert predictions, samples
    for elapsed, total in predictions:
        assert abs(total - duration) < 0.25 * duration, (elapsed, total, duration)
    shares = [share for _, share, _ in samples if share is not None]
    assert shares == sorted(shares)
    assert shares[0] < 0.5 < 0.9 < shares[-1] <= 0.99


def test_progress_log_lines_off_a_terminal(tmp_path: Path, run_cli: RunCli) -> None:
    job = stream_job(counts=[3000], writer={"name": "streamwriter", "parameter": {}})
    job["job"]["content"][0]["reader"]["parameter"]["permitsPerSecond"] = 1500
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job), encoding="utf-8")
    done = run_cli("run", path, "--progress-interval", "0.5")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "progress:" in line]
    assert lines, done.stderr
    assert any("% ETA " in line and "rows/s" in line for line in lines), lines
    assert "\r" not in done.stderr
    quiet = run_cli("run", path, "--progress-interval", "0")
    assert "progress:" not in quiet.stderr


# -- estimates of the readers ------------------------------------------------------------------


def test_stream_estimate_is_exact(tmp_path: Path) -> None:
    job = _job(
        {
            "name": "streamreader",
            "parameter": stream_job(counts=[7, 5])["job"]["content"][0]["reader"]["parameter"],
        },
        2,
    )
    reader = _reader(tmp_path, job)
    assert reader.estimate(reader.plan(2)) == Estimate(rows=12)


def _files(folder: Path, file_type: str, count: int, rows: int) -> int:
    """``count`` files of ``rows`` rows; returns their total size."""
    folder.mkdir()
    for index in range(count):
        ids = list(range(index * rows, (index + 1) * rows))
        table = pa.table({"id": ids, "s": ["x" * 40] * rows})
        if file_type == "parquet":
            pq.write_table(table, folder / f"part-{index}.parquet", row_group_size=5000)
        else:
            pacsv.write_csv(table, folder / f"part-{index}.csv")
    return sum(p.stat().st_size for p in folder.iterdir())


def test_jsonl_estimate_is_the_sizes_and_splits_report_their_bytes(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(3):
        lines = [
            json.dumps({"id": i, "s": "x" * 40}) for i in range(index * 20000, (index + 1) * 20000)
        ]
        (folder / f"part-{index}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    sizes = sum(p.stat().st_size for p in folder.iterdir())
    params = {"path": str(folder), "fileType": "jsonl"}
    reader = _reader(tmp_path, _job({"name": "filereader", "parameter": params}))
    splits = reader.plan(1)
    assert reader.estimate(splits) == Estimate(bytes=sizes)
    consumed = []
    for split in splits:
        opened = reader.open(split, None)
        seen = [opened.progress() for _batch in opened.batches()]
        opened.close()
        assert seen == sorted(seen)  # reading moves forward through the file
        assert len(set(seen)) > 1  # and says so as it goes
        consumed.append(seen[-1])
    assert sum(consumed) == sizes


@pytest.mark.parametrize("file_type", ["parquet", "csv"])
@pytest.mark.parametrize(("files", "sample"), [(3, 64), (5, 2)], ids=["all", "sampled"])
def test_columnar_and_csv_estimates_count_rows(
    tmp_path: Path, file_type: str, files: int, sample: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("readers.file.SAMPLE_FILES", sample)
    _files(tmp_path / "in", file_type, files, 40000)
    params = {"path": str(tmp_path / "in"), "fileType": file_type}
    reader = _reader(tmp_path, _job({"name": "filereader", "parameter": params}))
    splits = reader.plan(1)
    estimate = reader.estimate(splits)
    assert estimate.bytes is None
    assert estimate.rows == pytest.approx(files * 40000, rel=0.05)
    opened = reader.open(splits[0], None)
    assert opened.progress() is None  # not read front to back: rows measure progress
    opened.close()


def test_sqlite_estimate_counts(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, "v") for i in range(1, 1001)])
    params = {"url": f"sqlite:///{db}", "table": "t", "splitPk": "id", "where": "id > 100"}
    reader = _reader(tmp_path, _job({"name": "sqlreader", "parameter": params}, 3))
    splits = reader.plan(3)
    assert len(splits) == 3
    assert reader.estimate(splits) == Estimate(rows=900)


@pytest.fixture(scope="module")
def server() -> MariaDB:
    return ensure_server()


@pytest.fixture
def orders(server: MariaDB) -> Iterator[str]:
    """A 30,000-row table with a skewed key, in a fresh database."""
    name = server.create_database("syncx_progress")
    conn = server.connect(name)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE orders (id BIGINT PRIMARY KEY, amount INT, note VARCHAR(40))")
            cur.execute("INSERT INTO orders SELECT seq, seq % 1000, 'note' FROM seq_1_to_20000")
            cur.execute("INSERT INTO orders SELECT 1000000 + seq, 1, 'late' FROM seq_1_to_10000")
            cur.execute("ANALYZE TABLE orders")
            cur.fetchall()
        yield name
    finally:
        conn.close()
        server.drop_database(name)


def _mysql(server: MariaDB, database: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "mysqlreader",
        "parameter": {
            "connection": [
                {
                    "jdbcUrl": f"jdbc:mysql://{server.host}:{server.port}/{database}",
                    "table": ["orders"],
                }
            ],
            "username": server.user,
            "password": server.password,
            **extra,
        },
    }


@pytest.mark.mysql
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, 30000),
        ({"splitPk": "id"}, 30000),
        ({"splitPk": "id", "splitStrategy": "mod"}, 30000),
        ({"splitPk": "id", "where": "id > 1000000"}, 10000),
        ({"increColumn": "id", "startLocation": "15000"}, 15000),
    ],
    ids=["table", "ranges", "mod", "where", "incremental"],
)
def test_mysql_estimate_from_explain(
    tmp_path: Path, server: MariaDB, orders: str, extra: dict[str, Any], expected: int
) -> None:
    reader = _reader(tmp_path, _job(_mysql(server, orders, **extra), 3))
    try:
        reader.check()
        estimate = reader.estimate(reader.plan(3))
    finally:
        reader.close()
    assert estimate is not None and estimate.rows is not None
    assert 0.5 * expected <= estimate.rows <= 1.5 * expected, estimate


@pytest.mark.mysql
def test_mysql_job_shows_share_and_eta(
    tmp_path: Path, server: MariaDB, orders: str, run_cli: RunCli
) -> None:
    job = _job(_mysql(server, orders, splitPk="id", fetchSize=500), 2)
    job["job"]["content"][0]["writer"] = {
        "name": "filewriter",
        "parameter": {"path": str(tmp_path / "out"), "fileType": "parquet"},
    }
    job["job"]["setting"]["speed"]["record"] = 10000  # about 3 s: a few log lines
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job), encoding="utf-8")
    done = run_cli("run", path, "--progress-interval", "0.5")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "progress:" in line]
    assert any("% ETA " in line for line in lines), done.stderr


def test_binlog_bytes_across_files() -> None:
    sizes = {"bin.000001": 1000, "bin.000002": 500, "bin.000003": 800}
    assert binlog_bytes(sizes, ("bin.000001", 400), ("bin.000001", 900)) == 500
    assert binlog_bytes(sizes, ("bin.000001", 400), ("bin.000003", 100)) == 600 + 500 + 100
    assert binlog_bytes(sizes, ("bin.000002", 100), ("bin.000004", 50)) == 400 + 800 + 50
    assert binlog_bytes(sizes, ("bin.000002", 100), ("bin.000001", 50)) == 0


@pytest.mark.mysql
def test_binlog_stop_at_estimate_is_the_binlog_bytes(
    tmp_path: Path, server: MariaDB, orders: str
) -> None:
    conn = server.connect(orders)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW MASTER STATUS")
            file, pos = cur.fetchone()[:2]
            cur.execute("UPDATE orders SET amount = amount + 1 WHERE id <= 2000")
    finally:
        conn.close()
    params = {
        "jdbcUrl": f"jdbc:mysql://{server.host}:{server.port}/{orders}",
        "username": server.user,
        "table": ["orders"],
        "start": {"journalName": file, "position": pos},
        "stopAt": "now",
    }
    reader = _reader(tmp_path, _job({"name": "binlogreader", "parameter": params}))
    try:
        splits = reader.plan(1)
        estimate = reader.estimate(splits)
        assert estimate is not None and estimate.rows is None
        assert estimate.bytes is not None and estimate.bytes > 2000 * 20  # two row images each
        opened = reader.open(splits[0], None)
        changes = 0
        last = 0
        for batch in opened.batches():
            changes += batch.num_rows if batch is not None else 0
            consumed = opened.progress()
            assert consumed is not None and consumed >= last
            last = consumed
        last = opened.progress() or 0  # at the end: skipped transactions yield no item
        opened.close()
    finally:
        reader.close()
    assert changes >= 2000
    assert 0.9 * estimate.bytes <= last  # other tests may write to the binlog meanwhile


@pytest.mark.hdfs
def test_hdfs_estimates_over_webhdfs(tmp_path: Path) -> None:
    """hdfsreader over WebHDFS: Parquet counts the footers' rows; Hive text its bytes, read
    front to back through the WebHDFS stream."""
    root = tmp_path / "hdfs"
    root.mkdir()
    _files(root / "pq", "parquet", 2, 30000)
    text = root / "txt"
    text.mkdir()
    for index in range(2):
        rows = range(index * 300000, (index + 1) * 300000)  # ~10 MB: read in 4 MiB chunks
        lines = "".join(f"{i}\x01name {i} {'x' * 20}\n" for i in rows)
        (text / f"00000{index}_0").write_text(lines, encoding="utf-8")
    sizes = sum(p.stat().st_size for p in text.iterdir())
    with WebHdfsServer(root) as server:
        connection = {
            "defaultFS": f"webhdfs://127.0.0.1:{server.namenode_port}",
            "hadoopConfig": {"hadoop.user.name": "syncx"},
        }
        parquet = _reader(
            tmp_path,
            _job(
                {
                    "name": "hdfsreader",
                    "parameter": {**connection, "path": "/pq", "fileType": "parquet"},
                }
            ),
        )
        assert parquet.estimate(parquet.plan(1)) == Estimate(rows=60000)
        hive = _reader(
            tmp_path,
            _job(
                {
                    "name": "hdfsreader",
                    "parameter": {**connection, "path": "/txt", "fileType": "text"},
                }
            ),
        )
        splits = hive.plan(1)
        assert hive.estimate(splits) == Estimate(bytes=sizes)
        consumed = 0
        for split in splits:
            opened = hive.open(split, None)
            seen = [opened.progress() for _batch in opened.batches()]
            opened.close()
            assert seen == sorted(seen) and len(set(seen)) > 1
            consumed += seen[-1]
        assert consumed == sizes
