"""``sqlreader`` / ``sqlwriter`` against real engines: SQLite files and the local PostgreSQL.

Every test body runs against both backends (``db`` fixture): a SQLite file in ``tmp_path``, and a
fresh uuid-named schema in PostgreSQL's ``test`` database (reached through ``search_path``, so the
plugins use the connection's default schema) holding uuid-named tables, dropped afterwards.
The plugins are driven through the contract (plan/open/batches/snapshot;
begin/open/write/prepare/commit/abort) and through the ``syncx`` command line.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
import yaml

from libs.cdc import SourceInfo, TableLayout, build_changes, ddl_batch
from libs.sql import (
    KEEPALIVE,
    SqlConnectionError,
    create_engine,
    decode_value,
    encode_value,
    jdbc_to_url,
)
from readers.sql import SqlPosition, SqlReader, SqlReaderParams, SqlSplit
from sync.contract import DirtyRecord, JobContext, Split, decode
from sync.errors import JobFailedError, JobFileError, SyncxError
from sync.job import fingerprint
from sync.jobfile import load_job
from sync.model import Setting
from tests.conftest import REPO, RunCli, syncx_command
from writers.sql import (
    CDC_STAGE_PREFIX,
    MARKER_TABLE,
    STAGE_PREFIX,
    CdcHandle,
    RowsHandle,
    SqlWriter,
    SqlWriterParams,
)

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BACKENDS = ["sqlite", "postgresql"]


# -- fixtures -----------------------------------------------------------------------------------


@dataclass
class Db:
    """One backend for one test: its URL, an engine for setup/inspection, uuid table names."""

    kind: str
    url: str
    engine: sa.Engine
    schema: str | None = None
    plugins: list[Any] = field(default_factory=list)

    def name(self, prefix: str = "t") -> str:
        return f"{prefix}_{uuid.uuid4().hex[:10]}"

    def execute(self, statement: str, rows: list[dict[str, Any]] | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(statement), rows or {})

    def table(self, name: str) -> sa.Table:
        return sa.Table(name, sa.MetaData(), autoload_with=self.engine)

    def insert(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Insert through the reflected table, so that values bind by column type."""
        if rows:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(self.table(name)), rows)

    def rows(self, name: str, order: str = "id") -> list[tuple[Any, ...]]:
        table = self.table(name)
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.select(table).order_by(table.c[order]))]

    def count(self, name: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(sa.select(sa.func.count()).select_from(self.table(name))).scalar_one()
            )

    def table_names(self) -> list[str]:
        return sa.inspect(self.engine).get_table_names()

    def staged(self, prefix: str = STAGE_PREFIX) -> int:
        """Rows in every staging table (of rows; of changes with ``CDC_STAGE_PREFIX``)."""
        total = 0
        for name in self.table_names():
            if name.startswith(prefix):
                total += self.count(name)
        return total

    def ctx(self, job: str = "job", run: str | None = None, **setting: Any) -> JobContext:
        dirty: list[DirtyRecord] = []
        context = JobContext.of(
            job,
            Path(),
            Setting.model_validate(setting),
            run_id=run or uuid.uuid4().hex[:8],
            report_dirty=dirty.append,
        )
        context.dirty = dirty  # type: ignore[attr-defined]
        return context

    def reader(self, ctx: JobContext | None = None, **params: Any) -> SqlReader:
        params.setdefault("url", self.url)
        reader = SqlReader(SqlReaderParams.model_validate(params), ctx or self.ctx())
        self.plugins.append(reader)
        return reader

    def writer(self, ctx: JobContext | None = None, **params: Any) -> SqlWriter:
        params.setdefault("url", self.url)
        writer = SqlWriter(SqlWriterParams.model_validate(params), ctx or self.ctx())
        self.plugins.append(writer)
        return writer


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    if request.param == "sqlite":
        path = tmp_path / "test.db"
        url = f"sqlite:///{path}"
        engine = sa.create_engine(url)
        with engine.connect():
            pass  # creates the file
        backend = Db("sqlite", url, engine)
    else:
        schema = f"syncx_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(PG_SERVER)
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        admin.dispose()
        url = f"{PG_SERVER}?options=-csearch_path%3D{schema}"
        backend = Db("postgresql", url, sa.create_engine(url), schema)
    try:
        yield backend
    finally:
        for plugin in backend.plugins:
            plugin.close()
        backend.engine.dispose()
        if backend.schema is not None:
            admin = sa.create_engine(PG_SERVER)
            with admin.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{backend.schema}" CASCADE'))
            admin.dispose()


def test_postgresql_connections_have_tcp_keepalive() -> None:
    """A PostgreSQL peer that vanished (a host gone, a NAT that dropped the flow) is found by
    TCP keepalive in about two minutes, not the kernel's default two hours and more."""
    engine = create_engine(sa.make_url(PG_SERVER))
    try:
        with engine.connect() as conn:
            fileno = conn.connection.dbapi_connection.fileno()  # type: ignore[union-attr]
            with socket.socket(fileno=os.dup(fileno)) as sock:
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                options = (socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT)
                got = tuple(sock.getsockopt(socket.IPPROTO_TCP, o) for o in options)
        assert got == KEEPALIVE
    finally:
        engine.dispose()


def _read_split(reader: SqlReader, split: Split, position: Any = None) -> list[pa.RecordBatch]:
    opened = reader.open(split, position)
    try:
        return [b for b in opened.batches() if b is not None]
    finally:
        opened.close()


def _read_all(reader: SqlReader, parallelism: int = 1) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for split in reader.plan(parallelism):
        for batch in _read_split(reader, split):
            rows.extend(batch.to_pylist())
    return rows


def _ids_table(db: Db, count: int, *, key: str = "id BIGINT PRIMARY KEY") -> str:
    name = db.name()
    db.execute(f'CREATE TABLE "{name}" ({key}, v VARCHAR(20))')
    db.insert(name, [{"id": i, "v": f"v{i}"} for i in range(1, count + 1)])
    return name


# -- types ----------------------------------------------------------------------------------------

_SQLITE_TYPES = """id INTEGER PRIMARY KEY, i BIGINT, n NUMERIC(12, 3), f DOUBLE, s VARCHAR(40),
    t TEXT, b BOOLEAN, d DATE, ts DATETIME, tm TIME, bin BLOB"""
_PG_TYPES = """id BIGINT PRIMARY KEY, i BIGINT, n NUMERIC(12, 3), f DOUBLE PRECISION, s VARCHAR(40),
    t TEXT, b BOOLEAN, d DATE, ts TIMESTAMP, tm TIME, bin BYTEA, tz TIMESTAMPTZ, j JSONB, u UUID,
    iv INTERVAL, small SMALLINT, r REAL"""


def _typed_rows(kind: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {
            "id": 1,
            "i": 2**62,
            "n": Decimal("123456789.125"),
            "f": 1.5e300,
            "s": "üñíçødé 😀 日本",
            "t": "line1\nline2\t'quoted' \"double\" ; -- not sql",
            "b": True,
            "d": dt.date(1999, 12, 31),
            "ts": dt.datetime(2024, 2, 29, 23, 59, 59, 123456),
            "tm": dt.time(13, 14, 15, 999999),
            "bin": b"\x00\x01\xffbinary",
        },
        {"id": 2, **dict.fromkeys(("i", "n", "f", "s", "t", "b", "d", "ts", "tm", "bin"))},
        {
            "id": 3,
            "i": -(2**63),
            "n": Decimal("-0.001"),
            "f": -0.0,
            "s": "",
            "t": "",
            "b": False,
            "d": dt.date(1, 1, 1) if kind == "postgresql" else dt.date(1970, 1, 1),
            "ts": dt.datetime(1970, 1, 1),
            "tm": dt.time(0, 0),
            "bin": b"",
        },
    ]
    if kind == "postgresql":
        rows[0] |= {
            "tz": dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.UTC),
            "j": {"a": [1, 2, {"b": "ü"}]},
            "u": uuid.UUID("12345678-1234-5678-1234-567812345678"),
            "iv": dt.timedelta(days=3, seconds=7, microseconds=11),
            "small": -32768,
            "r": 0.5,
        }
        rows[1] |= {"tz": None, "j": None, "u": None, "iv": None, "small": None, "r": None}
        rows[2] |= {
            "tz": dt.datetime(2000, 6, 1, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=5))),
            "j": [],
            "u": uuid.UUID(int=0),
            "iv": dt.timedelta(0),
            "small": 7,
            "r": -1.25,
        }
    return rows


def test_every_type_round_trips(db: Db) -> None:
    ddl = _PG_TYPES if db.kind == "postgresql" else _SQLITE_TYPES
    source, target = db.name("src"), db.name("dst")
    db.execute(f'CREATE TABLE "{source}" ({ddl})')
    db.execute(f'CREATE TABLE "{target}" ({ddl})')
    rows = _typed_rows(db.kind)
    db.insert(source, rows)

    reader = db.reader(table=source, fetchSize=2)
    reader.check()
    schema = reader.schema()
    assert schema is not None
    expected_types = {
        "id": pa.int64(),
        "i": pa.int64(),
        "n": pa.decimal128(12, 3),
        "f": pa.float64(),
        "s": pa.string(),
        "t": pa.string(),
        "b": pa.bool_(),
        "d": pa.date32(),
        "ts": pa.timestamp("us"),
        "tm": pa.time64("us"),
        "bin": pa.binary(),
    }
    if db.kind == "postgresql":
        expected_types |= {
            "tz": pa.timestamp("us", tz="UTC"),
            "j": pa.string(),
            "u": pa.string(),
            "iv": pa.duration("us"),
            "small": pa.int64(),
            "r": pa.float64(),
        }
    assert {f.name: f.type for f in schema} == expected_types

    writer = db.writer(table=target)
    writer.check()
    writer.begin([], fresh=True)
    task = writer.open(0, 1, schema)
    for split in reader.plan(1):
        for batch in _read_split(reader, split):
            assert batch.schema.equals(schema)
            assert task.write(batch) == []
    task.commit(task.prepare(1))
    task.close()

    assert db.rows(target) == db.rows(source)
    # value by value, as Python values, against what was inserted
    got = {row[0]: row for row in db.rows(target)}
    names = [c.name for c in db.table(target).columns]
    for row in rows:
        for position, name in enumerate(names):
            assert got[row["id"]][position] == row[name], (row["id"], name)


def test_decimal_that_does_not_fit_is_a_dirty_record_and_reading_goes_on(db: Db) -> None:
    name = db.name()
    db.execute(f'CREATE TABLE "{name}" (id INTEGER PRIMARY KEY, n NUMERIC)')
    db.insert(name, [{"id": 1, "n": Decimal("1.5")}, {"id": 2, "n": Decimal("1.12345678901234")}])
    ctx = db.ctx()
    reader = db.reader(ctx, table=name)
    rows = _read_all(reader)
    if db.kind == "postgresql":  # unconstrained NUMERIC is read as decimal128(38, 10)
        assert rows == [{"id": 1, "n": Decimal("1.5000000000")}]
        (record,) = ctx.dirty  # type: ignore[attr-defined]
        assert record.kind == "conversion"
        assert record.field == "n"
        assert record.row["id"] == 2
    else:  # SQLite hands NUMERIC back rounded to SQLAlchemy's default scale (10)
        assert [r["id"] for r in rows] == [1, 2]


# -- reading: resume, splits, keys ----------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["int-pk", "text-restore-column", "timestamp-ties", "nullable-splitpk"]
)
def test_resume_round_trip_continues_exactly(db: Db, key: str) -> None:
    name = db.name()
    db.execute(
        f'CREATE TABLE "{name}" (id BIGINT PRIMARY KEY, code VARCHAR(20) NOT NULL, '
        "at TIMESTAMP NOT NULL, grp BIGINT)"
    )
    base = dt.datetime(2024, 1, 1)
    db.insert(
        name,
        [
            {
                "id": i,
                "code": f"c{i:05d}",
                "at": base + dt.timedelta(minutes=i // 7),  # runs of 7 equal values
                "grp": None if i % 11 == 0 else i // 3,
            }
            for i in range(1, 301)
        ],
    )
    setting: dict[str, Any] = {}
    params: dict[str, Any] = {"table": name, "fetchSize": 16}
    if key == "text-restore-column":
        setting = {"restore": {"isRestore": True, "restoreColumnName": "code"}}
    elif key == "timestamp-ties":
        setting = {"restore": {"isRestore": True, "restoreColumnName": "at"}}
    elif key == "nullable-splitpk":
        params["splitPk"] = "grp"

    def reader() -> SqlReader:
        return db.reader(db.ctx(**setting), **params)

    (split,) = reader().plan(1)
    full = [row for b in _read_split(reader(), split) for row in b.to_pylist()]
    assert sorted(r["id"] for r in full) == list(range(1, 301))

    first = reader().open(split, None)
    taken: list[dict[str, Any]] = []
    iterator = iter(first.batches())
    for _ in range(3):
        batch = next(iterator)
        assert batch is not None
        taken.extend(batch.to_pylist())
    position = json.loads(json.dumps(first.snapshot().to_json()))  # as a checkpoint stores it
    first.close()
    if key == "int-pk":
        assert position == {"v": 1, "after": taken[-1]["id"]}
        assert isinstance(position["after"], int)
    del position["v"]  # a checkpoint of the previous version: plain dicts without a version
    rest = [row for b in _read_split(reader(), split, position) for row in b.to_pylist()]
    assert taken + rest == full


def test_resume_inside_the_null_key_phase(db: Db) -> None:
    name = _ids_table(db, 0, key="id BIGINT, grp BIGINT")
    db.insert(name, [{"id": i, "grp": None if i <= 40 else i, "v": "x"} for i in range(1, 101)])
    reader = db.reader(table=name, splitPk="grp", fetchSize=8)
    splits = reader.plan(2)
    assert [s.data.nulls for s in splits] == [True, False]
    opened = reader.open(splits[0], None)
    iterator = iter(opened.batches())
    head = [r for _ in range(2) for r in next(iterator).to_pylist()]  # type: ignore[union-attr]
    position = opened.snapshot()
    opened.close()
    assert position == SqlPosition(nulls=16)
    rest = [r for b in _read_split(reader, splits[0], position) for r in b.to_pylist()]
    second = [r for b in _read_split(reader, splits[1]) for r in b.to_pylist()]
    ids = [r["id"] for r in head + rest + second]
    assert sorted(ids) == list(range(1, 101))


@pytest.mark.parametrize("parallelism", [1, 4])
@pytest.mark.parametrize("restore_column", [None, "id"])
def test_range_splits_are_disjoint_and_cover_a_skewed_key(
    db: Db, parallelism: int, restore_column: str | None
) -> None:
    name = db.name()
    db.execute(f'CREATE TABLE "{name}" (id BIGINT PRIMARY KEY, k BIGINT, v VARCHAR(10))')
    keys = (
        list(range(1, 400))  # dense
        + [10**6, 10**6 + 1, 10**9, 10**12]  # sparse tail
        + [-(10**9), -5, 0]  # below
        + [None] * 5  # not in any range
        + [7] * 20  # duplicates
    )
    db.insert(name, [{"id": i, "k": k, "v": "x"} for i, k in enumerate(keys)])
    setting: dict[str, Any] = (
        {"restore": {"restoreColumnName": restore_column}} if restore_column else {}
    )
    reader = db.reader(db.ctx(**setting), table=name, splitPk="k", fetchSize=32)
    splits = reader.plan(parallelism)
    assert len(splits) == parallelism
    assert {s.data.key for s in splits} == {restore_column or "k"}
    if parallelism > 1:
        ranges = [s.data.range for s in splits]
        assert ranges[0]["lo"] is None and ranges[-1]["hi"] is None
        for left, right in itertools.pairwise(ranges):
            assert left["hi"] == right["lo"]
            assert left["hiInclusive"] is False and right["loInclusive"] is True
    seen: list[int] = []
    for split in splits:
        span = split.data.range or {"lo": None, "hi": None}
        for batch in _read_split(reader, split):
            for row_id, k in zip(
                batch["id"].to_pylist(), [keys[i] for i in batch["id"].to_pylist()], strict=True
            ):
                seen.append(row_id)
                if k is not None and not split.data.nulls:
                    assert span["lo"] is None or k >= span["lo"]
                    assert span["hi"] is None or k < span["hi"]
    assert sorted(seen) == list(range(len(keys)))  # every row exactly once
    # splits survive a checkpoint (JSON) and read the same
    again = [
        Split.from_json(json.loads(json.dumps(s.to_json())), reader.split_type) for s in splits
    ]
    assert again == splits


def test_keyless_sources_resume_by_offset(db: Db) -> None:
    name = db.name()
    db.execute(f'CREATE TABLE "{name}" (a BIGINT, b VARCHAR(10))')
    db.insert(name, [{"a": i % 13, "b": f"b{i % 5}"} for i in range(100)])
    view = db.name("v")
    db.execute(f'CREATE VIEW "{view}" AS SELECT a, b FROM "{name}"')
    source = view  # a view has neither primary key nor rowid
    reader = db.reader(table=source, fetchSize=10)
    (split,) = reader.plan(3)
    assert split.data == SqlSplit(mode="stream")
    full = [tuple(r.values()) for b in _read_split(reader, split) for r in b.to_pylist()]
    assert len(full) == 100
    opened = reader.open(split, None)
    iterator = iter(opened.batches())
    head = [tuple(r.values()) for _ in range(3) for r in next(iterator).to_pylist()]  # type: ignore[union-attr]
    position = opened.snapshot()
    opened.close()
    assert position == SqlPosition(offset=30)
    rest = [tuple(r.values()) for b in _read_split(reader, split, position) for r in b.to_pylist()]
    assert head + rest == full
    if db.kind == "sqlite":  # a table without primary key is paginated by rowid
        (split,) = db.reader(table=name).plan(1)
        assert split.data.mode == "keyset"
        assert split.data.key == "rowid"
        assert len(_read_all(db.reader(table=name, fetchSize=7))) == 100


def test_custom_sql_with_and_without_key(db: Db) -> None:
    name = _ids_table(db, 50)
    sql = f'SELECT id, v, id * 2 AS twice FROM "{name}" WHERE id > 10'
    plain = db.reader(customSql=sql, where="id <= 40", fetchSize=8)
    (split,) = plain.plan(2)
    assert split.data == SqlSplit(mode="custom")
    assert plain.schema() is None
    opened = plain.open(split, None)
    rows = [r for b in opened.batches() if b is not None for r in b.to_pylist()]
    assert opened.snapshot() is None  # a restore re-reads the query
    assert [r["id"] for r in rows] == list(range(11, 41))
    assert rows[0] == {"id": 11, "v": "v11", "twice": 22}

    typed = db.reader(
        customSql=sql,
        splitPk="id",
        column=[{"name": "twice", "type": "bigint"}, {"name": "v", "type": "string"}],
        fetchSize=8,
    )
    assert typed.schema() == pa.schema([pa.field("twice", pa.int64()), pa.field("v", pa.string())])
    splits = typed.plan(2)
    assert [s.data.mode for s in splits] == ["keyset", "keyset"]
    got = sorted(r["twice"] for s in splits for b in _read_split(typed, s) for r in b.to_pylist())
    assert got == [2 * i for i in range(11, 51)]


def test_empty_table_where_columns_and_unicode_names(db: Db) -> None:
    name = db.name("Ü")
    db.execute(
        f'CREATE TABLE "{name}" ("Id" BIGINT PRIMARY KEY, "select" VARCHAR(10), "naïve col" TEXT)'
    )
    reader = db.reader(table=name)
    reader.check()
    assert reader.schema() is not None
    assert _read_all(reader, 2) == []
    db.insert(name, [{"Id": i, "select": f"s{i}", "naïve col": "ü" * i} for i in range(1, 6)])
    reader = db.reader(
        table=name, column=["naïve col", "Id"], where='"Id" % 2 = 1 AND "select" <> \'s:x\''
    )
    assert _read_all(reader) == [{"naïve col": "ü" * i, "Id": i} for i in (1, 3, 5)]


def test_schema_qualified_tables_and_restore_column_index(db: Db) -> None:
    schema = db.schema or "main"
    source = _ids_table(db, 30)
    ctx = db.ctx(restore={"isRestore": True, "restoreColumnName": "", "restoreColumnIndex": 1})
    reader = db.reader(ctx, table=source, schema=schema, column=["v", "id"], fetchSize=4)
    (split,) = reader.plan(1)
    assert split.data.key == "id"  # column[1]
    batches = _read_split(reader, split)
    assert [r["id"] for b in batches for r in b.to_pylist()] == list(range(1, 31))
    target = db.name("dst")
    db.execute(f'CREATE TABLE "{target}" (id BIGINT PRIMARY KEY, v VARCHAR(20))')
    writer = db.writer(table=f"{schema}.{target}", column=["v", "id"])
    writer.begin([], fresh=True)
    task = writer.open(0, 1, reader.schema())
    for batch in batches:
        assert task.write(batch) == []
    task.commit(task.prepare(1))
    task.close()
    assert db.rows(target) == db.rows(source)


# -- writing --------------------------------------------------------------------------------------


def _target(db: Db, extra: str = "") -> str:
    name = db.name("dst")
    db.execute(
        f'CREATE TABLE "{name}" (id BIGINT PRIMARY KEY, name VARCHAR(5) NOT NULL, qty BIGINT'
        f"{extra})"
    )
    return name


def _batch(
    ids: list[int], names: list[str | None], qty: list[int | None] | None = None
) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {"id": ids, "name": names, "qty": qty if qty is not None else [1] * len(ids)},
        schema=pa.schema([("id", pa.int64()), ("name", pa.string()), ("qty", pa.int64())]),
    )


@pytest.mark.parametrize("semantic", ["exactly-once", "at-least-once"])
def test_insert_rejected_rows_become_dirty_and_the_rest_is_written(db: Db, semantic: str) -> None:
    name = _target(db, ", CONSTRAINT positive CHECK (qty >= 0)")
    db.insert(name, [{"id": 1, "name": "old", "qty": 0}])
    writer = db.writer(table=name, semantic=semantic, batchSize=2)
    writer.check()
    writer.begin([], fresh=True)
    task = writer.open(0, 1, None)
    too_long = "x" * 9
    ids = [1, 2, 2, 3, 4, 5, 6]
    names: list[str | None] = ["dup", "ok", "dup2", None, too_long, "ok5", "neg"]
    qty: list[int | None] = [1, 1, 1, 1, 1, 1, 1 if semantic == "exactly-once" else -1]
    dirty = task.write(_batch(ids, names, qty))
    task.commit(task.prepare(1))
    task.close()
    by_id: dict[int, list[DirtyRecord]] = {}
    for record in dirty:
        by_id.setdefault(int(record.row["id"]), []).append(record)
    assert by_id[1][0].kind == "duplicate"
    assert by_id[2][0].kind == "duplicate" and by_id[2][0].row["name"] == "dup2"
    assert by_id[3][0].kind == "null"
    expected = [(1, "old", 0), (2, "ok", 1), (5, "ok5", 1)]
    if db.kind == "postgresql":  # SQLite does not enforce VARCHAR lengths
        assert by_id[4][0].kind == "other"
        assert "too long" in by_id[4][0].error
    else:
        expected.insert(2, (4, too_long, 1))
    if semantic == "at-least-once":
        assert by_id[6][0].kind == "other"
        assert "positive" in by_id[6][0].error or "CHECK" in by_id[6][0].error
        assert "duplicate" in by_id[1][0].error.lower() or "unique" in by_id[1][0].error.lower()
    else:
        expected.append((6, "neg", 1))
    assert db.rows(name) == expected
    assert db.staged() == 0


@pytest.mark.parametrize("semantic", ["exactly-once", "at-least-once"])
@pytest.mark.parametrize("mode", ["replace", "update"])
def test_replace_and_update_upsert_on_the_key(db: Db, mode: str, semantic: str) -> None:
    name = _target(db)
    db.insert(name, [{"id": 1, "name": "a", "qty": 1}, {"id": 2, "name": "b", "qty": 2}])
    writer = db.writer(table=name, writeMode=mode, semantic=semantic)
    writer.check()
    writer.begin([], fresh=True)
    task = writer.open(0, 1, None)
    assert task.write(_batch([2, 3, 3], ["B", "c", "C"], [20, 30, 31])) == []
    assert task.write(_batch([1], ["A"], [10])) == []
    task.commit(task.prepare(1))
    task.close()
    assert db.rows(name) == [(1, "A", 10), (2, "B", 20), (3, "C", 31)]


def test_update_key_chunjun_map_and_unique_key_checks(db: Db) -> None:
    name = db.name("dst")
    db.execute(
        f'CREATE TABLE "{name}" (id BIGINT PRIMARY KEY, code VARCHAR(10) UNIQUE, qty BIGINT)'
    )
    db.insert(name, [{"id": 1, "code": "a", "qty": 1}])
    writer = db.writer(
        table=name, mode="UPDATE", updateKey={"key": ["code"]}, column=["code", "qty", "id"]
    )
    writer.check()
    writer.begin([], fresh=True)
    task = writer.open(0, 1, None)
    batch = pa.RecordBatch.from_pydict({"c": ["a", "b"], "q": [5, 6], "i": [7, 8]})  # by position
    assert task.write(batch) == []
    task.commit(task.prepare(1))
    assert db.rows(name) == [(7, "a", 5), (8, "b", 6)]
    with pytest.raises(
        JobFileError, match=r"updateKey: \(qty\) is not the primary key or a unique key"
    ):
        db.writer(table=name, writeMode="replace", uniqueKey=["qty"]).check()
    with pytest.raises(
        JobFileError, match=r"parameter.column: writeMode replace upserts on \(id\), but id"
    ):
        db.writer(table=name, writeMode="replace", column=["code", "qty"]).check()
    keyless = db.name("nokey")
    db.execute(f'CREATE TABLE "{keyless}" (a BIGINT)')
    with pytest.raises(
        JobFileError, match=r"updateKey: writeMode update needs updateKey, and table"
    ):
        db.writer(table=keyless, writeMode="update").check()


def test_commit_is_idempotent_and_abort_leaves_the_target_untouched(db: Db) -> None:
    name = _target(db)
    writer = db.writer(table=name)
    writer.begin([], fresh=True)
    task = writer.open(0, 1, None)
    task.write(_batch([1, 2], ["a", "b"]))
    first = task.prepare(7)
    assert isinstance(first, RowsHandle)
    assert SqlWriter.handle_type.from_json(json.loads(json.dumps(first.to_json()))) == first
    assert db.rows(name) == []  # durable but not visible
    task.commit(first)
    task.commit(first)
    db.writer(table=name).commit_handle(first)  # as a restore would
    assert db.rows(name) == [(1, "a", 1), (2, "b", 1)]

    task.write(_batch([3], ["c"]))
    second = task.prepare(8)
    task.abort(second)
    task.abort(second)
    task.commit(second)  # nothing left to commit
    assert db.rows(name) == [(1, "a", 1), (2, "b", 1)]
    assert task.prepare(9) is None  # nothing written since
    assert db.staged() == 0
    task.close()


def test_begin_commits_handles_and_removes_other_staged_rows(db: Db) -> None:
    name = _target(db)
    ctx = db.ctx(job="orders", run="run-1")
    writer = db.writer(ctx, table=name)
    writer.begin([], fresh=True)
    task = writer.open(0, 2, None)
    other = writer.open(1, 2, None)
    task.write(_batch([1, 2], ["a", "b"]))
    stored = task.prepare(1)  # checkpoint 1 stored, its commit never happened
    task.write(_batch([3], ["c"]))
    task.prepare(2)  # checkpoint 2 never completed
    task.write(_batch([4], ["d"]))  # never prepared
    other.write(_batch([5], ["e"]))
    # another job staging into the same target keeps its rows
    foreign = db.writer(db.ctx(job="other"), table=name)
    foreign_task = foreign.open(0, 1, None)
    foreign_task.write(_batch([9], ["z"]))
    assert db.staged() == 6
    # the process dies; a restore of checkpoint 1 begins a new attempt, from a checkpoint
    # written by the previous version of syncx (handles were plain dicts without a kind)
    assert isinstance(stored, RowsHandle)
    legacy = {
        "schema": stored.schema,
        "job": "orders",
        "run": "run-1",
        "subtask": 0,
        "checkpoint": 1,
        "segment": stored.segment,
        "table": stored.table,
        "columns": stored.columns,
    }
    restored = db.writer(db.ctx(job="orders", run="run-1"), table=name)
    assert decode(restored.handle_type, legacy) == stored
    restored.begin([decode(restored.handle_type, legacy)], fresh=False)
    assert db.rows(name) == [(1, "a", 1), (2, "b", 1)]
    assert db.staged() == 1  # only the other job's row
    restored.begin([stored], fresh=False)  # a second restore commits nothing twice
    assert db.rows(name) == [(1, "a", 1), (2, "b", 1)]
    with db.engine.connect() as conn:
        markers = conn.execute(
            sa.text(f'SELECT job, run, subtask, checkpoint FROM "{MARKER_TABLE}"')
        ).all()
    assert [tuple(m) for m in markers] == [("orders", "run-1", 0, 1)]


def test_pre_sql_runs_only_on_a_fresh_run_and_post_sql_after_the_end(db: Db) -> None:
    name = _target(db)
    log = db.name("log")
    db.execute(f'CREATE TABLE "{log}" (id BIGINT PRIMARY KEY, what VARCHAR(20))')
    db.insert(name, [{"id": 1, "name": "old", "qty": 1}])
    params: dict[str, Any] = {
        "table": name,
        "preSql": [f'DELETE FROM "{name}"', f"INSERT INTO \"{log}\" VALUES (1, 'pre: 50%')"],
        "postSql": f"INSERT INTO \"{log}\" VALUES (2, 'post')",
    }
    writer = db.writer(**params)
    writer.begin([], fresh=True)
    assert db.rows(name) == []
    task = writer.open(0, 1, None)
    task.write(_batch([2], ["new"]))
    handle = task.prepare(1)
    task.close()
    # restore: preSql must not run again (it would delete committed rows)
    restored = db.writer(**params)
    restored.begin([handle], fresh=False)
    assert db.rows(name) == [(2, "new", 1)]
    assert db.rows(log) == [(1, "pre: 50%")]
    restored.finish()
    assert db.rows(log) == [(1, "pre: 50%"), (2, "post")]


def test_exactly_once_commit_conflict_fails_loudly_and_keeps_the_rows(db: Db) -> None:
    name = _target(db)
    writer = db.writer(table=name)
    writer.begin([], fresh=True)
    task = writer.open(0, 1, None)
    assert task.write(_batch([5, 6], ["e", "f"])) == []
    handle = task.prepare(1)
    db.insert(name, [{"id": 5, "name": "race", "qty": 0}])  # a concurrent writer
    with pytest.raises(
        JobFailedError, match=r"commit of checkpoint 1 .* the staging table '_syncx_stage_"
    ):
        task.commit(handle)
    assert db.rows(name) == [(5, "race", 0)]
    assert db.staged() == 2
    db.execute(f'DELETE FROM "{name}" WHERE id = 5')
    task.commit(handle)
    assert db.rows(name) == [(5, "e", 1), (6, "f", 1)]
    task.close()


def test_writer_creates_only_staging_and_marker_tables(db: Db) -> None:
    name = _target(db)
    before = set(db.table_names())
    writer = db.writer(table=name)
    writer.begin([], fresh=True)
    created = set(db.table_names()) - before
    assert {n for n in created if not n.startswith(STAGE_PREFIX)} == {MARKER_TABLE}
    assert len([n for n in created if n.startswith(STAGE_PREFIX)]) == 1
    at_least_once = db.writer(table=_target(db), semantic="at-least-once")
    assert at_least_once.effective_semantic() == "at-least-once"
    before = set(db.table_names())
    at_least_once.begin([], fresh=True)
    assert set(db.table_names()) == before


# -- CDC: changes applied by key ------------------------------------------------------------------

_AT = SourceInfo("mysql-bin.000001", 4, None, 0)


def _changes(fields: list[tuple[str, pa.DataType]], *items: tuple[Any, ...]) -> pa.RecordBatch:
    """Envelope changes ``(op, before, after)`` of a source table ``shop.orders``."""
    layout = TableLayout("shop", "orders", pa.schema(fields), ("id",))
    return build_changes(layout, "envelope", [(*item, _AT) for item in items])


@pytest.mark.parametrize("semantic", ["exactly-once", "at-least-once"])
def test_changes_apply_by_key_with_a_ddl_in_either_semantic(db: Db, semantic: str) -> None:
    """sqlwriter applies CDC changes to one table by key: inserts, updates, a primary-key
    change, deletes, a column added by ``ddl: apply``. Exactly-once stages them (invisible until
    the commit, committed once, an aborted segment leaves nothing, a restore commits the stored
    handle); at-least-once applies them at once."""
    name = _target(db)
    writer = db.writer(table=name, semantic=semantic)
    writer.check()
    writer.begin([], fresh=True)
    task = writer.open(0, 1, None)
    old = [("id", pa.int64()), ("name", pa.string()), ("qty", pa.int64())]
    new = [*old, ("note", pa.string())]
    assert not task.write(
        _changes(
            old,
            ("c", None, [1, "a", 1]),
            ("c", None, [2, "b", 2]),
            ("c", None, [3, "c", 3]),
            ("u", [2, "b", 2], [2, "bb", 2]),
            ("d", [3, "c", 3], None),
            ("u", [1, "a", 1], [10, "a", 1]),  # the key changes
        )
    )
    first = task.prepare(1)
    if semantic == "exactly-once":
        assert isinstance(first, CdcHandle)
        assert SqlWriter.handle_type.from_json(json.loads(json.dumps(first.to_json()))) == first
        assert db.rows(name) == []  # staged: durable, not visible
        task.commit(first)
        task.commit(first)  # once only
    else:
        assert first is None
    assert db.rows(name) == [(2, "bb", 2), (10, "a", 1)]
    ddl = "ALTER TABLE orders ADD COLUMN note VARCHAR(10)"  # as the source ran it
    assert not task.write(ddl_batch("shop", "orders", ddl, _AT))
    assert not task.write(
        _changes(new, ("c", None, [4, "d", 4, "n"]), ("u", [2, "bb", 2, None], [2, "bb", 5, "x"]))
    )
    second = task.prepare(2)
    assert not task.write(_changes(new, ("d", [4, "d", 4, "n"], None)))
    third = task.prepare(3)
    if semantic == "exactly-once":
        task.abort(third)  # checkpoint 3 never completes
        task.close()
        restored = db.writer(table=name, semantic=semantic)
        assert isinstance(second, CdcHandle)
        legacy = {k: v for k, v in second.to_json().items() if k != "v"}  # the previous form
        restored.begin([decode(SqlWriter.handle_type, legacy)], fresh=False)  # commits it
        restored.begin([second], fresh=False)
        assert db.staged(CDC_STAGE_PREFIX) == 0
        expected = [(2, "bb", 5, "x"), (4, "d", 4, "n"), (10, "a", 1, None)]
    else:
        assert second is None and third is None
        task.close()
        expected = [(2, "bb", 5, "x"), (10, "a", 1, None)]
    assert db.rows(name) == expected


def test_a_ddl_waits_for_the_commit_of_the_changes_before_it(db: Db) -> None:
    """Exactly-once: a DDL (and what follows it) is deferred until its checkpoint commits. A kill
    after a DROP COLUMN arrived, before its checkpoint, leaves the column there, so the restore
    can replay the older changes that still carry it; the commit then drops it."""
    name = _target(db)
    old = [("id", pa.int64()), ("name", pa.string()), ("qty", pa.int64())]
    new = old[:2]
    drop = ddl_batch("shop", "orders", "ALTER TABLE orders DROP COLUMN qty", _AT)
    writer = db.writer(table=name)
    writer.begin([], fresh=True)
    task = writer.open(0, 1, None)
    assert not task.write(_changes(old, ("c", None, [1, "a", 1])))
    first = task.prepare(1)
    task.commit(first)
    after_first = [
        _changes(old, ("u", [1, "a", 1], [1, "a", 5])),
        drop,
        _changes(new, ("c", None, [2, "b"])),
    ]
    for batch in after_first:
        assert not task.write(batch)
    assert db.rows(name) == [(1, "a", 1)]  # the DDL has not run
    task.prepare(2)  # checkpoint 2 never completes: the process dies
    task.close()
    restored = db.writer(table=name)
    restored.begin([first], fresh=False)  # restore checkpoint 1: the reader sends it all again
    task = restored.open(0, 1, None)
    for batch in after_first:
        assert not task.write(batch)
    second = task.prepare(2)
    assert isinstance(second, CdcHandle) and second.deferred == 2
    task.commit(second)
    task.commit(second)  # once only
    assert db.rows(name) == [(1, "a"), (2, "b")]
    with db.engine.connect() as conn:
        assert sa.inspect(conn).has_table("_syncx_deferred", schema=db.schema)
        left = conn.execute(sa.text("SELECT COUNT(*) FROM _syncx_deferred")).scalar_one()
    assert left == 0
    task.close()


# -- bad inputs -----------------------------------------------------------------------------------


def test_missing_table_unknown_column_and_bad_split_pk_are_named(db: Db) -> None:
    shown = db.url  # no password in these URLs: the message shows them whole
    with pytest.raises(JobFileError) as caught:
        db.reader(table="nope").check()
    assert (
        str(caught.value)
        == f"job.content[0].reader.parameter.table: table 'nope' not found in {shown}"
    )
    with pytest.raises(JobFileError) as caught:
        db.writer(table="nope").check()
    assert (
        str(caught.value)
        == f"job.content[0].writer.parameter.table: table 'nope' not found in {shown}"
    )
    with pytest.raises(JobFileError) as caught:
        db.reader(connection=[{"jdbcUrl": [db.url], "table": ["nope"]}], url=None).check()
    assert "job.content[0].reader.parameter.connection[0].table[0]: table 'nope'" in str(
        caught.value
    )

    name = _ids_table(db, 3)
    with pytest.raises(
        JobFileError, match=r"reader.parameter.column\[1\]: column 'missing' not found in table"
    ):
        db.reader(table=name, column=["id", "missing"]).check()
    with pytest.raises(
        JobFileError, match=r"writer.parameter.column\[0\]: column 'missing' not found"
    ):
        db.writer(table=name, column=["missing"]).check()
    with pytest.raises(JobFileError, match=r"splitPk: splitPk 'v' must be a numeric column"):
        db.reader(table=name, splitPk="v").check()
    with pytest.raises(JobFileError, match=r"restoreColumnName: restore column 'zz' not found"):
        db.reader(db.ctx(restore={"restoreColumnName": "zz"}), table=name).check()
    with pytest.raises(JobFileError, match=r"reader.parameter.where: the condition fails"):
        db.reader(table=name, where="no_such_column = 1").check()


def test_bad_urls_and_passwords_never_leak(tmp_path: Path) -> None:
    secret = "S3cr3t-pw!"
    with pytest.raises(SqlConnectionError) as caught:
        SqlReader(
            SqlReaderParams.model_validate(
                {
                    "url": f"postgresql+psycopg://nobody_{uuid.uuid4().hex[:6]}:{secret}@127.0.0.1:5432/test",
                    "table": "t",
                }
            ),
            Db("x", "", sa.create_engine("sqlite://")).ctx(),
        ).check()
    message = str(caught.value)
    assert secret not in message
    assert (
        "job.content[0].reader.parameter.url: cannot connect to postgresql+psycopg://nobody_"
        in message
    )
    assert ":***@127.0.0.1:5432/test" in message

    with pytest.raises(SqlConnectionError) as caught:
        SqlWriter(
            SqlWriterParams.model_validate(
                {
                    "connection": [
                        {
                            "jdbcUrl": f"jdbc:postgresql://127.0.0.1:1/test?user=u&password={secret}",
                            "table": ["t"],
                        }
                    ],
                }
            ),
            Db("x", "", sa.create_engine("sqlite://")).ctx(),
        ).check()
    assert secret not in str(caught.value)
    assert (
        "writer.parameter.connection[0].jdbcUrl: cannot connect to postgresql+psycopg://u:***@127.0.0.1:1/test"
        in str(caught.value)
    )

    with pytest.raises(SqlConnectionError, match="SQLite database file not found"):
        SqlReader(
            SqlReaderParams.model_validate(
                {"url": f"sqlite:///{tmp_path / 'missing.db'}", "table": "t"}
            ),
            Db("x", "", sa.create_engine("sqlite://")).ctx(),
        ).check()
    assert not (tmp_path / "missing.db").exists()  # nothing created

    with pytest.raises(ValueError, match="not a SQLAlchemy URL"):
        SqlReaderParams.model_validate({"url": "not a url", "table": "t"})
    with pytest.raises(ValueError, match="unsupported jdbc url type 'jdbc:db2'"):
        SqlReaderParams.model_validate(
            {"connection": [{"jdbcUrl": "jdbc:db2://h/x", "table": ["t"]}]}
        )


def test_passwords_in_urls_become_secrets(tmp_path: Path) -> None:
    secret = "pa:ss@w0rd"
    params = SqlReaderParams.model_validate(
        {
            "url": "postgresql+psycopg://bob:pa%3Ass%40w0rd@db:5432/x",
            "table": "t",
        }
    )
    assert params.url == "postgresql+psycopg://bob@db:5432/x"
    assert params.password is not None and params.password.get_secret_value() == secret
    assert secret not in json.dumps(params.model_dump(mode="json", by_alias=True))
    assert secret not in repr(params)
    (url,) = params.candidate_urls()
    assert url.password == secret

    jdbc = SqlWriterParams.model_validate(
        {
            "connection": [
                {
                    "jdbcUrl": "jdbc:postgresql://db:5432/x?user=bob&password=pw1&ssl=true",
                    "table": ["t"],
                }
            ]
        }
    )
    assert jdbc.connection[0].jdbc_url == "jdbc:postgresql://db:5432/x?user=bob&ssl=true"
    assert jdbc.password is not None and jdbc.password.get_secret_value() == "pw1"
    with pytest.raises(ValueError, match="different from `password`"):
        SqlWriterParams.model_validate(
            {"url": "postgresql://a:one@h/x", "password": "two", "table": "t"}
        )


def test_jdbc_urls_and_positions() -> None:
    assert jdbc_to_url("jdbc:sqlite:/tmp/x.db").render_as_string() == "sqlite:////tmp/x.db"
    assert jdbc_to_url("jdbc:sqlite:rel/x.db").database == "rel/x.db"
    url = jdbc_to_url("jdbc:postgresql://h:5433/db?useSSL=false&user=u")
    assert url.render_as_string() == "postgresql+psycopg://u@h:5433/db"
    for value in [
        None,
        7,
        2**62,
        "text ü",
        1.5,
        Decimal("-12.340"),
        dt.datetime(2024, 1, 2, 3, 4, 5, 6),
        dt.datetime(2024, 1, 2, tzinfo=dt.UTC),
        dt.date(2024, 1, 2),
        dt.time(1, 2, 3, 4),
        dt.timedelta(days=-1, seconds=5),
        b"\x00\xff",
        uuid.UUID(int=5),
    ]:
        stored = json.loads(json.dumps(encode_value(value)))
        decoded = decode_value(stored)
        assert decoded == value and type(decoded) is type(value)


# -- the command line -----------------------------------------------------------------------------


def _orders(db: Db, name: str) -> None:
    db.execute(
        f'CREATE TABLE "{name}" (id BIGINT PRIMARY KEY, customer VARCHAR(40) NOT NULL, '
        "amount NUMERIC(12, 2), created TIMESTAMP)"
    )


def _order_rows(count: int) -> list[dict[str, Any]]:
    base = dt.datetime(2024, 5, 1)
    return [
        {
            "id": i * 3,
            "customer": f"customer {i % 17} ü",
            "amount": Decimal(i) / 4,
            "created": base + dt.timedelta(seconds=i),
        }
        for i in range(1, count + 1)
    ]


def test_example_job_sqlite_to_sqlite(tmp_path: Path, run_cli: RunCli) -> None:
    job = REPO / "jobs" / "sqlite_to_sqlite.yaml"
    source, target = tmp_path / "source.db", tmp_path / "target.db"
    for path in (source, target):
        engine = sa.create_engine(f"sqlite:///{path}")
        db = Db("sqlite", f"sqlite:///{path}", engine)
        _orders(db, "orders")
        if path == source:
            db.insert("orders", _order_rows(5000))
        engine.dispose()
    done = run_cli(
        "run",
        job,
        "-p",
        f"source_db={source}",
        "-p",
        f"target_db={target}",
        "--metrics-file",
        "m.json",
    )
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["semantic"] == "exactly-once"
    assert metrics["metrics"]["numWrite"] == 5000
    check = Db("sqlite", "", sa.create_engine(f"sqlite:///{target}"))
    source_db = Db("sqlite", "", sa.create_engine(f"sqlite:///{source}"))
    assert check.rows("orders") == source_db.rows("orders")
    assert check.staged() == 0
    check.engine.dispose()
    source_db.engine.dispose()
    loaded = load_job(job, {"source_db": str(source), "target_db": str(target)})
    assert loaded.reader_cls is SqlReader and loaded.writer_cls is SqlWriter


def _cli_job(db: Db, source: str, target: str, **writer: Any) -> dict[str, Any]:
    jdbc = "jdbc:sqlite:" + db.url.removeprefix("sqlite:///") if db.kind == "sqlite" else db.url
    return {
        "job": {
            "content": [
                {
                    "reader": {
                        "name": "sqlreader",
                        "parameter": {
                            "connection": [{"jdbcUrl": [jdbc], "table": [source]}],
                            "username": "${DB_USER:-}",
                            "password": "${DB_PASSWORD}",
                            "column": ["*"],
                            "splitPk": "id",
                            "fetchSize": 100,
                            "customSql": "",
                            "where": "",
                        },
                    },
                    "writer": {
                        "name": "sqlwriter",
                        "parameter": {
                            "url": db.url,
                            "table": target,
                            "password": "${DB_PASSWORD}",
                            **writer,
                        },
                    },
                }
            ],
            "setting": {
                "speed": {"readerChannel": 3, "writerChannel": 2},
                "restore": {"isRestore": True, "checkpointInterval": 0.05},
                "errorLimit": {"record": 5},
            },
        }
    }


def test_cli_copies_a_table_with_splits_checkpoints_and_dirty_rows(
    db: Db, tmp_path: Path, run_cli: RunCli
) -> None:
    source, target = db.name("src"), db.name("dst")
    _orders(db, source)
    _orders(db, target)
    rows = _order_rows(3000)
    db.insert(source, rows)
    db.insert(target, [rows[10], rows[2000]])  # two rows already there: duplicates
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(_cli_job(db, source, target, writeMode="insert", batchSize=256)))
    secret = "not-really-checked"
    done = run_cli("run", job, "--metrics-file", "m.json", env={"DB_PASSWORD": secret})
    assert done.returncode == 0, done.stderr
    assert secret not in done.stderr + done.stdout
    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert metrics["numRead"] == 3000
    assert metrics["numWrite"] == 2998
    assert metrics["duplicateErrors"] == 2
    assert metrics["nErrors"] == 2
    assert db.rows(target) == db.rows(source)
    assert db.staged() == 0
    checkpoints = sorted((tmp_path / ".syncx" / "state" / "job" / "checkpoints").glob("chk-*.json"))
    assert checkpoints
    text = checkpoints[-1].read_text()
    assert secret not in text
    stored = json.loads(text)
    assert len(stored["splits"]) == 3
    assert all(state["done"] for state in stored["positions"].values())


def test_cli_killed_job_restores_and_writes_every_row_once(
    db: Db, tmp_path: Path, run_cli: RunCli
) -> None:
    source, target = db.name("src"), db.name("dst")
    _orders(db, source)
    _orders(db, target)
    db.insert(source, _order_rows(12000))
    job = _cli_job(db, source, target)
    job["job"]["setting"]["speed"] = {"readerChannel": 2, "writerChannel": 2, "record": 3000}
    job["job"]["setting"]["restore"]["checkpointInterval"] = 0.2
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    env = {**os.environ, "DB_PASSWORD": ""}
    process = subprocess.Popen(
        syncx_command("run", str(path)), cwd=tmp_path, env=env, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and db.count(target) < 2000:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait()
    written = db.count(target)
    assert 0 < written < 12000  # killed mid-run: some checkpoints committed, more staged
    done = run_cli("run", path, "--restore", "latest", env={"DB_PASSWORD": ""})
    assert done.returncode == 0, done.stderr
    assert "restored from checkpoint" in done.stderr
    assert db.rows(target) == db.rows(source)
    assert db.staged() == 0


def test_cli_bad_job_exits_2_without_traceback_or_password(
    db: Db, tmp_path: Path, run_cli: RunCli
) -> None:
    source = _ids_table(db, 3)
    job = _cli_job(db, source, "no_such_table")
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    secret = "hunter2-secret"
    done = run_cli("run", path, env={"DB_PASSWORD": secret})
    assert done.returncode == 2, done.stderr
    assert (
        "job.content[0].writer.parameter.table: table 'no_such_table' not found in" in done.stderr
    )
    assert "Traceback" not in done.stderr
    assert secret not in done.stderr + done.stdout


def test_fingerprint_and_errors_hold_no_password(tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    job.write_text(
        json.dumps(
            {
                "job": {
                    "content": [
                        {
                            "reader": {
                                "name": "sqlreader",
                                "parameter": {
                                    "url": "postgresql+psycopg://u:topsecret@h/db",
                                    "table": "t",
                                },
                            },
                            "writer": {
                                "name": "sqlwriter",
                                "parameter": {
                                    "connection": [
                                        {
                                            "jdbcUrl": "jdbc:postgresql://h/db?password=topsecret",
                                            "table": ["t"],
                                        }
                                    ],
                                    "writeMode": "nonsense",
                                },
                            },
                        }
                    ]
                }
            }
        )
    )
    with pytest.raises(SyncxError) as caught:
        load_job(job)
    assert "writeMode" in str(caught.value)
    assert "topsecret" not in str(caught.value)
    raw = json.loads(job.read_text())
    raw["job"]["content"][0]["writer"]["parameter"]["writeMode"] = "insert"
    job.write_text(json.dumps(raw))
    assert "topsecret" not in json.dumps(fingerprint(load_job(job)))
