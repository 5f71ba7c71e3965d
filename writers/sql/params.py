"""``parameter`` of ``sqlwriter`` (and the base of ``mysqlwriter``'s)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, field_validator

from libs.sql import SqlConnectionParams
from sync.contract import Semantic
from writers.stream import WriterColumn

__all__ = ["SqlWriterParams", "WriteMode"]

WriteMode = Literal["insert", "replace", "update"]


class SqlWriterParams(SqlConnectionParams):
    """``parameter`` of ``sqlwriter``."""

    column: list[WriterColumn | str] | None = Field(
        default=None,
        description="Target columns, matched to the incoming columns by position; "
        "default: the incoming column names.",
    )
    write_mode: WriteMode = Field(
        default="insert",
        validation_alias=AliasChoices("writeMode", "mode", "write_mode"),
        description="insert | replace | update (both upsert on updateKey).",
    )
    update_key: list[str] | None = Field(
        default=None,
        validation_alias=AliasChoices("updateKey", "uniqueKey", "update_key", "unique_key"),
        description='Key columns for replace/update: ["id"] or ChunJun\'s {"key": ["id"]}; '
        "default: the primary key.",
    )
    batch_size: Annotated[int, Field(gt=0)] = Field(
        default=1024, description="Rows per INSERT statement (executemany)."
    )
    pre_sql: list[str] = Field(
        default_factory=list, description="Statements run before a fresh run (never on restore)."
    )
    post_sql: list[str] = Field(
        default_factory=list, description="Statements run once after the final commit."
    )
    semantic: Semantic = Field(
        default="exactly-once",
        description="exactly-once (staging table + commit marker) or at-least-once (direct).",
    )
    key_columns: list[str] | None = Field(
        default=None,
        description="CDC input: the columns changes are applied by (default: the target's "
        "primary key); needed for a target without one.",
    )

    @field_validator("write_mode", mode="before")
    @classmethod
    def _mode_any_case(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("update_key", mode="before")
    @classmethod
    def _chunjun_key_map(cls, value: Any) -> Any:
        """``{"key": ["id"]}`` (ChunJun) or ``"id"`` as a list of column names."""
        if isinstance(value, dict):
            return [column for columns in value.values() for column in columns] or None
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()] or None
        return value or None

    @field_validator("key_columns", mode="before")
    @classmethod
    def _key_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()] or None
        return value or None

    @field_validator("pre_sql", "post_sql", mode="before")
    @classmethod
    def _statements(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [s for s in value if not (isinstance(s, str) and not s.strip())]
        return value

    def column_names(self) -> list[str] | None:
        """The configured target columns, or None (use the incoming names)."""
        if not self.column or self.column == ["*"]:
            return None
        return [c if isinstance(c, str) else c.name for c in self.column]
