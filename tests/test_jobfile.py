"""Job files: ChunJun shapes accepted unchanged, every broken one rejected with its path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sync.errors import JobFileError
from sync.jobfile import load_job, strip_json_comments
from sync.ratelimit import RateLimiter
from tests.conftest import RunCli, compat_files, stream_job

CHUNJUN_STREAM_JOBS = compat_files(
    "chunjun/stream__*.json", "chunjun-1.10-docs/example__stream_stream.json"
)


def _issues(path: Path, **params: str) -> list[str]:
    with pytest.raises(JobFileError) as caught:
        load_job(path, params)
    return [str(issue) for issue in caught.value.issues]


@pytest.mark.parametrize("path", CHUNJUN_STREAM_JOBS, ids=lambda p: p.name)
def test_chunjun_stream_examples_validate_unchanged(path: Path) -> None:
    job = load_job(path)
    assert job.reader_cls.__name__ == "StreamReader"
    assert job.writer_cls.__name__ == "StreamWriter"


def test_json_comments_are_blanked_outside_strings_only() -> None:
    text = '{"a": "http://x/*y*/", // line\n /* block\n more */ "b": 1}'
    stripped = strip_json_comments(text)
    assert json.loads(stripped) == {"a": "http://x/*y*/", "b": 1}
    assert stripped.count("\n") == text.count("\n")


def test_commented_json_both_plugin_spellings(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_text(
        """{
  // ChunJun 1.12 spells plugins *source / *sink
  "job": {"content": [{
    "reader": {"name": "streamsource", "parameter": {"column": [{"name": "id", "type": "id"}],
               "sliceRecordCount": ["3"]}},
    /* the sink prints */
    "writer": {"name": "streamsink", "parameter": {"print": true}}
  }], "setting": {"speed": {"channel": 1, "bytes": 0}}}
}""",
        encoding="utf-8",
    )
    job = load_job(path)
    assert job.reader_params.slice_record_count == [3]  # type: ignore[attr-defined]


def test_write_mode_both_spellings(tmp_path: Path) -> None:
    for key in ("writeMode", "mode"):
        path = tmp_path / f"{key}.json"
        writer = {"name": "filewriter", "parameter": {"path": "out", key: "overwrite"}}
        path.write_text(json.dumps(stream_job(writer=writer)), encoding="utf-8")
        assert load_job(path).writer_params.write_mode == "overwrite"  # type: ignore[attr-defined]


def test_placeholders_from_params_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNCX_TEST_OUT", "from-env")
    path = tmp_path / "job.yaml"
    path.write_text(
        """
job:
  content:
    - reader: {name: streamreader, parameter: {column: [{name: id, type: id}], sliceRecordCount: ["${rows}"]}}
      writer: {name: filewriter, parameter: {path: "${SYNCX_TEST_OUT}/${sub:-default}"}}
""",
        encoding="utf-8",
    )
    job = load_job(path, {"rows": "7"})
    assert job.reader_params.slice_record_count == [7]  # type: ignore[attr-defined]
    assert job.writer_params.path == "from-env/default"  # type: ignore[attr-defined]
    assert _issues(path) == [
        "job.content[0].reader.parameter.sliceRecordCount[0]: placeholder ${rows} is not set "
        "(pass -p rows=VALUE or set the environment variable rows)"
    ]


def test_every_error_at_once_with_paths_and_hints(tmp_path: Path) -> None:
    job = stream_job(setting={"speed": {"channel": -1}, "errorLimit": {"percentage": 300}})
    job["job"]["content"][0]["reader"]["parameter"]["sliceRecordCont"] = [1]
    job["job"]["content"][0]["writer"] = {
        "name": "filewriter",
        "parameter": {"path": "o", "maxFileSize": 0},
    }
    job["job"]["setting"]["sped"] = {}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job), encoding="utf-8")
    issues = _issues(path)
    assert "job.setting.speed.channel: must be > 0" in issues
    assert "job.setting.errorLimit.percentage: must be <= 100" in issues
    assert "job.setting.sped: unknown key (did you mean 'speed'?)" in issues
    assert (
        "job.content[0].reader.parameter.sliceRecordCont: unknown key (did you mean 'sliceRecordCount'?)"
        in issues
    )
    assert "job.content[0].writer.parameter.maxFileSize: must be > 0" in issues
    assert len(issues) == 5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"job": {"content": [}', "invalid JSON at line 1, column 22"),
        ("job:\n  content: [\n  - x: 1\n", "invalid YAML at line"),
        ('{"job": {"setting": {}}}', "job.content: is required"),
        (
            '{"job": {"content": [{"writer": {"name": "streamwriter"}}]}}',
            "job.content[0].reader: is required",
        ),
        ("[1, 2]", "must hold a mapping"),
        (
            '{"job": {"content": [{"reader": {"name": "nosuchreader"}, "writer": {"name": "streamwriter"}}]}}',
            "job.content[0].reader.name: unknown reader 'nosuchreader'",
        ),
        (
            '{"job": {"content": [{"reader": {"name": "streamreader", "parameter": '
            '{"column": [{"name": "a"}], "sliceRecordCount": ["x"]}}, "writer": {"name": "streamwriter"}}]}}',
            "job.content[0].reader.parameter.sliceRecordCount[0]: must be an integer",
        ),
    ],
)
def test_broken_files_name_the_problem(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / ("job.yaml" if text.startswith("job:") else "job.json")
    path.write_text(text, encoding="utf-8")
    issues = _issues(path)
    assert any(expected in issue for issue in issues), issues


def test_unknown_plugin_lists_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    job = stream_job(writer={"name": "streamwritter", "parameter": {}})
    path.write_text(json.dumps(job), encoding="utf-8")
    (issue,) = _issues(path)
    assert "unknown writer 'streamwritter' (did you mean 'streamwriter'?)" in issue
    assert "filewriter" in issue
    assert "streamwriter" in issue


def test_missing_and_directory_job_paths(tmp_path: Path) -> None:
    assert _issues(tmp_path / "nope.yaml") == [f"job file not found: {tmp_path / 'nope.yaml'}"]
    assert _issues(tmp_path) == [f"job file is a directory: {tmp_path}"]


NOT_IMPLEMENTED = ("kafkareader", "kafkasource", "kafkawriter", "kafkasink", "hivewriter")
"""ChunJun plugins syncx has no counterpart for: the compat files using them fail on that alone."""


@pytest.mark.parametrize("path", compat_files("**/*.json"), ids=lambda p: p.name)
def test_every_chunjun_job_validates_but_for_missing_plugins(path: Path, run_cli: RunCli) -> None:
    """Every job file of the compat corpus through ``syncx validate``: valid, or refused only
    because it names a plugin syncx does not implement (Kafka, Hive)."""
    done = run_cli("validate", path)
    if done.returncode == 0:
        return
    assert done.returncode == 2, done.stderr
    problems = [line for line in done.stderr.splitlines() if "job.content" in line]
    assert problems, done.stderr
    for line in problems:
        assert "unknown reader" in line or "unknown writer" in line, line
        assert any(f"'{name}'" in line for name in NOT_IMPLEMENTED), line


def test_chunjun_speed_settings_at_or_below_zero(tmp_path: Path) -> None:
    """ChunJun's SpeedConf: bytes/record <= 0 is no limit, reader/writerChannel <= 0 is channel."""
    setting = {
        "speed": {
            "channel": 3,
            "bytes": -1048576,
            "record": -1,
            "readerChannel": -1,
            "writerChannel": 0,
            "rebalance": True,
        },
        "log": {"level": "INFO"},
    }
    path = tmp_path / "job.json"
    path.write_text(json.dumps(stream_job(setting=setting)), encoding="utf-8")
    speed = load_job(path).file.job.setting.speed
    assert (speed.readers, speed.writers) == (3, 3)
    assert not RateLimiter(speed.bytes, speed.record).active
