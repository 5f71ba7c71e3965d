"""The project's own ChunJun-shaped job files validate unchanged, with no corpus beside the repo.

They are written for syncx in ChunJun's shape and spellings (``tests/fixtures/chunjun``); the run
over ChunJun's own examples is the compat tier in the plugin tests (it skips without the corpus).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO, RunCli

FIXTURES = REPO / "tests" / "fixtures" / "chunjun"


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.name)
def test_chunjun_shaped_fixture_validates(path: Path, run_cli: RunCli) -> None:
    done = run_cli("validate", path)
    assert done.returncode == 0, done.stderr
    reader, writer = path.stem.split("_")[:2]  # named reader_writer[_variant]
    assert f"reader: {reader}reader" in done.stdout
    assert f"writer: {writer}writer" in done.stdout


def test_there_is_a_fixture_per_chunjun_plugin() -> None:
    names = {p.stem for p in FIXTURES.glob("*.json")}
    for plugin in ("mysql", "binlog", "hdfs", "stream"):
        assert any(n.startswith(plugin) for n in names), plugin
