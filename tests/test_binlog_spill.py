"""A source transaction bigger than ``transactionBufferBytes`` waits in a spill file, not memory.

Against the private MariaDB (binlog on): one big transaction replicates exactly with a small
bound while the process's peak RSS stays far under that of a run holding it in memory; a
SIGKILL while it is emitted from its spill file, then ``--restore latest``, ends exact and
leaves no file; a spilled XA transaction is emitted at its ``XA COMMIT`` (and a restore in the
middle of it drops exactly what was emitted), a spilled one rolled back never is; a spill
folder that cannot be written, or is full, is named.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.mysql_bench import measured
from readers.binlog import BinlogReader
from sync.contract import JobContext, encode
from sync.contract import decode as decode_state
from sync.errors import DiskFullError, FatalError
from sync.model import Setting
from tests.conftest import Mount
from tests.crash import Kill, latest_checkpoint, run_syncx, syncx_command
from tests.servers.mariadb import MariaDB, ensure_server
from tests.test_binlog import (
    Pair,
    binlog_job,
    make_pair,
    mysql_sink,
    ok,
    read_stream,
    run,
    stream_reader,
    table_rows,
    write_job,
)

pytestmark = pytest.mark.mysql

BIG = {
    "big": (
        "CREATE TABLE big (id INT PRIMARY KEY, n INT NOT NULL, a VARCHAR(1000) NOT NULL, "
        "b VARCHAR(1000) NULL, price DECIMAL(12,2) NULL)"
    )
}
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def server() -> MariaDB:
    return ensure_server()


@pytest.fixture
def big(server: MariaDB) -> Iterator[Pair]:
    made = make_pair(server, BIG)
    yield made
    server.drop_database(made.source)
    server.drop_database(made.target)


def _fill(pair: Pair, rows: int, width: int) -> None:
    """``rows`` rows in ``big`` (strings of ``width`` characters), one INSERT … SELECT."""
    pair.execute(pair.source, f"INSERT INTO big SELECT {_values(width)} FROM seq_1_to_{rows}")


def _values(width: int) -> str:
    """``big``'s columns from ``seq``, with strings of ``width`` characters."""
    return (
        f"seq, seq, REPEAT(CHAR(65 + seq % 26), {width}), REPEAT(CHAR(97 + seq % 26), {width}), "
        "seq / 100"
    )


def _big_update(pair: Pair) -> None:
    """One UPDATE of every row of ``big`` (one transaction, before and after images), between
    two one-row transactions."""
    pair.execute(pair.source, "INSERT INTO big VALUES (0, 0, 'before', NULL, NULL)")
    pair.execute(pair.source, "UPDATE big SET n = n + 1, b = REVERSE(a), price = -price")
    pair.execute(pair.source, "INSERT INTO big VALUES (-1, 1, 'after', NULL, NULL)")


def _spill_files(pid: int, folder: Path) -> list[str]:
    """The files process ``pid`` has open in ``folder`` (spill files are unlinked: their link
    reads ``folder/#inode (deleted)`` or ``folder/binlog-spill-… (deleted)``)."""
    found = []
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith(f"{folder}/"):
                    found.append(target)
    return found


def _left_in(folder: Path) -> list[Path]:
    """The files in ``folder`` (none when it was never made)."""
    return sorted(folder.iterdir()) if folder.exists() else []


COLUMNS = ("id", "n", "a", "b", "price")


def _changelog(folder: Path) -> pa.Table:
    """A paving changelog (splitUpdate) in order, with what applying it needs."""
    read = ["ts", "type", "before_id", *(f"after_{c}" for c in COLUMNS)]
    return pq.read_table(folder, columns=read).sort_by("ts")


def _applied(changelog: pa.Table) -> list[tuple[Any, ...]]:
    """The rows ``changelog`` leaves when applied in order, by key."""
    rows: dict[int, tuple[Any, ...]] = {}
    for change in changelog.to_pylist():
        if change["type"] in ("INSERT", "UPDATE_AFTER"):
            rows[change["after_id"]] = tuple(change[f"after_{c}"] for c in COLUMNS)
        elif change["type"] == "DELETE":
            rows.pop(change["before_id"])
    return [rows[key] for key in sorted(rows)]


def test_big_transaction_spills_replicates_exactly_and_bounds_memory(
    big: Pair, tmp_path: Path
) -> None:
    """A 40,000-row UPDATE (one transaction: before and after images of 1,600 characters of
    strings, about 130 MiB of Arrow data) into a Parquet changelog, ChunJun's layout with
    splitUpdate, with ``transactionBufferBytes`` 1 MiB: the changelog replays to the source
    table exactly (the run holding it in memory writes the same changelog), and the process
    (measured alone: :func:`bench.mysql_bench.measured`) peaks
    at least 64 MiB (half the transaction) under the same job holding the transaction in memory
    (a bound of 4 GiB). Batches of 2,000 rows (a record limit of 40,000/s) keep what is in
    flight between reader and writer small beside it."""
    _fill(big, 40_000, 800)
    start = big.gtid()
    _big_update(big)
    peaks = {}
    changelogs = {}
    for name, bound in (("spilled", MIB), ("in-memory", 4096 * MIB)):
        out = tmp_path / f"{name}-out"
        job = binlog_job(
            big,
            start=start,
            reader={"transactionBufferBytes": bound, "splitUpdate": True},
            paving=True,
            writer={
                "name": "filewriter",
                "parameter": {"path": str(out), "fileType": "parquet", "fileName": "changes"},
            },
            setting={
                "speed": {"record": 40_000},
                "restore": {"isRestore": True, "checkpointInterval": 0.5},
            },
        )
        log = tmp_path / f"{name}.log"
        path = write_job(tmp_path / f"{name}.json", job)
        command = [*syncx_command(), "run", str(path), f"--state-dir={tmp_path / name}"]
        peaks[name] = measured(command, stderr=log).peak_mb
        assert ("spilling them to" in log.read_text()) == (name == "spilled")
        changelogs[name] = _changelog(out)
        assert _left_in(tmp_path / name / "tmp") == []
    assert _applied(changelogs["spilled"]) == table_rows(big.server, big.source, "big")
    assert changelogs["in-memory"].equals(changelogs["spilled"])
    print(f"peak RSS: {', '.join(f'{k} {v:.0f} MiB' for k, v in peaks.items())}")
    assert peaks["in-memory"] > peaks["spilled"] + 64, peaks


def _emitting(state: Path) -> bool:
    """Whether the latest checkpoint holds the stream in the middle of a transaction's
    emission (changes emitted after its boundary)."""
    latest = latest_checkpoint(state)
    return latest is not None and '"emitted": {"' in json.dumps(latest)


def test_killed_while_a_spilled_transaction_is_emitted_then_restored(
    big: Pair, tmp_path: Path
) -> None:
    """A 20,000-row UPDATE spilled (a 1 MiB bound) into mysqlwriter exactly-once, ChunJun's
    layout with splitUpdate (two records an update), SIGKILLed after a checkpoint taken in the
    middle of the transaction's emission from its spill file, the file still open: no file is
    left in the spill folder, and ``--restore latest`` emits the rest exactly (the target, whose
    rows come from the update's after images, equals the source)."""
    _fill(big, 20_000, 40)
    start = big.gtid()
    _big_update(big)
    job = write_job(
        tmp_path / "job.json",
        binlog_job(
            big,
            start=start,
            reader={"transactionBufferBytes": MIB, "splitUpdate": True},
            paving=True,
            writer=mysql_sink(big),
            setting={
                "speed": {"record": 20_000},
                "restore": {"isRestore": True, "checkpointInterval": 0.3},
            },
        ),
    )
    state = tmp_path / "state"
    spill_folder = state / "tmp"

    def emitting_from_its_spill_file(pid: int) -> bool:
        return _emitting(state) and bool(_spill_files(pid, spill_folder))

    killed = run_syncx(
        ["run", job, f"--state-dir={state}"],
        log=tmp_path / "killed.log",
        kill=Kill(when=emitting_from_its_spill_file),
    )
    assert killed.killed, f"{killed.describe()}\n{killed.tail()}"
    assert _left_in(spill_folder) == []
    ok(run(job, state, "--restore", "latest"))
    big.same()
    assert _left_in(spill_folder) == []


def _on(conn: Any, *statements: str) -> None:
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def _reader(pair: Pair, folder: Path, start: str, batch_rows: int) -> BinlogReader:
    ctx = JobContext.of(
        "spill", folder, Setting(), run_id="spill", batch_rows=batch_rows, temp_dir=folder / "tmp"
    )
    return stream_reader(pair, start, ctx, transactionBufferBytes=1)


def _ids_and_positions(reader: BinlogReader, position: Any) -> list[tuple[list[int], Any]]:
    """The ids of each batch the stream split yields from ``position``, with the position
    after it."""
    (split,) = reader.plan(1)
    return read_stream(
        reader, split, position, lambda batch: [r["id"] for r in batch.column("after").to_pylist()]
    )


def test_spilled_xa_transaction_at_commit_only_and_resumed_in_its_middle(
    big: Pair, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every change spills (a 1-byte bound): XA 'x' (3,000 rows) is emitted at its XA COMMIT,
    after a plain row committed before it; XA 'r' (2,000 rows) rolled back after its prepare
    is not emitted. A restore from a position in the middle of 'x' (another XA transaction
    still prepared, so the position is before 'x' plus what was emitted) with other batch
    sizes (parts cut elsewhere: one is dropped in part) emits exactly the rest. No spill file
    stays open."""
    server = big.server
    x, r, y = server.connect(big.source), server.connect(big.source), server.connect(big.source)
    try:
        start = big.gtid()
        _on(x, "XA START 'x'", f"INSERT INTO big SELECT {_values(10)} FROM seq_1_to_3000")
        _on(x, "XA END 'x'", "XA PREPARE 'x'")
        _on(y, "XA START 'y'", "INSERT INTO big VALUES (5000, 0, 'y', NULL, NULL)")
        _on(y, "XA END 'y'", "XA PREPARE 'y'")
        big.execute(big.source, "INSERT INTO big VALUES (6000, 0, 'plain', NULL, NULL)")
        _on(x, "XA COMMIT 'x'")
        _on(r, "XA START 'r'", f"INSERT INTO big SELECT {_values(10)} FROM seq_7001_to_9000")
        _on(r, "XA END 'r'", "XA PREPARE 'r'")
        _on(r, "XA ROLLBACK 'r'")
        _on(y, "XA ROLLBACK 'y'")
        big.execute(big.source, "INSERT INTO big VALUES (6001, 0, 'plain', NULL, NULL)")
        with caplog.at_level(logging.INFO, logger="readers.binlog.spill"):
            whole = _ids_and_positions(_reader(big, tmp_path, start, 1000), None)
        assert "spilling them to" in caplog.text
        assert [i for ids, _ in whole for i in ids] == [6000, *range(1, 3001), 6001]
        assert not _spill_files(os.getpid(), tmp_path / "tmp")
        middle = next(p for ids, p in whole if ids[-1] == 2000)  # 'x' half emitted
        assert middle.emitted == {f"{big.source}.big": 2001}
        stored = decode_state(BinlogReader.position_type, json.loads(json.dumps(encode(middle))))
        resumed = _ids_and_positions(_reader(big, tmp_path, start, 700), stored)
        assert [i for ids, _ in resumed for i in ids] == [*range(2001, 3001), 6001]
        assert not _spill_files(os.getpid(), tmp_path / "tmp")
    finally:
        for conn, name in ((x, "x"), (r, "r"), (y, "y")):
            with contextlib.suppress(Exception):
                _on(conn, f"XA ROLLBACK '{name}'")
            conn.close()


def test_a_spill_folder_that_cannot_be_written_is_named(big: Pair, tmp_path: Path) -> None:
    """A spill folder that cannot be made (a file is in the way) stops the read with a fatal
    error naming the folder and what to do, not as a lost connection retried for minutes."""
    start = big.gtid()
    big.execute(big.source, f"INSERT INTO big SELECT {_values(10)} FROM seq_1_to_50")
    (tmp_path / "tmp").write_text("not a folder")
    with pytest.raises(FatalError) as raised:
        _ids_and_positions(_reader(big, tmp_path, start, 10), None)
    message = str(raised.value)
    assert f"spill a big source transaction into {tmp_path / 'tmp'}" in message
    assert "transactionBufferBytes" in message


def test_a_full_spill_disk_is_named(big: Pair, tmp_path: Path, small_fs: Mount) -> None:
    """A spill folder on a full filesystem (a 64 KiB tmpfs) stops the read with the full-disk
    error: the folder, the space left, how to resume."""
    folder = small_fs("state", "64k")
    start = big.gtid()
    big.execute(big.source, f"INSERT INTO big SELECT {_values(40)} FROM seq_1_to_3000")
    with pytest.raises(DiskFullError) as raised:
        _ids_and_positions(_reader(big, folder, start, 1000), None)
    message = str(raised.value)
    assert f"no space left on device spilling a source transaction into {folder / 'tmp'}" in message
    assert "of 64 KiB" in message and "--restore latest" in message
    assert not _spill_files(os.getpid(), folder / "tmp")  # closed, though its flush failed
