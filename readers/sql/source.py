"""What a ``sqlreader`` split reads from: a table or a ``customSql`` subquery, its columns and keys."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from sqlalchemy.sql import ColumnElement, FromClause

from libs.sql import TableInfo

__all__ = ["START", "KeyColumn", "Source", "SourceColumn", "infer_batch"]


@dataclass(frozen=True)
class SourceColumn:
    """A column the reader selects: its SQL expression, and how it becomes Arrow."""

    name: str
    expr: ColumnElement[Any]
    field: pa.Field | None
    """The Arrow field values are built as (None: inferred per page, customSql without types)."""
    converter: Any = None
    orderable: bool = True
    nullable: bool = True


@dataclass(frozen=True)
class KeyColumn:
    """The keyset column (or the range column): expression and what is known about it."""

    name: str
    expr: ColumnElement[Any]
    unique: bool
    nullable: bool
    numeric: bool | None
    """True/False from reflection; None when unknown (customSql)."""


@dataclass(frozen=True)
class Source:
    """What a split reads from: a table or a customSql subquery, its columns, its keys."""

    from_: FromClause
    describe: str
    columns: list[SourceColumn]
    key: KeyColumn | None
    range: KeyColumn | None
    declared: pa.Schema | None
    """The batch schema after the ``column[].type`` casts (None when types are inferred)."""
    table: TableInfo | None = None

    @property
    def hidden_key(self) -> bool:
        """Whether the key is selected only to paginate (not one of the output columns)."""
        return self.key is not None and all(c.name != self.key.name for c in self.columns)

    @property
    def key_index(self) -> int:
        """Where the key is in a fetched row."""
        assert self.key is not None
        for index, column in enumerate(self.columns):
            if column.name == self.key.name:
                return index
        return len(self.columns)

    def select_list(self) -> list[ColumnElement[Any]]:
        """Output columns, then the key when it is not one of them."""
        exprs = [c.expr for c in self.columns]
        if self.key is not None and self.hidden_key:
            exprs.append(self.key.expr)
        return exprs


START = object()
"""No key value yet: the split's first page."""


def infer_batch(
    rows: Sequence[Sequence[Any]], names: list[str]
) -> tuple[pa.RecordBatch, list[Any]]:
    """A batch with Arrow-inferred types (customSql without declared types)."""
    width = len(names)
    columns = list(zip(*rows, strict=False))[:width] if rows else [() for _ in names]
    arrays = []
    for values in columns:
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            arrays.append(
                pa.array([None if v is None else str(v) for v in values], type=pa.string())
            )
    return pa.RecordBatch.from_arrays(arrays, names=names), []
