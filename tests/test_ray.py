"""``--runner ray`` on a real two-node Ray cluster (``ray.cluster_utils.Cluster``) on loopback.

One cluster serves the module: a head and a worker node of one CPU each, a small object store,
health checks every second (a dead node is seen in about two). A channel is a reader and a writer
actor sharing one CPU on one node, so two channels land one on each node.

Node loss: the worker node is started with ``SYNCX_CRASH_AT`` in its environment, so an actor of
that node (and only there) is SIGKILLed at an exact point (its reader's barrier sent, its
writer's prepare, its writer's commit); the test then kills the whole node, checks through Ray that it is
dead, and adds a replacement node. The job restarts under ``setting.restart`` on the nodes left
and the new one, and the target must be exact with no prepared or staged work left.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""Set before Ray is imported (it reads them then): no auth token, every node on loopback."""
for _key, _value in RAY_ENV.items():
    os.environ.setdefault(_key, _value)

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install syncx[ray])")

from ray.cluster_utils import Cluster  # noqa: E402

from tests.conftest import REPO, stream_job, syncx_command  # noqa: E402
from tests.servers.webhdfs import WebHdfsServer  # noqa: E402
from tests.test_mysql import Db, _assert_same_rows, _copy_job, db, server  # noqa: E402, F401

pytestmark = pytest.mark.slow

STORE = 80 * 1024 * 1024
NODE = {"num_cpus": 1, "object_store_memory": STORE}


class TwoNodes:
    """The module's cluster: the head, the current worker node, and a test driver connection."""

    def __init__(self) -> None:
        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={
                **NODE,
                "include_dashboard": False,
                "_system_config": {
                    "health_check_period_ms": 1000,
                    "health_check_failure_threshold": 2,
                },
            },
        )
        self.worker = self.cluster.add_node(**NODE)
        self.cluster.wait_for_nodes()
        ray.init(address=self.cluster.address, log_to_driver=False)

    @property
    def address(self) -> str:
        return self.cluster.address

    def alive(self) -> set[str]:
        return {n["NodeID"] for n in ray.nodes() if n["Alive"]}

    def replace_worker(self, env: dict[str, str] | None = None) -> None:
        """Kill the worker node for real, prove Ray sees it dead, start a new one."""
        dead = self.worker.node_id
        self.cluster.remove_node(self.worker, allow_graceful=False)
        deadline = time.monotonic() + 30
        while dead in self.alive():
            assert time.monotonic() < deadline, "Ray still reports the killed node alive"
            time.sleep(0.2)
        state = next(n for n in ray.nodes() if n["NodeID"] == dead)
        assert not state["Alive"]
        self.worker = self.cluster.add_node(**NODE, env_vars=env or {})
        self.cluster.wait_for_nodes()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            ray.shutdown()
        self.cluster.shutdown()


@pytest.fixture(scope="module")
def nodes() -> Iterator[TwoNodes]:
    cluster = TwoNodes()
    try:
        yield cluster
    finally:
        cluster.close()


def _each_slice_once(ids: list[int], slices: int, rows: int) -> None:
    """Stream slices number their rows from 0 each: every id ``slices`` times, nothing else."""
    assert len(ids) == slices * rows
    assert Counter(ids) == dict.fromkeys(range(rows), slices)


def _syncx(
    tmp_path: Path, *args: str | Path, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        syncx_command(*map(str, args)),
        cwd=tmp_path,
        env={**os.environ, **RAY_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _write(path: Path, job: dict[str, Any]) -> Path:
    path.write_text(json.dumps(job, indent=1), encoding="utf-8")
    return path


def _parquet_job(out: Path, counts: list[int], **speed: Any) -> dict[str, Any]:
    return stream_job(
        counts=counts,
        writer={
            "name": "filewriter",
            "parameter": {"path": str(out), "fileType": "parquet", "writeMode": "overwrite"},
        },
        setting={"speed": {"channel": 2, **speed}, "restore": {"isRestore": True}},
    )


# -- runs ---------------------------------------------------------------------------------------


def test_channels_land_on_both_nodes_and_copy_exactly(nodes: TwoNodes, tmp_path: Path) -> None:
    job = _write(tmp_path / "job.json", _parquet_job(tmp_path / "out", [30_000, 30_000]))
    metrics = tmp_path / "metrics.json"
    state = f"file://{tmp_path / 'state'}"
    done = _syncx(
        tmp_path, "run", job, "--runner", "ray", "--address", nodes.address, "--state-dir",
        state, "--checkpoint-interval", "0.3", "--metrics-file", metrics,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "runner ray on 2 node(s)" in done.stderr
    report = json.loads(metrics.read_text())
    assert report["runner"] == "ray"
    assert report["nodes"] == 2
    assert report["metrics"]["numRead"] == report["metrics"]["numWrite"] == 60_000
    _each_slice_once(pq.read_table(tmp_path / "out").column("id").to_pylist(), 2, 30_000)
    assert (tmp_path / "state" / "checkpoints").is_dir()


def test_rebalanced_channels(nodes: TwoNodes, tmp_path: Path) -> None:
    job = _parquet_job(tmp_path / "out", [20_000, 20_000])
    job["job"]["setting"]["speed"] = {"readerChannel": 2, "writerChannel": 1}
    job["job"]["setting"]["runner"] = "ray"  # the job file's setting instead of --runner
    path = _write(tmp_path / "job.json", job)
    done = _syncx(
        tmp_path, "run", path, "--address", nodes.address, "--state-dir",
        f"file://{tmp_path / 'state'}", "--checkpoint-interval", "0.2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "runner ray on" in done.stderr
    _each_slice_once(pq.read_table(tmp_path / "out").column("id").to_pylist(), 2, 20_000)


def test_writer_failing_right_after_its_ack_keeps_what_the_checkpoint_holds(
    nodes: TwoNodes, tmp_path: Path
) -> None:
    """The worker node's writer fails right after acknowledging checkpoint 2: it must abort
    only what the driver says no checkpoint holds, or the restart finds staged files gone."""
    job = _write(
        tmp_path / "job.json", _parquet_job(tmp_path / "out", [40_000, 40_000], record=16_000)
    )
    run = (
        "run", job, "--runner", "ray", "--address", nodes.address,
        "--state-dir", f"file://{tmp_path / 'state'}", "--checkpoint-interval", "0.5",
    )  # fmt: skip
    nodes.replace_worker({"SYNCX_FAIL_AT": "writer-acked@2"})
    try:
        failed = _syncx(tmp_path, *run)
    finally:
        nodes.replace_worker()
    assert failed.returncode == 1, failed.stderr
    assert "injected failure at writer-acked" in failed.stderr, failed.stderr
    done = _syncx(tmp_path, *run, "--restore", "latest")
    assert done.returncode == 0, done.stderr
    _each_slice_once(pq.read_table(tmp_path / "out").column("id").to_pylist(), 2, 40_000)


# -- bad input ----------------------------------------------------------------------------------


def test_a_local_state_dir_is_refused_on_a_multi_node_cluster(
    nodes: TwoNodes, tmp_path: Path
) -> None:
    job = _write(tmp_path / "job.json", _parquet_job(tmp_path / "out", [10]))
    done = _syncx(
        tmp_path, "run", job, "--runner", "ray", "--address", nodes.address,
        "--state-dir", tmp_path / "state",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "a path on this machine, but the Ray cluster has 2 nodes" in done.stderr
    assert "file:///" in done.stderr
    assert "Traceback" not in done.stderr


def test_fewer_cpus_than_channels_waits_then_fails(nodes: TwoNodes, tmp_path: Path) -> None:
    job = _write(tmp_path / "job.json", _parquet_job(tmp_path / "out", [10, 10, 10], channel=3))
    done = _syncx(
        tmp_path, "run", job, "--runner", "ray", "--address", nodes.address, "--state-dir",
        f"file://{tmp_path / 'state'}", env={"SYNCX_RAY_PLACEMENT_TIMEOUT": "6"},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "waiting for 3 channel(s)" in done.stderr
    assert "did not give 3 channel(s) one CPU each" in done.stderr
    assert "Traceback" not in done.stderr


def test_no_cluster_at_the_address(tmp_path: Path) -> None:
    job = _write(tmp_path / "job.json", _parquet_job(tmp_path / "out", [10]))
    done = _syncx(tmp_path, "run", job, "--runner", "ray", "--address", "127.0.0.1:9")
    assert done.returncode == 1
    assert "--address 127.0.0.1:9: no Ray cluster answers there" in done.stderr
    assert "Traceback" not in done.stderr


def test_ray_not_installed_names_the_extra(tmp_path: Path) -> None:
    job = _write(tmp_path / "job.json", _parquet_job(tmp_path / "out", [10]))
    hide_ray = "import sys; sys.modules['ray'] = None; from sync.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", hide_ray, "run", str(job), "--runner", "ray"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "pip install 'syncx[ray]'" in done.stderr
    assert "Traceback" not in done.stderr


# -- a node lost ---------------------------------------------------------------------------------

POINTS = ["barrier-sent@3", "writer-prepared@3", "writer-committed@2"]
"""Mid-checkpoint (the worker's reader sent its barrier), before a commit (its writer prepared,
the checkpoint not stored), during a commit (its writer committed one handle, the other node's
writer maybe not)."""


def _run_losing_the_worker(
    nodes: TwoNodes, tmp_path: Path, job: Path, point: str, *args: str
) -> str:
    """Run ``job`` with the worker node armed to die at ``point``; replace the node when the
    job reports the failed attempt; return the job's stderr (it must succeed)."""
    nodes.replace_worker({"SYNCX_CRASH_AT": point})
    command = syncx_command(
        "run", str(job), "--runner", "ray", "--address", nodes.address,
        "--state-dir", f"file://{tmp_path / 'state'}", "--checkpoint-interval", "0.5", *args,
    )  # fmt: skip
    env = {**os.environ, **RAY_ENV}
    env.pop("SYNCX_CRASH_AT", None)
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True, bufsize=1
    )
    lines: list[str] = []
    replaced = False
    try:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if not replaced and "; restart 1 in" in line:
                nodes.replace_worker()
                replaced = True
        process.wait(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
    text = "".join(lines)
    print(text)  # shown when the test fails
    assert replaced, f"the armed node never failed the job:\n{text}"
    assert process.returncode == 0, text
    assert "a Ray node or actor was lost" in text
    assert "1 restart(s)" in text or "restart(s)" in text
    return text


def _restart(delay: float = 3) -> dict[str, Any]:
    return {"strategy": "fixedDelay", "restartAttempts": 4, "delayInterval": delay}


@pytest.mark.mysql
@pytest.mark.parametrize("point", POINTS)
def test_node_lost_mysql_xa_exact(
    nodes: TwoNodes,
    db: Db,  # noqa: F811 - the fixture of tests.test_mysql
    tmp_path: Path,
    point: str,
) -> None:
    db.execute("CREATE TABLE src (id BIGINT PRIMARY KEY, v VARCHAR(20), n DECIMAL(10,3))")
    db.execute("INSERT INTO src SELECT seq, CONCAT('v', seq), seq / 7 FROM seq_1_to_40000")
    db.execute("CREATE TABLE dst LIKE src")
    job = _copy_job(
        db,
        "src",
        "dst",
        semantic="exactly-once",
        reader={"splitPk": "id", "fetchSize": 1000, "pageSize": 2000},
        setting={
            "speed": {"channel": 2, "record": 8000},
            "restore": {"isRestore": True},
            "restart": _restart(),
        },
    )
    path = _write(tmp_path / "job.json", job)
    try:
        _run_losing_the_worker(nodes, tmp_path, path, point)
        _assert_same_rows(db, "src", "dst")
    except AssertionError as exc:  # a lock held on: show by whom
        raise AssertionError(f"{exc}\n{db.server.lock_report()}") from exc
    # no prepared transaction of this job's run is left (other tests share the server)
    runs = {str(row[1]).encode() for row in db.query("SELECT * FROM _syncx_commits")}
    assert runs
    leftover = [x for x in db.query("XA RECOVER") if any(r in bytes(x[3]) for r in runs)]
    assert leftover == []


@pytest.mark.hdfs
@pytest.mark.parametrize("point", POINTS)
def test_node_lost_parquet_on_hdfs_exact(nodes: TwoNodes, tmp_path: Path, point: str) -> None:
    with WebHdfsServer(tmp_path / "hdfs") as hdfs:
        url = f"webhdfs://127.0.0.1:{hdfs.namenode_port}"
        job = stream_job(
            counts=[40_000, 40_000],
            writer={
                "name": "hdfswriter",
                "parameter": {
                    "defaultFS": url,
                    "path": "/warehouse/t",
                    "fileType": "parquet",
                    "writeMode": "overwrite",
                    "column": [
                        {"name": "id", "type": "bigint"},
                        {"name": "s", "type": "string"},
                    ],
                },
            },
            setting={
                "speed": {"channel": 2, "record": 16_000},
                "restore": {"isRestore": True},
                "restart": _restart(),
            },
        )
        path = _write(tmp_path / "job.json", job)
        _run_losing_the_worker(nodes, tmp_path, path, point)
        folder = hdfs.root / "warehouse" / "t"
        table = pq.read_table([p for p in folder.iterdir() if p.suffix == ".parquet"])
        _each_slice_once(table.column("id").to_pylist(), 2, 40_000)
        staging = [p for p in folder.rglob("*") if p.is_file() and "/." in str(p)]
        staging += [p for p in folder.rglob("*") if p.is_file() and "/_" in str(p)]
        assert staging == [], staging
