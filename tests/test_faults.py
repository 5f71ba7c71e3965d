"""Faults to survive: connections reset or stalled by a fault proxy, the database server SIGKILLed.

Every job runs with its own retry machinery: lost connections retried in place, then
``setting.restart`` restarting the job in-process from its last checkpoint (whose writer handles
``Writer.begin`` commits, rolling back this job's other prepared XA transactions). Faults come
from :class:`tests.servers.faultproxy.FaultProxy` between the job and the MariaDB, fired by the
traffic itself (a statement, a byte count), so each lands where it is meant to, run after run.
Each test ends with an exact comparison: row counts, no duplicate key, every row and ``CHECKSUM
TABLE`` of source and target (the binlog test: the changelog of an undisturbed run, change for
change), and no XA transaction of the job left prepared. Byte offsets are drawn from a seed
(``SYNCX_FAULT_SEED=N`` replays one). Tests that restart or kill a server use a private MariaDB
of this module (its own port and datadir): the shared one is never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pymysql
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from libs.mysql.connect import (
    DEFAULT_READ_TIMEOUT,
    ReadTimedOut,
    connection_settings,
    connectorx_url,
    errno,
    is_connection_lost,
    is_read_timeout,
    pymysql_connection,
)
from libs.mysql.stall import DEFAULT_STALL_TIMEOUT
from libs.sql import KEEPALIVE
from readers.binlog import BinlogReaderParams
from readers.mysql import MysqlReaderParams
from sync.schema import plugin_schema
from tests.crash import RunRecord, run_syncx, syncx_command, write_job
from tests.servers.faultproxy import Fault, FaultProxy
from tests.servers.mariadb import SCRIPT, MariaDB, ensure_server
from tests.test_binlog import (
    Pair,
    Workload,
    assert_same_tables,
    binlog_job,
    make_pair,
    mysql_sink,
    query,
)
from tests.test_mysql import Db, _assert_same_rows, _rollback_prepared
from writers.mysql import MysqlWriterParams

pytestmark = pytest.mark.mysql

RESTART = {"strategy": "fixedDelay", "restartAttempts": 30, "delayInterval": 0.3}
"""In-process restarts from the last checkpoint: enough for every fault a test injects."""
CHECKPOINTS = ["--checkpoint-interval", "0.3"]


def _seed(name: str) -> int:
    override = os.environ.get("SYNCX_FAULT_SEED")
    return int(override) if override else zlib.crc32(name.encode())


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> MariaDB:
    return ensure_server()


@contextlib.contextmanager
def fresh_db(server: MariaDB) -> Iterator[Db]:
    name = server.create_database("syncx_fault")
    database = Db(server, name)
    try:
        yield database
    finally:
        with contextlib.suppress(Exception):
            _rollback_prepared(server, name)
        with contextlib.suppress(Exception):
            server.drop_database(name)


@pytest.fixture
def db(server: MariaDB) -> Iterator[Db]:
    with fresh_db(server) as database:
        yield database


@pytest.fixture
def proxy(server: MariaDB) -> Iterator[FaultProxy]:
    with FaultProxy(server.port) as made:
        yield made


class Faults:
    """Arms faults one after another in a thread of its own, each once the one before fired, so
    every fault lands at its own moment of the run; leaving the ``with`` block stops it."""

    def __init__(self, steps: Sequence[Callable[[], Fault]]) -> None:
        self.steps = steps
        self.fired: list[Fault] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for step in self.steps:
            fault = step()
            while not fault.wait(0.05):
                if self._stop.is_set():
                    return
            self.fired.append(fault)

    def __enter__(self) -> Faults:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _gaps(rng: random.Random, low: int, high: int, count: int) -> list[int]:
    """``count`` seeded random byte counts in ``[low, high]``: each fault is armed once the one
    before fired and counts its bytes from there (gaps wider than a page let each page that
    was read again get further than the one before)."""
    return [rng.randint(low, high) for _ in range(count)]


def _syncx(job: Path, state: Path, *args: str, timeout: float = 90, name: str = "run") -> RunRecord:
    """One ``syncx run`` (no kill); the record holds its exit code and output."""
    return run_syncx(
        ["run", str(job), f"--state-dir={state}", *CHECKPOINTS, *args],
        log=state.parent / f"{name}.log",
        timeout=timeout,
    )


def _ok(record: RunRecord) -> str:
    assert record.exit_code == 0, f"{record.describe()}\n{record.tail(40)}"
    return record.output


# -- how faults are recognised ----------------------------------------------------------------


def test_connectorx_failures_and_read_timeouts_count_as_lost_connections() -> None:
    """connectorx raises plain RuntimeErrors: a reset, a connection closed in the middle of a
    result and a pool that found no server are lost connections (retried), a server error keeps
    its code; a read timeout (ours, pymysql's) is one too."""
    for text in (
        "CodecError { IO error: `Connection reset by peer (os error 104)' }",
        "CodecError { IO error: `bytes remaining on stream' }",
        "timed out waiting for connection: CodecError { IO error: `Connection refused' }",
    ):
        assert is_connection_lost(RuntimeError(text)), text
    interrupted = RuntimeError("MySqlError { ERROR 1317 (70100): Query execution was interrupted }")
    assert errno(interrupted) == 1317 and is_connection_lost(interrupted)
    missing = RuntimeError("MySqlError { ERROR 1146 (42S02): Table 'd.t' doesn't exist }")
    assert errno(missing) == 1146 and not is_connection_lost(missing)
    stalled = ReadTimedOut("no answer from h:1 within readTimeout 2s")
    assert is_connection_lost(stalled) and is_read_timeout(stalled)
    timed_out = pymysql.err.OperationalError(
        2013, "Lost connection to MySQL server during query (timed out)"
    )
    assert is_read_timeout(timed_out)
    assert not is_read_timeout(pymysql.err.OperationalError(2013, "Lost connection (reset)"))


def test_read_timeouts_are_documented_parameters_with_defaults() -> None:
    """Without a read timeout a stalled connection is waited on for ever."""
    plain = MysqlReaderParams.model_validate({"host": "h", "table": "t"})
    assert plain.effective_read_timeout() == DEFAULT_READ_TIMEOUT == 300
    given = MysqlReaderParams.model_validate({"host": "h", "table": "t", "queryTimeOut": 20})
    assert given.effective_read_timeout() == 20
    assert BinlogReaderParams.model_validate({"host": "h"}).read_timeout == 30
    for plugin, default in (("mysqlreader", 300), ("binlogreader", 30)):
        field = plugin_schema("reader", plugin)["properties"]["readTimeout"]
        assert field["default"] == default and "stall" in field["description"]
    url = URL.create("mysql+pymysql", username="u", host="h", port=1, database="d")
    assert connection_settings(url, read_timeout=1.5)["read_timeout"] == 2  # whole seconds
    assert "prefer_socket=false" in connectorx_url(url)  # never the server's Unix socket


def test_writer_stall_timeout_defaults_and_socket_timeout_in_the_jdbc_url() -> None:
    """``readTimeout`` of ``mysqlwriter`` (default 60 s); a DataX/ChunJun jdbcUrl's
    ``socketTimeout`` (milliseconds) takes its place unless ``readTimeout`` is given; JDBC's
    ``socketTimeout=0`` ("none") keeps the default; a bad one is named."""

    def params(jdbc: str, **extra: Any) -> MysqlWriterParams:
        entry = {"jdbcUrl": f"jdbc:mysql://h:1/d{jdbc}", "table": ["t"]}
        return MysqlWriterParams.model_validate({"connection": [entry], **extra})

    assert params("").stall_timeout() == DEFAULT_STALL_TIMEOUT == 60
    datax = "?useSSL=false&socketTimeout=172800000"  # DataX's own 48 hours
    assert params(datax).stall_timeout() == 172_800
    assert params(datax, readTimeout=5).stall_timeout() == 5
    assert params("?socketTimeout=0").stall_timeout() == 60
    with pytest.raises(ValueError, match="socketTimeout=2s in the jdbcUrl"):
        params("?socketTimeout=2s")
    field = plugin_schema("writer", "mysqlwriter")["properties"]["readTimeout"]
    assert field["default"] == 60 and "stall" in field["description"]


# -- MySQL → MySQL --------------------------------------------------------------------------------

SOURCE_DDL = (
    "CREATE TABLE src (id BIGINT PRIMARY KEY, v VARCHAR(40) NOT NULL, n DECIMAL(12,3), "
    "t DATETIME(6), b VARBINARY(8))"
)


def _source(db: Db, rows: int) -> None:
    db.execute(SOURCE_DDL)
    db.execute(
        f"INSERT INTO src SELECT seq, CONCAT('v-', seq, '-😀'), seq / 7, "
        f"'2024-01-01' + INTERVAL seq SECOND, UNHEX(HEX(seq)) FROM seq_1_to_{rows}"
    )
    db.execute("CREATE TABLE dst LIKE src")


def _copy_job(
    db: Db,
    *,
    reader_port: int,
    writer_port: int,
    semantic: str = "exactly-once",
    mode: str = "insert",
    reader: dict[str, Any] | None = None,
    writer: dict[str, Any] | None = None,
    speed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    def jdbc(port: int) -> str:
        return f"jdbc:mysql://{db.server.host}:{port}/{db.name}?useSSL=false"

    login = {"username": db.server.user, "password": db.server.password}
    return {
        "job": {
            "content": [
                {
                    "reader": {
                        "name": "mysqlreader",
                        "parameter": {
                            **login,
                            "connection": [{"jdbcUrl": [jdbc(reader_port)], "table": ["src"]}],
                            "column": ["*"],
                            "splitPk": "id",
                            "fetchSize": 2000,
                            "pageSize": 8000,
                            **(reader or {}),
                        },
                    },
                    "writer": {
                        "name": "mysqlwriter",
                        "parameter": {
                            **login,
                            "connection": [{"jdbcUrl": jdbc(writer_port), "table": ["dst"]}],
                            "semantic": semantic,
                            "writeMode": mode,
                            **(writer or {}),
                        },
                    },
                }
            ],
            "setting": {
                "speed": speed or {"readerChannel": 2, "writerChannel": 2},
                "restore": {"isRestore": True},
                "restart": RESTART,
            },
        }
    }


def _assert_copy_exact(db: Db, job: Path, state: Path, rows: int) -> None:
    """Row count, no duplicate key, every row and CHECKSUM TABLE; nothing of the job prepared."""
    assert db.query("SELECT COUNT(*), COUNT(DISTINCT id) FROM dst") == [(rows, rows)]
    _assert_same_rows(db, "src", "dst")
    assert db.prepared(job, state) == []


READ_ROWS = 40_000
"""About 2.8 MB through the proxy, in pages of 2,000 rows (~140 kB)."""


@pytest.mark.slow
def test_reader_survives_connections_reset_mid_read(
    db: Db, proxy: FaultProxy, tmp_path: Path
) -> None:
    """Resets at seeded random byte offsets of the result sets, read by the default driver
    (connectorx: it must read through the address it is given, not the server's Unix socket,
    and its errors must count as lost connections); each split reads its page again and goes
    on after its last key."""
    _source(db, READ_ROWS)
    job = write_job(
        tmp_path / "reset.json",
        _copy_job(
            db, reader_port=proxy.port, writer_port=db.server.port, reader={"pageSize": 2000}
        ),
    )
    gaps = _gaps(random.Random(_seed("reader-reset")), 250_000, 450_000, 4)
    steps = [partial(proxy.reset_after, gap) for gap in gaps]
    with Faults(steps) as faults:
        output = _ok(_syncx(job, tmp_path / "state"))
    assert len(faults.fired) == 4, (
        f"{len(faults.fired)} of 4 resets in {proxy.forwarded():,} bytes\n{output}"
    )
    # each reset retried in place (without a restart strategy a job would have died of it)
    assert output.count("connection lost while reading") == 4, output
    assert "job failed" not in output, output
    _assert_copy_exact(db, job, tmp_path / "state", READ_ROWS)


@pytest.mark.slow
@pytest.mark.parametrize("driver", ["auto", "mysqlclient"])
def test_reader_stall_is_detected_by_the_read_timeout(
    db: Db, proxy: FaultProxy, tmp_path: Path, driver: str
) -> None:
    """A half-open connection in the middle of a page (no data, no RST): the read timeout
    finds it (connectorx's page watchdog; mysqlclient's socket timeout), the message names
    the server and the timeout, the page is read again on a new connection."""
    _source(db, 20_000)
    job = write_job(
        tmp_path / "stall.json",
        _copy_job(
            db,
            reader_port=proxy.port,
            writer_port=db.server.port,
            reader={"driver": driver, "readTimeout": 2},
            speed={"channel": 1},
        ),
    )
    with Faults([partial(proxy.stall_after, 300_000)]) as faults:
        record = _syncx(job, tmp_path / "state", timeout=60)
    output = _ok(record)
    assert len(faults.fired) == 1
    assert f"no data from 127.0.0.1:{proxy.port} within readTimeout 2s" in output, output
    _assert_copy_exact(db, job, tmp_path / "state", 20_000)


WRITE_ROWS = 30_000


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["reset", "stall"])
@pytest.mark.parametrize(
    ("semantic", "mode"), [("exactly-once", "insert"), ("at-least-once", "replace")]
)
def test_writer_survives_faults_around_prepare_and_commit(
    db: Db, proxy: FaultProxy, tmp_path: Path, fault: str, semantic: str, mode: str
) -> None:
    """The writer's connections fail at each step of a checkpoint: before ``XA PREPARE``
    reaches the server (the server rolls the transaction back), after it prepared but before
    the client hears (the restore rolls it back), before ``XA COMMIT`` (retried; the restore
    would commit it) and after it committed but before the client hears (the commit finds its
    marker); at-least-once: before and after the local ``COMMIT``; and twice in the middle of a
    ``LOAD DATA``. Either reset (RST), or stalled (no data, no close): then readTimeout (1 s)
    finds each stall, the session is killed (one held in a ``LOAD DATA`` the server gave up
    itself: it is gone) and it goes on as for a reset."""
    _source(db, WRITE_ROWS)
    job = write_job(
        tmp_path / "write.json",
        _copy_job(
            db,
            reader_port=db.server.port,
            writer_port=proxy.port,
            semantic=semantic,
            mode=mode,
            writer={"readTimeout": 1},
            speed={"readerChannel": 2, "writerChannel": 2, "record": 20_000},
        ),
    )
    rng = random.Random(_seed(f"writer-{fault}-{semantic}"))
    after, when = (
        (proxy.reset_after, proxy.reset_when)
        if fault == "reset"
        else (proxy.stall_after, proxy.stall_when)
    )
    xa = semantic == "exactly-once"
    statements = [b"XA PREPARE", b"XA COMMIT"] if xa else [b"\x03COMMIT"]  # COM_QUERY COMMIT
    # the two LOAD DATA faults first: each restart writes again what the last checkpoint did
    # not hold, so they always find data, and every fault at a checkpoint's statement is
    # followed by another such statement (the restart's checkpoint, or the commit's retry); a
    # LOAD DATA fault armed after them found no data left when they came late (5 of 6 fired)
    steps: list[Callable[[], Fault]] = [
        partial(after, rng.randint(50_000, 400_000), direction="up") for _ in range(2)
    ]
    for statement in statements:
        steps.append(partial(when, statement))
        steps.append(partial(when, statement, reply=True))
    with Faults(steps) as faults:
        output = _ok(_syncx(job, tmp_path / "state"))
    assert len(faults.fired) == len(steps), f"{len(faults.fired)} of {len(steps)}\n{output}"
    assert "restart" in output
    if fault == "stall":
        found = output.count(f"mysqlwriter: no answer from 127.0.0.1:{proxy.port}")
        assert found == len(steps), output
        assert "the connection stalled (readTimeout 1s)" in output
        assert "has no session" in output, output  # a LOAD DATA the server gave up
    _assert_copy_exact(db, job, tmp_path / "state", WRITE_ROWS)


def test_a_slow_statement_is_waited_for_and_a_stalled_one_is_broken(
    db: Db, proxy: FaultProxy
) -> None:
    """``mysqlwriter`` with readTimeout 1 s, on a connection of its pool (where DDL runs): a
    statement the server runs for 2.5 s comes back; one the network holds back fails within
    seconds as a lost connection that names the stall, and its session is killed on the server,
    releasing its transaction's locks at once. On a session connection, when the server cannot
    be reached to ask, the statement fails too."""
    db.execute("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
    db.execute("INSERT INTO t VALUES (1, 0)")
    jdbc = f"jdbc:mysql://127.0.0.1:{proxy.port}/{db.name}"
    writer = db.writer("t", readTimeout=1, connection=[{"jdbcUrl": jdbc, "table": ["t"]}])
    try:
        with writer.engine().connect() as conn:
            assert conn.exec_driver_sql("SELECT SLEEP(2.5)").scalar() == 0  # never cut
            conn.exec_driver_sql("UPDATE t SET v = 1 WHERE id = 1")  # a row lock
            session = conn.connection.dbapi_connection.thread_id()  # type: ignore[union-attr]
            proxy.stall()
            started = time.monotonic()
            with pytest.raises(sa.exc.OperationalError) as failed:
                conn.exec_driver_sql("UPDATE t SET v = 2 WHERE id = 1")
        waited = time.monotonic() - started
        assert is_connection_lost(failed.value) and 1 <= waited < 5, waited
        message = str(failed.value.orig)
        assert f"no answer from 127.0.0.1:{proxy.port}" in message, message
        assert "the connection stalled (readTimeout 1s)" in message, message
        assert db.query(f"SELECT ID FROM information_schema.PROCESSLIST WHERE ID = {session}") == []
        db.execute("UPDATE t SET v = 3 WHERE id = 1")  # no lock left behind
        raw = writer.connect()  # a session connection, whose server cannot be reached
        proxy.refuse()
        proxy.stall()
        with pytest.raises(pymysql.err.OperationalError) as failed, raw.cursor() as cur:
            cur.execute("SELECT 1")
        assert "and the server cannot be asked" in str(failed.value), failed.value
    finally:
        writer.close()


def test_connections_open_within_the_connect_timeout_with_keepalive(
    db: Db, proxy: FaultProxy
) -> None:
    """pymysql bounds only the TCP connect by its connect timeout: a handshake the network held
    back waited for ever. Every pymysql connection's socket has TCP keepalive after 60 s idle."""
    login = {"host": "127.0.0.1", "user": db.server.user, "password": db.server.password}
    conn = pymysql_connection()(**login, port=db.server.port)
    try:
        options = (socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT)
        got = tuple(conn._sock.getsockopt(socket.IPPROTO_TCP, o) for o in options)
        assert got == KEEPALIVE
    finally:
        conn.close()
    proxy.stall_after(1)  # the server's greeting: its first byte only
    started = time.monotonic()
    with pytest.raises(pymysql.err.OperationalError) as failed:
        pymysql_connection()(**login, port=proxy.port, connect_timeout=1)
    assert is_connection_lost(failed.value) and time.monotonic() - started < 3


# -- a private server, SIGKILLed freely -------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateServer:
    """A MariaDB of this module's own (port, datadir), SIGKILLed and started again freely."""

    def __init__(self, folder: Path) -> None:
        self.port = _free_port()
        self.folder = folder
        self.env = {
            **os.environ,
            "SYNCX_TEST_MYSQL_PORT": str(self.port),
            "SYNCX_TEST_MYSQL_DIR": str(folder),
        }
        self.db = MariaDB("127.0.0.1", self.port, "root", "")

    def script(self, command: str) -> None:
        subprocess.run(
            ["bash", str(SCRIPT), command], check=True, env=self.env, stdin=subprocess.DEVNULL
        )

    def kill(self) -> None:
        """SIGKILL mariadbd, as the OOM killer or a power cut would, and wait for its end."""
        pid = int((self.folder / "mysqld.pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
        while Path(f"/proc/{pid}").exists():
            time.sleep(0.01)

    def restart(self) -> None:
        """SIGKILL the server and start it again (table ids are numbered anew)."""
        self.kill()
        self.script("start")

    def table_id(self, database: str, table: str) -> int:
        """The id the current server run gave ``database.table`` (its latest table map in the
        current binlog file)."""
        conn = self.db.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW MASTER STATUS")
                current = cur.fetchone()[0]
                cur.execute(f"SHOW BINLOG EVENTS IN '{current}'")
                found = [
                    str(row[5])
                    for row in cur.fetchall()
                    if row[2] == "Table_map" and f"({database}.{table})" in str(row[5])
                ]
        finally:
            conn.close()
        assert found, f"no table map of {database}.{table} in {current}"
        return int(found[-1].split("table_id: ")[1].split()[0])


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateServer]:
    made = PrivateServer(tmp_path_factory.mktemp("mariadb"))
    made.script("start")
    try:
        yield made
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            made.script("stop")
        shutil.rmtree(made.folder, ignore_errors=True)


# -- binlog ---------------------------------------------------------------------------------------


@pytest.fixture
def private_proxy(private: PrivateServer) -> Iterator[FaultProxy]:
    with FaultProxy(private.port) as made:
        yield made


@pytest.fixture
def private_pair(private: PrivateServer) -> Iterator[Pair]:
    made = make_pair(private.db)
    yield made
    private.db.drop_database(made.source)
    private.db.drop_database(made.target)


def _changes(folder: Path) -> list[str]:
    """Every change in a changelog folder, as sorted JSON texts (a multiset)."""
    files = sorted(p for p in folder.iterdir() if p.suffix == ".parquet")
    rows = [row for path in files for row in pq.read_table(path).to_pylist()]
    return sorted(json.dumps(row, sort_keys=True, default=str) for row in rows)


@pytest.mark.slow
def test_binlog_stream_survives_resets_and_a_stall(
    private_pair: Pair, private_proxy: FaultProxy, tmp_path: Path
) -> None:
    """binlog → changelog files (envelope): resets at seeded byte offsets of the stream and a
    stall (found by ``readTimeout``); the stream reconnects from its last emitted position each
    time, and the changelog equals an undisturbed run's, change for change. (On the private
    server: the shared one's binlog carries other tests' changes, so its byte counts vary.)"""
    pair, proxy = private_pair, private_proxy
    seed = _seed("binlog")
    start = pair.gtid()
    work = Workload(pair.server, pair.source, seed=seed)
    for _ in range(6):
        work.step(2, bulk=False)  # small transactions: changes are emitted between faults
    work.close()
    conn = pair.server.connect()
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        file, position = cur.fetchone()[:2]
    conn.close()

    def job(folder: Path, name: str, port: int) -> Path:
        spec = binlog_job(
            pair,
            start=start,
            stop_at={"journalName": file, "position": position},
            writer={
                "name": "filewriter",
                "parameter": {"path": str(folder), "fileType": "parquet"},
            },
            reader={
                "jdbcUrl": f"jdbc:mysql://127.0.0.1:{port}/{pair.source}",
                "readTimeout": 2,
            },
            setting={
                "speed": {"record": 3000},
                "restore": {"isRestore": True, "checkpointInterval": 0.3},
                "restart": RESTART,
            },
        )
        return write_job(tmp_path / f"{name}.json", spec)

    reference = tmp_path / "reference"
    _ok(_syncx(job(reference, "reference", proxy.port), tmp_path / "ref-state", name="ref"))
    total = proxy.forwarded()  # the faults land at offsets of what the undisturbed run received
    proxy.slow(total / 2)  # about 2 s of stream: changes are emitted between the faults
    faulty = tmp_path / "faulty"
    gaps = _gaps(random.Random(seed), total // 8, total // 5, 4)
    steps: list[Callable[[], Fault]] = [partial(proxy.reset_after, gap) for gap in gaps[:3]]
    steps.insert(1, partial(proxy.stall_after, gaps[3]))
    with Faults(steps) as faults:
        output = _ok(_syncx(job(faulty, "faulty", proxy.port), tmp_path / "state", timeout=90))
    assert len(faults.fired) == len(steps), (
        f"{len(faults.fired)} of {len(steps)} faults ({gaps}) in {proxy.forwarded() - total:,} "
        f"bytes ({total:,} undisturbed)\n{output}"
    )
    assert f"nothing came from 127.0.0.1:{proxy.port}" in output and "readTimeout 2s" in output
    want, got = _changes(reference), _changes(faulty)
    assert len(want) > 1000
    assert got == want, (
        f"{len(got)} changes with faults, {len(want)} without: "
        f"{len(set(got) - set(want))} unexpected, {len(set(want) - set(got))} missing"
    )


def _background(job: Path, state: Path, timeout: float = 120) -> tuple[ThreadPoolExecutor, Future]:
    pool = ThreadPoolExecutor(1)
    return pool, pool.submit(_syncx, job, state, timeout=timeout)


def _restart_holding_prepared(private: PrivateServer, proxy: FaultProxy, db: Db, job: Path) -> None:
    """The job has just stored a checkpoint and sends its ``XA COMMIT``: the proxy drops it and
    refuses the job's connections. SIGKILL the server, start it again, see the job's prepared
    transactions survived the crash, then let the job reconnect (its restore commits them)."""
    state = job.parent / "state"
    before = db.prepared(job, state)
    assert before, "no prepared transaction of the job at the commit"
    private.kill()
    private.script("start")
    after = db.prepared(job, state)
    assert set(before) <= set(after), f"prepared before the crash {before}, after {after}"
    proxy.refuse(False)


@pytest.mark.slow
def test_server_sigkilled_during_an_xa_full_load(private: PrivateServer, tmp_path: Path) -> None:
    """mysqlreader → mysqlwriter (XA), both on a server SIGKILLed twice: once between a stored
    checkpoint and its ``XA COMMIT`` (its prepared transactions survive the crash and the
    restore commits them), once in the middle of writing (crash recovery rolls the open
    transaction back, the restore reads those rows again)."""
    rows = 40_000
    with fresh_db(private.db) as db, FaultProxy(private.port) as proxy:
        _source(db, rows)
        job = write_job(
            tmp_path / "load.json",
            _copy_job(
                db,
                reader_port=proxy.port,
                writer_port=proxy.port,
                speed={"readerChannel": 2, "writerChannel": 2, "record": 20_000},
            ),
        )
        state = tmp_path / "state"
        commit = proxy.reset_when(b"XA COMMIT", refuse=True)  # the first checkpoint's
        pool, run = _background(job, state)
        with pool:
            assert commit.wait(60), "no XA COMMIT"
            _restart_holding_prepared(private, proxy, db, job)
            writing = proxy.mark_after(
                random.Random(_seed("load")).randint(100_000, 600_000), direction="up"
            )
            assert writing.wait(60), "no more writes after the restart"
            private.kill()
            private.script("start")
            output = _ok(run.result())
        assert "restart" in output
        _assert_copy_exact(db, job, state, rows)


@pytest.mark.slow
def test_server_sigkilled_during_a_cdc_stream(private: PrivateServer, tmp_path: Path) -> None:
    """binlogreader → mysqlwriter (XA) on one server, SIGKILLed while changes stream, between a
    stored checkpoint and its ``XA COMMIT``: the stream reconnects from its last position, the
    prepared transactions survive and are committed by the restore, the tables end equal."""
    pair = make_pair(private.db)
    source, target = Db(private.db, pair.source), Db(private.db, pair.target)
    work = Workload(private.db, pair.source, seed=_seed("cdc"))
    try:
        with FaultProxy(private.port) as proxy:
            via = Pair(MariaDB("127.0.0.1", proxy.port, "root", ""), pair.source, pair.target)
            spec = binlog_job(
                via,
                start=pair.gtid(),
                stop_at=None,
                writer=mysql_sink(via),
                setting={
                    "speed": {"record": 2000},
                    "restore": {"isRestore": True, "checkpointInterval": 0.3},
                    "restart": RESTART,
                },
            )
            job = write_job(tmp_path / "cdc.json", spec)
            state = tmp_path / "state"
            commit = proxy.reset_when(b"XA COMMIT", refuse=True)  # the first checkpoint's
            with (tmp_path / "cdc.log").open("wb") as log:
                process = subprocess.Popen(
                    [*syncx_command(), "run", str(job), f"--state-dir={state}"],
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
                try:
                    for _ in range(3):  # ~900 changes at 2,000 a second: some still to come
                        work.step(2)
                    assert commit.wait(60), "no XA COMMIT"
                    _restart_holding_prepared(private, proxy, target, job)
                    work.close()
                    work = Workload(private.db, pair.source, seed=_seed("cdc") + 1)
                    work.next_id = dict.fromkeys(work.next_id, 100_000)
                    work.step(2)
                    _wait_until_same(pair, 60)
                finally:
                    process.send_signal(signal.SIGTERM)
                    process.wait(60)
        output = (tmp_path / "cdc.log").read_text(errors="replace")
        assert process.returncode == 0, output[-3000:]
        assert "reconnecting" in output or "restart" in output
        pair.same()
        for table in pair.tables:
            assert source.checksum(table) == target.checksum(table), table
        assert target.prepared(job, state) == []
    finally:
        work.close()
        private.db.drop_database(pair.source)
        private.db.drop_database(pair.target)


def _wait_until_same(pair: Pair, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            assert_same_tables(pair.server, pair.source, pair.target, pair.tables)
            return
        except BaseException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@pytest.mark.slow
def test_a_table_id_reused_after_a_restart_is_not_mistaken(
    private: PrivateServer, tmp_path: Path
) -> None:
    """Table ids are numbered anew when the server starts: after a restart a table outside the
    capture may get the id a captured table had before it. A stream read across the restart
    (no rotate event ends a file when the server stops or crashes) decoded that table's row
    events as the captured table's: phantom changes in the target, or values that do not decode.
    """
    server = private.db
    ddl = "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20) NOT NULL)"
    for _attempt in range(3):
        names = [server.create_database(prefix) for prefix in ("tid_src", "tid_other", "tid_dst")]
        source, other, target = names
        for name in names:
            query(server, name, ddl)
        private.restart()  # table ids start anew: the next table opened is the first one
        start = str(query(server, None, "SELECT @@gtid_binlog_pos")[0][0])
        query(server, source, "INSERT INTO t VALUES (1, 'captured')")
        captured = private.table_id(source, "t")
        private.restart()
        query(server, other, "INSERT INTO t VALUES (2, 'not captured')")
        if private.table_id(other, "t") == captured:
            break
        for name in names:
            server.drop_database(name)
    else:
        pytest.fail("the two tables never got the same table id after a restart")
    try:
        pair = Pair(server, source, target, ["t"])
        job = write_job(
            tmp_path / "ids.json",
            binlog_job(pair, start=start, writer=mysql_sink(pair), stop_at="now"),
        )
        _ok(_syncx(job, tmp_path / "state"))
        assert query(server, target, "SELECT * FROM t ORDER BY id") == [(1, "captured")]
        pair.same()
    finally:
        for name in names:
            server.drop_database(name)
