"""``sqlreader``'s typed split data and positions (:class:`~sync.contract.State` s).

Their stored forms are the plain dicts earlier versions wrote (``{"after": 5}``,
``{"mode": "keyset", "key": "id", "range": ..., "nulls": false}``) plus ``"v"``, so checkpoints
of those versions restore unchanged. A position stores only the fields it has.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from sync.contract import State

__all__ = ["Mode", "SqlPosition", "SqlSplit", "as_state"]

Mode = Literal["keyset", "stream", "custom", "poll"]


@dataclass(frozen=True, kw_only=True)
class SqlSplit(State):
    """What a split reads: by keyset pagination (``key``, optionally a ``range`` of the range
    column, reading the NULL keys first when ``nulls``), or one ordered ``stream``, or the
    ``custom`` query."""

    mode: Mode
    key: str | None = None
    """The keyset column."""
    range: dict[str, Any] | None = None
    """``{column, lo, loInclusive, hi, hiInclusive}`` (``None`` bounds are open)."""
    nulls: bool = False
    """Whether this split reads the rows whose key is NULL first."""


@dataclass(frozen=True, kw_only=True)
class SqlPosition(State):
    """Where a split is: ``nulls`` NULL-key rows emitted, then after the key value ``after``
    (:func:`libs.sql.encode_value` form), or ``offset`` rows of an ordered stream. No field
    set: at the start."""

    after: Any = None
    nulls: int | None = None
    offset: int | None = None

    @property
    def in_keyset(self) -> bool:
        """Whether the split is in its keyset phase."""
        return self.after is not None

    def to_json(self) -> dict[str, Any]:
        """The stored form: only the fields that are set."""
        return {k: v for k, v in super().to_json().items() if v is not None}


S = TypeVar("S", bound=State)


def as_state(kind: type[S], value: S | State | Mapping[str, Any] | None) -> S | None:
    """``value`` as ``kind``: a stored (plain) form is rebuilt, ``None`` stays ``None``."""
    if value is None or isinstance(value, kind):
        return value
    if isinstance(value, State):  # another reader's type (a wrapper's): via its stored form
        return kind.from_json(value.to_json())
    return kind.from_json(value)
