"""``binlogreader``: MySQL/MariaDB row changes from the binary log, as CDC batches.

Built on ``mysql-replication`` (extra ``binlog``). ChunJun's parameters are accepted as ChunJun
spells them: ``jdbcUrl`` or ``host``/``port``, ``username``, ``password``, ``table`` (``db.table``
list), ``filter`` (a regex on ``db.table``, used when ``table`` is absent; with neither, every
table of the jdbcUrl's database), ``cat`` (``insert,update,delete``), ``start``
(``journalName``/``journal-name`` + ``position``, ``timestamp`` in ms, ``gtid``),
``pavingData``, ``splitUpdate``, ``slaveId``/``serverId``, ``isGTIDMode``, ``ddlSkip``; and
syncx's own ``snapshot``, ``ddl``, ``stopAt``. The batch layouts are described in
:mod:`libs.cdc`.

**The server** must log ROW images with column names: ``log_bin``, ``binlog_format=ROW``,
``binlog_row_image=FULL``, ``binlog_row_metadata=FULL`` (MariaDB ≥ 10.5, MySQL ≥ 8.0.14).
``check()`` says which setting to change, and which privilege the user lacks (REPLICATION SLAVE,
REPLICATION CLIENT / BINLOG MONITOR, SELECT).

**Positions** are taken at transaction boundaries only: after the XID (or COMMIT, or the DDL
statement) of the last transaction whose rows were all emitted. A position is
``{file, pos, gtid, ts, emitted}``: the binlog coordinates and the GTID state after that
transaction (MariaDB ``domain-server-seq`` list, MySQL's executed GTID set), and ``emitted``, a
count per table of changes after the boundary that were already emitted. The count exists
because the changes of a flush window (many transactions, many tables) leave as one batch *per
table*, and a checkpoint may fall between two of them: on restore the reader starts at the
boundary and drops, per table, that many changes, so nothing is emitted twice and nothing is
skipped. A window is never closed before those changes were dropped again. MariaDB resumes by
GTID (``mysql-replication`` ignores file/pos there), MySQL by GTID set when GTID mode is on,
else by file/pos. A lost connection, a server restart or a binlog rotation resume the same way
from the last emitted position, with backoff (0.5 s doubling to 10 s, for ``reconnectTimeout``
seconds, then the job fails as retriable and ``setting.restart`` takes over).

**Snapshot and handover** (``snapshot: initial | when_needed | never``). ``plan()`` opens
``START TRANSACTION WITH CONSISTENT SNAPSHOT`` and reads the snapshot's binlog position from
``binlog_snapshot_file/position`` (MariaDB; MySQL: a short ``FLUSH TABLES WITH READ LOCK``
around ``SHOW MASTER STATUS``), the GTID with ``BINLOG_GTID_POS``: that is the handover position
*P*, taken before any row is copied and without a global lock on MariaDB. The splits are then,
in this order: the tables' snapshot splits (the MySQL reader's key ranges,
:class:`readers.mysql.MysqlReader`: keyset pagination in parallel, resumable after their last
key, its fast drivers; rows become ``r`` changes), and the stream split, which starts at *P*. Each snapshot page sees the table at some moment after
*P*; the stream replays every change from *P* on, and since changes carry full row images and
are applied by key, the target converges to the source exactly (no row lost, none doubled)
however late a page was read — also after a restore in the middle of the snapshot, whose
remaining pages are read later still. What must hold is order: a key's snapshot row must be
applied before the stream's changes of that key. So the stream split emits nothing before
every snapshot split is done *and covered by a stored checkpoint* (commits of checkpoint *n* at
every writer precede those of *n* + 1, so snapshot rows are visible before any streamed change):
with one reader channel it simply runs after the snapshot splits; with several it watches the
job's checkpoints until one records every snapshot split done (that needs checkpoints:
``setting.restore.isRestore``). ``when_needed`` snapshots when there is no position to resume
from or it was purged from the server. A bounded run (``stopAt``) saves its end position as the
job's incremental state, so the next run (``--restore latest-or-new``) continues from there
without a new snapshot.

**DDL** (``ddl: skip | fail | apply``; ChunJun's ``ddlSkip: true`` is ``skip``, the default):
statements on captured tables are logged and skipped, stop the job with the statement and its
position, or travel as DDL batches to a writer that applies them (``sqlwriter``/
``mysqlwriter``). Row events carry their table's columns (``binlog_row_metadata=FULL``), so the
layout of every change is right whatever happened before.

**Bounded runs** (``stopAt``): ``now`` reads up to the binlog end at start time; a
``{journalName, position}`` up to there; a timestamp (ms) up to the first transaction after it.
The run then ends (exit 0) with its position saved.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import logging
import random
import re
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from sqlalchemy.engine import URL
from typing_extensions import override

from libs.cdc import (
    Layout,
    SourceInfo,
    TableLayout,
    build_changes,
    ddl_batch,
    envelope_schema,
    parse_ddl,
    paving_schema,
)
from libs.mysql.connect import connect, connection_settings, errno, mysql_url
from libs.sql import scrub, strip_password
from sync.contract import (
    CompletedCheckpoint,
    DirtyRecord,
    Estimate,
    JobContext,
    Position,
    Reader,
    Split,
    SplitReader,
)
from sync.errors import ConfigIssue, JobFailedError, JobFileError, RetriableError
from sync.model import Params, RestoreSetting, regex
from sync.registry import require

__all__ = ["BinlogReader", "BinlogReaderParams", "BinlogStart"]

log = logging.getLogger(__name__)

PLUGIN = "binlogreader"
PARAM_PATH = "job.content[0].reader.parameter"
SYSTEM_DATABASES = frozenset({"mysql", "information_schema", "performance_schema", "sys"})
SYNCX_TABLE_PREFIX = "_syncx_"
"""syncx's own staging and marker tables are never captured."""

FLUSH_SECONDS = 0.1
"""A flush window closes at the first transaction boundary this long after it opened."""
TICK_SECONDS = 0.5
"""At least this often the stream yields (a batch or an idle tick), so checkpoints proceed."""
HEARTBEAT_SECONDS = 0.25
"""The server sends a heartbeat event after this long without events."""
READ_TIMEOUT = 30
"""Seconds without any byte (heartbeats included) before the connection counts as lost."""


# -- parameters -----------------------------------------------------------------------------------


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


class BinlogReaderParams(Params):
    """``parameter`` of ``binlogreader`` (ChunJun's names, plus ``snapshot``/``ddl``/``stopAt``)."""

    jdbc_url: str | None = Field(
        default=None,
        description="jdbc:mysql://host:port/db: where queries go and the default database.",
    )
    host: str | None = Field(default=None, description="Server to replicate from.")
    port: int | None = Field(default=None, description="Its port (default 3306).")
    username: str | None = Field(
        default=None,
        description="A user with REPLICATION SLAVE, "
        "REPLICATION CLIENT (BINLOG MONITOR) and SELECT.",
    )
    password: SecretStr | None = Field(default=None, description="Secret.")
    database: str | None = Field(default=None, description="Default database (ChunJun).")
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

    @model_validator(mode="before")
    @classmethod
    def _password_out_of_url(cls, data: Any) -> Any:
        """A password in ``jdbcUrl`` moves into the ``password`` secret."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key in ("jdbcUrl", "jdbc_url"):
            raw = data.get(key)
            if isinstance(raw, list):  # ChunJun sometimes writes a one-element list
                raw = raw[0] if raw else None
                data[key] = raw
            if isinstance(raw, str):
                cleaned, secret = strip_password(raw)
                data[key] = cleaned
                if secret and not data.get("password"):
                    data["password"] = secret
        return data

    @field_validator("table", mode="before")
    @classmethod
    def _one_table(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value or []

    @field_validator("jdbc_url", "host", "filter", "cat", "database", "db_schema", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("snapshot", mode="before")
    @classmethod
    def _snapshot_spelling(cls, value: Any) -> Any:
        return value.strip().lower().replace("-", "_") if isinstance(value, str) else value

    @field_validator("jdbc_url")
    @classmethod
    def _jdbc(cls, value: str | None) -> str | None:
        if value is not None:
            mysql_url(value)
        return value

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

    @model_validator(mode="after")
    def _server_given(self) -> BinlogReaderParams:
        if self.host is None and self.jdbc_url is None:
            msg = "give `jdbcUrl` or `host` (and `port`)"
            raise ValueError(msg)
        return self

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


# -- the server -----------------------------------------------------------------------------------


def _pymysql() -> Any:
    return require("pymysql", "binlog", PLUGIN)


def _query(conn: Any, sql: str, args: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


@dataclass(frozen=True)
class _Flavor:
    mariadb: bool
    gtid: bool
    """Resume by GTID (MariaDB always; MySQL with gtid_mode=ON or isGTIDMode)."""
    version: str


def _flavor(conn: Any, params: BinlogReaderParams) -> _Flavor:
    version = str(_query(conn, "SELECT VERSION()")[0][0])
    if "mariadb" in version.lower():
        return _Flavor(True, True, version)
    rows = _query(conn, "SHOW GLOBAL VARIABLES LIKE 'gtid_mode'")
    gtid_on = bool(rows) and str(rows[0][1]).upper() == "ON"
    return _Flavor(False, gtid_on or params.is_gtid_mode, version)


REQUIRED_SETTINGS: dict[str, str] = {
    "log_bin": "ON",
    "binlog_format": "ROW",
    "binlog_row_image": "FULL",
    "binlog_row_metadata": "FULL",
}


def settings_problems(variables: dict[str, str], where: str) -> list[str]:
    """What is wrong with a server's binlog settings for CDC, each with what to change."""
    problems = []
    why = {
        "log_bin": "binary logging is off (start the server with --log-bin and a --server-id)",
        "binlog_format": "row changes are logged as rows only in ROW format",
        "binlog_row_image": "updates and deletes need the whole row before and after",
        "binlog_row_metadata": "row events carry column names only with FULL metadata "
        "(MariaDB >= 10.5, MySQL >= 8.0.14)",
    }
    for name, wanted in REQUIRED_SETTINGS.items():
        value = variables.get(name)
        if value is None or value.upper() != wanted:
            shown = "not available" if value is None else value
            problems.append(
                f"{where}: {name} is {shown}; binlogreader needs {name}={wanted}: {why[name]}. "
                f"Set it in my.cnf [mysqld] ({name}={wanted})"
                + (
                    f" or with SET GLOBAL {name}='{wanted}' (new sessions only)"
                    if name != "log_bin"
                    else ""
                )
                + " and restart the writers"
                + (" (the server)" if name == "log_bin" else "")
            )
    return problems


_GRANT = re.compile(r"^GRANT\s+(.+?)\s+ON\s+(\S+)\s+TO\s", re.IGNORECASE)


def privilege_problems(grants: Sequence[str], databases: Sequence[str], user: str) -> list[str]:
    """Which privileges a replication user lacks, read from ``SHOW GRANTS``.

    Empty when a role is granted (its privileges are not listed; errors at run time tell).
    """
    global_privs: set[str] = set()
    db_privs: dict[str, set[str]] = {}
    for line in grants:
        match = _GRANT.match(line.strip())
        if match is None:
            if re.match(r"^GRANT\s+`[^`]+`(@`[^`]*`)?\s+TO\s", line.strip(), re.IGNORECASE):
                return []  # a role
            continue
        privs = {p.strip().upper() for p in match.group(1).split(",")}
        if "ALL" in privs or "ALL PRIVILEGES" in privs:
            privs |= {"SELECT", "REPLICATION SLAVE", "REPLICATION CLIENT", "SUPER"}
        scope = match.group(2).replace("`", "")
        if scope == "*.*":
            global_privs |= privs
        elif scope.endswith(".*"):
            db_privs.setdefault(scope[:-2], set()).update(privs)
    problems = []
    if not global_privs & {"REPLICATION SLAVE", "REPLICATION REPLICA"}:
        problems.append(
            f"user '{user}' lacks REPLICATION SLAVE (needed to read the binlog): "
            f"GRANT REPLICATION SLAVE ON *.* TO '{user}'"
        )
    if not global_privs & {"REPLICATION CLIENT", "BINLOG MONITOR", "SUPER"}:
        problems.append(
            f"user '{user}' lacks REPLICATION CLIENT (BINLOG MONITOR on MariaDB >= 10.5; needed "
            f"for SHOW MASTER STATUS / SHOW BINARY LOGS): GRANT REPLICATION CLIENT ON *.* TO "
            f"'{user}'"
        )
    if "SELECT" not in global_privs:
        missing = [db for db in databases if "SELECT" not in db_privs.get(db, set())]
        if missing or not databases:
            on = ", ".join(f"{db}.*" for db in missing) if missing else "*.*"
            problems.append(
                f"user '{user}' lacks SELECT on {on} (needed to read table layouts and "
                f"snapshots): GRANT SELECT ON {missing[0] + '.*' if missing else '*.*'} TO "
                f"'{user}'"
            )
    return problems


# -- positions ------------------------------------------------------------------------------------


def _file_index(name: str | None) -> int:
    if not name:
        return -1
    match = re.search(r"(\d+)$", name)
    return int(match.group(1)) if match else -1


def binlog_bytes(sizes: dict[str, int], start: tuple[str, int], end: tuple[str, int]) -> int:
    """Binlog bytes from ``start`` to ``end`` (file, position), over the files in ``sizes``
    (file → size); a file missing from ``sizes`` counts up to ``end`` only."""
    if start[0] == end[0]:
        return max(0, end[1] - start[1])
    first, last = _file_index(start[0]), _file_index(end[0])
    total = 0
    for name in {*sizes, end[0]}:
        index = _file_index(name)
        if first <= index <= last:
            low = start[1] if index == first else 0
            high = end[1] if index == last else sizes.get(name, 0)
            total += max(0, high - low)
    return total


@dataclass
class BinlogPosition:
    """A stream position: a transaction boundary plus the changes emitted after it."""

    file: str | None = None
    pos: int | None = None
    gtid: str | None = None
    ts: int | None = None
    """Event time (s) of the last transaction, for messages and lag."""
    emitted: dict[str, int] = field(default_factory=dict)
    after_ts: int | None = None
    """Start by timestamp: transactions before this time (s) are skipped."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.file, "pos": self.pos, "gtid": self.gtid, "ts": self.ts}
        if self.emitted:
            out["emitted"] = dict(self.emitted)
        if self.after_ts is not None:
            out["after_ts"] = self.after_ts
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> BinlogPosition:
        return cls(
            raw.get("file"),
            raw.get("pos"),
            raw.get("gtid"),
            raw.get("ts"),
            dict(raw.get("emitted") or {}),
            raw.get("after_ts"),
        )

    def describe(self) -> str:
        parts = []
        if self.file:
            parts.append(f"{self.file}:{self.pos}")
        if self.gtid:
            parts.append(f"GTID {self.gtid}")
        return ", ".join(parts) or "(start)"

    def reached(self, end: tuple[str, int]) -> bool:
        """Whether this boundary is at or past binlog coordinates ``end``."""
        if self.file is None or self.pos is None:
            return False
        return (_file_index(self.file), self.pos) >= (_file_index(end[0]), end[1])


class _GtidState:
    """The GTID state after the last transaction seen: MariaDB's per-domain list or MySQL's set."""

    def __init__(self, text: str | None, *, mariadb: bool) -> None:
        self.mariadb = mariadb
        self._domains: dict[int, str] = {}
        self._set: Any = None
        if mariadb:
            for raw in (text or "").split(","):
                part = raw.strip()
                if part:
                    self._domains[int(part.split("-")[0])] = part
        elif text:
            from pymysqlreplication.gtid import GtidSet  # noqa: PLC0415 - optional driver

            self._set = GtidSet(text)

    def add(self, gtid: str) -> None:
        if self.mariadb:
            self._domains[int(gtid.split("-", maxsplit=1)[0])] = gtid
            return
        from pymysqlreplication.gtid import Gtid, GtidSet  # noqa: PLC0415

        if self._set is None:
            self._set = GtidSet(gtid)
        else:
            self._set.merge_gtid(Gtid(gtid))

    def text(self) -> str | None:
        if self.mariadb:
            return ",".join(self._domains[d] for d in sorted(self._domains)) or None
        return str(self._set) if self._set is not None else None


# -- column types -------------------------------------------------------------------------------

_FT = {
    "TINY": 1,
    "SHORT": 2,
    "LONG": 3,
    "FLOAT": 4,
    "DOUBLE": 5,
    "TIMESTAMP": 7,
    "LONGLONG": 8,
    "INT24": 9,
    "DATE": 10,
    "TIME": 11,
    "DATETIME": 12,
    "YEAR": 13,
    "NEWDATE": 14,
    "VARCHAR": 15,
    "BIT": 16,
    "TIMESTAMP2": 17,
    "DATETIME2": 18,
    "TIME2": 19,
    "JSON": 245,
    "NEWDECIMAL": 246,
    "ENUM": 247,
    "SET": 248,
    "TINY_BLOB": 249,
    "MEDIUM_BLOB": 250,
    "LONG_BLOB": 251,
    "BLOB": 252,
    "VAR_STRING": 253,
    "STRING": 254,
    "GEOMETRY": 255,
}


@dataclass(frozen=True)
class ColumnKind:
    """How a MySQL column travels: its Arrow type and the conversion of a driver value.

    The Arrow types are the MySQL reader's (:func:`libs.mysql.mysql_type`, the README's "MySQL
    type mapping"): sized integers (TINYINT int8/uint8 ... BIGINT int64/uint64), FLOAT float32,
    DOUBLE float64, DECIMAL(p,s), TIMESTAMP timestamp('us', UTC), DATETIME timestamp('us'), DATE
    date32, TIME duration('us'), YEAR int16, BIT(1) bool, BIT(n) uint64, text/ENUM/SET/JSON
    string, binary/BLOB/GEOMETRY binary.
    """

    kind: str
    """int | float | double | decimal | string | set | json | binary | date | datetime |
    timestamp | time | year | bit"""
    precision: int = 0
    """Bits of an int or a BIT; precision of a DECIMAL."""
    scale: int = 0
    unsigned: bool = False
    set_values: tuple[str, ...] = ()

    def arrow(self) -> pa.DataType:
        """The Arrow type (see the class docs)."""
        return _ARROW[self.kind](self)

    def converter(self) -> Callable[[Any], Any] | None:
        """Driver value → a value of :meth:`arrow` (None: as is)."""
        if self.kind == "set":
            order = self.set_values

            def set_text(value: Any) -> str:
                if isinstance(value, str):
                    return value
                chosen = set(value)
                ordered = [v for v in order if v in chosen] + sorted(chosen - set(order))
                return ",".join(ordered)

            return set_text
        if self.kind == "bit":
            return _bool_value if self.precision == 1 else _bit_value
        if self.kind == "json":
            return _json_value
        if self.kind == "time":
            return _time_value
        if self.kind == "string":
            return _string_value
        if self.kind == "binary":
            return _binary_value
        return None


def _bit_value(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, bytes | bytearray):
        return int.from_bytes(value, "big")
    return int(str(value), 2)


def _bool_value(value: Any) -> bool:
    return bool(_bit_value(value))


def _json_value(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    return json.dumps(_json_safe(value), ensure_ascii=False, separators=(",", ":"))


def _json_safe(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {_json_safe(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _time_value(value: Any) -> dt.timedelta:
    if isinstance(value, dt.timedelta):
        return value
    if isinstance(value, dt.time):
        return dt.timedelta(
            hours=value.hour,
            minutes=value.minute,
            seconds=value.second,
            microseconds=value.microsecond,
        )
    msg = f"not a TIME value: {value!r}"
    raise ValueError(msg)


def _string_value(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)


def _binary_value(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


def _decimal_type(kind: ColumnKind) -> pa.DataType:
    precision = max(1, kind.precision or 10)
    if precision <= 38:
        return pa.decimal128(precision, kind.scale)
    return pa.decimal256(min(precision, 76), kind.scale)


_INTS = {
    (8, False): pa.int8(),
    (8, True): pa.uint8(),
    (16, False): pa.int16(),
    (16, True): pa.uint16(),
    (32, False): pa.int32(),
    (32, True): pa.uint32(),
    (64, False): pa.int64(),
    (64, True): pa.uint64(),
}
_ARROW: dict[str, Callable[[ColumnKind], pa.DataType]] = {
    "int": lambda k: _INTS[(k.precision or 64, k.unsigned)],
    "float": lambda _k: pa.float32(),
    "double": lambda _k: pa.float64(),
    "decimal": _decimal_type,
    "string": lambda _k: pa.string(),
    "set": lambda _k: pa.string(),
    "json": lambda _k: pa.string(),
    "binary": lambda _k: pa.binary(),
    "date": lambda _k: pa.date32(),
    "datetime": lambda _k: pa.timestamp("us"),
    "timestamp": lambda _k: pa.timestamp("us", tz="UTC"),
    "time": lambda _k: pa.duration("us"),
    "year": lambda _k: pa.int16(),
    "bit": lambda k: pa.bool_() if k.precision == 1 else pa.uint64(),
}


def kind_of_binlog_column(column: Any) -> ColumnKind:
    """The kind of a ``mysql-replication`` column (from a table-map event)."""
    code = column.type
    binary = (getattr(column, "character_set_name", None) or "").lower() == "binary"
    bits = {
        _FT["TINY"]: 8,
        _FT["SHORT"]: 16,
        _FT["INT24"]: 32,
        _FT["LONG"]: 32,
        _FT["LONGLONG"]: 64,
    }
    if code in bits:
        return ColumnKind("int", bits[code], unsigned=bool(column.unsigned))
    if code == _FT["FLOAT"]:
        return ColumnKind("float")
    if code == _FT["DOUBLE"]:
        return ColumnKind("double")
    if code == _FT["NEWDECIMAL"]:
        return ColumnKind("decimal", column.precision, column.decimals)
    if code in (_FT["VARCHAR"], _FT["VAR_STRING"], _FT["STRING"]):
        return ColumnKind("binary" if binary else "string")
    if code in (_FT["BLOB"], _FT["TINY_BLOB"], _FT["MEDIUM_BLOB"], _FT["LONG_BLOB"]):
        return ColumnKind("binary" if binary else "string")
    if code == _FT["GEOMETRY"]:
        return ColumnKind("binary")
    if code in (_FT["DATE"], _FT["NEWDATE"]):
        return ColumnKind("date")
    if code in (_FT["DATETIME"], _FT["DATETIME2"]):
        return ColumnKind("datetime")
    if code in (_FT["TIMESTAMP"], _FT["TIMESTAMP2"]):
        return ColumnKind("timestamp")
    if code in (_FT["TIME"], _FT["TIME2"]):
        return ColumnKind("time")
    if code == _FT["YEAR"]:
        return ColumnKind("year")
    if code == _FT["BIT"]:
        return ColumnKind("bit", int(column.bits))
    if code == _FT["ENUM"]:
        return ColumnKind("string")
    if code == _FT["SET"]:
        return ColumnKind("set", set_values=tuple(column.set_values or ()))
    if code == _FT["JSON"]:
        return ColumnKind("json")
    return ColumnKind("string")


_INFO_KINDS = {
    "float": "float",
    "double": "double",
    "real": "double",
    "decimal": "decimal",
    "numeric": "decimal",
    "char": "string",
    "varchar": "string",
    "tinytext": "string",
    "text": "string",
    "mediumtext": "string",
    "longtext": "string",
    "enum": "string",
    "set": "set",
    "json": "json",
    "binary": "binary",
    "varbinary": "binary",
    "tinyblob": "binary",
    "blob": "binary",
    "mediumblob": "binary",
    "longblob": "binary",
    "geometry": "binary",
    "point": "binary",
    "linestring": "binary",
    "polygon": "binary",
    "date": "date",
    "datetime": "datetime",
    "timestamp": "timestamp",
    "time": "time",
    "year": "year",
    "bit": "bit",
}
_INFO_INTS = {"tinyint": 8, "smallint": 16, "mediumint": 32, "int": 32, "integer": 32, "bigint": 64}


def kind_of_info_column(data_type: str, column_type: str, precision: Any, scale: Any) -> ColumnKind:
    """The kind of a column described by ``information_schema.COLUMNS``."""
    name = data_type.lower()
    if name in _INFO_INTS:
        return ColumnKind("int", _INFO_INTS[name], unsigned="unsigned" in column_type.lower())
    kind = _INFO_KINDS.get(name, "string")
    if kind == "decimal":
        return ColumnKind("decimal", int(precision or 10), int(scale or 0))
    if kind == "bit":
        found = re.search(r"\((\d+)\)", column_type)
        return ColumnKind("bit", int(found.group(1)) if found else 1)
    if kind == "set":
        values = tuple(re.findall(r"'((?:[^']|'')*)'", column_type))
        return ColumnKind("set", set_values=tuple(v.replace("''", "'") for v in values))
    return ColumnKind(kind)


@dataclass(frozen=True)
class _TableShape:
    """A table's layout plus the converters of its columns (cached per table-map)."""

    layout: TableLayout
    names: tuple[str, ...]
    converters: tuple[tuple[int, Callable[[Any], Any]], ...]
    decoder: _RowDecoder | None = None
    """Reads row images straight from the event bytes (None: the library decodes)."""
    fast_converters: tuple[tuple[int, Callable[[Any], Any]], ...] = ()
    """What still needs converting after :attr:`decoder` (BIT(1) as a bool)."""

    @classmethod
    def of(
        cls,
        db: str,
        table: str,
        names: Sequence[str],
        kinds: Sequence[ColumnKind],
        key: Sequence[str],
        columns: Sequence[Any] | None = None,
    ) -> _TableShape:
        schema = pa.schema([pa.field(n, k.arrow()) for n, k in zip(names, kinds, strict=True)])
        converters = tuple((i, c) for i, k in enumerate(kinds) if (c := k.converter()) is not None)
        decoder = _RowDecoder.for_columns(columns) if columns is not None else None
        fast = tuple(
            (i, c) for i, c in converters if kinds[i].kind == "bit" and kinds[i].precision == 1
        )
        layout = TableLayout(db, table, schema, tuple(key))
        return cls(layout, tuple(names), converters, decoder, fast)

    def convert_fast(self, values: list[Any]) -> list[Any]:
        """Values from :attr:`decoder`, converted where still needed (in place)."""
        for index, convert in self.fast_converters:
            value = values[index]
            if value is not None:
                values[index] = convert(value)
        return values

    def values(self, row: dict[str, Any]) -> list[Any]:
        """A driver row (name → value) as a list in column order, converted."""
        out = [row.get(name) for name in self.names]
        for index, convert in self.converters:
            value = out[index]
            if value is not None:
                out[index] = convert(value)
        return out


# -- fast row decoding --------------------------------------------------------------------------

_ValueReader = Callable[[bytes, int], tuple[Any, int]]
_DIG2BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
_EPOCH = dt.datetime(1970, 1, 1)


def _fixed(fmt: str) -> _ValueReader:
    unpack = struct.Struct(fmt).unpack_from
    size = struct.calcsize(fmt)

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        return unpack(data, pos)[0], pos + size

    return read


def _int24(unsigned: bool) -> _ValueReader:
    def read(data: bytes, pos: int) -> tuple[Any, int]:
        return int.from_bytes(data[pos : pos + 3], "little", signed=not unsigned), pos + 3

    return read


def _fsp_reader(fsp: int) -> Callable[[bytes, int], tuple[int, int]]:
    size = (fsp + 1) // 2

    def read(data: bytes, pos: int) -> tuple[int, int]:
        if not size:
            return 0, pos
        value = int.from_bytes(data[pos : pos + size], "big", signed=True)
        if fsp % 2:
            value //= 10
        return value * 10 ** (6 - fsp), pos + size

    return read


def _text(length_bytes: int, encoding: str | None) -> _ValueReader:
    def read(data: bytes, pos: int) -> tuple[Any, int]:
        length = int.from_bytes(data[pos : pos + length_bytes], "little")
        start = pos + length_bytes
        raw = data[start : start + length]
        return (raw.decode(encoding) if encoding else raw), start + length

    return read


def _decimal_reader(precision: int, scale: int) -> _ValueReader:
    integral = precision - scale
    full_int, rest_int = divmod(integral, 9)
    full_frac, rest_frac = divmod(scale, 9)
    head = _DIG2BYTES[rest_int]
    tail = _DIG2BYTES[rest_frac]
    size = head + full_int * 4 + full_frac * 4 + tail

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        raw = bytearray(data[pos : pos + size])
        negative = not raw[0] & 0x80
        raw[0] ^= 0x80
        if negative:
            raw = bytearray(b ^ 0xFF for b in raw)
        parts = []
        offset = 0
        if head:
            parts.append(str(int.from_bytes(raw[:head], "big")))
            offset = head
        for _ in range(full_int):
            parts.append(f"{int.from_bytes(raw[offset : offset + 4], 'big'):09d}")
            offset += 4
        fraction = []
        for _ in range(full_frac):
            fraction.append(f"{int.from_bytes(raw[offset : offset + 4], 'big'):09d}")
            offset += 4
        if tail:
            fraction.append(f"{int.from_bytes(raw[offset : offset + tail], 'big'):0{rest_frac}d}")
        text = ("-" if negative else "") + ("".join(parts) or "0")
        if fraction:
            text += "." + "".join(fraction)
        return decimal.Decimal(text), pos + size

    return read


def _datetime2(fsp: int) -> _ValueReader:
    fraction = _fsp_reader(fsp)

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        value = int.from_bytes(data[pos : pos + 5], "big")
        micro, end = fraction(data, pos + 5)
        year_month = (value >> 22) & 0x1FFFF
        try:
            return (
                dt.datetime(
                    year_month // 13,
                    year_month % 13,
                    (value >> 17) & 0x1F,
                    (value >> 12) & 0x1F,
                    (value >> 6) & 0x3F,
                    value & 0x3F,
                    micro,
                ),
                end,
            )
        except ValueError:  # zero dates
            return None, end

    return read


def _timestamp2(fsp: int) -> _ValueReader:
    fraction = _fsp_reader(fsp)

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        seconds = int.from_bytes(data[pos : pos + 4], "big")
        micro, end = fraction(data, pos + 4)
        return _EPOCH + dt.timedelta(seconds=seconds, microseconds=micro), end

    return read


def _time2(fsp: int) -> _ValueReader:
    fraction = _fsp_reader(fsp)

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        value = int.from_bytes(data[pos : pos + 3], "big")
        sign = 1 if value & 0x800000 else -1
        if sign == -1:
            value = ~value + 1
        micro, end = fraction(data, pos + 3)
        delta = dt.timedelta(
            hours=(value >> 12) & 0x3FF,
            minutes=(value >> 6) & 0x3F,
            seconds=value & 0x3F,
            microseconds=micro,
        )
        return delta * sign, end

    return read


def _date(data: bytes, pos: int) -> tuple[Any, int]:
    value = int.from_bytes(data[pos : pos + 3], "little")
    try:
        return dt.date((value >> 9) & 0x7FFF, (value >> 5) & 0xF, value & 0x1F), pos + 3
    except ValueError:
        return None, pos + 3


def _encoding(column: Any) -> str | None:
    """The Python codec of a text column; None for binary ones."""
    name = (getattr(column, "character_set_name", None) or "utf8mb4").lower()
    if name == "binary":
        return None
    if name.startswith("utf8"):
        return "utf-8"
    if name == "latin1":
        return "cp1252"
    return name


def _value_reader(column: Any) -> _ValueReader | None:
    """How to read one value of ``column`` from a row image (None: not handled here)."""
    code, unsigned = column.type, column.unsigned
    if code == _FT["TINY"]:
        return _fixed("<B" if unsigned else "<b")
    if code == _FT["SHORT"]:
        return _fixed("<H" if unsigned else "<h")
    if code == _FT["INT24"]:
        return _int24(unsigned)
    if code == _FT["LONG"]:
        return _fixed("<I" if unsigned else "<i")
    if code == _FT["LONGLONG"]:
        return _fixed("<Q" if unsigned else "<q")
    if code == _FT["FLOAT"]:
        return _fixed("<f")
    if code == _FT["DOUBLE"]:
        return _fixed("<d")
    if code == _FT["NEWDECIMAL"]:
        return _decimal_reader(column.precision, column.decimals)
    if code in (_FT["VARCHAR"], _FT["VAR_STRING"], _FT["STRING"]):
        return _text(2 if column.max_length > 255 else 1, _encoding(column))
    if code in (_FT["BLOB"], _FT["TINY_BLOB"], _FT["MEDIUM_BLOB"], _FT["LONG_BLOB"]):
        return _text(column.length_size, _encoding(column))
    if code == _FT["GEOMETRY"]:
        return _text(column.length_size, None)
    if code == _FT["DATETIME2"]:
        return _datetime2(column.fsp)
    if code == _FT["TIMESTAMP2"]:
        return _timestamp2(column.fsp)
    if code == _FT["TIME2"]:
        return _time2(column.fsp)
    if code in (_FT["DATE"], _FT["NEWDATE"]):
        return _date
    if code == _FT["YEAR"]:

        def year(data: bytes, pos: int) -> tuple[Any, int]:
            return data[pos] + 1900, pos + 1

        return year
    if code == _FT["ENUM"] and column.enum_values:
        labels = list(column.enum_values)
        size = column.size

        def enum(data: bytes, pos: int) -> tuple[Any, int]:
            index = int.from_bytes(data[pos : pos + size], "little")
            return (labels[index] if index < len(labels) else ""), pos + size

        return enum
    if code == _FT["SET"] and column.set_values is not None:
        members = list(column.set_values)
        size = column.size

        def members_of(data: bytes, pos: int) -> tuple[Any, int]:
            mask = int.from_bytes(data[pos : pos + size], "little")
            chosen = [m for i, m in enumerate(members) if mask >> i & 1]
            return (",".join(chosen) if chosen else None), pos + size

        return members_of
    if code == _FT["BIT"]:
        size = column.bytes

        def bits(data: bytes, pos: int) -> tuple[Any, int]:
            return int.from_bytes(data[pos : pos + size], "big"), pos + size

        return bits
    return None  # JSON (MySQL binary JSON), old-style temporal types: the library decodes


class _RowDecoder:
    """Reads the row images of a rows event straight from its bytes.

    ``mysql-replication`` decodes value by value through several method calls each; this
    reads the same FULL row images with one function per column (about 5x faster). Types it
    does not know leave a table to the library's decoder.
    """

    def __init__(self, readers: list[_ValueReader]) -> None:
        self.readers = readers
        self.width = len(readers)
        self.null_bytes = (self.width + 7) // 8

    @classmethod
    def for_columns(cls, columns: Sequence[Any]) -> _RowDecoder | None:
        readers = [_value_reader(c) for c in columns]
        if any(r is None for r in readers):
            return None
        return cls(readers)  # type: ignore[arg-type]

    def _image(self, data: bytes, pos: int) -> tuple[list[Any], int]:
        nulls = int.from_bytes(data[pos : pos + self.null_bytes], "little")
        pos += self.null_bytes
        values: list[Any] = []
        append = values.append
        for index, read in enumerate(self.readers):
            if nulls >> index & 1:
                append(None)
            else:
                value, pos = read(data, pos)
                append(value)
        return values, pos

    def rows(self, event: Any, images: int) -> list[Any] | None:
        """The event's rows (``images`` 2: before/after pairs); None when the event is not a
        plain FULL-image event this decoder can read."""
        wrapper = event.packet
        if getattr(wrapper, "_BinLogPacketWrapper__data_buffer", b""):
            return None
        full = (1 << self.width) - 1
        bitmaps = [event.columns_present_bitmap]
        if images == 2:
            bitmaps.append(event.columns_present_bitmap2)
        for bitmap in bitmaps:
            if int.from_bytes(bitmap, "little") & full != full:
                return None
        if getattr(event, "is_partial_json_update", False):
            return None
        packet = wrapper.packet
        start = packet._position
        data = packet._data[start : start + (event.event_size - wrapper.read_bytes)]
        pos, end = 0, len(data)
        out: list[Any] = []
        image = self._image
        if images == 1:
            while pos < end:
                values, pos = image(data, pos)
                out.append(values)
        else:
            while pos < end:
                before, pos = image(data, pos)
                after, pos = image(data, pos)
                out.append((before, after))
        return out


# -- table selection ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Selection:
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


def _selection(params: BinlogReaderParams, default_db: str | None) -> _Selection:
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
        return _Selection(frozenset(exact), None, frozenset(db for db, _ in exact))
    if params.filter is not None:
        return _Selection(None, re.compile(params.filter), None)
    if default_db is not None:
        return _Selection(None, None, frozenset({default_db}))
    return _Selection(None, None, None)


# -- the reader ---------------------------------------------------------------------------------


class BinlogReader(Reader[BinlogReaderParams]):
    """Row changes of a MySQL/MariaDB binlog (see the module docs)."""

    Parameters = BinlogReaderParams

    def __init__(self, params: BinlogReaderParams, ctx: JobContext) -> None:
        super().__init__(params, ctx)
        jdbc = mysql_url(params.jdbc_url) if params.jdbc_url else None
        self.server = URL.create(
            "mysql+pymysql",
            username=params.username or (jdbc.username if jdbc else None) or "root",
            password=params.password.get_secret_value() if params.password else None,
            host=params.host or (jdbc.host if jdbc else None) or "localhost",
            port=params.port or (jdbc.port if jdbc else None) or 3306,
        )
        """Where to connect (no default database: the binlog spans every database)."""
        default_db = params.database or params.db_schema or (jdbc.database if jdbc else None)
        self.selection = _selection(params, default_db)
        self._flavor: _Flavor | None = None
        self._lock = threading.Lock()
        self._snapshot_readers: dict[str, Any] = {}
        self._stream_reader: _StreamSplitReader | None = None
        self._stream_start: dict[str, Any] | None = None
        self._checkpointed = threading.Condition()
        self._done_in_checkpoint: tuple[int, frozenset[str]] | None = None
        self.log_sizes: dict[str, int] = {}
        """Binlog file → size, as :meth:`estimate` found them (for the stream's progress)."""

    # -- framework ---------------------------------------------------------------------------

    @override
    def notify_checkpoint_complete(self, checkpoint: CompletedCheckpoint) -> None:
        """The stream's handover waits for a stored checkpoint that has the snapshot done."""
        with self._checkpointed:
            self._done_in_checkpoint = (checkpoint.id, checkpoint.done)
            self._checkpointed.notify_all()

    def covered_by_checkpoint(self, splits: frozenset[str], timeout: float) -> int | None:
        """The id of a stored checkpoint of this attempt in which ``splits`` are all done, or
        ``None`` when there is none yet after waiting up to ``timeout`` seconds."""
        with self._checkpointed:
            self._checkpointed.wait_for(
                lambda: (
                    self._done_in_checkpoint is not None and splits <= self._done_in_checkpoint[1]
                ),
                timeout,
            )
            latest = self._done_in_checkpoint
        return latest[0] if latest is not None and splits <= latest[1] else None

    @property
    @override
    def bounded(self) -> bool:
        return self.params.stop_at is not None

    @override
    def check(self) -> None:
        problems = self._setting_problems()
        conn = self.connect()
        try:
            self._flavor = _flavor(conn, self.params)
            rows = _query(
                conn,
                "SHOW GLOBAL VARIABLES WHERE Variable_name IN "
                "('log_bin', 'binlog_format', 'binlog_row_image', 'binlog_row_metadata')",
            )
            variables = {str(k).lower(): str(v) for k, v in rows}
            problems += settings_problems(variables, self.where)
            grants = [str(r[0]) for r in _query(conn, "SHOW GRANTS FOR CURRENT_USER()")]
            databases = sorted(self.selection.databases or [])
            problems += privilege_problems(grants, databases, self.server.username or "")
            if self.selection.exact is not None and not problems:
                problems += self._missing_tables(conn)
        finally:
            conn.close()
        if problems:
            raise JobFailedError("binlogreader cannot start:\n  - " + "\n  - ".join(problems))

    @override
    def plan(self, parallelism: int) -> list[Split]:
        conn = self.connect()
        try:
            flavor = self.flavor(conn)
            resume = self.ctx.job_state.get("binlog")
            start: dict[str, Any] | None = None
            if resume:
                problem = self._purged(conn, flavor, BinlogPosition.from_json(resume))
                if problem is None:
                    log.info(
                        "binlogreader: continuing from the last run's end (%s)",
                        BinlogPosition.from_json(resume).describe(),
                    )
                    start = dict(resume)
                elif self.params.snapshot != "when_needed":
                    msg = (
                        f"the last run's end position is no longer on the server: {problem}. "
                        "Set snapshot: when_needed to copy the tables again and stream on from "
                        "there, or start from another position (start)"
                    )
                    raise JobFailedError(msg)
                else:
                    log.warning("binlogreader: %s; taking a new snapshot (when_needed)", problem)
            elif (
                self.params.snapshot == "when_needed"
                and self.params.start is not None
                and not self.params.start.is_empty()
            ):
                start = self._configured_start(conn, flavor).to_json()
                problem = self._purged(conn, flavor, BinlogPosition.from_json(start))
                if problem is not None:
                    log.warning("binlogreader: %s; taking a snapshot (when_needed)", problem)
                    start = None
            snapshot = start is None and self.params.snapshot in ("initial", "when_needed")
            if not snapshot:
                if start is None:
                    start = self._configured_start(conn, flavor).to_json()
                return [Split("binlog", {"kind": "stream", "start": start, "snapshot": []})]
            handover, tables = self._snapshot_point(conn, flavor)
        finally:
            conn.close()
        splits: list[Split] = []
        for db, table in tables:
            reader = self._snapshot_reader(db, table)
            for inner in reader.plan(parallelism):
                splits.append(
                    Split(
                        f"snapshot:{db}.{table}:{inner.id}",
                        {
                            "kind": "snapshot",
                            "db": db,
                            "table": table,
                            "inner": inner.to_json(),
                            "at": handover.to_json(),
                        },
                    )
                )
        log.info(
            "binlogreader: snapshot of %d table(s) in %d split(s), then the binlog from %s",
            len(tables),
            len(splits),
            handover.describe(),
        )
        stream = Split(
            "binlog",
            {"kind": "stream", "start": handover.to_json(), "snapshot": [s.id for s in splits]},
        )
        return [*splits, stream]

    @override
    def estimate(self, splits: Sequence[Split]) -> Estimate | None:
        """A bounded (``stopAt``) run: with a snapshot, the rows of its tables (their readers'
        estimates); else the binlog bytes from the stream's start to its end (the end now for
        ``now`` and timestamps)."""
        snapshots = [s for s in splits if s.data.get("kind") == "snapshot"]
        if snapshots:
            rows = 0
            for split in snapshots:
                reader = self._snapshot_reader(split.data["db"], split.data["table"])
                found = reader.estimate([Split.from_json(split.data["inner"])])
                rows += (found.rows or 0) if found is not None else 0
            return Estimate(rows=rows)
        stream = next((s for s in splits if s.data.get("kind") == "stream"), None)
        start = BinlogPosition.from_json(stream.data["start"]) if stream is not None else None
        if start is None or start.file is None or start.pos is None:
            return None
        conn = self.connect()
        try:
            self.log_sizes = {str(r[0]): int(r[1]) for r in _query(conn, "SHOW BINARY LOGS")}
            status = _query(conn, "SHOW MASTER STATUS")
        finally:
            conn.close()
        stop = self.params.stop_at
        end = (str(status[0][0]), int(status[0][1]))
        if isinstance(stop, BinlogStart) and stop.journal_name is not None:
            end = (stop.journal_name, stop.position or 4)
        return Estimate(bytes=binlog_bytes(self.log_sizes, (start.file, start.pos), end))

    @override
    def open(self, split: Split, position: Position | None) -> SplitReader:
        if split.data.get("kind") == "snapshot":
            return _SnapshotSplitReader(self, split, position)
        return _StreamSplitReader(self, split, position)

    @override
    def next_job_state(self, positions: dict[str, Position]) -> dict[str, Any] | None:
        """Where the next run continues: the stream's end. The runtime records a position only
        after a batch, so a stream that ended in this process reports its own (it may have moved
        past transactions of other tables, or emitted nothing at all)."""
        stream = self._stream_reader
        if stream is not None and stream.finished:
            return {"binlog": stream.snapshot()}
        position = positions.get("binlog") or self._stream_start
        if position is None:
            return None
        return {"binlog": position}

    def stream_opened(self, reader: _StreamSplitReader, start: dict[str, Any]) -> None:
        """The stream split was opened (in this process) at ``start``."""
        with self._lock:
            self._stream_reader = reader
            self._stream_start = start

    @override
    def close(self) -> None:
        for reader in self._snapshot_readers.values():
            reader.close()
        self._snapshot_readers.clear()

    # -- shared with the split readers -------------------------------------------------------

    @property
    def where(self) -> str:
        """``host:port`` for messages."""
        return f"{self.server.host}:{self.server.port}"

    def connect(self) -> Any:
        """An autocommit connection (:func:`libs.mysql.connect`); a refused login stops the
        job, any other failure to connect is retriable."""
        pymysql = _pymysql()
        try:
            return connect(self.server, read_timeout=60)
        except pymysql.err.OperationalError as exc:
            code = errno(exc)
            text = exc.args[1] if len(exc.args) > 1 else str(exc)
            text = scrub(str(text), [self.server.password])
            if code in (1045, 1044, 1698):
                msg = (
                    f"{PARAM_PATH}: cannot log in to {self.where} as "
                    f"'{self.server.username}': {text}"
                )
                raise JobFailedError(msg) from exc
            msg = f"cannot connect to {self.where}: {text}"
            raise RetriableError(msg) from exc

    def flavor(self, conn: Any | None = None) -> _Flavor:
        """MariaDB or MySQL, and whether positions are GTIDs (asks the server once)."""
        if self._flavor is None:
            own = conn is None
            conn = conn or self.connect()
            try:
                self._flavor = _flavor(conn, self.params)
            finally:
                if own:
                    conn.close()
        return self._flavor

    def snapshot_reader(self, db: str, table: str) -> Any:
        """The :class:`readers.sql.SqlReader` that copies ``db.table`` (one per table)."""
        return self._snapshot_reader(db, table)

    # -- implementation ----------------------------------------------------------------------

    def _setting_problems(self) -> list[str]:
        readers, writers = self.ctx.readers, self.ctx.writers
        problems = []
        if writers > 1 and readers != writers:
            problems.append(
                f"setting.speed: {readers} reader and {writers} writer channels "
                "spread the changes of one table over several writers, which would apply them "
                "out of order; use writerChannel 1 or as many writer as reader channels"
            )
        restore = self.ctx.restore
        if (
            self.params.snapshot != "never"
            and readers > 1
            and not (restore.is_restore or restore.checkpoint_interval)
        ):
            problems.append(
                "snapshot with several reader channels hands over to the binlog at a "
                "checkpoint: set setting.restore.isRestore: true (or readerChannel 1)"
            )
        return problems

    def _missing_tables(self, conn: Any) -> list[str]:
        assert self.selection.exact is not None
        missing = []
        for db, table in sorted(self.selection.exact):
            rows = _query(
                conn,
                "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA=%s AND TABLE_NAME=%s",
                (db, table),
            )
            if not rows:
                missing.append(f"{db}.{table}")
        if missing:
            return [
                f"{PARAM_PATH}.table: table(s) {', '.join(missing)} not found on "
                f"{self.where} (or not visible to '{self.server.username}')"
            ]
        return []

    def _current(self, conn: Any, flavor: _Flavor) -> BinlogPosition:
        rows = _query(conn, "SHOW MASTER STATUS")
        if not rows or rows[0][0] in (None, ""):
            msg = f"{self.where}: binary logging is off (log_bin); see check()"
            raise JobFailedError(msg)
        file, pos = str(rows[0][0]), int(rows[0][1])
        gtid: str | None = None
        if flavor.mariadb:
            gtid = self._gtid_at(conn, file, pos)
        elif flavor.gtid:
            raw = rows[0][4] if len(rows[0]) > 4 else None
            gtid = str(raw).replace("\n", "") if raw else None
        return BinlogPosition(file, pos, gtid)

    def _gtid_at(self, conn: Any, file: str, pos: int) -> str:
        rows = _query(conn, "SELECT BINLOG_GTID_POS(%s, %s)", (file, pos))
        value = rows[0][0] if rows else None
        if value is None:
            msg = (
                f"{PARAM_PATH}.start: {file}:{pos} is not a transaction boundary in the server's "
                "binlog (or the file is gone); give the position of an event group's start"
            )
            raise JobFailedError(msg)
        return str(value)

    def _configured_start(self, conn: Any, flavor: _Flavor) -> BinlogPosition:
        start = self.params.start
        if start is None or start.is_empty():
            return self._current(conn, flavor)
        if start.timestamp is not None:
            seconds = start.timestamp // 1000 if start.timestamp > 10**11 else start.timestamp
            logs = _query(conn, "SHOW BINARY LOGS")
            if not logs:
                msg = f"{self.where}: no binary logs"
                raise JobFailedError(msg)
            first = str(logs[0][0])
            for row in reversed(logs):  # the newest file that starts at or before the time
                created = self._file_created(str(row[0]))
                if created is not None and created <= seconds:
                    first = str(row[0])
                    break
            gtid = self._gtid_at(conn, first, 4) if flavor.mariadb else None
            if not flavor.mariadb and flavor.gtid:
                msg = (
                    f"{PARAM_PATH}.start.timestamp with MySQL GTID mode is not supported; "
                    "give start.gtid"
                )
                raise JobFileError([ConfigIssue(f"{PARAM_PATH}.start.timestamp", msg)])
            return BinlogPosition(first, 4, gtid, after_ts=seconds)
        if start.gtid is not None:
            return BinlogPosition(None, None, start.gtid.strip())
        if start.journal_name is not None:
            pos = start.position or 4
            gtid = self._gtid_at(conn, start.journal_name, pos) if flavor.mariadb else None
            if not flavor.mariadb and flavor.gtid:
                msg = "with MySQL GTID mode give start.gtid (a file/position cannot be resumed)"
                raise JobFileError([ConfigIssue(f"{PARAM_PATH}.start", msg)])
            return BinlogPosition(start.journal_name, pos, gtid)
        msg = "give journalName (and position), timestamp or gtid"
        raise JobFileError([ConfigIssue(f"{PARAM_PATH}.start", msg)])

    def _file_created(self, file: str) -> int | None:
        """When a binlog file was started (its format description event's time, s)."""
        replication = require("pymysqlreplication", "binlog", PLUGIN)
        from pymysqlreplication.event import FormatDescriptionEvent  # noqa: PLC0415

        stream = replication.BinLogStreamReader(
            connection_settings=connection_settings(self.server),
            server_id=random.randint(100_000, 2**31 - 1),
            log_file=file,
            log_pos=4,
            resume_stream=True,
            blocking=True,
            only_events=[FormatDescriptionEvent],
            enable_logging=False,
        )
        try:
            event = stream.fetchone()
            return int(event.timestamp) if event is not None else None
        except Exception:  # a file just purged: not a candidate
            return None
        finally:
            stream.close()

    def _purged(self, conn: Any, flavor: _Flavor, position: BinlogPosition) -> str | None:
        """Why ``position`` cannot be resumed from (purged), or None."""
        logs = [str(r[0]) for r in _query(conn, "SHOW BINARY LOGS")]
        if not logs:
            return "the server has no binary logs"
        if (
            position.file is not None
            and position.file not in logs
            and _file_index(position.file) < _file_index(logs[0])
        ):
            return f"{position.file} was purged (the oldest binlog is {logs[0]})"
        if flavor.mariadb and position.gtid:
            oldest = self._gtid_list_of(conn, logs[0])
            if oldest is not None and _mariadb_before(position.gtid, oldest):
                return (
                    f"GTID {position.gtid} is older than the oldest binlog {logs[0]} "
                    f"(which starts after {oldest})"
                )
        return None

    def _gtid_list_of(self, conn: Any, file: str) -> str | None:
        try:
            rows = _query(conn, "SELECT BINLOG_GTID_POS(%s, 4)", (file,))
        except Exception:
            return None
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def _snapshot_point(
        self, conn: Any, flavor: _Flavor
    ) -> tuple[BinlogPosition, list[tuple[str, str]]]:
        """The handover position (consistent snapshot, no global lock on MariaDB) and the
        tables to copy."""
        tables = self._captured_tables(conn)
        snap = self.connect()
        try:
            if flavor.mariadb:
                _query(snap, "START TRANSACTION WITH CONSISTENT SNAPSHOT")
                status = {
                    str(k).lower(): v
                    for k, v in _query(snap, "SHOW STATUS LIKE 'binlog_snapshot_%'")
                }
                file = str(status["binlog_snapshot_file"])
                pos = int(status["binlog_snapshot_position"])
                _query(snap, "COMMIT")
                position = BinlogPosition(file, pos, self._gtid_at(snap, file, pos))
            else:
                _query(snap, "FLUSH TABLES WITH READ LOCK")
                try:
                    _query(snap, "START TRANSACTION WITH CONSISTENT SNAPSHOT")
                    position = self._current(snap, flavor)
                finally:
                    _query(snap, "UNLOCK TABLES")
                _query(snap, "COMMIT")
        finally:
            snap.close()
        return position, tables

    def _captured_tables(self, conn: Any) -> list[tuple[str, str]]:
        rows = _query(
            conn,
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES "
            "WHERE TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_SCHEMA, TABLE_NAME",
        )
        return [(str(db), str(t)) for db, t in rows if (str(db), str(t)) in self.selection]

    def _snapshot_reader(self, db: str, table: str) -> Any:
        key = f"{db}.{table}"
        with self._lock:
            reader = self._snapshot_readers.get(key)
            if reader is None:
                reader = _make_snapshot_reader(self, db, table)
                self._snapshot_readers[key] = reader
            return reader


def _mariadb_before(gtid: str, oldest: str) -> bool:
    """Whether MariaDB GTID state ``gtid`` lies before ``oldest`` in some domain."""

    def parse(text: str) -> dict[int, int]:
        out = {}
        for raw in text.split(","):
            part = raw.strip()
            if part:
                domain, _server, seq = part.split("-")
                out[int(domain)] = int(seq)
        return out

    mine, first = parse(gtid), parse(oldest)
    return any(mine.get(domain, 0) < seq for domain, seq in first.items())


# -- snapshot splits ----------------------------------------------------------------------------


def _make_snapshot_reader(owner: BinlogReader, db: str, table: str) -> Any:
    """A ``MysqlReader`` over ``db.table`` (split, resumable) whose batches the owner turns into CDC
    ``r`` changes."""
    require("sqlalchemy", "binlog", PLUGIN)

    conn = owner.connect()
    try:
        rows = _query(
            conn,
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, NUMERIC_PRECISION, NUMERIC_SCALE, "
            "COLUMN_KEY FROM information_schema.COLUMNS WHERE TABLE_SCHEMA=%s AND TABLE_NAME=%s "
            "ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        key_rows = _query(
            conn,
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA=%s "
            "AND TABLE_NAME=%s AND CONSTRAINT_NAME='PRIMARY' ORDER BY ORDINAL_POSITION",
            (db, table),
        )
    finally:
        conn.close()
    names = [str(r[0]) for r in rows]
    kinds = [kind_of_info_column(str(r[1]), str(r[2]), r[3], r[4]) for r in rows]
    key = [str(r[0]) for r in key_rows]
    shape = _TableShape.of(db, table, names, kinds, key)
    numeric_key = bool(key) and kinds[names.index(key[0])].kind in ("int", "uint64")
    raw_params = {
        # validating the parameters moves the URL's password into the `password` secret
        "url": owner.server.set(database=db).render_as_string(hide_password=False),
        "table": f"{db}.{table}",
        "column": names,
        "splitPk": key[0] if numeric_key else None,
    }
    ctx = dataclasses.replace(
        owner.ctx,
        restore=RestoreSetting(restore_column_name=key[0] if key else None),
        batch_rows=owner.ctx.batch_rows,
        report_dirty=owner.ctx.report_dirty,
        stopping=owner.ctx.stopping,
    )

    # the MySQL reader's fast drivers (connectorx, mysqlclient) and its type mapping, which the
    # binlog's mapping follows; its batches are cast to the table's layout to be sure
    from readers.mysql import MysqlReader, MysqlReaderParams  # noqa: PLC0415 - plugin imports plugin

    fast = MysqlReader(MysqlReaderParams.model_validate(raw_params), ctx)
    fast.shape = shape  # type: ignore[attr-defined]
    fast.cast_to_layout = True  # type: ignore[attr-defined]
    return fast


def _to_layout(
    batch: pa.RecordBatch, shape: _TableShape, report: Callable[[DirtyRecord], None]
) -> pa.RecordBatch:
    """A plain batch with the table's layout (a no-op when the types agree already)."""
    schema = shape.layout.schema
    if batch.schema.equals(schema, check_metadata=False):
        return batch
    renamed = batch.rename_columns(list(shape.names))
    from libs.types import conform  # noqa: PLC0415

    fitted, dirty = conform(renamed, pa.schema([f.with_nullable(True) for f in schema]))
    for record in dirty:
        report(record)
    return pa.RecordBatch.from_arrays(list(fitted.columns), schema=schema)


class _SnapshotSplitReader(SplitReader):
    """A key range of one table, read by the table's ``SqlReader``; rows become ``r`` changes."""

    def __init__(self, owner: BinlogReader, split: Split, position: Position | None) -> None:
        self._owner = owner
        self._split = split
        data = split.data
        self._reader = owner.snapshot_reader(data["db"], data["table"])
        self._inner = self._reader.open(Split.from_json(data["inner"]), position)
        at = BinlogPosition.from_json(data["at"])
        self._source = SourceInfo(at.file, at.pos, at.gtid, 0, snapshot=True)
        self._layout: Layout = owner.params.layout()

    @override
    def batches(self) -> Iterator[pa.RecordBatch | None]:
        shape: _TableShape = self._reader.shape
        cast = getattr(self._reader, "cast_to_layout", False)
        for batch in self._inner.batches():
            if batch is None or not batch.num_rows:
                yield batch
                continue
            rows = _to_layout(batch, shape, self._owner.ctx.report_dirty) if cast else batch
            yield _snapshot_changes(shape.layout, rows, self._layout, self._source)

    @override
    def snapshot(self) -> Position:
        return self._inner.snapshot()

    @override
    def close(self) -> None:
        self._inner.close()


def _snapshot_changes(
    layout: TableLayout, rows: pa.RecordBatch, form: Layout, source: SourceInfo
) -> pa.RecordBatch:
    """Plain snapshot rows as CDC read changes, column-wise."""
    count = rows.num_rows
    now_ms = int(time.time() * 1000)
    if form == "envelope":
        schema = envelope_schema(layout)
        row_type = schema.field("after").type
        source_type = schema.field("source").type
        after = pa.StructArray.from_arrays(list(rows.columns), fields=list(row_type))
        constants = [
            (source.file, pa.string()),
            (source.pos, pa.int64()),
            (source.gtid, pa.string()),
            (now_ms, pa.int64()),
            (layout.db, pa.string()),
            (layout.table, pa.string()),
            (True, pa.bool_()),
        ]
        source_array = pa.StructArray.from_arrays(
            [pa.repeat(pa.scalar(v, t), count) for v, t in constants], fields=list(source_type)
        )
        return pa.RecordBatch.from_arrays(
            [pa.repeat(pa.scalar("r"), count), pa.nulls(count, row_type), after, source_array],
            schema=schema,
        )
    schema = paving_schema(layout)
    arrays = [
        pa.repeat(pa.scalar(layout.db), count),
        pa.repeat(pa.scalar(layout.table), count),
        pa.array([(now_ms << 22) | (i & 0x3FFFFF) for i in range(count)], pa.int64()),
        pa.repeat(pa.scalar(now_ms, pa.int64()), count),
        pa.repeat(pa.scalar("INSERT"), count),
        *[pa.nulls(count, f.type) for f in layout.schema],
        *rows.columns,
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


# -- the stream split ---------------------------------------------------------------------------


class _Reconnect(Exception):
    """The replication connection must be opened again (from the last emitted position)."""


@dataclass
class _Segment:
    """Consecutive changes of one table with one layout, waiting in a flush window."""

    shape: _TableShape
    changes: list[tuple[Any, Any, Any, SourceInfo]] = field(default_factory=list)


@dataclass
class _Window:
    """Changes of whole transactions not emitted yet, in commit order, per table segment."""

    segments: list[_Segment] = field(default_factory=list)
    last: dict[str, _Segment] = field(default_factory=dict)
    rows: int = 0
    opened: float = 0.0
    boundary: BinlogPosition | None = None
    """The transaction boundary the window's changes end at."""

    def add(self, shape: _TableShape, change: tuple[Any, Any, Any, SourceInfo]) -> None:
        name = shape.layout.qualified
        segment = self.last.get(name)
        if segment is None or segment.shape is not shape:
            segment = _Segment(shape)
            self.segments.append(segment)
            self.last[name] = segment
        if not self.rows:
            self.opened = time.monotonic()
        segment.changes.append(change)
        self.rows += 1

    def clear(self) -> None:
        self.segments.clear()
        self.last.clear()
        self.rows = 0
        self.boundary = None


class _StreamSplitReader(SplitReader):
    """The binlog from a position: transactions → CDC batches, positions at boundaries."""

    def __init__(self, owner: BinlogReader, split: Split, position: Position | None) -> None:
        self._owner = owner
        self._params = owner.params
        self._split = split
        self._started_fresh = position is None
        raw = position if position is not None else split.data["start"]
        self._position = BinlogPosition.from_json(raw)
        self._opened_at = self._position
        owner.stream_opened(self, raw)
        """The last emitted position (what :meth:`snapshot` returns)."""
        self._stream: Any = None
        self._stream_connects = 0
        self._sequence = 0
        self._layout: Layout = owner.params.layout()
        self._categories = owner.params.categories()
        self._ddl = owner.params.ddl_policy()
        self._shapes: dict[tuple[str, str, int], _TableShape] = {}
        self._layouts_seen: dict[str, tuple[str, ...]] = {}
        self._end: tuple[str, int] | None = None
        self._end_ts: int | None = None
        self._done = False
        self._healthy = False
        self._gtid_state = _GtidState(None, mariadb=True)

    # -- contract ----------------------------------------------------------------------------

    @override
    def snapshot(self) -> Position:
        return self._position.to_json()

    @override
    def progress(self) -> int | None:
        """Binlog bytes from where the split was opened to the last emitted position."""
        opened, now = self._opened_at, self._position
        if opened.file is None or opened.pos is None or now.file is None or now.pos is None:
            return None
        return binlog_bytes(self._owner.log_sizes, (opened.file, opened.pos), (now.file, now.pos))

    @property
    def finished(self) -> bool:
        """Whether the stream reached its end (``stopAt``)."""
        return self._done

    @override
    def close(self) -> None:
        self._close_stream()

    @override
    def batches(self) -> Iterator[pa.RecordBatch | None]:
        ctx = self._owner.ctx
        if self._started_fresh and self._split.data.get("snapshot"):
            yield from self._await_snapshot()
        if ctx.stopping.is_set():
            return
        self._resolve_end()
        if self._end is not None and self._position.reached(self._end):
            self._done = True
            return
        delay = 0.5
        lost_since: float | None = None
        progress = self._position.to_json()
        while not ctx.stopping.is_set() and not self._done:
            try:
                yield from self._read()
                return
            except _Reconnect as exc:
                reason = str(exc)
            except Exception as exc:
                problem = self._connection_problem(exc)
                if problem is None:
                    raise
                reason = problem
            self._close_stream()
            now = time.monotonic()
            if lost_since is None or self._position.to_json() != progress:
                lost_since, delay = now, 0.5  # it moved on since the last failure: a new outage
                progress = self._position.to_json()
            elif now - lost_since > self._params.reconnect_timeout:
                msg = (
                    f"the binlog connection to {self._owner.where} is lost ({reason}) and "
                    f"did not come back within {self._params.reconnect_timeout:.0f}s; resume "
                    f"from {self._position.describe()} with --restore latest"
                )
                raise RetriableError(msg)
            log.warning(
                "binlogreader: %s; reconnecting in %.1fs from %s",
                reason,
                delay,
                self._position.describe(),
            )
            deadline = time.monotonic() + delay
            while not ctx.stopping.is_set() and time.monotonic() < deadline:
                ctx.stopping.wait(min(TICK_SECONDS, max(0.0, deadline - time.monotonic())))
                yield None
            delay = min(delay * 2, 10.0)

    # -- waiting for the snapshot ------------------------------------------------------------

    def _await_snapshot(self) -> Iterator[None]:
        """Emit nothing until every snapshot split is done and covered by a stored checkpoint
        (with one reader channel the snapshot splits were read before this one: no wait)."""
        expected = frozenset(self._split.data["snapshot"])
        ctx = self._owner.ctx
        if ctx.readers == 1:
            return
        log.info("binlogreader: the stream waits for the snapshot's %d split(s)", len(expected))
        while not ctx.stopping.is_set():
            covered = self._owner.covered_by_checkpoint(expected, timeout=0.2)
            if covered is not None:
                log.info(
                    "binlogreader: snapshot complete (checkpoint %d); streaming from %s",
                    covered,
                    self._position.describe(),
                )
                return
            yield None

    # -- the stream --------------------------------------------------------------------------

    def _resolve_end(self) -> None:
        """``stopAt``: the binlog coordinates to stop at (the end at start time for ``now`` and
        for a timestamp, which also stops at the first transaction after it)."""
        stop = self._params.stop_at
        if stop is None:
            return
        if isinstance(stop, BinlogStart) and stop.journal_name is not None:
            self._end = (stop.journal_name, stop.position or 4)
            return
        conn = self._owner.connect()
        try:
            rows = _query(conn, "SHOW MASTER STATUS")
        finally:
            conn.close()
        self._end = (str(rows[0][0]), int(rows[0][1]))
        stamp = stop if isinstance(stop, int) else None
        if isinstance(stop, BinlogStart):
            stamp = stop.timestamp
        if stamp is not None:
            self._end_ts = stamp // 1000 if stamp > 10**11 else stamp
        log.info("binlogreader: reading up to %s:%s (stopAt)", *self._end)

    def _open_stream(self) -> Any:
        replication = require("pymysqlreplication", "binlog", PLUGIN)
        from pymysqlreplication import event as ev  # noqa: PLC0415
        from pymysqlreplication import row_event as rev  # noqa: PLC0415

        flavor = self._owner.flavor()
        pymysql = _pymysql()
        self._stream_connects = 0
        self._healthy = False
        self._shapes.clear()  # table ids are per server run: a restarted server reuses them

        def connect(**kwargs: Any) -> Any:
            if kwargs.get("db") != "information_schema":
                if self._stream_connects:
                    # mysql-replication reconnects by itself from its *first* position: we
                    # reconnect from the last emitted one instead
                    msg = "the replication connection was lost"
                    raise _Reconnect(msg)
                self._stream_connects += 1
            return pymysql.connect(**kwargs)

        settings = connection_settings(self._owner.server, read_timeout=READ_TIMEOUT)
        position = self._position
        kwargs: dict[str, Any] = {
            "connection_settings": settings,
            "server_id": self._params.slave_id or random.randint(100_000, 2**31 - 1),
            # always blocking: a non-blocking dump gets reset by MariaDB 10.11 at the binlog's
            # end; a bounded run stops at its end position or at the first heartbeat instead
            "blocking": True,
            "only_events": [
                ev.RotateEvent,
                ev.MariadbGtidEvent,
                ev.GtidEvent,
                ev.QueryEvent,
                ev.XidEvent,
                ev.XAPrepareEvent,
                ev.HeartbeatLogEvent,
                rev.WriteRowsEvent,
                rev.UpdateRowsEvent,
                rev.DeleteRowsEvent,
            ],
            "only_schemas": sorted(self._owner.selection.databases)
            if self._owner.selection.databases is not None
            else None,
            "slave_heartbeat": HEARTBEAT_SECONDS,
            "pymysql_wrapper": connect,
            "enable_logging": False,
        }
        if flavor.mariadb:
            if not position.gtid:
                msg = f"no GTID position to resume from on MariaDB ({position.describe()})"
                raise JobFailedError(msg)
            kwargs.update(is_mariadb=True, auto_position=position.gtid)
        elif flavor.gtid:
            kwargs.update(auto_position=position.gtid or "")
        else:
            kwargs.update(log_file=position.file, log_pos=position.pos, resume_stream=True)
        self._gtid_state = _GtidState(position.gtid, mariadb=flavor.mariadb)
        self._file = position.file
        self._stream = replication.BinLogStreamReader(**kwargs)
        return self._stream

    def _close_stream(self) -> None:
        if self._stream is not None:
            try:
                self._stream.close()
            except Exception:
                log.debug("closing the binlog stream failed", exc_info=True)
            self._stream = None

    def _connection_problem(self, exc: BaseException) -> str | None:
        """A short reason when ``exc`` means "reconnect"; None when it is not a lost connection.

        A fatal server answer (purged binlog, missing privilege) raises a clear error here.
        """
        pymysql = _pymysql()
        if isinstance(exc, pymysql.err.OperationalError | pymysql.err.InternalError):
            code = exc.args[0] if exc.args else 0
            text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
            if code == 1236:
                msg = (
                    f"the server cannot send the binlog from {self._position.describe()}: {text}. "
                    "The position was probably purged (expire_logs_days / binlog_expire_logs_"
                    "seconds); start anew with snapshot: when_needed to copy the tables again"
                )
                raise JobFailedError(msg) from exc
            if code in (1045, 1227, 1044, 1142):
                msg = (
                    f"the binlog user '{self._owner.server.username}' is refused: {text}. It needs "
                    "REPLICATION SLAVE, REPLICATION CLIENT (BINLOG MONITOR) and SELECT"
                )
                raise JobFailedError(msg) from exc
            return f"{text} (error {code})"
        if isinstance(exc, ConnectionError | TimeoutError | OSError):
            return f"{type(exc).__name__}: {exc}"
        if isinstance(exc, RetriableError):
            return str(exc)
        if isinstance(exc, pymysql.err.Error):
            return f"{type(exc).__name__}: {exc}"
        return None

    def _read(self) -> Iterator[pa.RecordBatch | None]:
        """Read events until stopped or the end is reached; raises to reconnect.

        Changes of whole transactions gather in a window; at a transaction boundary the window
        is flushed (one batch per table segment) once it is ``FLUSH_SECONDS`` old or holds a
        batch worth of changes, or when the server is idle (heartbeat).
        """
        from pymysqlreplication import event as ev  # noqa: PLC0415
        from pymysqlreplication import row_event as rev  # noqa: PLC0415

        ctx = self._owner.ctx
        stream = self._open_stream()
        window = _Window()
        skip = dict(self._position.emitted)
        after_ts = self._position.after_ts
        selection = self._owner.selection
        rows_events = (rev.WriteRowsEvent, rev.UpdateRowsEvent, rev.DeleteRowsEvent)
        last_yield = time.monotonic()
        in_group = False
        explicit_begin = False
        group_gtid: str | None = None
        group_ts = 0
        group_skipped = False
        file = self._position.file
        while not ctx.stopping.is_set():
            event = stream.fetchone()
            now = time.monotonic()
            if event is None:
                msg = "the server ended the binlog stream"
                raise _Reconnect(msg)
            self._healthy = True
            kind = type(event)
            if kind in rows_events:
                if group_skipped or (event.schema, event.table) not in selection:
                    continue
                self._add_rows(event, kind, rev, window, skip, file, group_gtid)
                if now - last_yield >= TICK_SECONDS:
                    yield None  # a long transaction: let checkpoints through (position unchanged)
                    last_yield = time.monotonic()
                continue
            if kind is ev.HeartbeatLogEvent:  # the server has nothing more to send now
                if not in_group:
                    yield from self._flush(window, skip)
                    if not window.rows:
                        ctx.report_lag(0.0)
                    if self._end is not None and not skip_pending(skip):
                        self._done = True  # caught up with a binlog end at or past stopAt's
                        return
                yield None
                last_yield = now
                continue
            if kind is ev.RotateEvent:
                file = event.next_binlog
                continue
            starts_group = kind is ev.MariadbGtidEvent or kind is ev.GtidEvent
            query = ""
            if kind is ev.QueryEvent:
                query = event.query.strip()
                if query[:5].upper() == "BEGIN":
                    explicit_begin = True
                    if in_group:
                        continue
                    starts_group = True
            if starts_group:
                if self._end_ts is not None and event.timestamp > self._end_ts:
                    yield from self._flush(window, skip)  # stopAt: a transaction after the end
                    self._done = True
                    return
                in_group = True
                explicit_begin = explicit_begin and kind is ev.QueryEvent
                group_gtid = (
                    getattr(event, "gtid", None) if kind is not ev.QueryEvent else group_gtid
                )
                group_ts = event.timestamp
                group_skipped = after_ts is not None and group_ts < after_ts
                if not group_skipped:
                    after_ts = None
                continue
            ddl: str | None = None
            if kind is ev.XidEvent or kind is ev.XAPrepareEvent:
                pass
            elif kind is ev.QueryEvent:
                upper = query[:12].upper()
                if upper.startswith(("SAVEPOINT", "ROLLBACK TO")):
                    continue
                if upper.startswith("XA ") and explicit_begin:
                    continue  # XA START / XA END inside the prepared transaction
                if not upper.startswith(("COMMIT", "ROLLBACK", "XA ")) and not group_skipped:
                    ddl = query
            else:
                continue
            # a transaction boundary
            in_group = False
            explicit_begin = False
            if group_gtid is not None:
                self._gtid_state.add(group_gtid)
            gtid_here = group_gtid
            group_gtid = None
            boundary_ts = group_ts or event.timestamp
            group_ts = 0
            group_skipped = False
            boundary = BinlogPosition(
                file, event.packet.log_pos, self._gtid_state.text(), boundary_ts, {}, after_ts
            )
            if ddl is not None:
                schema = event.schema
                db = schema.decode() if isinstance(schema, bytes) else str(schema or "")
                source = SourceInfo(file, event.packet.log_pos, gtid_here, event.timestamp * 1000)
                yield from self._ddl_event(window, skip, db, ddl, source, boundary)
                last_yield = time.monotonic()
            window.boundary = boundary
            if self._end is not None and boundary.reached(self._end):
                yield from self._flush(window, skip)
                self._done = True
                return
            if window.rows >= ctx.batch_rows or (
                window.rows and now - window.opened >= FLUSH_SECONDS
            ):
                yield from self._flush(window, skip)
                last_yield = time.monotonic()
            elif not window.rows and not skip_pending(skip):
                self._position = boundary  # nothing pending: the position moves on
                window.boundary = None
            if now - last_yield >= TICK_SECONDS:
                yield None
                last_yield = time.monotonic()

    def _add_rows(
        self,
        event: Any,
        kind: type,
        rev: Any,
        window: _Window,
        skip: dict[str, int],
        file: str | None,
        gtid: str | None,
    ) -> None:
        shape = self._shape(event)
        name = shape.layout.qualified
        source = SourceInfo(file, event.packet.log_pos, gtid, event.timestamp * 1000)
        cats = self._categories
        changes: list[tuple[str, list[Any] | None, list[Any] | None]]
        update = kind is rev.UpdateRowsEvent
        wanted = "update" if update else "insert" if kind is rev.WriteRowsEvent else "delete"
        if wanted not in cats:
            return
        decoded = None
        if shape.decoder is not None:
            try:
                decoded = shape.decoder.rows(event, 2 if update else 1)
            except (ValueError, IndexError, UnicodeDecodeError, struct.error, OverflowError):
                decoded = None  # let the library try (and report)
        if decoded is not None:
            convert = shape.convert_fast
            if kind is rev.WriteRowsEvent:
                changes = [("c", None, convert(v)) for v in decoded]
            elif kind is rev.DeleteRowsEvent:
                changes = [("d", convert(v), None) for v in decoded]
            else:
                changes = [("u", convert(b), convert(a)) for b, a in decoded]
        elif kind is rev.WriteRowsEvent:
            changes = [("c", None, shape.values(r["values"])) for r in event.rows]
        elif kind is rev.DeleteRowsEvent:
            changes = [("d", shape.values(r["values"]), None) for r in event.rows]
        else:
            changes = [
                ("u", shape.values(r["before_values"]), shape.values(r["after_values"]))
                for r in event.rows
            ]
        records = 2 if (self._layout == "paving" and self._params.split_update) else 1
        for op, before, after in changes:
            count = records if op == "u" else 1
            if skip.get(name, 0) > 0:
                skip[name] -= count
                continue
            window.add(shape, (op, before, after, source))

    def _shape(self, event: Any) -> _TableShape:
        key = (event.schema, event.table, event.table_id)
        shape = self._shapes.get(key)
        if shape is not None:
            return shape
        columns = event.columns
        names = [c.name for c in columns]
        if any(n is None for n in names):
            msg = (
                f"row event of {event.schema}.{event.table} carries no column names: the server "
                "needs binlog_row_metadata=FULL (set it, then restart the job)"
            )
            raise JobFailedError(msg)
        kinds = [kind_of_binlog_column(c) for c in columns]
        primary = event.primary_key
        key_columns = [primary] if isinstance(primary, str) and primary else list(primary or ())
        shape = _TableShape.of(event.schema, event.table, names, kinds, key_columns, columns)
        qualified = shape.layout.qualified
        previous = self._layouts_seen.get(qualified)
        if previous is not None and previous != tuple(names):
            log.info("binlogreader: the layout of %s changed: %s -> %s", qualified, previous, names)
        self._layouts_seen[qualified] = tuple(names)
        self._shapes[key] = shape
        return shape

    def _flush(self, window: _Window, skip: dict[str, int]) -> Iterator[pa.RecordBatch]:
        """Emit the window, one batch per table segment (split at ``batch_rows``); the position
        after the last of them is the window's boundary, before that the previous boundary
        plus the changes emitted per table."""
        if skip_pending(skip) or window.boundary is None:
            return  # changes emitted before a restore are still to be dropped again
        boundary = window.boundary
        if not window.rows:
            self._position = boundary
            window.clear()
            return
        step = max(1, self._owner.ctx.batch_rows)
        parts = [
            (segment, segment.changes[start : start + step])
            for segment in window.segments
            for start in range(0, len(segment.changes), step)
        ]
        emitted = dict(self._position.emitted)
        last_ts = 0
        for index, (segment, part) in enumerate(parts):
            name = segment.shape.layout.qualified
            batch = self._build(segment.shape, part)
            emitted[name] = emitted.get(name, 0) + self._records(part)
            last_ts = max(last_ts, part[-1][3].ts_ms)
            if index == len(parts) - 1:
                self._position = boundary
            else:
                previous = self._position
                self._position = BinlogPosition(
                    previous.file,
                    previous.pos,
                    previous.gtid,
                    previous.ts,
                    dict(emitted),
                    previous.after_ts,
                )
            if batch.num_rows:
                yield batch
        self._owner.ctx.report_lag(max(0.0, time.time() - last_ts / 1000))
        window.clear()

    def _records(self, part: list[tuple[Any, Any, Any, SourceInfo]]) -> int:
        if self._layout == "paving" and self._params.split_update:
            return sum(2 if c[0] == "u" else 1 for c in part)
        return len(part)

    def _build(
        self, shape: _TableShape, part: list[tuple[Any, Any, Any, SourceInfo]]
    ) -> pa.RecordBatch:
        sequence = self._sequence
        self._sequence += self._records(part)
        try:
            return build_changes(
                shape.layout,
                self._layout,
                part,  # type: ignore[arg-type]
                split_update=self._params.split_update,
                sequence=sequence,
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, ValueError):
            good = []
            for change in part:
                try:
                    build_changes(shape.layout, self._layout, [change])  # type: ignore[list-item]
                except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, ValueError) as exc:
                    row = dict(zip(shape.names, change[2] or change[1] or [], strict=False))
                    self._owner.ctx.report_dirty(
                        DirtyRecord(row, f"{shape.layout.qualified}: {exc}", "conversion")
                    )
                    continue
                good.append(change)
            return build_changes(
                shape.layout,
                self._layout,
                good,  # type: ignore[arg-type]
                split_update=self._params.split_update,
                sequence=sequence,
            )

    def _ddl_event(
        self,
        window: _Window,
        skip: dict[str, int],
        db: str,
        query: str,
        source: SourceInfo,
        boundary: BinlogPosition,
    ) -> Iterator[pa.RecordBatch]:
        """A DDL statement ends a group; ``window`` still ends at the boundary before it."""
        statement = parse_ddl(query, db)
        if statement.kind == "other" or statement.temporary:
            return
        selection = self._owner.selection
        touched = [(d or db, t) for d, t in statement.tables if (d or db, t) in selection]
        if not touched:
            return
        where = f"{source.file}:{source.pos}" + (f" (GTID {source.gtid})" if source.gtid else "")
        names = ", ".join(f"{d}.{t}" for d, t in touched)
        if self._ddl == "skip":
            log.warning(
                "binlogreader: skipped DDL on %s at %s: %s (ddl: skip)", names, where, query
            )
            if statement.kind == "truncate":
                log.warning(
                    "binlogreader: TRUNCATE is not in the row events: the target keeps %s's rows",
                    names,
                )
            return
        if self._ddl == "fail":
            msg = (
                f"DDL on captured table {names} at {where}: {query!r}. The job's ddl policy is "
                "'fail': change the target to match, then resume with ddl: skip (restore with "
                "--force-restore: the saved position is before this statement)"
            )
            raise JobFailedError(msg)
        # apply: the changes before the statement leave first (at the previous boundary)
        yield from self._flush(window, skip)
        if window.rows or skip_pending(skip):
            msg = f"internal: DDL at {where} reached with changes still pending"
            raise JobFailedError(msg)
        for d, t in touched:
            self._position = boundary
            yield ddl_batch(d, t, query, source)


def skip_pending(skip: dict[str, int]) -> bool:
    """Whether changes emitted before a restore are still to be dropped."""
    return any(count > 0 for count in skip.values())
