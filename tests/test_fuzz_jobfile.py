"""Fuzzed job files: whatever the text, ``syncx validate`` exits 0 or 2 with one message.

Hypothesis feeds the loader and the ``validate`` command arbitrary YAML and JSON: mutations of
every example job in ``jobs/`` (each value replaced by one of another type, keys removed,
unicode keys added), keys given twice, deep nesting, huge and non-finite numbers, YAML aliases,
and plain noise. A bad file must end in exit 2 and a ``syncx: ...`` message, never a traceback,
an exit 1 or a hang. CI runs a bounded number of examples per test (a few seconds); set
``SYNCX_FUZZ_EXAMPLES`` (e.g. 5000) to run more.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic.alias_generators import to_camel
from typer.testing import CliRunner

from sync import registry
from sync.cli import app
from sync.jobfile import strip_json_comments
from sync.model import Setting
from tests.conftest import REPO, stream_job

EXAMPLES = int(os.environ.get("SYNCX_FUZZ_EXAMPLES", "25"))
SECONDS_PER_FILE = 20
"""A file that takes longer than this to validate counts as a hang."""

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # the alarm below bounds each example; a loaded machine must not flake
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


PLACEHOLDER_VALUES = {
    "defaultFS": "file:///",
    "journal_name": "mysql-bin.000001",
    "mysql_port": "3306",
    "out": "out/orders",
    "path": "out/orders",
    "pt": "pt=1",
}
"""Values for the example jobs' ``${placeholders}`` (others get ``x``): a fuzzed file must reach
the plugins' own validation, not stop at an unset placeholder."""


def _example_jobs() -> list[Any]:
    jobs = []
    for path in sorted((REPO / "jobs").iterdir()):
        text = re.sub(
            r"\$\{([A-Za-z_][A-Za-z0-9_.-]*)(?::-([^}]*))?\}",
            lambda m: PLACEHOLDER_VALUES.get(m.group(1), m.group(2) or "x"),
            path.read_text(encoding="utf-8"),
        )
        if path.suffix == ".json":
            jobs.append(json.loads(strip_json_comments(text)))
        elif path.suffix in (".yaml", ".yml"):
            jobs.append(yaml.safe_load(text))
    return jobs


EXAMPLE_JOBS = [
    *_example_jobs(),
    stream_job(writer={"name": "streamwriter", "parameter": {"print": False}}),
    {
        "job": {
            "content": [
                {
                    "reader": {"name": "filereader", "parameter": {"path": "in", "format": "csv"}},
                    "writer": {"name": "streamwriter", "parameter": {}},
                }
            ]
        }
    },
    {
        "job": {
            "content": [
                {
                    "reader": {
                        "name": "hdfsreader",
                        "parameter": {
                            "defaultFS": "file:///",
                            "path": "in",
                            "fileType": "text",
                            "fieldDelimiter": "\t",
                            "column": [{"index": 0, "type": "int"}, {"index": 1, "type": "string"}],
                        },
                    },
                    "writer": {"name": "streamwriter", "parameter": {}},
                }
            ]
        }
    },
]
"""Every example job, and jobs of the plugins no example uses (all valid: the tests check)."""

keys = st.one_of(
    st.sampled_from(["name", "parameter", "column", "type", "path", "writeMode", "speed"]),
    st.text(min_size=0, max_size=12),
)
printable_keys = st.text(
    st.characters(categories=("L", "N", "P", "S", "Zs"), exclude_characters="\ufeff"),
    max_size=12,
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**18, max_value=10**60),
    st.integers(min_value=-(10**60), max_value=-(10**18)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", "${x}", "${x:-1}", "0", "-1", "true", "overwrite", "/", "file:///"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in ``tree`` where a value can be replaced."""
    yield prefix
    if isinstance(tree, dict):
        for key, item in tree.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(tree, list):
        for index, item in enumerate(tree):
            yield from _paths(item, (*prefix, index))


def _replace(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(tree, dict):
        return {**tree, head: _replace(tree.get(head, {}), rest, value)}
    copy = list(tree)
    copy[head] = _replace(tree[head], rest, value)
    return copy


def _remove(tree: Any, path: tuple[Any, ...]) -> Any:
    if len(path) == 1:
        if isinstance(tree, dict):
            return {k: v for k, v in tree.items() if k != path[0]}
        return [v for i, v in enumerate(tree) if i != path[0]]
    head = path[0]
    if isinstance(tree, dict):
        return {**tree, head: _remove(tree[head], path[1:])}
    copy = list(tree)
    copy[head] = _remove(tree[head], path[1:])
    return copy


@st.composite
def mutated_jobs(draw: st.DrawFn) -> Any:
    """An example job with one to three values replaced, removed, or given an extra key."""
    job = draw(st.sampled_from(EXAMPLE_JOBS))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(job))))
        action = draw(st.sampled_from(["replace", "replace", "remove", "add"]))
        if action == "remove" and path:
            job = _remove(job, path)
        elif action == "add":
            targets = [p for p in _paths(job) if _is_dict(job, p)]
            if targets:
                extra = draw(st.dictionaries(keys, values, min_size=1, max_size=2))
                target = draw(st.sampled_from(targets))
                job = _replace(job, target, {**_get(job, target), **extra})
        else:
            job = _replace(job, path, draw(values))
    return job


def _get(tree: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        tree = tree[part]
    return tree


def _is_dict(tree: Any, path: tuple[Any, ...]) -> bool:
    return isinstance(_get(tree, path), dict)


class _Timeout(Exception):
    pass


@contextmanager
def _alarm(seconds: int) -> Iterator[None]:
    def expire(signum: int, frame: object) -> None:
        raise _Timeout(f"validate took more than {seconds}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _validate(path: Path) -> str:
    """``syncx validate path`` in this process: exit 0, or exit 2 with one clean message (which
    is returned)."""
    with _alarm(SECONDS_PER_FILE):
        result = CliRunner().invoke(app, ["validate", str(path)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code in (0, 2), (result.exit_code, result.output, path.read_bytes()[:2000])
    if result.exit_code == 2:
        assert result.stderr.startswith("syncx: "), result.stderr
        assert "Traceback" not in result.output
    return result.stderr if result.exit_code else ""


def _write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path


def _dump(job: Any, as_yaml: bool) -> str:
    if as_yaml:
        return yaml.safe_dump(job, allow_unicode=True)
    return json.dumps(job, ensure_ascii=False)


@pytest.mark.parametrize("job", EXAMPLE_JOBS)
def test_the_unmutated_jobs_are_valid(tmp_path: Path, job: Any) -> None:
    result = CliRunner().invoke(
        app, ["validate", str(_write(tmp_path, "job.json", _dump(job, False)))]
    )
    assert result.exit_code == 0, result.output


@FUZZ
@example(job={"[": None}, as_yaml=False)  # an unknown key taken for pydantic's union tag
@example(job={"job": {"int": 1, "content": []}}, as_yaml=True)
@given(job=mutated_jobs(), as_yaml=st.booleans())
def test_mutated_example_jobs(
    tmp_path_factory: pytest.TempPathFactory, job: Any, as_yaml: bool
) -> None:
    tmp = tmp_path_factory.mktemp("fuzz")
    _validate(_write(tmp, "job.yaml" if as_yaml else "job.json", _dump(job, as_yaml)))


@FUZZ
@given(job=st.sampled_from(EXAMPLE_JOBS), key=printable_keys, as_yaml=st.booleans(), data=st.data())
def test_a_key_given_twice_is_refused_with_its_path(
    tmp_path_factory: pytest.TempPathFactory,
    job: Any,
    key: str,
    as_yaml: bool,
    data: st.DataObject,
) -> None:
    target = data.draw(st.sampled_from([p for p in _paths(job) if _is_dict(job, p)]))
    text = _flow(_replace(job, target, {**_get(job, target), MARKER: 1}), as_yaml)
    text = text.replace(f'"{MARKER}": 1', f"{_quoted(key)}: 1, {_quoted(key)}: 2")
    path = _write(tmp_path_factory.mktemp("fuzz"), "job.yaml" if as_yaml else "job.json", text)
    stderr = _validate(path)
    assert f"key '{key}' is given more than once" in stderr, stderr


MARKER = "__SYNCX_FUZZ__"


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _flow(job: Any, as_yaml: bool) -> str:
    """``job`` as JSON text, or as the same text for the YAML parser (JSON is YAML flow style;
    a leading comment keeps the loader from taking it for JSON)."""
    text = json.dumps(job, ensure_ascii=False)
    return f"# yaml\n{text}" if as_yaml else text


@FUZZ
@given(
    depth=st.integers(60, 20_000),
    opener=st.sampled_from(["[", '{"a": ', "{a: ", "- "]),
    as_yaml=st.booleans(),
)
def test_deep_nesting(
    tmp_path_factory: pytest.TempPathFactory, depth: int, opener: str, as_yaml: bool
) -> None:
    closer = {"[": "]", '{"a": ': "}", "{a: ": "}", "- ": ""}[opener]
    if opener == "- ":
        body = "".join(f"{'  ' * i}- \n" for i in range(min(depth, 500))) + "  " * 500 + "- 1\n"
    else:
        body = opener * depth + "1" + closer * depth
    tmp = tmp_path_factory.mktemp("fuzz")
    _validate(
        _write(tmp, "job.yaml" if as_yaml else "job.json", f"job: {body}\n" if as_yaml else body)
    )


@FUZZ
@given(
    number=st.one_of(
        st.integers(30, 6000).map(lambda n: "9" * n),
        st.integers(30, 6000).map(lambda n: "-" + "1" * n),
        st.integers(30, 3000).map(lambda n: "0x" + "f" * n),
        st.integers(2, 400).map(lambda n: ":".join(["59"] * n)),
        st.sampled_from(["1e999", "-1e999", ".inf", ".nan", "NaN", "Infinity", "1" * 400 + ".5"]),
    ),
    field=st.sampled_from(["channel", "bytes", "record", "nosuch"]),
    as_yaml=st.booleans(),
)
def test_huge_and_non_finite_numbers(
    tmp_path_factory: pytest.TempPathFactory, number: str, field: str, as_yaml: bool
) -> None:
    job = stream_job(setting={"speed": {field: MARKER}})
    text = _flow(job, as_yaml).replace(f'"{MARKER}"', number)
    _validate(_write(tmp_path_factory.mktemp("fuzz"), "job.yaml" if as_yaml else "job.json", text))


@FUZZ
@given(fanout=st.integers(2, 12), levels=st.integers(1, 12), recursive=st.booleans())
def test_yaml_aliases(
    tmp_path_factory: pytest.TempPathFactory, fanout: int, levels: int, recursive: bool
) -> None:
    lines = [f"a0: &a0 [{', '.join(['lol'] * fanout)}]"]
    for level in range(1, levels + 1):
        refs = ", ".join([f"*a{level - 1}"] * fanout)
        lines.append(f"a{level}: &a{level} [{refs}]")
    lines.append(f"job: {'&r [*r]' if recursive else f'*a{levels}'}")
    tmp = tmp_path_factory.mktemp("fuzz")
    _validate(_write(tmp, "job.yaml", "\n".join(lines) + "\n"))


@FUZZ
@given(
    text=st.one_of(
        st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))
    ),
    suffix=st.sampled_from([".json", ".yaml"]),
)
def test_noise(tmp_path_factory: pytest.TempPathFactory, text: str, suffix: str) -> None:
    tmp = tmp_path_factory.mktemp("fuzz")
    _validate(_write(tmp, f"job{suffix}", text))


WRONG_VALUES: list[Any] = [
    None,
    True,
    -1,
    0,
    10**30,
    1.5,
    "",
    "x",
    "/",
    [],
    [None],
    ["x"],
    [{}],
    [{"name": 1, "type": []}],
    {},
    {"a": {"b": 1}},
]


def _plugin_bases() -> list[Any]:
    """(job, kind, parameter keys): one base job per plugin, with its parameter keys."""
    seen: set[str] = set()
    bases = []
    for job in EXAMPLE_JOBS:
        content = job["job"]["content"][0]
        for kind in ("reader", "writer"):
            name = content[kind]["name"]
            if name in seen:
                continue
            seen.add(name)
            model = registry.load(kind, name).Parameters
            fields = [info.alias or key for key, info in model.model_fields.items()]
            bases.append(pytest.param(job, kind, fields, id=name))
    return bases


@pytest.mark.parametrize(("job", "kind", "fields"), _plugin_bases())
def test_every_parameter_of_every_plugin_with_wrong_types(
    tmp_path: Path, job: Any, kind: str, fields: list[str]
) -> None:
    """Each parameter of the plugin, and each ``setting`` key, given values of other types:
    three per key in CI (rotating through :data:`WRONG_VALUES`), all with SYNCX_FUZZ_EXAMPLES
    of 1000 or more."""
    places: list[tuple[Any, ...]] = [
        ("job", "content", 0, kind, "parameter", field) for field in fields
    ]
    places += [("job", "setting", group) for group in Setting.model_fields]
    places += [("job", "setting", "speed", key) for key in ("channel", "bytes", "record")]
    per_place = len(WRONG_VALUES) if EXAMPLES >= 1000 else 3
    for number, place in enumerate(places):
        for offset in range(per_place):
            value = WRONG_VALUES[(number + offset) % len(WRONG_VALUES)]
            parent = _get_or_empty(job, place[:-1])
            mutated = _replace(job, place[:-1], {**parent, _alias(place[-1]): value})
            _validate(_write(tmp_path, "job.json", _dump(mutated, False)))


def _get_or_empty(tree: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        tree = tree.get(part, {}) if isinstance(tree, dict) else tree[part]
    return tree


def _alias(name: str) -> str:
    return to_camel(name) if "_" in name else name
