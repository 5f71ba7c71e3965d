"""The worked example connector (``docs/example-connector``) passes the kit, and its job runs.

The package is installed beside syncx by ``scripts/setup.sh`` (dev extra) with
``pip install -e docs/example-connector``; its own test suite (the conformance kit plus its own
checks) runs here in a subprocess, as its author would run it, and ``jobs/applog_example.yaml``
runs through the ``syncx`` command line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sync import registry
from tests.conftest import REPO, RunCli

EXAMPLE = REPO / "docs" / "example-connector"


@pytest.fixture(scope="module", autouse=True)
def _installed() -> None:
    missing = {"applogreader"} - set(registry.known("reader"))
    missing |= {"applogwriter"} - set(registry.known("writer"))
    assert not missing, (
        f"the example connector's plugins {sorted(missing)} are not installed: run "
        "scripts/setup.sh dev,all (or pip install -e docs/example-connector)"
    )


def test_example_connector_passes_the_kit() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider", "-q"],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, summary


def test_example_job_applog_example_yaml(tmp_path: Path, run_cli: RunCli) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    records = [{"id": i, "user": f"u{i}", "ok": i % 2 == 0} for i in range(5)]
    lines = (
        [json.dumps(r) for r in records[:3]]
        + ['{"id": "bad"}']
        + [json.dumps(r) for r in records[3:]]
    )
    (logs / "app.log").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    done = run_cli(
        "run", REPO / "jobs" / "applog_example.yaml", "-p", f"logs={logs}/*.log", "-p", f"out={out}"
    )
    assert done.returncode == 0, done.stderr
    written = [
        json.loads(line)
        for path in sorted(out.glob("events-*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    assert sorted(written, key=lambda r: r["id"]) == records
    assert not [p for p in (out / ".applog-staging").rglob("*") if p.is_file()]
