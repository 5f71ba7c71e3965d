"""``syncx template READER WRITER``: every pair validates once its placeholders are filled."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from sync import registry
from sync.cli import _offline_context
from sync.errors import JobFileError
from sync.jobfile import load_job, strip_json_comments
from sync.template import Placeholder, render
from tests.conftest import RunCli

PAIRS = list(itertools.product(sorted(registry.known("reader")), sorted(registry.known("writer"))))


def _value(placeholder: Placeholder, tmp_path: Path) -> str:
    """A value a user would give for a placeholder."""
    name = placeholder.name.split("_", 1)[1]
    if placeholder.choices:
        return placeholder.choices[-1]
    if name == "jdbcUrl":
        return "jdbc:mysql://127.0.0.1:3307/shop"
    if name == "defaultFS":
        return "webhdfs://127.0.0.1:9870"
    if name == "path":
        return str(tmp_path / "data")
    if name == "table":
        return "orders"
    return {"integer": "1", "number": "1.5", "boolean": "true"}.get(placeholder.kind, "x")


@pytest.mark.parametrize("json_shape", [False, True], ids=["yaml", "json"])
@pytest.mark.parametrize(("reader", "writer"), PAIRS)
def test_every_template_validates_once_filled(
    reader: str, writer: str, json_shape: bool, tmp_path: Path
) -> None:
    made = render(reader, writer, json_shape=json_shape)
    path = tmp_path / ("job.json" if json_shape else "job.yaml")
    path.write_text(made.text, encoding="utf-8")
    values = {name: _value(p, tmp_path) for name, p in made.placeholders.items()}
    job = load_job(path, values)
    assert registry.canonical_name("reader", job.file.content.reader.name) == reader
    ctx = _offline_context(job)
    job.reader_cls(job.reader_params, ctx)  # what `syncx validate` builds, offline
    job.writer_cls(job.writer_params, ctx)
    # every placeholder is used, and unfilled ones name themselves
    if made.placeholders:
        with pytest.raises(JobFileError) as caught:
            load_job(path, {})
        for name in made.placeholders:
            assert f"${{{name}}}" in str(caught.value)


def test_template_lists_every_parameter_with_defaults_and_meaning() -> None:
    text = render("mysqlreader", "hdfswriter").text
    reader = registry.load("reader", "mysqlreader").Parameters
    for info_name, info in reader.model_fields.items():
        key = info.serialization_alias or info.alias or info_name
        assert f" {key}:" in text, key
    assert "# fetchSize: 4096  # Rows per page" in text
    assert 'jdbcUrl: "${reader_jdbcUrl}"  # required.' in text
    assert 'fileType: "${writer_fileType}"  # required. text, orc or parquet.' in text
    assert 'defaultFS: "${writer_defaultFS}"' in text


def test_json_template_is_chunjun_shaped(tmp_path: Path, run_cli: RunCli) -> None:
    done = run_cli("template", "mysqlsource", "hdfssink", "--json")
    assert done.returncode == 0, done.stderr
    parsed = json.loads(strip_json_comments(done.stdout))
    content = parsed["job"]["content"][0]
    assert content["reader"]["name"] == "mysqlreader"
    assert content["reader"]["parameter"]["connection"][0]["jdbcUrl"] == "${reader_jdbcUrl}"
    assert content["writer"]["parameter"]["fileType"] == "${writer_fileType}"
    assert parsed["job"]["setting"]["speed"] == {"channel": 1}


def test_template_then_run(tmp_path: Path, run_cli: RunCli) -> None:
    """The newcomer's path: a template, placeholders on the command line, a run."""
    made = run_cli("template", "streamreader", "filewriter")
    assert made.returncode == 0, made.stderr
    job = tmp_path / "job.yaml"
    job.write_text(made.stdout.replace("# sliceRecordCount: []", "sliceRecordCount: [5]"))
    done = run_cli("run", job, "-p", "reader_name=id", "-p", f"writer_path={tmp_path / 'out'}")
    assert done.returncode == 0, done.stderr
    assert "read 5 rows" in done.stderr


def test_unknown_plugin_lists_the_known_ones(run_cli: RunCli) -> None:
    done = run_cli("template", "mysqlreadr", "hdfswriter")
    assert done.returncode == 2
    assert "did you mean 'mysqlreader'" in done.stderr
    assert "Traceback" not in done.stderr
