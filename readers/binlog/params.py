"""``binlogreader``'s parameters (ChunJun's spellings) and the tables they select."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, field_validator

from libs.cdc import Layout
from libs.mysql.connect import MysqlServer
from sync.errors import ConfigIssue, JobFileError
from sync.model import Params, regex

__all__ = ["PARAM_PATH", "PLUGIN", "BinlogReaderParams", "BinlogStart", "Selection", "selection"]

PLUGIN = "binlogreader"
PARAM_PATH = "job.content[0].reader.parameter"
SYSTEM_DATABASES = frozenset({"mysql", "information_schema", "performance_schema", "sys"})
TRANSACTION_BUFFER_BYTES = 64 * 1024 * 1024
"""``transactionBufferBytes``: how much of an open transaction's changes stays in memory."""
SYNCX_TABLE_PREFIX = "_syncx_"
"""syncx's own staging and marker tables are never captured."""


class BinlogStart(Params):
    """``start`` / ``stopAt``: a binlog file and position, a timestamp, or a GTID set."""

    journal_name: str | None = Field(
        default=None,
        validation_alias=AliasChoices("journalName", "journal-name", "journal_name", "file"),
        description="Binlog file name (from its start unless `position` is given).",
    )
    position: int | None = Field(
        default=None,
        validation_alias=AliasChoices("position", "pos"),
        description="Position in the file (a transaction boundary).",
    )
    timestamp: int | None = Field(
        default=None,
        description="Epoch milliseconds (seconds accepted): the first transaction at or after it.",
    )
    gtid: str | None = Field(
        default=None,
        validation_alias=AliasChoices("gtid", "gtidSet", "gtid_set"),
        description="GTID set to start after (MariaDB 0-1-100, MySQL uuid:1-100).",
    )

    def is_empty(self) -> bool:
        """ChunJun writes ``start: {}`` for "from the current position"."""
        return (
            self.journal_name is None
            and self.position is None
            and self.timestamp is None
            and self.gtid is None
        )


class BinlogReaderParams(MysqlServer):
    """``parameter`` of ``binlogreader`` (ChunJun's names, plus ``snapshot``/``ddl``/``stopAt``).

    The server and login (``jdbcUrl``, ``host``, ``port``, ``username``, ``password``) are the
    MySQL endpoint model's; the user needs REPLICATION SLAVE, REPLICATION CLIENT (BINLOG MONITOR)
    and SELECT.
    """

    db_schema: str | None = Field(
        default=None, alias="schema", description="Default database (ChunJun spelling)."
    )
    table: list[str] = Field(
        default_factory=list, description="Tables to capture, `db.table` (or `table`)."
    )
    filter: str | None = Field(
        default=None, description="Regex on `db.table`, used when `table` is empty."
    )
    cat: str | None = Field(
        default=None, description="Changes to emit: insert,update,delete (default all)."
    )
    start: BinlogStart | None = Field(default=None, description="Where to start (default: now).")
    paving_data: bool = Field(
        default=True, description="ChunJun's flat layout; false: Debezium-style envelope."
    )
    split_update: bool = Field(
        default=False, description="Paving: an update as UPDATE_BEFORE + UPDATE_AFTER."
    )
    slave_id: int | None = Field(
        default=None,
        validation_alias=AliasChoices("slaveId", "serverId", "slave_id", "server_id"),
        description="Replica server id (default: random), unique among replicas.",
    )
    is_gtid_mode: bool = Field(
        default=False,
        validation_alias=AliasChoices("isGTIDMode", "isGtidMode", "is_gtid_mode"),
        description="Resume by GTID on MySQL (MariaDB always does; MySQL also when gtid_mode=ON).",
    )
    ddl_skip: bool | None = Field(default=None, description="ChunJun: true = ddl skip.")
    ddl: Literal["skip", "fail", "apply"] | None = Field(
        default=None, description="DDL on captured tables: skip (default), fail, apply."
    )
    snapshot: Literal["initial", "never", "when_needed"] = Field(
        default="never",
        description="initial: copy the tables first, then stream from that point; "
        "when_needed: also when the saved position was purged.",
    )
    stop_at: Literal["now"] | int | BinlogStart | None = Field(
        default=None,
        description="Bounded run: `now` (the binlog end at start), a timestamp (ms) or "
        "{journalName, position}.",
    )
    reconnect_timeout: float = Field(
        default=300, gt=0, description="Seconds to keep reconnecting before the job fails."
    )
    read_timeout: float = Field(
        default=30,
        gt=0,
        description="Seconds without any byte from the server (it sends a heartbeat every "
        "0.25 s) before the connection counts as stalled and is opened again.",
    )
    transaction_buffer_bytes: Annotated[int, Field(gt=0)] = Field(
        default=TRANSACTION_BUFFER_BYTES,
        description="Bytes of changes (as Arrow batches) an open source transaction holds in "
        "memory until its commit; past that they wait in a spill file (an unlinked file in the "
        "state folder's tmp/).",
    )
    column: list[Any] | None = Field(
        default=None, description="Accepted for ChunJun compatibility (informational)."
    )
    connection_charset: str | None = Field(default=None, description="Ignored (always utf8mb4).")
    detecting_enable: bool | None = Field(
        default=None, description="Ignored (the server heartbeat is always on)."
    )
    detecting_sql: str | None = Field(default=None, description="Ignored.")
    enable_tsdb: bool | None = Field(
        default=None, description="Ignored (row events carry their table layout)."
    )
    buffer_size: int | None = Field(default=None, description="Ignored.")
    parallel: bool | None = Field(default=None, description="Ignored.")
    parallel_thread_size: int | None = Field(default=None, description="Ignored.")

    @field_validator("table", mode="before")
    @classmethod
    def _one_table(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value or []

    @field_validator("filter", "cat", "database", "db_schema", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("snapshot", mode="before")
    @classmethod
    def _snapshot_spelling(cls, value: Any) -> Any:
        return value.strip().lower().replace("-", "_") if isinstance(value, str) else value

    @field_validator("filter")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return regex(value)

    @field_validator("cat")
    @classmethod
    def _cats(cls, value: str | None) -> str | None:
        if value is not None:
            unknown = {c.strip().lower() for c in value.split(",") if c.strip()} - {
                "insert",
                "update",
                "delete",
            }
            if unknown:
                msg = f"unknown change type(s) {sorted(unknown)}; use insert, update, delete"
                raise ValueError(msg)
        return value

    # -- resolved values ---------------------------------------------------------------------

    def ddl_policy(self) -> Literal["skip", "fail", "apply"]:
        """``ddl``, else ChunJun's ``ddlSkip`` (true, the default: skip; false: fail)."""
        if self.ddl is not None:
            return self.ddl
        return "skip" if self.ddl_skip in (None, True) else "fail"

    def categories(self) -> frozenset[str]:
        """The change types to emit (``cat``)."""
        if self.cat is None:
            return frozenset({"insert", "update", "delete"})
        return frozenset(c.strip().lower() for c in self.cat.split(",") if c.strip())

    def layout(self) -> Layout:
        """``paving`` or ``envelope``."""
        return "paving" if self.paving_data else "envelope"


# -- table selection ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Which ``db.table`` s are captured."""

    exact: frozenset[tuple[str, str]] | None
    pattern: re.Pattern[str] | None
    databases: frozenset[str] | None
    """The databases that can match (None: any), for the stream's schema filter."""

    def __contains__(self, item: tuple[str, str]) -> bool:
        db, table = item
        if table.startswith(SYNCX_TABLE_PREFIX):
            return False
        if self.exact is not None:
            return item in self.exact
        if self.pattern is not None:
            return self.pattern.fullmatch(f"{db}.{table}") is not None
        if self.databases is not None:
            return db in self.databases
        return db not in SYSTEM_DATABASES


def selection(params: BinlogReaderParams) -> Selection:
    """The tables ``table`` / ``filter`` (or the default database) select."""
    default_db = params.database or params.db_schema or params.default_database()
    if params.table:
        exact = set()
        for name in params.table:
            db, dot, table = name.partition(".")
            if not dot:
                if default_db is None:
                    msg = (
                        f"table '{name}' names no database and neither jdbcUrl nor "
                        "database/schema gives one; write it as db.table"
                    )
                    raise JobFileError([ConfigIssue(f"{PARAM_PATH}.table", msg)])
                db, table = default_db, name
            exact.add((db.strip("`"), table.strip("`")))
        return Selection(frozenset(exact), None, frozenset(db for db, _ in exact))
    if params.filter is not None:
        return Selection(None, re.compile(params.filter), None)
    if default_db is not None:
        return Selection(None, None, frozenset({default_db}))
    return Selection(None, None, None)
