"""binlogreader and the CDC apply paths of sqlwriter and mysqlwriter, against the private MariaDB.

Source and target are two fresh databases of the test server; the target is written by
``sqlwriter`` over ``mysql+pymysql`` (changes staged, applied at commit) or by ``mysqlwriter``
(changes applied inside the checkpoint's XA transaction, or a local one at-least-once). Every
replication test ends by comparing the two table by table (every row, every column). Tests that restart a server or purge its binlogs use a
second private server of their own (:func:`private_server`), so that the shared one is never
disturbed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication import row_event as rev

from libs.cdc import (
    SourceInfo,
    TableLayout,
    build_changes,
    ddl_batch,
    decode,
    net_effect,
    parse_ddl,
)
from libs.mysql.types import column_type_of_binlog
from libs.mysql.xa import xa_recover
from readers.binlog import BinlogReader, BinlogReaderParams
from readers.binlog.decoder import RowDecoder, TableShape
from readers.binlog.positions import BinlogPosition, SnapshotPosition, SnapshotSplit, StreamSplit
from readers.binlog.server import privilege_problems, settings_problems
from readers.binlog.stream import DDL_EMITTED
from sync.contract import (
    CompletedCheckpoint,
    JobContext,
    StateVersionError,
    encode,
    job_identity,
)
from sync.contract import decode as decode_state
from sync.errors import FatalError, JobFileError
from sync.jobfile import load_job
from sync.model import Setting
from tests.conftest import COMPAT, REPO, compat_file
from tests.crash import latest_checkpoint, syncx_command
from tests.servers.mariadb import SCRIPT, MariaDB, ensure_server
from writers.mysql import MysqlWriter, MysqlWriterParams
from writers.sql import SqlWriter, SqlWriterParams

pytestmark = pytest.mark.mysql

JOBS = REPO / "jobs"

# -- what replication is tested on --------------------------------------------------------------

TABLES: dict[str, str] = {
    "orders": (
        "CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(40) NOT NULL, qty INT NULL, "
        "price DECIMAL(12,2) NULL, note TEXT NULL, updated DATETIME(6) NULL, "
        "stamp TIMESTAMP(3) NULL, tags SET('a','b','c') NULL, state ENUM('new','paid','sent') "
        "NULL, flag BIT(3) NULL, raw VARBINARY(16) NULL)"
    ),
    "items": (
        "CREATE TABLE items (order_id INT NOT NULL, line VARCHAR(20) NOT NULL, amount DOUBLE "
        "NULL, born DATE NULL, PRIMARY KEY (order_id, line))"
    ),
    "events": (
        "CREATE TABLE events (id BIGINT UNSIGNED PRIMARY KEY, payload LONGTEXT NULL, score FLOAT "
        "NULL, yr YEAR NULL, t TIME NULL, big DECIMAL(30,10) NULL)"
    ),
}
KEYS = {"orders": "id", "items": "order_id, line", "events": "id"}


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class Workload:
    """Seeded random changes on :data:`TABLES`: inserts, updates (also of primary keys),
    deletes, NULLs, and transactions spanning tables or holding thousands of rows."""

    def __init__(self, server: MariaDB, database: str, seed: int = 7) -> None:
        self.conn = server.connect(database)
        self.rng = random.Random(seed)
        self.next_id = {"orders": 1, "items": 1, "events": 1}
        self.lock = threading.Lock()

    def close(self) -> None:
        self.conn.close()

    def _value(self, table: str, key: int) -> tuple[Any, ...]:
        r = self.rng
        maybe = lambda v: None if r.random() < 0.15 else v  # noqa: E731
        if table == "orders":
            return (
                key,
                f"cust-{r.randint(1, 500)}-é",
                maybe(r.randint(-5, 500)),
                maybe(decimal.Decimal(r.randint(-100000, 100000)) / 100),
                maybe("note " * r.randint(0, 30)),
                maybe(
                    dt.datetime(2024, 1, 1)
                    + dt.timedelta(seconds=r.randint(0, 10**7), microseconds=r.randint(0, 999999))
                ),
                maybe(
                    dt.datetime(2023, 6, 1)
                    + dt.timedelta(seconds=r.randint(0, 10**7), milliseconds=r.randint(0, 999))
                ),
                maybe(",".join(sorted(r.sample(["a", "b", "c"], r.randint(1, 3))))),
                maybe(r.choice(["new", "paid", "sent"])),
                maybe(r.randint(0, 7)),
                maybe(bytes(r.randint(0, 255) for _ in range(r.randint(0, 16)))),
            )
        if table == "items":
            return (
                key,
                f"line-{r.randint(1, 3)}",
                maybe(r.uniform(-1e6, 1e6)),
                maybe(dt.date(2020, 1, 1) + dt.timedelta(days=r.randint(0, 2000))),
            )
        return (
            key,
            maybe(json.dumps({"k": r.randint(0, 99), "s": "x" * r.randint(0, 50)})),
            maybe(float(r.randint(-1000, 1000)) / 4),
            maybe(r.randint(1990, 2030)),
            maybe(dt.timedelta(seconds=r.randint(0, 86399))),
            maybe(decimal.Decimal(r.randint(-(10**15), 10**15)) / 10**10),
        )

    def execute(self, sql: str, args: Any = None) -> None:
        with self.conn.cursor() as cur:
            cur.execute(sql, args)

    def insert(self, table: str, count: int) -> None:
        rows = []
        for _ in range(count):
            key = self.next_id[table]
            self.next_id[table] += 1
            rows.append(self._value(table, key))
        marks = ", ".join(["%s"] * len(rows[0]))
        with self.conn.cursor() as cur:
            cur.executemany(f"INSERT IGNORE INTO {table} VALUES ({marks})", rows)

    def _some_keys(self, table: str, count: int) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(
                f"SELECT {KEYS[table]} FROM {table} ORDER BY RAND({self.rng.randint(0, 10**6)}) LIMIT %s",
                (count,),
            )
            return list(cur.fetchall())

    def update(self, table: str, count: int) -> None:
        for key in self._some_keys(table, count):
            row = self._value(table, 0)
            if table == "orders":
                self.execute(
                    "UPDATE orders SET qty=%s, price=%s, note=%s, updated=%s, stamp=%s, tags=%s, "
                    "state=%s, flag=%s, raw=%s WHERE id=%s",
                    (*row[2:], key[0]),
                )
            elif table == "items":
                self.execute(
                    "UPDATE items SET amount=%s, born=%s WHERE order_id=%s AND line=%s",
                    (row[2], row[3], *key),
                )
            else:
                self.execute(
                    "UPDATE events SET payload=%s, score=%s, yr=%s, t=%s, big=%s WHERE id=%s",
                    (*row[1:], key[0]),
                )

    def change_keys(self, table: str, count: int) -> None:
        for key in self._some_keys(table, count):
            if table == "items":
                self.execute(
                    "UPDATE IGNORE items SET line=%s WHERE order_id=%s AND line=%s",
                    (f"moved-{self.rng.randint(0, 10**6)}", *key),
                )
            else:
                new = self.next_id[table]
                self.next_id[table] += 1
                self.execute(f"UPDATE {table} SET id=%s WHERE id=%s", (new, key[0]))

    def delete(self, table: str, count: int) -> None:
        for key in self._some_keys(table, count):
            if table == "items":
                self.execute("DELETE FROM items WHERE order_id=%s AND line=%s", key)
            else:
                self.execute(f"DELETE FROM {table} WHERE id=%s", key)

    def step(self, scale: int = 1, *, bulk: bool = True) -> None:
        """One round of mixed changes, some in multi-table transactions (``bulk``: also two
        statements that change many rows)."""
        with self.lock:
            for table in TABLES:
                self.insert(table, 20 * scale)
                self.update(table, 6 * scale)
                self.change_keys(table, 2 * scale)
                self.delete(table, 4 * scale)
            self.execute("BEGIN")
            self.insert("orders", 5)
            self.update("items", 5)
            self.delete("events", 2)
            self.change_keys("orders", 1)
            self.execute("COMMIT")
            if bulk:  # a statement touching many rows; then one that sets NULLs
                self.execute("UPDATE items SET amount = amount + 1 WHERE amount IS NOT NULL")
                self.execute("UPDATE orders SET note = NULL WHERE id % 7 = 0")

    def large_transaction(self, rows: int) -> None:
        with self.lock:
            self.execute("BEGIN")
            self.insert("events", rows)
            self.execute("UPDATE events SET score = -score WHERE score IS NOT NULL")
            self.execute("COMMIT")


@contextlib.contextmanager
def changing(
    step: Callable[[], object], pause: float, until: Callable[[], bool] | None = None
) -> Iterator[None]:
    """While the body runs (and ``until`` is not true yet), a thread keeps calling ``step``
    (changes: ``lambda: work.step(bulk=False)``, a sysbench run), ``pause`` seconds apart; an
    error of that thread fails the test."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def load() -> None:
        try:
            while not stop.is_set() and not (until is not None and until()):
                step()
                stop.wait(pause)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        yield
    finally:
        stop.set()
        loader.join()
    assert not errors, errors


def evolve(pair: Pair, work: Workload) -> list[str]:
    """Changes interleaved with schema changes, for ``ddl: apply``: a table created, given a
    column, its column widened, keys changed, a column dropped, emptied and refilled; another
    created, filled and dropped; the workload's tables changing in between. Returns the tables
    the target must then hold exactly."""

    def run(*statements: str) -> None:
        for statement in statements:
            pair.execute(pair.source, statement)

    run(
        "CREATE TABLE evolving (id INT PRIMARY KEY, a VARCHAR(10) NULL)",
        "INSERT INTO evolving (id, a) VALUES " + ", ".join(f"({i}, 'v{i}')" for i in range(1, 61)),
    )
    work.step(2)
    run(
        "ALTER TABLE evolving ADD COLUMN b INT NULL DEFAULT 7",
        "UPDATE evolving SET b = id * 2 WHERE id % 3 = 0",
        "INSERT INTO evolving (id, a, b) VALUES (100, 'new', NULL), (101, NULL, 5)",
    )
    work.step(2)
    run(
        "ALTER TABLE evolving MODIFY COLUMN a VARCHAR(40) NULL",
        "UPDATE evolving SET a = CONCAT(a, '-a-much-longer-value') WHERE id % 4 = 0",
        "UPDATE evolving SET id = id + 1000 WHERE id % 5 = 0",
    )
    work.step(2)
    run(
        "CREATE TABLE scratch (k INT PRIMARY KEY, v TEXT)",
        "INSERT INTO scratch VALUES (1, 'one'), (2, 'two')",
        "ALTER TABLE evolving DROP COLUMN b",
        "DELETE FROM evolving WHERE id % 7 = 0",
        "DROP TABLE scratch",
    )
    work.step(2)
    run(
        "TRUNCATE TABLE evolving",
        "INSERT INTO evolving (id, a) VALUES " + ", ".join(f"({i}, 'w{i}')" for i in range(1, 31)),
        "UPDATE evolving SET a = NULL WHERE id % 6 = 0",
    )
    work.step(2)
    return [*TABLES, "evolving"]


def query(server: MariaDB, database: str | None, sql: str, args: Any = None) -> list[Any]:
    """The rows of ``sql`` run in ``database`` on a connection of its own."""
    conn = server.connect(database)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


def table_rows(server: MariaDB, database: str, table: str) -> list[tuple[Any, ...]]:
    return query(server, database, f"SELECT * FROM {quote(table)} ORDER BY {KEYS.get(table, '1')}")


def assert_same_tables(server: MariaDB, source: str, target: str, tables: list[str]) -> None:
    for table in tables:
        want = table_rows(server, source, table)
        got = table_rows(server, target, table)
        if want != got:
            missing = [r for r in want if r not in set(got)][:3]
            extra = [r for r in got if r not in set(want)][:3]
            pytest.fail(
                f"{table}: source has {len(want)} rows, target {len(got)}; "
                f"missing e.g. {missing}; unexpected e.g. {extra}"
            )


@dataclass
class Pair:
    """A source database and a target database with the same tables."""

    server: MariaDB
    source: str
    target: str
    tables: list[str] = field(default_factory=lambda: list(TABLES))

    def execute(self, database: str, sql: str) -> None:
        query(self.server, database, sql)

    def gtid(self) -> str:
        return str(query(self.server, None, "SELECT @@gtid_binlog_pos")[0][0])

    def same(self) -> None:
        assert_same_tables(self.server, self.source, self.target, self.tables)


@pytest.fixture(scope="module")
def server() -> MariaDB:
    return ensure_server()


def make_pair(server: MariaDB, tables: dict[str, str] | None = None) -> Pair:
    source = server.create_database("cdc_src")
    target = server.create_database("cdc_dst")
    pair = Pair(server, source, target, list(tables or TABLES))
    for ddl in (tables or TABLES).values():
        pair.execute(source, ddl)
        pair.execute(target, ddl)
    return pair


@pytest.fixture
def pair(server: MariaDB) -> Iterator[Pair]:
    made = make_pair(server)
    yield made
    server.drop_database(made.source)
    server.drop_database(made.target)


def binlog_job(
    pair: Pair,
    *,
    reader: dict[str, Any] | None = None,
    writer: dict[str, Any] | None = None,
    setting: dict[str, Any] | None = None,
    start: str | None = None,
    snapshot: str = "never",
    stop_at: Any = "now",
    paving: bool = False,
) -> dict[str, Any]:
    server = pair.server
    params: dict[str, Any] = {
        "jdbcUrl": f"jdbc:mysql://{server.host}:{server.port}/{pair.source}",
        "username": server.user,
        "password": server.password,
        "pavingData": paving,
        "snapshot": snapshot,
    }
    if stop_at is not None:
        params["stopAt"] = stop_at
    if start is not None:
        params["start"] = {"gtid": start}
    params.update(reader or {})
    sink = {
        "name": "sqlwriter",
        "parameter": {
            "url": f"mysql+pymysql://{server.user}@{server.host}:{server.port}/{pair.target}",
            "table": "*",
            **((writer or {}).get("parameter", {})),
        },
    }
    if writer is not None and "name" in writer:
        sink = writer
    settings = {"restore": {"isRestore": True, "checkpointInterval": 0.5}}
    settings.update(setting or {})
    return {
        "job": {
            "content": [{"reader": {"name": "binlogreader", "parameter": params}, "writer": sink}],
            "setting": settings,
        }
    }


def write_job(path: Path, job: dict[str, Any]) -> Path:
    path.write_text(json.dumps(job, indent=1), encoding="utf-8")
    return path


def run(
    job: Path, state: Path, *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*syncx_command(), "run", str(job), f"--state-dir={state}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, (
        f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    )
    return done.stderr


def mysql_sink(pair: Pair, **parameter: Any) -> dict[str, Any]:
    """``mysqlwriter`` in ChunJun's spelling, each source table into the target table of its
    name; exactly once (XA) unless ``parameter`` says otherwise."""
    server = pair.server
    return {
        "name": "mysqlwriter",
        "parameter": {
            "connection": [
                {
                    "jdbcUrl": f"jdbc:mysql://{server.host}:{server.port}/{pair.target}",
                    "table": ["*"],
                }
            ],
            "username": server.user,
            "password": server.password,
            "semantic": "exactly-once",
            **parameter,
        },
    }


def evolving_job(
    pair: Pair,
    path: Path,
    writer: dict[str, Any],
    *,
    seed: int = 13,
    setting: dict[str, Any] | None = None,
) -> Path:
    """Make :func:`evolve`'s changes on ``pair``'s source and write the job that replicates
    them into ``writer`` with ``ddl: apply`` (new tables captured too); ``pair.tables`` are then
    the tables to compare."""
    start = pair.gtid()
    work = Workload(pair.server, pair.source, seed=seed)
    pair.tables = evolve(pair, work)
    work.close()
    spec = binlog_job(
        pair,
        start=start,
        reader={"ddl": "apply", "filter": f"{pair.source}\\..*"},
        writer=writer,
        setting=setting,
    )
    return write_job(path, spec)


def assert_no_table(pair: Pair, name: str) -> None:
    """The target has no table ``name`` (a DROP TABLE was applied)."""
    assert query(pair.server, pair.target, "SHOW TABLES LIKE %s", (name,)) == []


def assert_applied_in_xa(pair: Pair, job: Path, state: Path, *, deferred: bool = False) -> None:
    """The job's changes went through mysqlwriter's XA transactions: their commit markers are
    there, none is left prepared, no change-staging table was made, no deferred record is left
    (and with ``deferred`` some were deferred behind a DDL)."""
    prefix = f"syncx-{job_identity(job.stem, state)}-"
    conn = pair.server.connect(pair.target)
    try:
        with conn.cursor() as cur:
            assert not [x for x in xa_recover(cur) if x.gtrid.startswith(prefix)]
            cur.execute("SHOW TABLES LIKE '\\_syncx\\_%'")
            names = {row[0] for row in cur.fetchall()}
            assert not [n for n in names if n.startswith("_syncx_cdc_")], names
            assert ("_syncx_deferred" in names) == deferred, names
            cur.execute("SELECT COUNT(*) FROM _syncx_commits")
            assert cur.fetchone()[0] > 0
            if deferred:
                cur.execute("SELECT COUNT(*) FROM _syncx_deferred")
                assert cur.fetchone()[0] == 0
    finally:
        conn.close()


# -- unit: layouts, DDL parsing, messages, parameters --------------------------------------------


def test_chunjun_binlog_examples_validate_unchanged() -> None:
    compat_file("chunjun")
    files = sorted((COMPAT / "chunjun").glob("binlog__*.json"))
    files += [
        COMPAT / "chunjun-1.10-docs" / "example__binlog_stream.json",
        COMPAT / "chunjun-1.10-docs" / "example__binlog_hive.json",
    ]
    assert len(files) >= 5
    for path in files:
        try:
            job = load_job(path)
        except JobFileError as exc:
            reader_issues = [i for i in exc.issues if ".reader" in i.path]
            assert not reader_issues, f"{path.name}: {reader_issues}"
        else:
            assert isinstance(job.reader_params, BinlogReaderParams)


def test_parameters_in_chunjun_spellings() -> None:
    params = BinlogReaderParams.model_validate(
        {
            "jdbcUrl": "jdbc:mysql://db1:3316/shop?useSSL=false&password=s3cret",
            "username": "repl",
            "table": "shop.orders",
            "cat": "insert,DELETE",
            "start": {"journal-name": "mysql-bin.000003", "position": 4},
            "slaveId": 1234,
            "isGTIDMode": True,
            "ddlSkip": False,
        }
    )
    assert params.password is not None and params.password.get_secret_value() == "s3cret"
    assert "s3cret" not in (params.jdbc_url or "")
    assert params.table == ["shop.orders"]
    assert params.categories() == {"insert", "delete"}
    assert params.start is not None and params.start.journal_name == "mysql-bin.000003"
    assert params.slave_id == 1234 and params.is_gtid_mode
    assert params.ddl_policy() == "fail"
    assert BinlogReaderParams.model_validate({"host": "h"}).ddl_policy() == "skip"
    with pytest.raises(ValueError, match="unknown change type"):
        BinlogReaderParams.model_validate({"host": "h", "cat": "insert,truncate"})
    with pytest.raises(ValueError, match="jdbcUrl"):
        BinlogReaderParams.model_validate({"username": "u"})


def test_checkpoints_of_the_plain_dict_format_still_restore() -> None:
    """Positions and split data stored before they were typed (plain dicts, no version or kind)
    load as the typed classes, and the typed form round-trips."""
    old_stream = {"file": "mysql-bin.000003", "pos": 1234, "gtid": "0-1-77", "ts": 1700000000}
    old_stream_emitted = {**old_stream, "emitted": {"db.orders": 3}, "after_ts": 1699999999}
    old_snapshot = {"after": 41}
    old_stream_split = {"kind": "stream", "start": old_stream, "snapshot": ["snapshot:db.t:0"]}
    old_snapshot_split = {
        "kind": "snapshot",
        "db": "db",
        "table": "t",
        "inner": {"id": "range-0", "data": {"mode": "keyset"}},
        "at": old_stream,
    }
    position = decode_state(BinlogReader.position_type, old_stream)
    assert position == BinlogPosition("mysql-bin.000003", 1234, "0-1-77", 1700000000)
    emitted = decode_state(BinlogReader.position_type, old_stream_emitted)
    assert isinstance(emitted, BinlogPosition)
    assert emitted.emitted == {"db.orders": 3} and emitted.after_ts == 1699999999
    assert decode_state(BinlogReader.position_type, old_snapshot) == SnapshotPosition({"after": 41})
    stream_split = decode_state(BinlogReader.split_type, old_stream_split)
    assert stream_split == StreamSplit(old_stream, ["snapshot:db.t:0"])
    snapshot_split = decode_state(BinlogReader.split_type, old_snapshot_split)
    assert isinstance(snapshot_split, SnapshotSplit) and snapshot_split.inner["id"] == "range-0"
    typed = [
        (BinlogReader.position_type, position),
        (BinlogReader.position_type, emitted),
        (BinlogReader.position_type, SnapshotPosition({"after": 41})),
        (BinlogReader.split_type, stream_split),
        (BinlogReader.split_type, snapshot_split),
    ]
    for kind, value in typed:
        stored = json.loads(json.dumps(encode(value)))
        assert stored["v"] == 1 and "kind" in stored
        assert decode_state(kind, stored) == value
    with pytest.raises(StateVersionError, match="newer"):
        decode_state(BinlogReader.position_type, {**position.to_json(), "v": 9})


def _layout() -> TableLayout:
    schema = pa.schema([("id", pa.int64()), ("v", pa.string())])
    return TableLayout("db", "t", schema, ("id",))


@pytest.mark.parametrize("form", ["envelope", "paving"])
def test_changes_round_trip_and_primary_key_changes(form: str) -> None:
    source = SourceInfo("mysql-bin.000001", 100, "0-1-5", 1_700_000_000_000)
    changes = [
        ("c", None, [1, "a"], source),
        ("u", [1, "a"], [1, "b"], source),
        ("u", [1, "b"], [2, "b"], source),  # the key changes
        ("d", [2, "b"], None, source),
        ("r", None, [3, None], source),
    ]
    batch = build_changes(_layout(), form, changes, split_update=True)  # type: ignore[arg-type]
    if form == "paving":
        assert batch.schema.names[:5] == ["schema", "table", "ts", "opTime", "type"]
        assert batch.column("type").to_pylist() == [
            "INSERT",
            "UPDATE_BEFORE",
            "UPDATE_AFTER",
            "UPDATE_BEFORE",
            "UPDATE_AFTER",
            "DELETE",
            "INSERT",
        ]
        assert len(set(batch.column("ts").to_pylist())) == batch.num_rows
    else:
        assert batch.column("op").to_pylist() == ["c", "u", "u", "d", "r"]
        assert batch.column("source").to_pylist()[0]["gtid"] == "0-1-5"
    decoded = decode(batch)
    assert decoded is not None and not hasattr(decoded, "statement")
    actions = list(zip(decoded.upsert, decoded.rows.column("id").to_pylist(), strict=True))  # type: ignore[union-attr]
    if form == "envelope":
        assert actions == [(True, 1), (True, 1), (False, 1), (True, 2), (False, 2), (True, 3)]
    else:  # split updates: each is a delete of the old image and an upsert of the new
        assert actions == [
            (True, 1),
            (False, 1),
            (True, 1),
            (False, 1),
            (True, 2),
            (False, 2),
            (True, 3),
        ]
    assert decode(pa.record_batch({"x": [1]})) is None


def test_net_effect_is_each_keys_last_change() -> None:
    keys = [(1,), (2,), (1,), (3,), (2,), (4,), (4,), (5,)]
    upsert = [True, True, False, True, True, True, False, False]
    # 1: upserted then deleted; 2: upserted twice; 3: upserted; 4: upserted then deleted;
    # 5: deleted
    assert net_effect(keys, upsert) == ([2, 6, 7], [3, 4])
    assert net_effect([], []) == ([], [])


def test_ddl_statements_are_recognized() -> None:
    alter = parse_ddl(
        "ALTER TABLE `shop`.`orders` ADD COLUMN `z` INT DEFAULT 3, DROP COLUMN y, "
        "MODIFY c VARCHAR(10), ADD INDEX ix (a), CHANGE a b INT",
        "other",
    )
    assert alter.kind == "alter" and alter.tables == [("shop", "orders")]
    assert [(k, c) for k, c, _ in alter.actions] == [
        ("add", "z"),
        ("drop", "y"),
        ("modify", "c"),
        ("index", None),
        ("change", "a"),
    ]
    dropped = parse_ddl("DROP TABLE `m`,`n` /* generated by server */", "db")
    assert dropped.kind == "drop" and dropped.tables == [("db", "m"), ("db", "n")]
    assert parse_ddl("create table if not exists x (id int)", "db").tables == [("db", "x")]
    assert parse_ddl("TRUNCATE t", "db").kind == "truncate"
    assert parse_ddl("GRANT SELECT ON *.* TO u", "db").kind == "other"


def test_server_settings_messages_say_what_to_change() -> None:
    good = {
        "log_bin": "ON",
        "binlog_format": "ROW",
        "binlog_row_image": "FULL",
        "binlog_row_metadata": "FULL",
    }
    assert settings_problems(good, "h:1") == []
    problems = settings_problems(
        {"log_bin": "ON", "binlog_format": "MIXED", "binlog_row_image": "MINIMAL"}, "h:1"
    )
    text = "\n".join(problems)
    assert "binlog_format is MIXED" in text and "binlog_format=ROW" in text
    assert "binlog_row_image=FULL" in text
    assert "binlog_row_metadata is not available" in text and "binlog_row_metadata=FULL" in text
    off = settings_problems({**good, "log_bin": "OFF"}, "h:1")
    assert len(off) == 1 and "--log-bin" in off[0]


def test_privilege_messages_name_the_missing_privilege() -> None:
    full = ["GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.* TO `r`@`%`"]
    assert privilege_problems(full, ["shop"], "r") == []
    assert (
        privilege_problems(["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost`"], [], "root") == []
    )
    missing = privilege_problems(
        ["GRANT BINLOG MONITOR ON *.* TO `r`@`%`", "GRANT SELECT ON `shop`.* TO `r`@`%`"],
        ["shop"],
        "r",
    )
    assert len(missing) == 1 and "REPLICATION SLAVE" in missing[0]
    missing = privilege_problems(["GRANT REPLICATION SLAVE ON *.* TO `r`@`%`"], ["shop"], "r")
    assert any("REPLICATION CLIENT" in m for m in missing)
    assert any("SELECT on shop.*" in m for m in missing)


# -- against the server ----------------------------------------------------------------------


def test_fast_row_decoder_agrees_with_mysql_replication(server: MariaDB) -> None:
    """The per-column decoder gives every type the values the library's decoding gives after
    the shape's conversions (the two paths a row event may take)."""
    database = server.create_database("cdc_dec")
    try:
        conn = server.connect(database)
        with conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE t (id INT PRIMARY KEY, ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT,"
                " su SMALLINT UNSIGNED, mi MEDIUMINT, mu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED,"
                " b BIGINT, bu BIGINT UNSIGNED, f FLOAT, d DOUBLE, d1 DECIMAL(5,2), d2 DECIMAL(20,0),"
                " d3 DECIMAL(38,17), d4 DECIMAL(9,9), c CHAR(5), vc VARCHAR(300), vb VARBINARY(10),"
                " bi BINARY(4), tx TEXT, mt MEDIUMTEXT, bl BLOB, lb LONGBLOB, dt0 DATETIME,"
                " dt3 DATETIME(3), dt6 DATETIME(6), ts0 TIMESTAMP NULL, ts2 TIMESTAMP(2) NULL,"
                " t0 TIME, t4 TIME(4), da DATE, y YEAR, e ENUM('x','y','z'), st SET('p','q','r'),"
                " bt1 BIT(1), bt20 BIT(20), js JSON, l1 VARCHAR(10) CHARACTER SET latin1)"
            )
            cur.execute("SELECT @@gtid_binlog_pos")
            start = cur.fetchone()[0]
            values = [
                (
                    1,
                    -128,
                    255,
                    -32768,
                    65535,
                    -8388608,
                    16777215,
                    -2147483648,
                    4294967295,
                    -(2**63),
                    2**64 - 1,
                    1.5,
                    -2.25e100,
                    decimal.Decimal("-123.45"),
                    decimal.Decimal("12345678901234567890"),
                    decimal.Decimal("-1.00000000000000001"),
                    decimal.Decimal("0.000000001"),
                    "ab",
                    "ü" * 300,
                    b"\x00\xff",
                    b"ab",
                    "text",
                    "m" * 70000,
                    b"\x01" * 10,
                    b"\x02" * 70000,
                    dt.datetime(2024, 2, 29, 23, 59, 59),
                    dt.datetime(1000, 1, 1, 0, 0, 0, 123000),
                    dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
                    dt.datetime(2038, 1, 1),
                    dt.datetime(1999, 5, 5, 5, 5, 5, 120000),
                    dt.timedelta(hours=-838),
                    dt.timedelta(hours=12, microseconds=123400),
                    dt.date(1, 1, 1),
                    2155,
                    "z",
                    "p,r",
                    1,
                    2**20 - 1,
                    '{"a": [1, 2]}',
                    "café",
                ),
                (2, *([None] * 39)),
                (
                    3,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0.0,
                    0.0,
                    decimal.Decimal("0.00"),
                    decimal.Decimal(0),
                    decimal.Decimal(0),
                    decimal.Decimal(0),
                    "",
                    "",
                    b"",
                    b"\x00" * 4,
                    "",
                    "",
                    b"",
                    b"",
                    dt.datetime(2000, 1, 1),
                    dt.datetime(2000, 1, 1),
                    dt.datetime(2000, 1, 1),
                    dt.datetime(1970, 1, 2),
                    dt.datetime(1970, 1, 2),
                    dt.timedelta(0),
                    dt.timedelta(seconds=-1, microseconds=500000),
                    dt.date(2000, 2, 29),
                    1901,
                    "x",
                    "",
                    0,
                    0,
                    "null",
                    "",
                ),
            ]
            marks = ", ".join(["%s"] * 40)
            cur.executemany(f"INSERT INTO t VALUES ({marks})", values)
            cur.execute("UPDATE t SET vc = 'changed', d3 = -d3 WHERE id = 1")
            cur.execute("DELETE FROM t WHERE id = 3")
        conn.close()
        stream = BinLogStreamReader(
            {
                "host": server.host,
                "port": server.port,
                "user": server.user,
                "passwd": server.password,
            },
            server_id=random.randint(10**5, 10**9),
            blocking=True,
            is_mariadb=True,
            auto_position=start,
            only_events=[rev.WriteRowsEvent, rev.UpdateRowsEvent, rev.DeleteRowsEvent],
            only_schemas=[database],
        )
        seen = 0
        try:
            for event in stream:
                if event.table != "t":
                    continue
                decoder = RowDecoder.for_columns(event.columns)
                assert decoder is not None
                images = 2 if isinstance(event, rev.UpdateRowsEvent) else 1
                fast = decoder.rows(event, images)
                assert fast is not None
                names = [c.name for c in event.columns]
                types = [column_type_of_binlog(c) for c in event.columns]
                shape = TableShape.of(database, "t", names, types, ["id"])
                slow: list[Any]
                if images == 2:
                    slow = [
                        (shape.values(r["before_values"]), shape.values(r["after_values"]))
                        for r in event.rows
                    ]
                else:
                    slow = [shape.values(r["values"]) for r in event.rows]
                if images == 2:
                    fast = [(shape.convert_fast(b), shape.convert_fast(a)) for b, a in fast]
                else:
                    fast = [shape.convert_fast(row) for row in fast]
                for left, right in zip(fast, slow, strict=True):
                    if left != right:
                        flat_l = left if images == 1 else [*left[0], *left[1]]
                        flat_r = right if images == 1 else [*right[0], *right[1]]
                        diffs = [
                            (names[i % len(names)], a, b)
                            for i, (a, b) in enumerate(zip(flat_l, flat_r, strict=True))
                            # the library reads an empty SET as NULL; the fast decoder as ''
                            if a != b
                            and not (
                                a == "" and b is None and types[i % len(types)].family == "set"
                            )
                        ]
                        if not diffs:
                            continue
                        pytest.fail(f"fast decoder differs: {diffs}")
                seen += len(fast)
                if seen >= 5:
                    break
        finally:
            stream.close()
        assert seen == 5
    finally:
        server.drop_database(database)


@pytest.mark.parametrize(
    ("paving", "plugin", "semantic"),
    [
        (False, "sqlwriter", "exactly-once"),
        (True, "sqlwriter", "at-least-once"),
        (True, "mysqlwriter", "exactly-once"),
    ],
    ids=[
        "envelope-sqlwriter-staged",
        "paving-split-update-sqlwriter-at-least-once",
        "paving-split-update-mysqlwriter-xa",
    ],
)
def test_replicates_a_workload_in_catch_up_runs(
    pair: Pair, tmp_path: Path, paving: bool, plugin: str, semantic: str
) -> None:
    """Inserts, updates, key changes, deletes, NULLs, a large transaction, on three tables;
    three bounded runs back to back, each continuing where the last ended. mysqlwriter
    exactly-once applies them inside its XA transactions (nothing staged)."""
    start = pair.gtid()
    work = Workload(pair.server, pair.source)
    sink = mysql_sink(pair, semantic=semantic) if plugin == "mysqlwriter" else None
    job = write_job(
        tmp_path / "job.json",
        binlog_job(
            pair,
            start=start,
            paving=paving,
            reader={"splitUpdate": paving},
            writer=sink or {"parameter": {"semantic": semantic}},
        ),
    )
    state = tmp_path / "state"
    try:
        work.step(2)
        work.large_transaction(5000)
        ok(run(job, state))
        pair.same()
        for _ in range(2):
            work.step()
            ok(run(job, state, "--restore", "latest-or-new"))
            pair.same()
        # nothing new: a run still ends at once and keeps the position
        ok(run(job, state, "--restore", "latest-or-new"))
        pair.same()
        if plugin == "mysqlwriter" and semantic == "exactly-once":
            assert_applied_in_xa(pair, job, state)
    finally:
        work.close()


def test_snapshot_and_handover_while_the_source_keeps_changing(pair: Pair, tmp_path: Path) -> None:
    """``snapshot: initial`` with two channels copies tables that change all along; the stream
    takes over at the snapshot point; a catch-up run after the load stops makes them equal.
    Into mysqlwriter's XA transactions: two subtasks copy into the same tables at once (and
    ``sqlwriter``'s staged path is run so in test_binlog_crash.py)."""
    work = Workload(pair.server, pair.source, seed=11)
    for _ in range(3):
        work.step(3)
    for table in TABLES:
        work.insert(table, 3000)
    job = write_job(
        tmp_path / "job.json",
        binlog_job(
            pair,
            snapshot="initial",
            writer=mysql_sink(pair),
            setting={
                "speed": {"readerChannel": 2, "writerChannel": 2, "record": 6000},
                "restore": {"isRestore": True, "checkpointInterval": 0.3},
            },
        ),
    )
    with changing(lambda: work.step(bulk=False), pause=0.05):
        first = ok(run(job, tmp_path / "state"))
        assert "snapshot complete" in first
    ok(run(job, tmp_path / "state", "--restore", "latest-or-new"))
    pair.same()
    assert_applied_in_xa(pair, job, tmp_path / "state")
    work.close()


def test_stream_restored_before_its_handover_waits_for_the_snapshot_again(
    pair: Pair, tmp_path: Path
) -> None:
    """A checkpoint taken while the stream split waits for the snapshot (two reader channels:
    the other one is still copying) stores no stream position; a run restored from it waits
    again for a checkpoint with every snapshot split done before it emits a change. (A stream
    that streamed at once beside a snapshot split still being read put a key's snapshot row and
    its changes into two writer subtasks of one checkpoint: a duplicate key at their commits.)"""
    work = Workload(pair.server, pair.source, seed=5)
    work.insert("orders", 40)
    work.close()
    spec = binlog_job(pair, snapshot="initial", reader={"table": [f"{pair.source}.orders"]})
    params = BinlogReaderParams.model_validate(spec["job"]["content"][0]["reader"]["parameter"])
    setting = Setting.model_validate(spec["job"]["setting"] | {"speed": {"channel": 2}})

    def reader() -> BinlogReader:
        ctx = JobContext.of("handover", tmp_path, setting, run_id="20260101000000-abcdef")
        return BinlogReader(params, ctx)

    first = reader()
    splits = first.plan(2)
    stream, snapshot = splits[-1], frozenset(s.id for s in splits[:-1])
    waiting = first.open(stream, None)
    assert next(iter(waiting.batches())) is None  # waiting for the snapshot
    stored = waiting.snapshot()
    waiting.close()
    first.close()
    assert stored is None, f"a waiting stream stored {stored}: a restore would not wait"

    pair.execute(pair.source, "UPDATE orders SET qty = -1 WHERE id = 1")  # after the handover
    restored = reader()
    opened = restored.open(stream, stored)
    items = iter(opened.batches())
    try:
        deadline = time.monotonic() + 1.5  # more than a flush window and a tick
        while time.monotonic() < deadline:
            item = next(items)
            assert not isinstance(item, pa.RecordBatch), "streamed before the handover"
        restored.notify_checkpoint_complete(CompletedCheckpoint(7, {}, snapshot))
        changes = [row for b in items if isinstance(b, pa.RecordBatch) for row in b.to_pylist()]
    finally:
        opened.close()
        restored.close()
    assert [(c["op"], c["after"]["id"], c["after"]["qty"]) for c in changes] == [("u", 1, -1)]


def test_stream_survives_rotation_and_checkpoints_while_idle(pair: Pair, tmp_path: Path) -> None:
    """An endless stream: binlog rotations in the middle, idle periods still checkpoint (and
    report cdcLag); SIGTERM ends it with exit 0 after a final checkpoint."""
    start = pair.gtid()
    work = Workload(pair.server, pair.source, seed=3)
    job = write_job(
        tmp_path / "job.json",
        binlog_job(
            pair,
            start=start,
            stop_at=None,
            setting={"restore": {"isRestore": True, "checkpointInterval": 0.3}},
        ),
    )
    metrics = tmp_path / "metrics.json"
    process = subprocess.Popen(
        [
            *syncx_command(),
            "run",
            str(job),
            f"--state-dir={tmp_path / 'state'}",
            f"--metrics-file={metrics}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        work.step()
        pair.execute(pair.source, "FLUSH BINARY LOGS")
        work.step()
        pair.execute(pair.source, "FLUSH BINARY LOGS")
        pair.execute(pair.source, "FLUSH BINARY LOGS")
        work.step()
        _wait_until_same(pair, timeout=30)
        _wait_for_checkpoints(tmp_path / "state", more=3, timeout=30)  # idle: still checkpoints
    finally:
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-3000:]
    pair.same()
    report = json.loads(metrics.read_text())
    assert report["metrics"]["numCheckpoints"] >= 5, report
    assert "cdcLag" in report["metrics"]
    work.close()


def _wait_for_checkpoints(state_dir: Path, more: int, timeout: float) -> None:
    """Wait until ``more`` checkpoints after the latest stored one are stored."""

    def latest() -> int:
        stored = latest_checkpoint(state_dir)
        return int(stored["id"]) if stored else 0

    target = latest() + more
    deadline = time.monotonic() + timeout
    while latest() < target:
        assert time.monotonic() < deadline, f"no {more} checkpoints in {timeout}s while idle"
        time.sleep(0.1)


def _wait_until_same(pair: Pair, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            pair.same()
            return
        except BaseException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_target_without_primary_key_is_refused_or_uses_key_columns(
    server: MariaDB, tmp_path: Path
) -> None:
    tables = {"plain": "CREATE TABLE plain (id INT NOT NULL, v VARCHAR(10))"}
    pair = make_pair(server, tables)
    try:
        pair.execute(pair.source, "ALTER TABLE plain ADD PRIMARY KEY (id)")
        start = pair.gtid()
        pair.execute(pair.source, "INSERT INTO plain VALUES (1, 'a'), (2, 'b')")
        pair.execute(pair.source, "UPDATE plain SET v = 'c' WHERE id = 1")
        pair.execute(pair.source, "DELETE FROM plain WHERE id = 2")
        job = write_job(tmp_path / "job.json", binlog_job(pair, start=start))
        refused = run(job, tmp_path / "s1")
        assert refused.returncode == 1
        assert "has no primary key" in refused.stderr and "keyColumns" in refused.stderr
        job = write_job(
            tmp_path / "job2.json",
            binlog_job(pair, start=start, writer={"parameter": {"keyColumns": ["id"]}}),
        )
        ok(run(job, tmp_path / "s2"))
        assert table_rows(server, pair.target, "plain") == [(1, "c")]
    finally:
        server.drop_database(pair.source)
        server.drop_database(pair.target)


def test_ddl_policies(server: MariaDB, tmp_path: Path) -> None:
    """fail stops with the statement and its position; skip carries on until a change needs the
    new column and then says why; apply changes the target as the source changed."""
    tables = {"orders": TABLES["orders"]}
    pair = make_pair(server, tables)
    try:
        start = pair.gtid()
        work = Workload(server, pair.source)
        work.insert("orders", 30)
        pair.execute(pair.source, "ALTER TABLE orders ADD COLUMN extra VARCHAR(8) DEFAULT 'x'")
        pair.execute(pair.source, "UPDATE orders SET extra = 'y' WHERE id < 5")

        failing = write_job(
            tmp_path / "fail.json", binlog_job(pair, start=start, reader={"ddl": "fail"})
        )
        done = run(failing, tmp_path / "s-fail")
        assert done.returncode == 1
        assert "ADD COLUMN extra" in done.stderr and "mysql-bin." in done.stderr
        assert "GTID" in done.stderr

        skipping = write_job(
            tmp_path / "skip.json", binlog_job(pair, start=start, reader={"ddlSkip": True})
        )
        done = run(skipping, tmp_path / "s-skip")
        assert done.returncode == 1
        assert "skipped DDL" in done.stderr
        assert "carry column(s) extra" in done.stderr and "ddl: apply" in done.stderr

        server.drop_database(pair.target)
        conn = server.connect()
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {quote(pair.target)}")
        conn.close()
        pair.execute(pair.target, TABLES["orders"])
        applying = write_job(
            tmp_path / "apply.json",
            binlog_job(pair, start=start, reader={"ddl": "apply", "filter": f"{pair.source}\\..*"}),
        )
        ok(run(applying, tmp_path / "s-apply"))
        pair.same()
        pair.execute(
            pair.source, "ALTER TABLE orders MODIFY COLUMN extra VARCHAR(20), DROP COLUMN raw"
        )
        pair.execute(pair.source, "UPDATE orders SET extra = 'much longer value' WHERE id = 7")
        pair.execute(pair.source, "CREATE TABLE fresh (k INT PRIMARY KEY, v TEXT)")
        pair.execute(pair.source, "INSERT INTO fresh VALUES (1, 'one'), (2, 'two')")
        pair.execute(pair.source, "CREATE TABLE gone (k INT PRIMARY KEY)")
        pair.execute(pair.source, "INSERT INTO gone VALUES (1)")
        pair.execute(pair.source, "DROP TABLE gone")
        pair.execute(
            pair.source, "INSERT INTO orders (id, customer, extra) VALUES (1000, 'c', 'z')"
        )
        ok(run(applying, tmp_path / "s-apply", "--restore", "latest-or-new"))
        pair.tables = ["orders", "fresh"]
        KEYS["fresh"] = "k"
        pair.same()
        conn = server.connect(pair.target)
        with conn.cursor() as cur:
            cur.execute("SHOW TABLES")
            names = {r[0] for r in cur.fetchall()}
            cur.execute("SHOW COLUMNS FROM orders")
            columns = [r[0] for r in cur.fetchall()]
        conn.close()
        assert "gone" not in names and "fresh" in names
        assert "raw" not in columns and "extra" in columns
        work.close()
    finally:
        server.drop_database(pair.source)
        server.drop_database(pair.target)


def stream_reader(pair: Pair, start: str, ctx: JobContext, **parameters: Any) -> BinlogReader:
    """A ``binlogreader`` of ``pair``'s source from GTID ``start`` to now, unpaved changes."""
    params = BinlogReaderParams.model_validate(
        {
            "jdbcUrl": f"jdbc:mysql://{pair.server.host}:{pair.server.port}/{pair.source}",
            "username": pair.server.user,
            "password": pair.server.password,
            "pavingData": False,
            "start": {"gtid": start},
            "stopAt": "now",
            **parameters,
        }
    )
    return BinlogReader(params, ctx)


def read_stream(
    reader: BinlogReader, split: Any, position: Any, view: Callable[[Any], Any] = decode
) -> list[tuple[Any, Any]]:
    """``view`` of every batch the stream split yields from ``position`` (the decoded change by
    default), with the position after it."""
    opened = reader.open(split, position)
    out = []
    try:
        for batch in opened.batches():
            if batch is not None and batch.num_rows:
                out.append((view(batch), opened.snapshot()))
    finally:
        opened.close()
    return out


def test_a_table_map_is_parsed_once_until_the_layout_changes(
    pair: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small transactions (sysbench's: every statement maps its table again) parse the table's
    map once, not once per statement (mysql-replication re-parsed every map, most of the
    reader's time under such a load, issue 16); after an ALTER TABLE (a new table id) the map is
    parsed again and the changes carry the new layout."""
    parsed: list[int] = []
    original = rev.TableMapEvent._get_optional_meta_data

    def counted(event: Any) -> Any:
        parsed.append(event.table_id)
        return original(event)

    monkeypatch.setattr(rev.TableMapEvent, "_get_optional_meta_data", counted)
    start = pair.gtid()
    conn = pair.server.connect(pair.source)
    with conn.cursor() as cur:
        for key in range(1, 151):
            cur.execute("INSERT INTO orders (id, customer) VALUES (%s, 'c')", (key,))
            cur.execute("UPDATE orders SET qty = %s WHERE id = %s", (key, key))
        cur.execute("ALTER TABLE orders ADD COLUMN extra INT NULL")
        cur.execute("INSERT INTO orders (id, customer, extra) VALUES (999, 'after', 7)")
    conn.close()
    reader = stream_reader(pair, start, JobContext.of("maps", tmp_path, Setting(), run_id="maps"))
    (split,) = reader.plan(1)
    changes = [c for c, _ in read_stream(reader, split, None)]
    reader.close()
    assert sum(c.rows.num_rows for c in changes) == 301
    last = changes[-1].rows.to_pylist()[-1]
    assert (last["id"], last["extra"]) == (999, 7)
    assert len(parsed) == 2 and parsed[0] != parsed[1], parsed


def test_ddl_naming_several_tables_resumes_between_its_batches(
    server: MariaDB, tmp_path: Path
) -> None:
    """``DROP TABLE a, b, c`` (ddl: apply) is one batch per table; the position after the first
    is before the statement with one DDL batch counted, so a restore there emits b's and c's
    and nothing twice (it used to be the position after the statement: b and c were lost)."""
    pair = make_pair(server, {"orders": TABLES["orders"]})
    try:
        start = pair.gtid()
        for name in ("a", "b", "c"):
            pair.execute(pair.source, f"CREATE TABLE {name} (k INT PRIMARY KEY)")
            pair.execute(pair.source, f"INSERT INTO {name} VALUES (1)")
        pair.execute(pair.source, "DROP TABLE a, b, c")
        pair.execute(pair.source, "INSERT INTO orders (id, customer) VALUES (7, 'after')")
        ctx = JobContext.of("ddl", tmp_path, Setting(), run_id="ddl")
        reader = stream_reader(pair, start, ctx, ddl="apply")
        (split,) = reader.plan(1)
        whole = read_stream(reader, split, None)
        drops = [
            i for i, (c, _) in enumerate(whole) if getattr(c, "statement", "").startswith("DROP")
        ]
        assert [whole[i][0].table for i in drops] == ["a", "b", "c"]
        first, last = whole[drops[0]][1], whole[drops[-1]][1]
        assert first.emitted == {DDL_EMITTED: 1} and (first.file, first.pos) < (last.file, last.pos)
        stored = json.loads(json.dumps(encode(first)))
        resumed = read_stream(reader, split, decode_state(BinlogReader.position_type, stored))
        assert [getattr(c, "table", None) for c, _ in resumed[:2]] == ["b", "c"]
        rest = [c.rows.column("id").to_pylist() for c, _ in resumed[2:]]
        assert rest == [[7]]
        reader.close()
    finally:
        server.drop_database(pair.source)
        server.drop_database(pair.target)


def test_xa_transactions_reach_the_target_at_xa_commit_only(pair: Pair, tmp_path: Path) -> None:
    """A source XA transaction is emitted at its XA COMMIT, in commit order; one rolled back
    after XA PREPARE never reaches the target; one still prepared at a run's end is read again
    by the next run (the saved position stays before it), and nothing is applied twice. One
    prepared before the start position and committed after it is not in the stream: a warning
    says so."""
    early = pair.server.connect(pair.source)
    xa = pair.server.connect(pair.source)
    plain = pair.server.connect(pair.source)

    def on(conn: Any, *statements: str) -> None:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)

    def ids() -> list[int]:
        return [r[0] for r in query(pair.server, pair.target, "SELECT id FROM orders ORDER BY id")]

    on(early, "XA START 'early'", "INSERT INTO orders (id, customer) VALUES (99, 'early')")
    on(early, "XA END 'early'", "XA PREPARE 'early'")
    start = pair.gtid()
    job = write_job(tmp_path / "job.json", binlog_job(pair, start=start))
    try:
        on(early, "XA COMMIT 'early'")
        on(plain, "INSERT INTO orders (id, customer) VALUES (10, 'plain')")
        on(xa, "XA START 'one'", "INSERT INTO orders (id, customer) VALUES (1, 'xa')")
        on(xa, "UPDATE orders SET customer = 'by-xa' WHERE id = 10")
        on(xa, "XA END 'one'", "XA PREPARE 'one'")
        on(plain, "INSERT INTO orders (id, customer) VALUES (2, 'plain')")
        on(xa, "XA COMMIT 'one'")
        on(xa, "XA START 'two'", "INSERT INTO orders (id, customer) VALUES (3, 'xa')")
        on(xa, "XA END 'two'", "XA PREPARE 'two'")
        on(plain, "INSERT INTO orders (id, customer) VALUES (4, 'plain')")
        assert "XA transaction X'6561726C79',X'',1 committed at" in ok(run(job, tmp_path / "state"))
        assert ids() == [1, 2, 4, 10]
        assert query(pair.server, pair.target, "SELECT customer FROM orders WHERE id = 10") == [
            ("by-xa",)
        ]
        on(xa, "XA ROLLBACK 'two'")
        on(xa, "XA START 'three'", "INSERT INTO orders (id, customer) VALUES (5, 'xa')")
        on(xa, "XA END 'three'", "XA PREPARE 'three'")
        on(plain, "INSERT INTO orders (id, customer) VALUES (6, 'plain')")
        ok(run(job, tmp_path / "state", "--restore", "latest-or-new"))
        assert ids() == [1, 2, 4, 6, 10]
        on(xa, "XA COMMIT 'three'")
        on(plain, "INSERT INTO orders (id, customer) VALUES (7, 'plain')")
        ok(run(job, tmp_path / "state", "--restore", "latest-or-new"))
        assert ids() == [1, 2, 4, 5, 6, 7, 10]
        pair.execute(pair.source, "DELETE FROM orders WHERE id = 99")  # not in the stream
        pair.same()
    finally:
        for conn, name in ((early, "early"), (xa, "two"), (xa, "three")):
            with contextlib.suppress(Exception):
                on(conn, f"XA ROLLBACK '{name}'")
        for conn in (early, xa, plain):
            conn.close()


def test_ddl_apply_through_mysqlwriter_at_least_once(server: MariaDB, tmp_path: Path) -> None:
    """``ddl: apply`` into mysqlwriter at-least-once (the open transaction commits, the DDL runs
    at once): columns added, widened and dropped, tables created, dropped and truncated, keys
    changed, among the workload's changes. (Exactly-once, deferred to the commit, is run under
    kills in test_binlog_crash.py.)"""
    pair = make_pair(server)
    try:
        job = evolving_job(pair, tmp_path / "job.json", mysql_sink(pair, semantic="at-least-once"))
        ok(run(job, tmp_path / "state"))
        pair.same()
        assert_no_table(pair, "scratch")
    finally:
        server.drop_database(pair.source)
        server.drop_database(pair.target)


KV = "CREATE TABLE kv (id INT PRIMARY KEY, v VARCHAR(5) NULL)"
KV_SCHEMA = pa.schema([("id", pa.int32()), ("v", pa.string())])
_AT = SourceInfo("mysql-bin.000001", 4, None, 0)


def kv_changes(pair: Pair, schema: pa.Schema, *items: tuple[Any, ...]) -> pa.RecordBatch:
    """Envelope changes ``(op, before, after)`` of the source table ``kv``."""
    layout = TableLayout(pair.source, "kv", schema, ("id",))
    return build_changes(layout, "envelope", [(*item, _AT) for item in items])


def in_process(
    pair: Pair, tmp_path: Path, plugin: type[Any], params: type[Any], sink: dict[str, Any]
) -> Any:
    """A writer plugin of job ``kv`` (one run) driven through the contract, checked."""
    ctx = JobContext.of("kv", tmp_path, Setting(), run_id="20260101000000-abcdef")
    writer = plugin(params.model_validate(sink["parameter"]), ctx)
    writer.check()
    return writer


def _kv(pair: Pair) -> list[tuple[Any, ...]]:
    return query(pair.server, pair.target, "SELECT * FROM kv ORDER BY id")


def _count(pair: Pair, table: str) -> int:
    return int(query(pair.server, pair.target, f"SELECT COUNT(*) FROM {quote(table)}")[0][0])


def _staged(pair: Pair) -> int:
    """Changes in sqlwriter's change-staging tables of the target."""
    shown = query(pair.server, pair.target, "SHOW TABLES LIKE '\\_syncx\\_cdc\\_%'")
    return sum(_count(pair, row[0]) for row in shown)


def test_mysqlwriter_begin_commits_or_removes_changes_staged_by_sqlwriter(
    pair: Pair, tmp_path: Path
) -> None:
    """Changes staged through sqlwriter's path (as runs before mysqlwriter applied changes
    itself left them) are committed by mysqlwriter's ``begin`` when a restored handle names
    them, and removed when none does; in single-table mode too. Then it applies on its own."""
    pair.execute(pair.target, KV)
    server = pair.server
    url = f"mysql+pymysql://{server.user}@{server.host}:{server.port}/{pair.target}"
    staging = in_process(
        pair, tmp_path, SqlWriter, SqlWriterParams, {"parameter": {"url": url, "table": "kv"}}
    )
    staging.begin([], fresh=True)
    task = staging.open(0, 1, None)
    task.write(kv_changes(pair, KV_SCHEMA, ("c", None, [1, "a"]), ("c", None, [2, "b"])))
    stored = task.prepare(1)  # checkpoint 1 is stored; its commit never happens
    task.write(kv_changes(pair, KV_SCHEMA, ("c", None, [3, "c"])))
    task.prepare(2)  # checkpoint 2 never completes
    task.close()
    staging.close()
    assert stored.kind == "cdc" and _staged(pair) == 3
    sink = mysql_sink(pair)
    sink["parameter"]["connection"][0]["table"] = ["kv"]
    writer = in_process(pair, tmp_path, MysqlWriter, MysqlWriterParams, sink)
    try:
        writer.begin([stored], fresh=False)
        assert _kv(pair) == [(1, "a"), (2, "b")]
        assert _staged(pair) == 0
        task = writer.open(0, 1, None)
        task.write(kv_changes(pair, KV_SCHEMA, ("c", None, [4, "d"]), ("d", [1, "a"], None)))
        task.commit(task.prepare(3))
        assert _kv(pair) == [(2, "b"), (4, "d")]
        assert _staged(pair) == 0
    finally:
        writer.close()
        _roll_back_prepared(server, writer.xid_prefix())


def _roll_back_prepared(server: MariaDB, prefix: str) -> None:
    """XA ROLLBACK what a failed test left prepared (it would hold DROP DATABASE forever)."""
    conn = server.connect()
    try:
        with conn.cursor() as cur:
            for xid in xa_recover(cur):
                if xid.gtrid.startswith(prefix):
                    cur.execute(f"XA ROLLBACK {xid.sql()}")
    finally:
        conn.close()


def test_mysqlwriter_holds_then_defers_changes_around_prepared_work_and_a_ddl(
    pair: Pair, tmp_path: Path
) -> None:
    """exactly-once mysqlwriter through the contract. Changes that arrive while a prepared
    transaction waits for its commit are held and applied by that commit (its locks would block
    them). A DDL and what follows it are deferred inside the XA transaction: nothing of them is
    visible, and the DDL has not run, before the commit. A replay stopped by a change the target
    rejects keeps what it has not applied; a restore's commit finishes it without running the
    DDL again; then changes apply directly again."""
    pair.execute(pair.target, KV)
    old = KV_SCHEMA
    new = old.append(pa.field("w", pa.int32()))
    at = _AT

    def changes(schema: pa.Schema, *items: tuple[Any, ...]) -> pa.RecordBatch:
        return kv_changes(pair, schema, *items)

    def target() -> tuple[list[tuple[Any, ...]], int]:
        return _kv(pair), _count(pair, "_syncx_deferred")

    def writer() -> MysqlWriter:
        return in_process(pair, tmp_path, MysqlWriter, MysqlWriterParams, mysql_sink(pair))

    first_writer = writer()
    try:
        first_writer.begin([], fresh=True)
        task = first_writer.open(0, 1, None)
        assert not task.write(changes(old, ("c", None, [1, "a"]), ("c", None, [2, "b"])))
        first = task.prepare(1)
        assert first.kind == "xa" and first.deferred == 0
        assert not task.write(changes(old, ("u", [2, "b"], [2, "bb"])))  # held: 2 is locked
        task.commit(first)  # ... and applied now, in the next transaction
        ddl = "ALTER TABLE kv ADD COLUMN w INT NULL"
        assert not task.write(ddl_batch(pair.source, "kv", ddl, at))
        assert not task.write(
            changes(new, ("c", None, [3, "c", 30]), ("u", [1, "a", None], [1, "far too long", 10]))
        )
        assert not task.write(
            changes(new, ("d", [2, "bb", None], None), ("u", [3, "c", 30], [5, "c", 31]))
        )
        second = task.prepare(2)
        assert second.deferred == 3
        assert target() == ([(1, "a"), (2, "b")], 0)  # prepared: invisible, DDL not run
        with pytest.raises(FatalError, match=r"rejected by .*kv.*stays in _syncx_deferred"):
            task.commit(second)
        # committed: the held change is visible, the DDL ran, the rejected batch and the one
        # after it are still deferred
        assert target() == ([(1, "a", None), (2, "bb", None)], 2)
        first_writer.close()
        pair.execute(pair.target, "ALTER TABLE kv MODIFY COLUMN v VARCHAR(20)")
        restored = writer()
        restored.begin([second], fresh=False)  # a restore of checkpoint 2
        assert target() == ([(1, "far too long", 10), (5, "c", 31)], 0)
        restored.begin([second], fresh=False)  # again: nothing twice
        assert target() == ([(1, "far too long", 10), (5, "c", 31)], 0)
        task = restored.open(0, 1, None)
        assert not task.write(changes(new, ("c", None, [7, "g", 70])))
        third = task.prepare(3)
        assert third.deferred == 0
        task.commit(third)
        assert target() == ([(1, "far too long", 10), (5, "c", 31), (7, "g", 70)], 0)
        restored.close()
    finally:
        first_writer.close()
        _roll_back_prepared(pair.server, first_writer.xid_prefix())


def test_snapshot_refuses_a_job_wide_resume_column(pair: Pair, tmp_path: Path) -> None:
    """The snapshot copies each table by its own primary key: ``restoreColumnName`` (or an
    index with ``isRestore``) cannot name a column of every table, so the job says so."""
    spec = binlog_job(
        pair,
        snapshot="initial",
        setting={"restore": {"isRestore": True, "restoreColumnName": "id"}},
    )
    done = run(write_job(tmp_path / "job.json", spec), tmp_path / "state")
    assert done.returncode == 1, done.stderr
    assert "restoreColumnName" in done.stderr and "Traceback" not in done.stderr


def test_replication_user_missing_a_privilege_is_told_which(pair: Pair, tmp_path: Path) -> None:
    user = f"r{uuid.uuid4().hex[:10]}"
    pair.execute(pair.source, f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'")
    try:
        pair.execute(pair.source, f"GRANT BINLOG MONITOR, SELECT ON *.* TO '{user}'@'%'")
        job = binlog_job(pair, start=pair.gtid())
        job["job"]["content"][0]["reader"]["parameter"].update(username=user, password="pw")
        done = run(write_job(tmp_path / "job.json", job), tmp_path / "state")
        assert done.returncode == 1
        assert "lacks REPLICATION SLAVE" in done.stderr
        assert "pw" not in done.stderr.replace("pw'", "")  # the password is never shown
        pair.execute(pair.source, f"GRANT REPLICATION SLAVE ON *.* TO '{user}'@'%'")
        pair.execute(pair.source, f"REVOKE BINLOG MONITOR ON *.* FROM '{user}'@'%'")
        done = run(write_job(tmp_path / "job.json", job), tmp_path / "state")
        assert done.returncode == 1 and "lacks REPLICATION CLIENT" in done.stderr
        pair.execute(pair.source, f"GRANT BINLOG MONITOR ON *.* TO '{user}'@'%'")
        pair.execute(pair.source, "INSERT INTO orders (id, customer) VALUES (1, 'a')")
        ok(run(write_job(tmp_path / "job.json", job), tmp_path / "state"))
        assert len(table_rows(pair.server, pair.target, "orders")) == 1
    finally:
        pair.execute(pair.source, f"DROP USER '{user}'@'%'")


def test_start_at_a_timestamp(pair: Pair, tmp_path: Path) -> None:
    """``start.timestamp`` (ms): changes committed before it are not emitted, later ones are."""
    pair.execute(pair.source, "INSERT INTO orders (id, customer) VALUES (1, 'before')")
    time.sleep(1.1)
    at = int(time.time()) * 1000
    pair.execute(pair.source, "INSERT INTO orders (id, customer) VALUES (2, 'after')")
    job = write_job(tmp_path / "job.json", binlog_job(pair, reader={"start": {"timestamp": at}}))
    ok(run(job, tmp_path / "state"))
    assert [r[:2] for r in table_rows(pair.server, pair.target, "orders")] == [(2, "after")]


def test_unreachable_start_position_is_a_clear_error(pair: Pair, tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.json", binlog_job(pair, start="0-1-999999999"))
    done = run(job, tmp_path / "state")
    assert done.returncode == 1
    assert "cannot send the binlog from GTID 0-1-999999999" in done.stderr
    assert "snapshot: when_needed" in done.stderr


# -- a private server: restarts and purged binlogs ------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def private_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[MariaDB, dict[str, str]]]:
    """A MariaDB of this module's own (a few seconds to set up): restarted and purged freely."""
    port = _free_port()
    folder = tmp_path_factory.mktemp("mariadb")
    env = {**os.environ, "SYNCX_TEST_MYSQL_PORT": str(port), "SYNCX_TEST_MYSQL_DIR": str(folder)}
    subprocess.run(["bash", str(SCRIPT), "start"], check=True, env=env, stdin=subprocess.DEVNULL)
    try:
        yield MariaDB("127.0.0.1", port, "root", ""), env
    finally:
        subprocess.run(
            ["bash", str(SCRIPT), "stop"], check=False, env=env, stdin=subprocess.DEVNULL
        )
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_stream_survives_a_server_restart(
    private_server: tuple[MariaDB, dict[str, str]], tmp_path: Path
) -> None:
    server, env = private_server
    pair = make_pair(server)
    start = pair.gtid()
    work = Workload(server, pair.source, seed=5)
    job = write_job(tmp_path / "job.json", binlog_job(pair, start=start, stop_at=None))
    process = subprocess.Popen(
        [*syncx_command(), "run", str(job), f"--state-dir={tmp_path / 'state'}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        work.step()
        _wait_until_same(pair, timeout=30)
        work.close()
        subprocess.run(["bash", str(SCRIPT), "stop"], check=True, env=env, stdin=subprocess.DEVNULL)
        time.sleep(2)
        subprocess.run(
            ["bash", str(SCRIPT), "start"], check=True, env=env, stdin=subprocess.DEVNULL
        )
        work = Workload(server, pair.source, seed=6)
        work.next_id = dict.fromkeys(TABLES, 100000)
        work.step()
        _wait_until_same(pair, timeout=60)
    finally:
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=60)
        work.close()
    assert process.returncode == 0, err[-3000:]
    assert "reconnecting" in err
    pair.same()


def test_purged_position_fails_clearly_or_resnapshots(
    private_server: tuple[MariaDB, dict[str, str]], tmp_path: Path
) -> None:
    server, _env = private_server
    pair = make_pair(server)
    work = Workload(server, pair.source, seed=9)
    work.step()
    never = write_job(tmp_path / "never.json", binlog_job(pair, snapshot="initial"))
    state = tmp_path / "state"
    ok(run(never, state))
    pair.same()
    # the position the next run would continue from disappears from the server
    work.insert("orders", 50)
    work.update("events", 10)
    pair.execute(pair.source, "FLUSH BINARY LOGS")
    conn = server.connect()
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        current = cur.fetchone()[0]
        for _ in range(50):  # a log still read by the last run's (closing) dump thread stays
            cur.execute(f"PURGE BINARY LOGS TO '{current}'")
            cur.execute("SHOW BINARY LOGS")
            if [r[0] for r in cur.fetchall()] == [current]:
                break
            time.sleep(0.1)
        else:
            pytest.fail("PURGE BINARY LOGS left older logs")
    conn.close()
    done = run(never, state, "--restore", "latest-or-new")
    assert done.returncode == 1, done.stderr
    assert "no longer on the server" in done.stderr and "when_needed" in done.stderr
    when_needed = binlog_job(pair, snapshot="when_needed")
    job = write_job(tmp_path / "never.json", when_needed)
    done = run(job, state, "--restore", "latest-or-new", "--force-restore")
    ok(done)
    assert "taking a new snapshot" in done.stderr
    pair.same()
    work.close()


# -- the example jobs ---------------------------------------------------------------------------


def test_example_job_binlog_to_mysql(pair: Pair, tmp_path: Path) -> None:
    work = Workload(pair.server, pair.source, seed=21)
    work.step(2)
    args = ["-p", f"source_db={pair.source}", "-p", f"target_db={pair.target}"]
    env = {"MYSQL_PORT": str(pair.server.port), "MYSQL_USER": "root"}
    ok(run(JOBS / "binlog_to_mysql.yaml", tmp_path / "state", *args, env=env))
    pair.same()
    work.step()
    ok(
        run(
            JOBS / "binlog_to_mysql.yaml",
            tmp_path / "state",
            *args,
            "--restore",
            "latest-or-new",
            env=env,
        )
    )
    pair.same()
    assert_applied_in_xa(pair, JOBS / "binlog_to_mysql.yaml", tmp_path / "state")
    work.close()


def test_example_job_binlog_to_parquet(pair: Pair, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["-p", f"source_db={pair.source}", "-p", "table=items", "-p", f"out={out}"]
    env = {"MYSQL_PORT": str(pair.server.port), "MYSQL_USER": "root"}
    ok(run(JOBS / "binlog_to_parquet.yaml", tmp_path / "state", *args, env=env))  # starts now
    work = Workload(pair.server, pair.source, seed=22)
    work.insert("items", 10)
    work.update("items", 3)
    work.delete("items", 2)
    ok(
        run(
            JOBS / "binlog_to_parquet.yaml",
            tmp_path / "state",
            *args,
            "--restore",
            "latest-or-new",
            env=env,
        )
    )
    table = pq.read_table(out)
    types = table.column("type").to_pylist()
    assert types.count("INSERT") == 10 and types.count("DELETE") == 2
    assert types.count("UPDATE_BEFORE") == types.count("UPDATE_AFTER") == 3
    assert set(table.column("table").to_pylist()) == {"items"}
    assert "after_amount" in table.column_names and "before_line" in table.column_names
    work.close()


def test_example_job_chunjun_json(pair: Pair, tmp_path: Path) -> None:
    conn = pair.server.connect()
    with conn.cursor() as cur:
        cur.execute("FLUSH BINARY LOGS")  # the job reads from the start of a fresh binlog file
        cur.execute("SHOW MASTER STATUS")
        file = cur.fetchone()[0]
    conn.close()
    pair.execute(
        pair.source, "INSERT INTO orders (id, customer, qty) VALUES (1, 'a', 1), (2, 'b', 2)"
    )
    pair.execute(pair.source, "UPDATE orders SET qty = 5 WHERE id = 1")
    args = ["-p", f"source_db={pair.source}", "-p", "table=orders", "-p", f"journal_name={file}"]
    env = {"MYSQL_PORT": str(pair.server.port), "MYSQL_USER": "root"}
    done = run(JOBS / "binlog_chunjun.json", tmp_path / "state", *args, env=env)
    ok(done)
    lines = done.stdout.splitlines()
    assert len(lines) == 4, done.stdout  # 2 inserts, UPDATE_BEFORE, UPDATE_AFTER
    assert any("UPDATE_AFTER" in line for line in lines)
