"""Shared fixtures: running the real ``syncx`` command line in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPAT = REPO.parent / "shared" / "compat"


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
