"""``syncx template READER WRITER``: a job-file skeleton generated from the plugins' models.

Like DataX's ``-r mysqlreader -w hdfswriter``: every parameter of both plugins, from the same
pydantic models the job schema in ``schemas/`` comes from, so a template never goes stale.
Required parameters, and those that say where the data is and who logs in (``connection``,
``jdbcUrl``, ``username``, ``password``, ``table``, ``defaultFS``), are live, filled with
``${side_name}`` placeholders that ``syncx run -p side_name=VALUE`` (or the environment) fills;
every other parameter is a comment with its default and one line of meaning. YAML by default;
``json=True`` gives ChunJun's JSON shape with ``//`` comments (which syncx reads).
"""

from __future__ import annotations

import json
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, SecretStr
from pydantic.fields import FieldInfo

from sync import registry
from sync.model import Setting

__all__ = ["Placeholder", "Template", "render"]

ESSENTIAL = frozenset(
    {"connection", "jdbcUrl", "username", "password", "table", "defaultFS", "topic"}
    | {"producerSettings"}
)
"""Optional parameters a template still fills: where the data is, who logs in. A model with a
``connection`` list names its table there, so its own ``table`` stays a comment. A mapping is
filled with the keys of its first example (``bootstrap.servers``), each a placeholder."""
_LIVE_SETTING = {"speed": {"channel"}}
"""Settings shown live (with their defaults) rather than as comments."""
_HINT_CHARS = 100
_SENTENCE_END = re.compile(r"(?<=\.)\s+(?=[A-Z(`])")


@dataclass(frozen=True)
class Placeholder:
    """A ``${name}`` the user fills: where it is and what it takes."""

    name: str
    path: str
    """Its path in the job file (``job.content[0].reader.parameter.connection[0].jdbcUrl``)."""
    kind: str
    """``string``, ``integer``, ``number`` or ``boolean``."""
    choices: tuple[str, ...] = ()
    hint: str = ""


@dataclass
class Template:
    """A rendered job file and the placeholders in it."""

    text: str
    placeholders: dict[str, Placeholder] = field(default_factory=dict)


@dataclass
class _Entry:
    """One key of a mapping: a value, a nested mapping, or a list of one mapping."""

    key: str
    live: bool
    comment: str = ""
    value: Any = None
    mapping: list[_Entry] | None = None
    item: list[_Entry] | None = None
    """A list of one mapping item (a live list of models)."""


def render(reader: str, writer: str, *, json_shape: bool = False) -> Template:
    """The job-file template of ``reader`` → ``writer`` (plugin names in any spelling)."""
    names = {
        "reader": registry.canonical_name("reader", reader),
        "writer": registry.canonical_name("writer", writer),
    }
    placeholders: dict[str, Placeholder] = {}
    content: list[_Entry] = []
    for side in ("reader", "writer"):
        cls = registry.load(side, names[side])  # type: ignore[arg-type]
        where = f"job.content[0].{side}.parameter"
        builder = _Builder(side, placeholders)
        parameter = builder.model(cls.Parameters, where, ())
        content.append(
            _Entry(
                side,
                True,
                mapping=[
                    _Entry("name", True, value=names[side]),
                    _Entry("parameter", True, mapping=parameter),
                ],
            )
        )
    setting = _Builder("setting", placeholders).model(Setting, "job.setting", (), _LIVE_SETTING)
    job = [_Entry("content", True, item=content), _Entry("setting", True, mapping=setting)]
    title = f"syncx job: {names['reader']} -> {names['writer']} (syncx template {reader} {writer})"
    header = [
        title,
        "Fill the ${...} placeholders here, or pass them: syncx run JOB -p name=value (or set",
        "environment variables of those names: the way to give passwords). Optional parameters",
        "are commented out with their defaults; `syncx validate JOB` checks the file offline.",
    ]
    if json_shape:
        lines = [f"// {line}" for line in header]
        lines += _json_mapping([_Entry("job", True, mapping=job)], 0, last=True)
    else:
        lines = [f"# {line}" for line in header]
        lines += _yaml_mapping([_Entry("job", True, mapping=job)], 0)
    return Template("\n".join(lines) + "\n", placeholders)


class _Builder:
    """Turns a model into entries, naming placeholders ``<side>_<key>``."""

    def __init__(self, side: str, placeholders: dict[str, Placeholder]) -> None:
        self.side = side
        self.placeholders = placeholders

    def model(
        self,
        model: type[BaseModel],
        path: str,
        parents: tuple[str, ...],
        forced: dict[str, set[str]] | None = None,
    ) -> list[_Entry]:
        keys = {_key(name, info) for name, info in model.model_fields.items()}
        essential = ESSENTIAL - {"table"} if "connection" in keys else ESSENTIAL
        entries = []
        for name, info in model.model_fields.items():
            key = _key(name, info)
            live = info.is_required() or key in essential
            nested_forced = (forced or {}).get(key)
            entries.append(
                self.field(key, info, f"{path}.{key}", (*parents, key), live, nested_forced)
            )
        return entries

    def field(
        self,
        key: str,
        info: FieldInfo,
        path: str,
        parents: tuple[str, ...],
        live: bool,
        forced: set[str] | None,
    ) -> _Entry:
        annotation = _unwrap(info.annotation)
        comment = _hint(info, annotation)
        model = _model_of(annotation)
        if model is not None and (live or forced is not None):
            inner: dict[str, set[str]] | None = None
            if forced is not None:
                inner = {k: set() for k in forced}
            mapping = self.model(model, path, parents, inner)
            return _Entry(key, True, comment, mapping=mapping)
        if model is not None:
            return _Entry(key, False, comment, mapping=self.model(model, path, parents))
        if not live:
            return _Entry(key, forced is not None, comment, value=_default(info))
        item = _list_item(annotation)
        if item is not None:
            item_model = _model_of(item)
            if item_model is not None:
                entries = self.model(item_model, f"{path}[0]", parents)
                if any(e.live for e in entries):
                    return _Entry(key, True, comment, item=entries)
                return _Entry(key, True, comment, value=[])
            return _Entry(
                key, True, comment, value=[self.placeholder(path + "[0]", parents, item, comment)]
            )
        if typing.get_origin(annotation) is dict:
            example = (info.examples or [{}])[0]
            value = {
                name: self.placeholder(
                    f"{path}.{name}", (*parents, name.replace(".", "_")), str, ""
                )
                for name in example
            }
            return _Entry(key, True, comment, value=value)
        return _Entry(
            key, True, comment, value=self.placeholder(path, parents, annotation, comment)
        )

    def placeholder(self, path: str, parents: tuple[str, ...], annotation: Any, hint: str) -> str:
        """A new ``${name}`` for the value at ``path``."""
        name = f"{self.side}_{parents[-1]}"
        if name in self.placeholders:
            name = f"{self.side}_{'_'.join(parents)}"
        scalar = _scalar(annotation)
        choices = _choices(annotation)
        kind = {int: "integer", float: "number", bool: "boolean"}.get(scalar, "string")  # type: ignore[call-overload]
        self.placeholders[name] = Placeholder(name, path, kind, choices, hint)
        return "${" + name + "}"


def _key(name: str, info: FieldInfo) -> str:
    """The spelling a job file uses: the serialization alias, the first validation alias, the
    alias, the name."""
    if info.serialization_alias:
        return info.serialization_alias
    if isinstance(info.validation_alias, AliasChoices):
        first = info.validation_alias.choices[0]
        if isinstance(first, str):
            return first
    return info.alias or name


def _unwrap(annotation: Any) -> Any:
    """``X | None`` → ``X``; ``Annotated[X, ...]`` → ``X``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation


def _members(annotation: Any) -> list[Any]:
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [_unwrap(a) for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model a value of this type is (a mapping), when it can only be one."""
    members = _members(annotation)
    if len(members) == 1 and isinstance(members[0], type) and issubclass(members[0], BaseModel):
        return members[0]
    return None


def _list_item(annotation: Any) -> Any | None:
    """The item type when a value of this type is written as a list (the first list member)."""
    members = _members(annotation)
    if any(m is str for m in members):
        return None  # a scalar will do (`path: str | list[str]`)
    for member in members:
        if typing.get_origin(member) is list:
            args = typing.get_args(member)
            items = _members(args[0]) if args else [str]
            models = [m for m in items if isinstance(m, type) and issubclass(m, BaseModel)]
            return models[0] if models else items[0]
    return None


def _scalar(annotation: Any) -> Any:
    members = _members(annotation)
    for member in members:
        if typing.get_origin(member) is Literal:
            return type(typing.get_args(member)[0])
        if member in (int, float, bool, str):
            return member
    return str


def _choices(annotation: Any) -> tuple[str, ...]:
    return tuple(
        str(choice)
        for member in _members(annotation)
        if typing.get_origin(member) is Literal
        for choice in typing.get_args(member)
    )


def _hint(info: FieldInfo, annotation: Any) -> str:
    """One line: required or secret, the description's first sentence, the choices."""
    parts = []
    if info.is_required():
        parts.append("required.")
    description = " ".join((info.description or "").split())
    if description:
        first = _SENTENCE_END.split(description)[0].rstrip(".") + "."
        if len(first) > _HINT_CHARS:
            first = first[: _HINT_CHARS - 3].rstrip() + "..."
        parts.append(first)
    choices = _choices(annotation)
    if choices and not any(c in description for c in choices):
        parts.append("One of " + ", ".join(choices) + ".")
    return " ".join(parts)


def _default(info: FieldInfo) -> Any:
    """An optional parameter's default, as JSON."""
    return _plain(info.get_default(call_default_factory=True))


def _plain(value: Any) -> Any:
    """A default as JSON."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, SecretStr):
        return None
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


# -- YAML ------------------------------------------------------------------------------------------


def _yaml_mapping(entries: list[_Entry], indent: int, comment_out: bool = False) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for entry in entries:
        off = comment_out or not entry.live
        mark = "# " if off else ""
        note = f"  # {entry.comment}" if entry.comment else ""
        if entry.mapping is not None:
            live_inside = not off and any(e.live for e in entry.mapping)
            opener = f"{pad}{mark}{entry.key}:" + ("" if live_inside or off else " {}")
            lines.append(opener + note)
            lines += _yaml_mapping(entry.mapping, indent + 2, off)
        elif entry.item is not None:
            lines.append(f"{pad}{mark}{entry.key}:{note}")
            body = _yaml_mapping(entry.item, indent + 4, off)
            first = next(i for i, line in enumerate(body) if not line.lstrip().startswith("#"))
            body[first] = f"{pad}  - {body[first][indent + 4 :]}"
            lines += body
        else:
            lines.append(f"{pad}{mark}{entry.key}: {json.dumps(entry.value)}{note}")
    return lines


# -- JSON (ChunJun's shape, // comments) -----------------------------------------------------------


def _json_mapping(
    entries: list[_Entry], indent: int, *, last: bool, off: bool = False
) -> list[str]:
    pad = " " * indent
    lines = [f"{pad}{'// ' if off else ''}{{"]
    lines += _json_entries(entries, indent + 2, off)
    lines.append(f"{pad}{'// ' if off else ''}}}{'' if last or off else ','}")
    return lines


def _json_entries(entries: list[_Entry], indent: int, off: bool) -> list[str]:
    pad = " " * indent
    live = [e for e in entries if e.live and not off]
    lines: list[str] = []
    for entry in entries:
        dead = off or not entry.live
        comma = "" if dead or entry is live[-1] else ","
        mark = "// " if dead else ""
        note = f" // {entry.comment}" if entry.comment else ""
        key = json.dumps(entry.key)
        if entry.mapping is not None:
            body = _json_mapping(entry.mapping, indent, last=not comma, off=dead)
            lines.append(f"{pad}{mark}{key}: {{{note}")
            lines += body[1:]
        elif entry.item is not None:
            lines.append(f"{pad}{mark}{key}: [{note}")
            lines += _json_mapping(entry.item, indent + 2, last=True, off=dead)
            lines.append(f"{pad}{mark}]{comma}")
        else:
            lines.append(f"{pad}{mark}{key}: {json.dumps(entry.value)}{comma}{note}")
    return lines
