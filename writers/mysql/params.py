"""``parameter`` of ``mysqlwriter`` (ChunJun's names; see the package docs)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AliasChoices, Field, model_validator

from libs.mysql.connect import MysqlEndpoint
from libs.mysql.stall import DEFAULT_STALL_TIMEOUT
from libs.sql import jdbc_property
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
    read_timeout: Annotated[float, Field(gt=0)] = Field(
        default=DEFAULT_STALL_TIMEOUT,
        description="Seconds a statement waits for the server's answer before the server is "
        "asked, on a connection of its own, whether it still runs it: if not, the connection "
        "stalled and counts as lost (retried, or the job restarts); a slow statement (LOAD "
        "DATA, XA COMMIT, a DDL) is never cut. A `socketTimeout` (milliseconds) in the jdbcUrl "
        "takes its place when this is not given.",
    )
    fullcolumn: list[str] | None = Field(
        default=None, description="ChunJun's full column list (accepted, not needed)."
    )
    flush_interval_mills: int | str | None = Field(
        default=None, description="Accepted for ChunJun compatibility: commits follow checkpoints."
    )

    @model_validator(mode="after")
    def _socket_timeout_is_milliseconds(self) -> MysqlWriterParams:
        self.stall_timeout()
        return self

    def stall_timeout(self) -> float:
        """Seconds before a waiting statement's connection is checked for a stall:
        ``readTimeout`` if given, else the jdbcUrl's ``socketTimeout`` (milliseconds; 0, JDBC's
        "no timeout", means the default: the check never cuts a running statement), else the
        default."""
        if "read_timeout" in self.model_fields_set:
            return self.read_timeout
        for text in self.url_texts():
            given = jdbc_property(text, "socketTimeout")
            if given is None:
                continue
            try:
                millis = int(given)
            except ValueError:
                millis = -1
            if millis < 0:
                msg = f"socketTimeout={given} in the jdbcUrl is not a number of milliseconds"
                raise ValueError(msg)
            if millis:
                return millis / 1000
        return self.read_timeout
