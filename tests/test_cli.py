"""The command line: subcommands, exit codes, messages without tracebacks."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pyarrow
import pytest

from sync import __version__
from sync.errors import JobFileError
from sync.registry import require
from tests.conftest import RunCli, stream_job, syncx_command


def _job(tmp_path: Path, job: dict, name: str = "job.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(job), encoding="utf-8")
    return path


def test_version_and_plugins(run_cli: RunCli) -> None:
    done = run_cli("--version")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines[0] == f"syncx {__version__}"
    drivers = {line.split()[0]: line.split(maxsplit=1)[1] for line in lines[1:]}
    assert set(drivers) == {"connectorx", "mysqlclient", "pymysql", "pyarrow", "confluent-kafka"}
    assert drivers["pyarrow"] == pyarrow.__version__
    listed = run_cli("plugins").stdout
    for name in ("streamreader", "streamwriter", "filereader", "filewriter"):
        assert name in listed


@pytest.mark.parametrize(("chosen", "expected"), [(None, "system"), ("mimalloc", "mimalloc")])
def test_arrow_allocates_with_malloc_unless_the_user_chose(
    chosen: str | None, expected: str
) -> None:
    """syncx makes Arrow use the C library's malloc (mimalloc kept ~40 MB of freed row groups
    mapped), set before pyarrow loads; an ``ARROW_DEFAULT_MEMORY_POOL`` of the user's wins."""
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if chosen:
        env["ARROW_DEFAULT_MEMORY_POOL"] = chosen
    probe = "import sync.cli, pyarrow; print(pyarrow.default_memory_pool().backend_name)"
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == expected


def test_numpy_starts_no_blas_threads_unless_the_user_chose() -> None:
    """syncx loads numpy (through pyarrow) without OpenBLAS's spinning thread pool; an
    ``OPENBLAS_NUM_THREADS`` of the user's wins (two: one thread more than syncx's one)."""
    probe = "import os, sync.cli, numpy; print(len(os.listdir('/proc/self/task')))"

    def threads(chosen: str | None) -> int:
        env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
        if chosen:
            env["OPENBLAS_NUM_THREADS"] = chosen
        done = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
        )
        return int(done.stdout)

    assert threads("2") == threads(None) + 1 == threads("1") + 1


def test_run_prints_rows_summary_and_metrics_file(tmp_path: Path, run_cli: RunCli) -> None:
    done = run_cli("run", _job(tmp_path, stream_job(counts=[4])), "--metrics-file", "m.json")
    assert done.returncode == 0, done.stderr
    assert [line.split(",")[0] for line in done.stdout.splitlines()] == ["0", "1", "2", "3"]
    assert "syncx: job job succeeded: read 4 rows, wrote 4" in done.stderr
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["status"] == "succeeded"
    assert report["semantic"] == "at-least-once"
    for name in (
        "numRead",
        "numWrite",
        "byteRead",
        "byteWrite",
        "nErrors",
        "conversionErrors",
        "nullErrors",
        "duplicateErrors",
        "readDuration",
        "writeDuration",
    ):
        assert name in report["metrics"]
    assert report["metrics"]["numWrite"] == 4


def test_validate_says_what_delivery_the_writer_gives(tmp_path: Path, run_cli: RunCli) -> None:
    printing = run_cli("validate", _job(tmp_path, stream_job()))
    assert printing.returncode == 0
    assert "at-least-once" in printing.stdout
    files = stream_job(writer={"name": "filewriter", "parameter": {"path": "out"}})
    staged = run_cli("validate", _job(tmp_path, files, "files.json"))
    assert staged.returncode == 0
    assert "exactly-once" in staged.stdout
    assert not (tmp_path / "out").exists()  # validate touches nothing


def test_bad_job_exits_2_without_traceback(tmp_path: Path, run_cli: RunCli) -> None:
    bad = stream_job(setting={"speed": {"channel": 0}})
    for args in (("run", _job(tmp_path, bad)), ("validate", "missing.yaml"), ("run", tmp_path)):
        done = run_cli(*args)
        assert done.returncode == 2, done
        assert done.stderr.startswith("syncx: ")
        assert "Traceback" not in done.stderr


def test_bad_param_syntax_and_unset_placeholder(tmp_path: Path, run_cli: RunCli) -> None:
    job = stream_job(writer={"name": "filewriter", "parameter": {"path": "${target}"}})
    path = _job(tmp_path, job)
    done = run_cli("run", path, "-p", "novalue")
    assert done.returncode == 2
    assert "-p expects name=value" in done.stderr
    done = run_cli("run", path)
    assert done.returncode == 2
    assert "placeholder ${target} is not set" in done.stderr
    assert "job.content[0].writer.parameter.path" in done.stderr
    done = run_cli("run", path, "-p", "target=out")
    assert done.returncode == 0, done.stderr


def test_schema_command(run_cli: RunCli) -> None:
    whole = json.loads(run_cli("schema").stdout)
    assert whole["title"] == "syncx job file"
    one = json.loads(run_cli("schema", "streamreader").stdout)
    assert "sliceRecordCount" in one["properties"]
    unknown = run_cli("schema", "nosuchwriter")
    assert unknown.returncode == 2
    assert "known writers" in unknown.stderr


def test_bad_constant_value_names_its_path(tmp_path: Path, run_cli: RunCli) -> None:
    columns = [{"name": "id", "type": "id"}, {"name": "n", "type": "int", "value": "seven"}]
    done = run_cli("run", _job(tmp_path, stream_job(columns=columns)))
    assert done.returncode == 2
    assert "job.content[0].reader.parameter.column[1].value: cannot be read as int" in done.stderr


def test_progress_line_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal stderr shows a live line with rows, rows/s and bytes."""
    job = stream_job(counts=[6000], writer={"name": "streamwriter", "parameter": {"print": False}})
    job["job"]["content"][0]["reader"]["parameter"]["permitsPerSecond"] = 3000
    path = _job(tmp_path, job)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        syncx_command("run", str(path)),
        cwd=tmp_path,
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    assert proc.wait(timeout=60) == 0
    text = output.decode(errors="replace")
    assert "rows/s" in text
    assert "\r" in text
    assert "succeeded: read 6,000 rows" in text


def test_missing_driver_names_the_extra() -> None:
    with pytest.raises(JobFileError, match=r"pip install 'syncx\[mysql\]'"):
        require("no_such_driver_module", "mysql", "mysqlreader")
