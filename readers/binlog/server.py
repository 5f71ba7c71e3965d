"""The server a ``binlogreader`` reads: flavour, binlog settings, privileges, positions.

``check()`` says which setting to change and which privilege the user lacks (REPLICATION SLAVE,
REPLICATION CLIENT / BINLOG MONITOR, SELECT); :class:`BinlogServer` also finds the current and
configured start positions, whether a saved one was purged, and the snapshot's handover point.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from libs.mysql.connect import connect, connect_failure, connection_settings
from readers.binlog.params import PARAM_PATH, PLUGIN, BinlogReaderParams, selection
from readers.binlog.positions import BinlogPosition, file_index, mariadb_before
from sync.errors import ConfigIssue, JobFailedError, JobFileError
from sync.registry import require

__all__ = [
    "BinlogServer",
    "Flavor",
    "privilege_problems",
    "pymysql_module",
    "query",
    "settings_problems",
]


def pymysql_module() -> Any:
    """``pymysql`` (extra ``binlog``)."""
    return require("pymysql", "binlog", PLUGIN)


def query(conn: Any, sql: str, args: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
    """The rows of one statement."""
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


@dataclass(frozen=True)
class Flavor:
    """MariaDB or MySQL, and how positions resume."""

    mariadb: bool
    gtid: bool
    """Resume by GTID (MariaDB always; MySQL with gtid_mode=ON or isGTIDMode)."""
    version: str


def _flavor(conn: Any, params: BinlogReaderParams) -> Flavor:
    version = str(query(conn, "SELECT VERSION()")[0][0])
    if "mariadb" in version.lower():
        return Flavor(True, True, version)
    rows = query(conn, "SHOW GLOBAL VARIABLES LIKE 'gtid_mode'")
    gtid_on = bool(rows) and str(rows[0][1]).upper() == "ON"
    return Flavor(False, gtid_on or params.is_gtid_mode, version)


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


class BinlogServer:
    """The server a binlogreader replicates from: connections, its flavour and binlog state,
    the tables captured, and what :meth:`check` finds wrong with it."""

    def __init__(self, params: BinlogReaderParams) -> None:
        self.params = params
        self.url = params.server_url()
        """Where to connect (no default database: the binlog spans every database)."""
        self.selection = selection(params)
        self._flavor: Flavor | None = None

    def problems(self) -> list[str]:
        """What keeps the server from being replicated: settings, privileges, missing tables."""
        conn = self.connect()
        try:
            self._flavor = _flavor(conn, self.params)
            rows = query(
                conn,
                "SHOW GLOBAL VARIABLES WHERE Variable_name IN "
                "('log_bin', 'binlog_format', 'binlog_row_image', 'binlog_row_metadata')",
            )
            variables = {str(k).lower(): str(v) for k, v in rows}
            problems = settings_problems(variables, self.where)
            grants = [str(r[0]) for r in query(conn, "SHOW GRANTS FOR CURRENT_USER()")]
            databases = sorted(self.selection.databases or [])
            problems += privilege_problems(grants, databases, self.url.username or "")
            if self.selection.exact is not None and not problems:
                problems += self._missing_tables(conn)
        finally:
            conn.close()
        return problems

    @property
    def where(self) -> str:
        """``host:port`` for messages."""
        return f"{self.url.host}:{self.url.port}"

    def connect(self) -> Any:
        """An autocommit connection (:func:`libs.mysql.connect.connect`); a refused login stops
        the job, any other failure to connect is retriable (:func:`connect_failure`)."""
        pymysql = pymysql_module()
        try:
            return connect(self.url, read_timeout=60)
        except pymysql.err.OperationalError as exc:
            raise connect_failure(
                exc,
                self.where,
                self.url.username,
                param_path=PARAM_PATH,
                secrets=[self.url.password],
            ) from exc

    def flavor(self, conn: Any | None = None) -> Flavor:
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

    def _missing_tables(self, conn: Any) -> list[str]:
        assert self.selection.exact is not None
        missing = []
        for db, table in sorted(self.selection.exact):
            rows = query(
                conn,
                "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA=%s AND TABLE_NAME=%s",
                (db, table),
            )
            if not rows:
                missing.append(f"{db}.{table}")
        if missing:
            return [
                f"{PARAM_PATH}.table: table(s) {', '.join(missing)} not found on "
                f"{self.where} (or not visible to '{self.url.username}')"
            ]
        return []

    def current(self, conn: Any, flavor: Flavor) -> BinlogPosition:
        """The binlog end now (``SHOW MASTER STATUS``) with its GTID state."""
        rows = query(conn, "SHOW MASTER STATUS")
        if not rows or rows[0][0] in (None, ""):
            msg = f"{self.where}: binary logging is off (log_bin); see check()"
            raise JobFailedError(msg)
        file, pos = str(rows[0][0]), int(rows[0][1])
        gtid: str | None = None
        if flavor.mariadb:
            gtid = self.gtid_at(conn, file, pos)
        elif flavor.gtid:
            raw = rows[0][4] if len(rows[0]) > 4 else None
            gtid = str(raw).replace("\n", "") if raw else None
        return BinlogPosition(file, pos, gtid)

    def gtid_at(self, conn: Any, file: str, pos: int) -> str:
        """MariaDB's GTID state at binlog coordinates ``file:pos`` (a group boundary)."""
        rows = query(conn, "SELECT BINLOG_GTID_POS(%s, %s)", (file, pos))
        value = rows[0][0] if rows else None
        if value is None:
            msg = (
                f"{PARAM_PATH}.start: {file}:{pos} is not a transaction boundary in the server's "
                "binlog (or the file is gone); give the position of an event group's start"
            )
            raise JobFailedError(msg)
        return str(value)

    def configured_start(self, conn: Any, flavor: Flavor) -> BinlogPosition:
        """Where ``start`` says to begin (a file/position, a timestamp, a GTID set; now)."""
        start = self.params.start
        if start is None or start.is_empty():
            return self.current(conn, flavor)
        if start.timestamp is not None:
            seconds = start.timestamp // 1000 if start.timestamp > 10**11 else start.timestamp
            logs = query(conn, "SHOW BINARY LOGS")
            if not logs:
                msg = f"{self.where}: no binary logs"
                raise JobFailedError(msg)
            first = str(logs[0][0])
            for row in reversed(logs):  # the newest file that starts at or before the time
                created = self.file_created(str(row[0]))
                if created is not None and created <= seconds:
                    first = str(row[0])
                    break
            gtid = self.gtid_at(conn, first, 4) if flavor.mariadb else None
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
            gtid = self.gtid_at(conn, start.journal_name, pos) if flavor.mariadb else None
            if not flavor.mariadb and flavor.gtid:
                msg = "with MySQL GTID mode give start.gtid (a file/position cannot be resumed)"
                raise JobFileError([ConfigIssue(f"{PARAM_PATH}.start", msg)])
            return BinlogPosition(start.journal_name, pos, gtid)
        msg = "give journalName (and position), timestamp or gtid"
        raise JobFileError([ConfigIssue(f"{PARAM_PATH}.start", msg)])

    def file_created(self, file: str) -> int | None:
        """When a binlog file was started (its format description event's time, s)."""
        replication = require("pymysqlreplication", "binlog", PLUGIN)
        from pymysqlreplication.event import FormatDescriptionEvent  # noqa: PLC0415

        stream = replication.BinLogStreamReader(
            connection_settings=connection_settings(self.url),
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

    def purged(self, conn: Any, flavor: Flavor, position: BinlogPosition) -> str | None:
        """Why ``position`` cannot be resumed from (purged), or None."""
        logs = [str(r[0]) for r in query(conn, "SHOW BINARY LOGS")]
        if not logs:
            return "the server has no binary logs"
        if (
            position.file is not None
            and position.file not in logs
            and file_index(position.file) < file_index(logs[0])
        ):
            return f"{position.file} was purged (the oldest binlog is {logs[0]})"
        if flavor.mariadb and position.gtid:
            oldest = self.gtid_list_of(conn, logs[0])
            if oldest is not None and mariadb_before(position.gtid, oldest):
                return (
                    f"GTID {position.gtid} is older than the oldest binlog {logs[0]} "
                    f"(which starts after {oldest})"
                )
        return None

    def gtid_list_of(self, conn: Any, file: str) -> str | None:
        """The GTID state a binlog file starts with (None when the server cannot say)."""
        try:
            rows = query(conn, "SELECT BINLOG_GTID_POS(%s, 4)", (file,))
        except Exception:
            return None
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def snapshot_point(
        self, conn: Any, flavor: Flavor
    ) -> tuple[BinlogPosition, list[tuple[str, str]]]:
        """The handover position (consistent snapshot, no global lock on MariaDB) and the
        tables to copy."""
        tables = self.captured_tables(conn)
        snap = self.connect()
        try:
            if flavor.mariadb:
                query(snap, "START TRANSACTION WITH CONSISTENT SNAPSHOT")
                status = {
                    str(k).lower(): v
                    for k, v in query(snap, "SHOW STATUS LIKE 'binlog_snapshot_%'")
                }
                file = str(status["binlog_snapshot_file"])
                pos = int(status["binlog_snapshot_position"])
                query(snap, "COMMIT")
                position = BinlogPosition(file, pos, self.gtid_at(snap, file, pos))
            else:
                query(snap, "FLUSH TABLES WITH READ LOCK")
                try:
                    query(snap, "START TRANSACTION WITH CONSISTENT SNAPSHOT")
                    position = self.current(snap, flavor)
                finally:
                    query(snap, "UNLOCK TABLES")
                query(snap, "COMMIT")
        finally:
            snap.close()
        return position, tables

    def captured_tables(self, conn: Any) -> list[tuple[str, str]]:
        """The base tables ``table``/``filter`` select, in name order (only the databases they
        can be in are listed: information_schema over every database of a busy server took a
        minute)."""
        sql = "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = "
        sql += "'BASE TABLE'"
        databases = sorted(self.selection.databases or ())
        if databases:
            sql += f" AND TABLE_SCHEMA IN ({', '.join(['%s'] * len(databases))})"
        rows = query(conn, sql + " ORDER BY TABLE_SCHEMA, TABLE_NAME", databases or None)
        return [(str(db), str(t)) for db, t in rows if (str(db), str(t)) in self.selection]
