"""Plugins by the name a job file uses, found through entry points.

Built-ins register in ``pyproject.toml`` under ``syncx.readers`` / ``syncx.writers`` exactly as a
third-party package would. ChunJun spells a plugin ``mysqlreader`` or ``mysqlsource`` (and
``mysqlwriter`` / ``mysqlsink``); both resolve to the same plugin. A plugin module is imported
only when a job names it, and a driver only when the plugin needs it (:func:`require`).
"""

from __future__ import annotations

import difflib
import importlib
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Literal

from sync.contract import Reader, Writer
from sync.errors import JobFileError, PluginNotFoundError

__all__ = ["Kind", "builtin", "canonical_name", "known", "load", "require"]

Kind = Literal["reader", "writer"]
_GROUPS: dict[Kind, str] = {"reader": "syncx.readers", "writer": "syncx.writers"}
_ALIASES: dict[Kind, tuple[str, str]] = {
    "reader": ("source", "reader"),
    "writer": ("sink", "writer"),
}


def canonical_name(kind: Kind, name: str) -> str:
    """``MySQLSource`` → ``mysqlreader``: one spelling per plugin."""
    lowered = name.strip().lower()
    alias, proper = _ALIASES[kind]
    if lowered.endswith(alias):
        lowered = lowered[: -len(alias)] + proper
    return lowered


@cache
def _entries(kind: Kind) -> dict[str, EntryPoint]:
    """Installed plugins of a kind by name. Cached: each ``entry_points`` call reads the
    metadata of every installed distribution (~15 ms here), and a run asked five times."""
    return {ep.name: ep for ep in entry_points(group=_GROUPS[kind])}


def known(kind: Kind) -> dict[str, str]:
    """Installed plugins of a kind: name → ``module:Class``."""
    return {name: ep.value for name, ep in _entries(kind).items()}


def builtin(kind: Kind) -> list[str]:
    """The names of syncx's own plugins of a kind (not those of other installed packages)."""
    return sorted(
        name
        for name, ep in _entries(kind).items()
        if ep.dist is not None and ep.dist.name == "syncx"
    )


def load(kind: Kind, name: str) -> type[Reader] | type[Writer]:
    """The plugin class for ``name``, or an error that lists the known names."""
    plugins = _entries(kind)
    key = canonical_name(kind, name)
    if key not in plugins:
        hint = difflib.get_close_matches(key, list(plugins), n=1)
        did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
        listed = ", ".join(sorted(plugins)) or "none installed"
        msg = f"unknown {kind} '{name}'{did_you_mean}; known {kind}s: {listed}"
        raise PluginNotFoundError(msg)
    entry = plugins[key]
    loaded = entry.load()
    if not isinstance(loaded, type) or not issubclass(loaded, (Reader, Writer)):
        msg = f"{kind} plugin '{key}' ({entry.value}) is not a syncx {kind} class"
        raise PluginNotFoundError(msg)
    return loaded


def require(module: str, extra: str, plugin: str) -> ModuleType:
    """Import a plugin's optional driver, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        msg = (
            f"{plugin} needs the Python package '{exc.name or module}', which is not installed: "
            f"pip install 'syncx[{extra}]'"
        )
        raise JobFileError(msg) from exc
