"""JSON Schema of job files, generated from the models (``schemas/`` holds the generated files).

``job.schema.json`` is the whole file: ``job.content[].reader|writer.parameter`` is checked
against the named plugin's own schema (``if name is one of the spellings then parameter is ...``),
so an editor completes and checks plugin parameters too. ``python -m sync.schema --write``
regenerates ``schemas/``; a test fails when the checked-in files are stale.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sync import registry
from sync.model import JobFile

__all__ = ["job_schema", "plugin_schema", "write_schemas"]

_SPELLINGS = {"reader": ("reader", "source"), "writer": ("writer", "sink")}


def plugin_schema(kind: registry.Kind, name: str) -> dict[str, Any]:
    """The JSON Schema of one plugin's ``parameter`` block."""
    cls = registry.load(kind, name)
    schema = cls.Parameters.model_json_schema(by_alias=True, mode="validation")
    schema["title"] = f"{registry.canonical_name(kind, name)} parameter"
    return schema


def job_schema(*, builtin: bool = False) -> dict[str, Any]:
    """The JSON Schema of a whole job file, with every installed plugin's parameters (only
    syncx's own with ``builtin``: the ``schemas/`` folder of the repository)."""
    schema = JobFile.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "syncx job file"
    defs = schema.setdefault("$defs", {})
    rules: list[dict[str, Any]] = []
    for kind in ("reader", "writer"):
        names = registry.builtin(kind) if builtin else sorted(registry.known(kind))
        for name in names:
            sub = plugin_schema(kind, name)
            for key, value in sub.pop("$defs", {}).items():
                defs.setdefault(key, value)
            defs[f"param_{name}"] = sub
            stem = name.removesuffix(kind)
            spellings = [stem + suffix for suffix in _SPELLINGS[kind]]
            rules.append(
                {
                    "if": {"properties": {"name": {"enum": spellings}}, "required": ["name"]},
                    "then": {"properties": {"parameter": {"$ref": f"#/$defs/param_{name}"}}},
                }
            )
    defs["PluginSpec"]["allOf"] = rules
    return schema


def write_schemas(folder: Path) -> list[Path]:
    """Write ``job.schema.json`` and one ``<plugin>.schema.json`` per syncx plugin into
    ``folder`` (third-party plugins document their own)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [_dump(folder / "job.schema.json", job_schema(builtin=True))]
    for kind in ("reader", "writer"):
        for name in registry.builtin(kind):
            written.append(_dump(folder / f"{name}.schema.json", plugin_schema(kind, name)))
    return written


def _dump(path: Path, schema: dict[str, Any]) -> Path:
    path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def main() -> None:
    """``python -m sync.schema --write [FOLDER]``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, nargs="?", const=Path("schemas"), required=True)
    args = parser.parse_args()
    for path in write_schemas(args.write):
        print(path)


if __name__ == "__main__":
    main()
