"""Reading a job file: YAML or JSON (with comments), ``${placeholders}``, strict validation.

Everything wrong with a file is reported at once, before anything connects, each problem with
its path in the file (``job.content[0].writer.parameter.batchSize: must be > 0``). Input values
are never echoed in messages, so a secret can not leak through a validation error.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from sync import registry
from sync.contract import Reader, Writer
from sync.errors import ConfigIssue, JobFileError
from sync.model import JobFile, Params

__all__ = ["LoadedJob", "load_job", "parse_params", "strip_json_comments"]

MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 64
"""Levels of nesting a job file may have (a ChunJun job has about ten)."""
MAX_VALUES = 100_000
"""Values (scalars, lists, mappings) a job file may hold once YAML aliases are expanded."""
MAX_DIGITS = 40
MAX_INT_BITS = 133
"""Integers beyond 40 decimal digits (hexadecimal and base-60 YAML literals too) are refused."""

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.-]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class LoadedJob:
    """A validated job: the file model plus each side's plugin class and typed parameters."""

    path: Path
    name: str
    file: JobFile
    reader_cls: type[Reader]
    reader_params: Params
    writer_cls: type[Writer]
    writer_params: Params


def load_job(path: str | Path, params: Mapping[str, str] | None = None) -> LoadedJob:
    """Read, fill and validate a job file; raise :class:`JobFileError` listing every problem."""
    job_path = Path(path)
    source = str(job_path)
    try:
        if job_path.is_file() and job_path.stat().st_size > MAX_FILE_BYTES:
            msg = f"job file is larger than {MAX_FILE_BYTES // 1024 // 1024} MiB: {source}"
            raise JobFileError(msg)
        text = job_path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise JobFileError(f"job file not found: {source}") from exc
    except IsADirectoryError as exc:
        raise JobFileError(f"job file is a directory: {source}") from exc
    except UnicodeDecodeError as exc:
        msg = (
            f"job file {source} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8"
        )
        raise JobFileError(msg) from exc
    except OSError as exc:
        raise JobFileError(f"cannot read job file {source}: {exc}") from exc
    raw = _parse_text(text, job_path)
    problems = _check_tree(raw)
    if problems:
        raise JobFileError(problems, source)
    if not isinstance(raw, dict):
        raise JobFileError("the job file must hold a mapping with a 'job' key", source)
    values = dict(os.environ)
    values.update(params or {})
    issues: list[ConfigIssue] = []
    filled = _fill_placeholders(raw, values, "", issues)
    if issues:
        raise JobFileError(issues, source)
    return _validate(filled, job_path)


def parse_params(model: type[BaseModel], data: Any, prefix: str) -> tuple[Any, list[ConfigIssue]]:
    """Validate ``data`` with ``model``; return the instance or the issues, paths under ``prefix``."""
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, [_issue(model, data, err, prefix) for err in exc.errors()]


def strip_json_comments(text: str) -> str:
    """Blank out ``//`` and ``/* */`` comments outside strings, keeping lines and columns."""
    out: list[str] = []
    i, n = 0, len(text)
    in_string = False
    while i < n:
        ch = text[i]
        if in_string:
            out.append(ch)
            if ch == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
            out.append(ch)
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end == -1 else end
            out.append(" " * (end - i))
            i = end
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end == -1 else end + 2
            out.append(re.sub(r"[^\n]", " ", text[i:end]))
            i = end
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def _parse_text(text: str, path: Path) -> Any:
    """JSON for ``.json`` files (or text that starts with ``{``), YAML otherwise.

    Both parsers keep what they would silently lose or choke on for the tree check
    (:func:`_check_tree`): a key given twice, an integer too long to convert. A file nested
    deeper than Python's recursion limit is refused here."""
    source = str(path)
    try:
        if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
            return _parse_json(text, source)
        return _parse_yaml(text, source)
    except (RecursionError, _TooDeepError) as exc:
        msg = f"nested more than {MAX_DEPTH} levels deep"
        raise JobFileError(msg, source) from exc


def _parse_json(text: str, source: str) -> Any:
    try:
        return json.loads(
            strip_json_comments(text), object_pairs_hook=_Mapping.of, parse_int=_integer
        )
    except json.JSONDecodeError as exc:
        msg = f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        raise JobFileError(msg, source) from exc


def _parse_yaml(text: str, source: str) -> Any:
    loader: _YamlLoader | None = None
    try:
        loader = _YamlLoader(text)
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        context = getattr(exc, "context", None)
        if context:
            problem = f"{context}, {problem}"
        if isinstance(exc, yaml.reader.ReaderError):
            line = text.count("\n", 0, exc.position) + 1
            where = f" at line {line}"
            problem = f"character #x{exc.character:04x} is not allowed in YAML"
        raise JobFileError(f"invalid YAML{where}: {problem}", source) from exc
    finally:
        if loader is not None:
            loader.dispose()


class _Mapping(dict[Any, Any]):
    """A parsed mapping that remembers the keys given more than once (the last one wins in a
    plain ``dict``, which would silently drop the user's first value)."""

    duplicates: tuple[Any, ...] = ()

    @classmethod
    def of(cls, pairs: list[tuple[Any, Any]]) -> _Mapping:
        """The mapping of ``pairs`` (JSON's ``object_pairs_hook``)."""
        mapping = cls(pairs)
        mapping.duplicates = _repeated([key for key, _ in pairs])
        return mapping


def _shorten(path: str) -> str:
    """A path cut to its first 80 characters (a path 64 levels deep is no help in full)."""
    return path if len(path) <= 80 else f"{path[:80]}..."


def _repeated(keys: list[Any]) -> tuple[Any, ...]:
    """The keys that occur more than once, each once, in order."""
    seen: set[Any] = set()
    repeated: dict[Any, None] = {}
    for key in keys:
        if key in seen:
            repeated[key] = None
        seen.add(key)
    return tuple(repeated)


@dataclass(frozen=True)
class _LongInteger:
    """An integer literal with more digits than any setting takes (kept for the message)."""

    digits: int


def _integer(text: str) -> int | _LongInteger:
    """An integer literal; past :data:`MAX_DIGITS` digits a marker (Python refuses to convert
    more than 4,300 digits, and no setting needs a number that large)."""
    digits = len(text.lstrip("+-").replace("_", ""))
    return _LongInteger(digits) if digits > MAX_DIGITS else int(text)


class _TooDeepError(Exception):
    """Nesting past :data:`MAX_DEPTH` met while parsing."""


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with the JSON parser's keeps (repeated keys, long integers) that
    stops composing past :data:`MAX_DEPTH` levels: its scanner's cost grows with the square of
    the nesting, so a file nested 100,000 deep took seconds to reach Python's recursion limit."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH + 1:
                raise _TooDeepError
            node: yaml.Node | None = super().compose_node(parent, index)
            return node
        finally:
            self.depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> _Mapping:
        own = [key for key, _ in node.value if key.tag != "tag:yaml.org,2002:merge"]
        mapping = _Mapping(super().construct_mapping(node, deep=deep))
        mapping.duplicates = _repeated([self.construct_object(key, deep=deep) for key in own])
        return mapping

    def construct_keeping_repeats(self, node: yaml.MappingNode) -> Iterator[_Mapping]:
        """A mapping that remembers its repeated keys (PyYAML's own keeps the last silently)."""
        data = _Mapping()
        yield data
        mapping = self.construct_mapping(node)
        data.update(mapping)
        data.duplicates = mapping.duplicates

    def construct_bounded_int(self, node: yaml.ScalarNode) -> int | _LongInteger:
        """An integer, or past :data:`MAX_DIGITS` digits the marker (see :func:`_integer`)."""
        text = str(node.value)
        digits = len(text.lstrip("+-").replace("_", "").replace(":", ""))
        if digits > MAX_DIGITS:
            return _LongInteger(digits)
        value: int = super().construct_yaml_int(node)
        return value


_YamlLoader.add_constructor("tag:yaml.org,2002:map", _YamlLoader.construct_keeping_repeats)
_YamlLoader.add_constructor("tag:yaml.org,2002:int", _YamlLoader.construct_bounded_int)


def _check_tree(value: Any) -> list[ConfigIssue]:
    """What the parsers let through that no job file means: a key given twice, numbers too
    large or not finite, nesting past :data:`MAX_DEPTH`, and more than :data:`MAX_VALUES`
    values once YAML aliases are expanded (the "billion laughs" shape, and aliases that refer
    to themselves). Iterative and bounded, so no file can make it recurse or run long."""
    issues: list[ConfigIssue] = []
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    count = 0
    while stack:
        item, path, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            msg = (
                f"the file holds more than {MAX_VALUES:,} values once YAML aliases (*name) are "
                "expanded; no job file needs that many"
            )
            return [ConfigIssue("", msg)]
        if depth > MAX_DEPTH:
            msg = f"nested more than {MAX_DEPTH} levels deep (or a YAML alias inside itself)"
            issues.append(ConfigIssue(_shorten(path), msg))
            continue
        if isinstance(item, dict):
            issues.extend(
                ConfigIssue(path, f"key '{key}' is given more than once; keep one")
                for key in getattr(item, "duplicates", ())
            )
            stack.extend((v, _join(path, k), depth + 1) for k, v in reversed(item.items()))
        elif isinstance(item, list | tuple):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in reversed(list(enumerate(item))))
        elif isinstance(item, _LongInteger) or (
            isinstance(item, int) and item.bit_length() > MAX_INT_BITS
        ):
            msg = f"a number too large for any setting (at most {MAX_DIGITS} digits; quote data)"
            issues.append(ConfigIssue(path, msg))
        elif isinstance(item, float) and not math.isfinite(item):
            issues.append(ConfigIssue(path, "must be a finite number"))
    return issues


def _fill_placeholders(
    value: Any, values: Mapping[str, str], path: str, issues: list[ConfigIssue]
) -> Any:
    """Replace ``${name}`` / ``${name:-default}`` in every string of the tree."""
    if isinstance(value, dict):
        return {
            key: _fill_placeholders(item, values, _join(path, key), issues)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [
            _fill_placeholders(item, values, f"{path}[{i}]", issues) for i, item in enumerate(value)
        ]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in values:
            return values[name]
        if default is not None:
            return default
        issues.append(
            ConfigIssue(
                path,
                f"placeholder ${{{name}}} is not set (pass -p {name}=VALUE or set the environment variable {name})",
            )
        )
        return match.group(0)

    return _PLACEHOLDER.sub(substitute, value)


def _validate(raw: dict[str, Any], path: Path) -> LoadedJob:
    source = str(path)
    issues: list[ConfigIssue] = []
    model, found = parse_params(JobFile, raw, "")
    issues.extend(found)
    plugins: dict[str, tuple[type[Any], Params]] = {}
    content = raw.get("job", {}).get("content") if isinstance(raw.get("job"), dict) else None
    if isinstance(content, list):
        for index, entry in enumerate(content):
            if not isinstance(entry, dict):
                continue
            for kind in ("reader", "writer"):
                spec = entry.get(kind)
                if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                    continue
                where = f"job.content[{index}].{kind}"
                try:
                    cls = registry.load(kind, spec["name"])
                except JobFileError as exc:
                    issues.extend(ConfigIssue(f"{where}.name", i.message) for i in exc.issues)
                    continue
                params, found = parse_params(
                    cls.Parameters, spec.get("parameter") or {}, f"{where}.parameter"
                )
                issues.extend(found)
                if params is not None and index == 0:
                    plugins[kind] = (cls, params)
    if issues:
        raise JobFileError(_dedupe(issues), source)
    assert model is not None  # no issues means the model validated
    reader_cls, reader_params = plugins["reader"]
    writer_cls, writer_params = plugins["writer"]
    return LoadedJob(
        path=path,
        name=model.name or path.stem,
        file=model,
        reader_cls=reader_cls,
        reader_params=reader_params,
        writer_cls=writer_cls,
        writer_params=writer_params,
    )


def _dedupe(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    seen: dict[tuple[str, str], ConfigIssue] = {}
    for issue in issues:
        seen.setdefault((issue.path, issue.message), issue)
    return list(seen.values())


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _loc_path(prefix: str, loc: tuple[int | str, ...]) -> str:
    path = prefix
    for part in loc:
        path = f"{path}[{part}]" if isinstance(part, int) else _join(path, part)
    return path


def _issue(model: type[BaseModel], data: Any, err: Any, prefix: str) -> ConfigIssue:
    """One readable issue from a pydantic error, never quoting the input value."""
    kind = err["type"]
    # the last part of an unknown key's location is the key itself, whatever it looks like
    last = len(err["loc"]) - 1 if kind == "extra_forbidden" else -1
    loc = tuple(part for i, part in enumerate(err["loc"]) if i == last or not _is_union_tag(part))
    ctx = {
        k: int(v) if isinstance(v, float) and v.is_integer() else v
        for k, v in (err.get("ctx") or {}).items()
    }
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        allowed = _keys(parent) if parent else []
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        msg = "unknown key" + (f" (did you mean '{hint[0]}'?)" if hint else "")
        if parent and not hint:
            msg += f"; allowed: {', '.join(allowed)}"
        return ConfigIssue(_loc_path(prefix, loc), msg)
    messages = {
        "missing": "is required",
        "greater_than": "must be > {gt}",
        "greater_than_equal": "must be >= {ge}",
        "less_than": "must be < {lt}",
        "less_than_equal": "must be <= {le}",
        "too_short": "must have at least {min_length} item(s)",
        "too_long": "must have at most {max_length} item(s)",
        "literal_error": "must be one of {expected}",
        "int_parsing": "must be an integer",
        "int_type": "must be an integer",
        "int_from_float": "must be a whole number",
        "float_parsing": "must be a number",
        "float_type": "must be a number",
        "bool_parsing": "must be true or false",
        "bool_type": "must be true or false",
        "string_type": "must be a string",
        "list_type": "must be a list",
        "dict_type": "must be a mapping",
        "model_type": "must be a mapping",
        "model_attributes_type": "must be a mapping",
        "enum": "must be one of {expected}",
    }
    template = messages.get(kind)
    msg = template.format(**ctx) if template else _strip_input(err["msg"])
    del data
    return ConfigIssue(_loc_path(prefix, loc), msg)


def _strip_input(msg: str) -> str:
    """pydantic's own message, first letter lowered; custom validators put no input in it."""
    msg = msg.removeprefix("Value error, ")
    return msg[:1].lower() + msg[1:]


def _is_union_tag(part: int | str) -> bool:
    """pydantic puts the union member's type name into ``loc`` (``'int'``, ``'list[str]'``)."""
    return isinstance(part, str) and (
        "[" in part
        or part
        in {"int", "str", "float", "bool", "list", "dict", "function-after", "function-plain"}
    )


def _keys(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _model_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``loc`` (for "did you mean")."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = next(
            (info for name, info in current.model_fields.items() if part in (name, info.alias)),
            None,
        )
        if field is None:
            return None
        current = _inner_model(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    """Unwrap ``X | None``, ``list[X]``, ``Annotated[X, ...]`` to the model class ``X``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is None:
        return None
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
