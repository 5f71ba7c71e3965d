"""A corpus of hand-written broken job files (tests/fixtures/broken_jobs), each with the message
``syncx validate`` must give; and the shapes that once crashed or exhausted the process (a YAML
alias bomb, JSON nested 100,000 deep, a 5,000-digit integer), run as a real ``syncx`` process
with its peak memory measured."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sync.cli import app
from tests.conftest import REPO, syncx_command

CORPUS = REPO / "tests" / "fixtures" / "broken_jobs"
MESSAGES: dict[str, str] = yaml.safe_load((CORPUS / "messages.yaml").read_text(encoding="utf-8"))
PEAK_MEMORY_MB = 400
"""A refused file must not take the process much beyond what importing syncx takes (~150 MB)."""


def test_every_corpus_file_has_its_message() -> None:
    files = {p.name for p in CORPUS.iterdir() if p.name != "messages.yaml"}
    assert files == set(MESSAGES)


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_corpus_file_is_refused_with_its_message(name: str) -> None:
    result = CliRunner().invoke(app, ["validate", str(CORPUS / name)])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("syncx: ")
    assert MESSAGES[name] in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""
"""Runs a command from a small fresh process and prints its peak RSS: a child forked straight
from the test process would start out with the test process's memory counted as its own."""


def _run_measured(path: Path) -> tuple[int, str, float, float]:
    """``syncx validate path`` as a process: exit code, stderr, seconds, peak RSS in MB."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *syncx_command("validate", str(path))],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    peak_kb = int(done.stdout.strip().splitlines()[-1])
    return done.returncode, done.stderr, time.monotonic() - started, peak_kb / 1024


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "laughs.yaml",
            (CORPUS / "billion_laughs.yaml").read_text(),
            MESSAGES["billion_laughs.yaml"],
        ),
        ("deep.json", "[" * 100_000 + "]" * 100_000, "nested more than 64 levels deep"),
        ("deep.yaml", "job: " + "[" * 100_000 + "]" * 100_000, "nested more than 64 levels deep"),
        ("deep_object.json", '{"job": ' * 100_000 + "1" + "}" * 100_000, "nested more than 64"),
        (
            "digits.json",
            '{"job": {"setting": {"speed": {"bytes": ' + "9" * 5000 + "}}}}",
            "job.setting.speed.bytes: a number too large for any setting",
        ),
        (
            "digits.yaml",
            "job: {setting: {speed: {bytes: " + "9" * 5000 + "}}}",
            "a number too large",
        ),
    ],
)
def test_shapes_that_exhausted_the_process(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    code, stderr, seconds, peak_mb = _run_measured(path)
    assert code == 2, stderr
    assert expected in stderr, stderr
    assert "Traceback" not in stderr
    assert seconds < 60, seconds
    assert peak_mb < PEAK_MEMORY_MB, peak_mb
