"""``parameter`` of ``sqlreader`` (and the base of ``mysqlreader``'s)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from libs.sql import SqlConnectionParams
from sync.model import Params

__all__ = ["SqlColumn", "SqlReaderParams"]


class SqlColumn(Params):
    """A column to read: its name and optionally the ChunJun type to cast it to."""

    name: str
    type: str | None = None


class SqlReaderParams(SqlConnectionParams):
    """``parameter`` of ``sqlreader``."""

    column: list[SqlColumn | str] | str | None = Field(
        default=None, description="Columns to read: names or {name, type}; `*` or absent = all."
    )
    where: str | None = Field(default=None, description="SQL condition, inserted as written.")
    custom_sql: str | None = Field(
        default=None, description="A query to read instead of a table (see the module docs)."
    )
    split_pk: str | None = Field(
        default=None, description="Numeric column whose range is split over reader channels."
    )
    fetch_size: Annotated[int, Field(gt=0)] = Field(
        default=4096, description="Rows per page (at most the runtime's batch size)."
    )
    query_time_out: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="Seconds a statement may run (PostgreSQL statement_timeout)."
    )
    request_accumulator_interval: int | None = Field(
        default=None, description="Accepted for ChunJun compatibility (ignored)."
    )

    @field_validator("where", "custom_sql", "split_pk", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("fetch_size", mode="before")
    @classmethod
    def _chunjun_min_value_is_default(cls, value: Any) -> Any:
        """ChunJun's default ``Integer.MIN_VALUE`` (MySQL streaming) means "the default" here."""
        return 4096 if isinstance(value, int) and value <= 0 else value

    @model_validator(mode="after")
    def _table_or_query(self) -> SqlReaderParams:
        if self.custom_sql is None and self.table_name() is None:
            msg = "give `table` (or connection[0].table) or `customSql`"
            raise ValueError(msg)
        return self

    def column_specs(self) -> list[SqlColumn] | None:
        """The columns asked for, or None for all of them."""
        raw = self.column
        if raw is None or raw == "*":
            return None
        if isinstance(raw, str):
            return [SqlColumn(name=raw)]
        specs = [SqlColumn(name=c) if isinstance(c, str) else c for c in raw]
        if len(specs) == 1 and specs[0].name == "*":
            return None
        return specs
