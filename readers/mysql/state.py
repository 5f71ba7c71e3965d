"""``mysqlreader``'s typed split data and positions, and the incremental watermark.

Stored forms are those of earlier versions plus ``"v"``; split data of version 1 named the
incremental bounds ``from`` and ``to`` (now ``start`` and ``stop``) and is upgraded on restore.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from libs.sql import decode_value, encode_value
from readers.sql import SqlPosition, SqlSplit

__all__ = [
    "BOUNDARY_KEYS",
    "JOB_STATE_VERSION",
    "MysqlPosition",
    "MysqlSplit",
    "Watermark",
    "plain",
    "sort_key",
]

BOUNDARY_KEYS = 1000
"""Keys of rows at the watermark value kept in the state; beyond, the largest key only."""
JOB_STATE_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class MysqlSplit(SqlSplit):
    """:class:`SqlSplit`, plus ChunJun's ``mod`` strategy and an incremental run's bounds."""

    VERSION: ClassVar[int] = 2

    mod: dict[str, Any] | None = None
    """``{column, n, i}``: this split reads ``MOD(column, n) = i``."""
    start: dict[str, Any] | None = None
    """The watermark read before (:meth:`Watermark.to_json`): rows after it are read. Polling:
    where the cursor starts."""
    stop: Any = None
    """``useMaxFunc``: the largest increColumn value this run reads (encoded)."""

    @classmethod
    def upgrade(cls, data: dict[str, Any], version: int) -> dict[str, Any]:
        """Version 1 (plain dicts) named the bounds ``from`` and ``to``."""
        if version == 1:
            data = dict(data)
            if "from" in data:
                data["start"] = data.pop("from")
            if "to" in data:
                data["stop"] = data.pop("to")
            return data
        return super().upgrade(data, version)


@dataclass(frozen=True, kw_only=True)
class MysqlPosition(SqlPosition):
    """:class:`SqlPosition`, plus the watermark of an incremental run (``inc``) or the cursor
    of a polling split (``poll``)."""

    inc: dict[str, Any] | None = None
    poll: dict[str, Any] | None = None


@dataclass
class Watermark:
    """How far an incremental read got: rows with ``inc < value`` were read, and rows with
    ``inc == value`` whose key is in ``keys`` (or ``<= key_max`` after more than
    :data:`BOUNDARY_KEYS` of them). ``inclusive`` False: every row with ``inc == value`` was
    read (no key to tell them apart)."""

    value: Any = None
    keys: set[Any] = field(default_factory=set)
    key_max: Any = None
    inclusive: bool = True
    seen: bool = False
    """Whether ``value`` is set (a NULL-free max was observed or given)."""

    def update(self, inc: pa.Array, tie: pa.Array | None) -> None:
        """Take in one emitted batch's ``increColumn`` values and keys."""
        if len(inc) == 0 or inc.null_count == len(inc):
            return
        top = pc.max(inc)
        value = plain(top.as_py())
        if not self.seen or value > self.value:
            self.value, self.keys, self.key_max, self.seen = value, set(), None, True
        if value != self.value:
            return
        if tie is None:
            self.inclusive = False
            return
        at = pc.equal(inc, top)
        ties = [plain(v) for v in tie.filter(pc.fill_null(at, False)).to_pylist()]
        self._add_keys([v for v in ties if v is not None])

    def _add_keys(self, keys: Sequence[Any]) -> None:
        if self.key_max is not None:
            self.key_max = max([self.key_max, *keys])
            return
        self.keys.update(keys)
        if len(self.keys) > BOUNDARY_KEYS:
            self.key_max = max(self.keys)
            self.keys = set()

    def merge(self, other: Watermark) -> None:
        """Combine with another split's (or the previous run's) watermark."""
        if not other.seen:
            return
        if not self.seen or other.value > self.value:
            self.value, self.keys, self.key_max = other.value, set(other.keys), other.key_max
            self.inclusive, self.seen = other.inclusive, True
            return
        if other.value == self.value:
            self.inclusive = self.inclusive and other.inclusive
            if other.key_max is not None:
                self._add_keys([other.key_max])
                if self.key_max is None:
                    self.key_max = max([other.key_max, *self.keys])
                    self.keys = set()
            self._add_keys(sorted(other.keys, key=repr))

    def to_json(self) -> dict[str, Any]:
        """The form kept in positions and in the job's state."""
        out: dict[str, Any] = {"value": encode_value(self.value), "inclusive": self.inclusive}
        if self.key_max is not None:
            out["keyMax"] = encode_value(self.key_max)
        else:
            out["keys"] = [encode_value(k) for k in sorted(self.keys, key=sort_key)]
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> Watermark:
        """Rebuild a watermark stored by :meth:`to_json` (``None``: nothing read yet)."""
        if not raw:
            return cls()
        key_max = raw.get("keyMax")
        return cls(
            value=decode_value(raw["value"]),
            keys={decode_value(k) for k in raw.get("keys") or []},
            key_max=None if key_max is None else decode_value(key_max),
            inclusive=bool(raw.get("inclusive", True)),
            seen=True,
        )


def plain(value: Any) -> Any:
    """Comparable, JSON-encodable Python values (UTC-naive datetimes)."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def sort_key(value: Any) -> tuple[str, Any]:
    return (type(value).__name__, value)


# -- the reader ---------------------------------------------------------------------------------
