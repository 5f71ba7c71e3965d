"""The handles ``prepare`` returns: typed :class:`~sync.contract.State` s, one class per kind.

Every handle names its work by job, run, subtask, checkpoint and segment (the commit marker's
key). Its stored form carries ``"kind"``; :meth:`SqlHandle.from_json` rebuilds the class of that
kind, so one ``handle_type`` restores every kind a writer may have left in a checkpoint. The
stored form is the one earlier versions wrote as plain dicts (staged rows had no ``kind``), so
their checkpoints restore unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from sync.contract import State, StateVersionError

__all__ = ["CdcEntry", "CdcHandle", "RowsHandle", "SqlHandle"]


@dataclass(frozen=True, kw_only=True)
class SqlHandle(State):
    """A prepared segment of one writer subtask. As a ``handle_type`` it rebuilds any kind in
    :attr:`KINDS`; each kind is a subclass."""

    job: str
    run: str
    subtask: int
    checkpoint: int
    segment: str
    schema: str | None = None
    """Schema of the staging and marker tables."""

    kind: ClassVar[str] = ""
    """The ``"kind"`` of the stored form (empty: this class only dispatches)."""
    KINDS: ClassVar[Mapping[str, type[SqlHandle]]] = {}
    """The kinds :meth:`from_json` rebuilds."""

    def to_json(self) -> dict[str, Any]:
        """The stored form: the fields, ``"v"`` and ``"kind"``."""
        return {**super().to_json(), "kind": self.kind}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Self:
        """Rebuild a stored handle as the class of its kind (no kind: staged rows)."""
        data = dict(raw)
        kind = data.pop("kind", None)
        if cls.kind:
            if kind is not None and kind != cls.kind:
                msg = f"a {kind!r} handle cannot be read as a {cls.kind!r} one"
                raise StateVersionError(msg)
            return super().from_json(data)
        target = cls.KINDS.get(str(kind or RowsHandle.kind))
        if target is None:
            known = ", ".join(sorted(cls.KINDS))
            msg = f"{cls.__name__}: unknown handle kind {kind!r} in the checkpoint (known: {known})"
            raise StateVersionError(msg)
        return target.from_json(data)  # type: ignore[return-value]


@dataclass(frozen=True, kw_only=True)
class RowsHandle(SqlHandle):
    """Rows staged for the job's table (``sqlwriter``, exactly-once)."""

    table: str
    """The staging table."""
    columns: list[str]
    """The target columns the segment wrote, in the target's order."""

    kind: ClassVar[str] = "rows"


@dataclass(frozen=True)
class CdcEntry:
    """The changes a segment staged for one target table: ``seq`` from ``low`` to ``high``."""

    table: str
    staging: str
    columns: list[str]
    key: list[str]
    seq: list[int]
    """``[low, high]``, both inclusive."""

    def to_json(self) -> dict[str, Any]:
        """The stored form (a JSON object)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class CdcHandle(SqlHandle):
    """CDC changes staged per target table (``sqlwriter``, exactly-once), in order."""

    targets: tuple[CdcEntry, ...]
    deferred: int = 0
    """Records deferred behind a DDL, replayed after the commit (:mod:`writers.sql.deferred`)."""

    kind: ClassVar[str] = "cdc"

    def __post_init__(self) -> None:
        entries = tuple(e if isinstance(e, CdcEntry) else CdcEntry(**e) for e in self.targets)
        object.__setattr__(self, "targets", entries)

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "targets": [e.to_json() for e in self.targets]}


SqlHandle.KINDS = {RowsHandle.kind: RowsHandle, CdcHandle.kind: CdcHandle}
