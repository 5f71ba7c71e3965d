"""``parameter`` of ``mysqlwriter`` (ChunJun's names; see the package docs)."""

from __future__ import annotations

from pydantic import AliasChoices, Field

from libs.mysql.connect import MysqlEndpoint
from sync.contract import Semantic
from writers.sql import SqlWriterParams

__all__ = ["MysqlWriterParams"]


class MysqlWriterParams(MysqlEndpoint, SqlWriterParams):
    """``parameter`` of ``mysqlwriter`` (ChunJun's names; see the module docs)."""

    semantic: Semantic = Field(
        default="at-least-once",
        description="at-least-once (one transaction per checkpoint; ChunJun's default) or "
        "exactly-once (XA: prepared at the checkpoint, committed after it).",
    )
    batch_size: int = Field(
        default=1024, gt=0, description="Rows per INSERT statement (LOAD DATA takes a batch)."
    )
    load_data: bool = Field(
        default=True,
        validation_alias=AliasChoices("loadData", "load_data"),
        description="Use LOAD DATA LOCAL INFILE for insert/replace (the fast path).",
    )
    fullcolumn: list[str] | None = Field(
        default=None, description="ChunJun's full column list (accepted, not needed)."
    )
    flush_interval_mills: int | str | None = Field(
        default=None, description="Accepted for ChunJun compatibility: commits follow checkpoints."
    )
