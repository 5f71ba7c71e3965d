"""``parameter`` of ``mysqlreader`` (ChunJun's names; see the package docs)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator

from libs.mysql.connect import DEFAULT_READ_TIMEOUT, MysqlEndpoint
from libs.types import arrow_type
from readers.sql import SqlColumn, SqlReaderParams

__all__ = ["MysqlColumn", "MysqlReaderParams"]


class MysqlColumn(SqlColumn):
    """A column to read: ``name``, and ChunJun's optional ``type``, ``format``, ``value``."""

    format: str | None = Field(
        default=None, description="Java date pattern (yyyy-MM-dd HH:mm:ss) of a string column."
    )
    value: str | None = Field(
        default=None,
        description="A constant column when the table has no such column, else the value of NULLs.",
    )

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            arrow_type(value)
        return value or None


class MysqlReaderParams(MysqlEndpoint, SqlReaderParams):
    """``parameter`` of ``mysqlreader`` (ChunJun's names; see the module docs)."""

    column: list[MysqlColumn | str] | str | None = Field(  # type: ignore[assignment]
        default=None,
        description="Columns: names, `*`, or {name, type, format, value}; absent = all.",
    )
    split_strategy: Literal["range", "mod"] = Field(
        default="range", description="range (key ranges per channel) or mod (MOD(splitPk, n))."
    )
    incre_column: str | int | None = Field(
        default=None, description="Incremental column: a name, or an index into `column`."
    )
    start_location: str | None = Field(
        default=None, description="First run: read rows after this increColumn value."
    )
    use_max_func: bool = Field(
        default=False,
        description="Take MAX(increColumn) at the start as the upper bound of this run.",
    )
    polling: bool = Field(default=False, description="Keep running, reading new rows as they come.")
    polling_interval: Annotated[int, Field(gt=0)] = Field(
        default=5000, description="Milliseconds between polls."
    )
    order_by_column: str | None = Field(
        default=None, description="Column to order and paginate by when there is no key."
    )
    driver: Literal["auto", "connectorx", "mysqlclient", "pymysql"] = Field(
        default="auto",
        description="auto (connectorx, else mysqlclient, else pymysql) or one of them.",
    )
    page_size: Annotated[int, Field(gt=0)] = Field(
        default=50_000,
        validation_alias=AliasChoices("pageSize", "page_size"),
        description="Rows per keyset query (each streamed in batches of fetchSize).",
    )
    read_timeout: Annotated[float, Field(gt=0)] = Field(
        default=DEFAULT_READ_TIMEOUT,
        description="Seconds to wait for the server's next bytes (connectorx: for a whole "
        "page) before the connection counts as lost and is retried: a stalled network is "
        "detected. `queryTimeOut`, when given, takes its place.",
    )

    @field_validator("incre_column", "start_location", "order_by_column", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("split_strategy", "driver", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _incremental_needs_column(self) -> MysqlReaderParams:
        if self.incre_column is None:
            for name, given in (
                ("polling", self.polling),
                ("startLocation", self.start_location is not None),
                ("useMaxFunc", self.use_max_func),
            ):
                if given:
                    msg = f"`{name}` needs `increColumn` (the column that grows)"
                    raise ValueError(msg)
        index = self.incre_index()
        if index is not None:
            specs = self.column_specs()
            if specs is None:
                msg = "`increColumn` as a number indexes `column`, which lists no columns"
                raise ValueError(msg)
            if not 0 <= index < len(specs):
                msg = f"`increColumn` {index} is outside `column` ({len(specs)} columns)"
                raise ValueError(msg)
        if self.custom_sql is not None and self.column_specs() is None:
            return self  # ChunJun wants the columns named; syncx reads the query's own
        return self

    def effective_read_timeout(self) -> float:
        """The read timeout of every connection: ``queryTimeOut`` if given, else
        ``readTimeout``."""
        return self.query_time_out or self.read_timeout

    def incre_index(self) -> int | None:
        """``increColumn`` as an index into ``column``, when it is a number."""
        raw = self.incre_column
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().isdigit():
            return int(raw.strip())
        return None

    def incre_name(self) -> str | None:
        """``increColumn`` as a column name."""
        index = self.incre_index()
        if index is not None:
            specs = self.column_specs()
            assert specs is not None
            return specs[index].name
        return None if self.incre_column is None else str(self.incre_column).strip()
