"""Shared fixtures: running the real ``syncx`` command line in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPAT = Path(os.environ.get("SYNCX_COMPAT") or REPO.parent / "shared" / "compat")
"""ChunJun's own example jobs and 1.10 docs, beside the repository (or at ``$SYNCX_COMPAT``).
Tests over them are an extra tier: each skips, saying why, when the folder is absent."""

COMPAT_MISSING = f"ChunJun compat corpus not found at {COMPAT} (set SYNCX_COMPAT to run this tier)"


def compat_files(*patterns: str) -> list[Any]:
    """Parameters for a test over the compat corpus: the files matching ``patterns`` (relative
    to :data:`COMPAT`), or one skipped parameter saying why when the corpus is absent."""
    if not COMPAT.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=COMPAT_MISSING), id="compat")]
    return [p for pattern in patterns for p in sorted(COMPAT.glob(pattern))]


def compat_file(relative: str) -> Path:
    """One file of the compat corpus; skips the calling test, saying why, when it is absent."""
    path = COMPAT / relative
    if not COMPAT.is_dir():
        pytest.skip(COMPAT_MISSING)
    return path


def syncx_command(*args: str) -> list[str]:
    """The command line that runs syncx with this interpreter."""
    return [sys.executable, "-c", "from sync.cli import main; main()", *args]


RunCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_cli(tmp_path: Path) -> RunCli:
    """Run ``syncx ARGS`` in ``tmp_path``; returns the completed process (text output)."""

    def run(
        *args: str | Path, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, **(env or {})}
        return subprocess.run(
            syncx_command(*map(str, args)),
            cwd=tmp_path,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run


@pytest.fixture
def write_job(tmp_path: Path) -> Callable[[dict[str, Any], str], Path]:
    """Write a job mapping as JSON (or YAML when the name ends in .yaml) into ``tmp_path``."""

    def write(job: dict[str, Any], name: str = "job.json") -> Path:
        path = tmp_path / name
        if name.endswith((".yaml", ".yml")):
            path.write_text(yaml.safe_dump(job), encoding="utf-8")
        else:
            path.write_text(json.dumps(job, indent=1), encoding="utf-8")
        return path

    return write


def stream_job(
    columns: list[dict[str, Any]] | None = None,
    counts: list[int] | None = None,
    writer: dict[str, Any] | None = None,
    setting: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ChunJun-shaped stream job mapping."""
    return {
        "job": {
            "content": [
                {
                    "reader": {
                        "name": "streamreader",
                        "parameter": {
                            "column": columns
                            or [{"name": "id", "type": "id"}, {"name": "s", "type": "string"}],
                            "sliceRecordCount": counts or [10],
                        },
                    },
                    "writer": writer or {"name": "streamwriter", "parameter": {"print": True}},
                }
            ],
            "setting": setting or {},
        }
    }


KAFKA_SCRIPT = REPO / "scripts" / "kafka-test-server.sh"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """A Kafka broker for the tests: ``$KAFKA_BOOTSTRAP`` (a real Kafka), else the private Tansu
    broker started by ``scripts/kafka-test-server.sh`` (idempotent)."""
    given = os.environ.get("KAFKA_BOOTSTRAP")
    if given:
        return given
    port = os.environ.get("SYNCX_TEST_KAFKA_PORT", "19092")
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(
        ["bash", str(KAFKA_SCRIPT), "start"], check=True, env=env, stdin=subprocess.DEVNULL
    )
    return f"127.0.0.1:{port}"


# -- a small filesystem of its own (a full disk) -------------------------------------------------

Mount = Callable[[str, str], Path]


def system_command(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a system command (mount, umount) from ``/``, its output captured, 30 s at most."""
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=30, cwd="/")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Mount]:
    """``mount(name, size)``: a tmpfs of ``size`` (``3m``) at ``tmp_path/name``, unmounted at the
    end of the test whatever happened. Skips, saying why, where mounting is not permitted."""
    mounted: list[Path] = []
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CAP_SYS_ADMIN); running as non-root")

    def mount(name: str, size: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        done = system_command(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)])
        if done.returncode != 0:
            reason = (done.stderr or done.stdout).strip()
            pytest.skip(f"mounting a tmpfs is not permitted here (no CAP_SYS_ADMIN?): {reason}")
        mounted.append(point)
        return point

    try:
        yield mount
    finally:
        for point in reversed(mounted):
            done = system_command(["umount", str(point)])
            if done.returncode != 0:  # something still open: detach it rather than leak it
                system_command(["umount", "-l", str(point)])
