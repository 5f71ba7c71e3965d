"""The checked-in JSON Schemas match the models, and example jobs validate against them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from sync.jobfile import strip_json_comments
from sync.schema import job_schema, write_schemas
from tests.conftest import REPO


def test_checked_in_schemas_are_current(tmp_path: Path) -> None:
    fresh = {p.name: p.read_text() for p in write_schemas(tmp_path)}
    stored = {p.name: p.read_text() for p in (REPO / "schemas").glob("*.json")}
    stale = sorted(
        name for name in fresh.keys() | stored.keys() if fresh.get(name) != stored.get(name)
    )
    assert not stale, f"schemas/ is stale ({stale}): run python -m sync.schema --write"


def test_example_jobs_validate_against_the_schema() -> None:
    schema = job_schema()
    for path in sorted((REPO / "jobs").iterdir()):
        text = path.read_text()
        data = (
            json.loads(strip_json_comments(text))
            if path.suffix == ".json"
            else yaml.safe_load(text)
        )
        jsonschema.validate(data, schema)


def test_schema_rejects_an_unknown_plugin_parameter() -> None:
    schema = job_schema()
    job = {
        "job": {
            "content": [
                {
                    "reader": {
                        "name": "streamreader",
                        "parameter": {"column": [{"name": "a"}], "nope": 1},
                    },
                    "writer": {"name": "streamwriter"},
                }
            ]
        }
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(job, schema)
