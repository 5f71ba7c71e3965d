"""The one MySQL type table: its four ways in agree on every column type (private MariaDB).

A table with every MySQL/MariaDB column type is described four ways: SQLAlchemy's reflection,
the protocol's field metadata of a ``SELECT``, ``information_schema.COLUMNS`` and the binlog's
table map. Each goes through :mod:`libs.mysql.types` to a :class:`MysqlType`; they must be the
same for every column. Then the rows the ``binlogreader`` decodes from the binlog must equal the
rows the ``mysqlreader`` reads from the table, type for type and value for value.

Not covered: MariaDB's ``INET4``/``INET6``/``UUID`` (the binlog carries their binary form with no
type name, so the binlog cannot tell them from ``BINARY(n)``).
"""

from __future__ import annotations

import random
import tempfile
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import sqlalchemy as sa
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication import row_event as rev

from libs.mysql.types import (
    MysqlType,
    from_connectorx,
    mysql_type,
    mysql_type_of_binlog,
    mysql_type_of_field,
    mysql_type_of_info,
)
from readers.binlog import BinlogReader, BinlogReaderParams
from readers.mysql import MysqlReader, MysqlReaderParams
from sync.contract import JobContext
from sync.model import Setting
from tests.servers.mariadb import MariaDB, ensure_server

pytestmark = pytest.mark.mysql

COLUMNS: dict[str, str] = {
    "id": "INT PRIMARY KEY",
    "ti": "TINYINT",
    "tu": "TINYINT UNSIGNED",
    "t1": "TINYINT(1)",
    "bo": "BOOLEAN",
    "si": "SMALLINT",
    "su": "SMALLINT UNSIGNED",
    "mi": "MEDIUMINT",
    "mu": "MEDIUMINT UNSIGNED",
    "i": "INT",
    "iu": "INT UNSIGNED",
    "bi": "BIGINT",
    "bu": "BIGINT UNSIGNED",
    "f": "FLOAT",
    "f30": "FLOAT(30)",
    "d": "DOUBLE",
    "re": "REAL",
    "d52": "DECIMAL(5,2)",
    "d380": "DECIMAL(38,0)",
    "d3810": "DECIMAL(38,10)",
    "d6530": "DECIMAL(65,30)",
    "du": "DECIMAL(10,0) UNSIGNED",
    "nu": "NUMERIC",
    "b1": "BIT(1)",
    "b8": "BIT(8)",
    "b64": "BIT(64)",
    "da": "DATE",
    "dt0": "DATETIME",
    "dt6": "DATETIME(6)",
    "ts3": "TIMESTAMP(3) NULL",
    "tm": "TIME",
    "tm6": "TIME(6)",
    "y": "YEAR",
    "ch": "CHAR(5)",
    "vc": "VARCHAR(300)",
    "l1": "VARCHAR(10) CHARACTER SET latin1",
    "bn": "BINARY(4)",
    "vb": "VARBINARY(10)",
    "tt": "TINYTEXT",
    "tx": "TEXT",
    "mt": "MEDIUMTEXT",
    "lt": "LONGTEXT",
    "tb": "TINYBLOB",
    "bl": "BLOB",
    "mb": "MEDIUMBLOB",
    "lb": "LONGBLOB",
    "en": "ENUM('a','b c','d')",
    "st": "SET('x','y','z')",
    "js": "JSON",
    "ge": "GEOMETRY",
    "pt": "POINT",
    "ls": "LINESTRING",
    "pg": "POLYGON",
    "mp": "MULTIPOINT",
    "ml": "MULTILINESTRING",
    "mg": "MULTIPOLYGON",
    "gc": "GEOMETRYCOLLECTION",
}
ROWS = [
    "(1, -128, 255, 1, 0, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295, "
    "-9223372036854775808, 18446744073709551615, 1.5, 2.25, -2.5e100, 0.125, -123.45, "
    "12345678901234567890123456789012345678, -1234567890123456789012345678.0123456789, "
    "12345678901234567890123456789012345.123456789012345678901234567891, 4294967295, 42, "
    "b'1', b'10101010', b'1111111111111111111111111111111111111111111111111111111111111111', "
    "'2024-02-29', '2024-02-29 12:34:56', '1999-12-31 23:59:59.500000', "
    "'2038-01-19 03:14:07.999', '-838:59:59', '12:34:56.654321', 2155, 'ab', 'héllo 😀', "
    "'café', x'00010203', x'00ff0a0d', 'tiny', 'text\\ttab', 'medium', '𠜎 4-byte', x'01', "
    "x'0203', x'04', x'05', 'b c', 'x,z', '{\"a\": [1, {\"b\": null}]}', "
    "ST_GeomFromText('POINT(1 2)'), ST_GeomFromText('POINT(3 4)'), "
    "ST_GeomFromText('LINESTRING(0 0, 1 1)'), "
    "ST_GeomFromText('POLYGON((0 0, 1 0, 1 1, 0 0))'), ST_GeomFromText('MULTIPOINT(1 1, 2 2)'), "
    "ST_GeomFromText('MULTILINESTRING((0 0, 1 1))'), "
    "ST_GeomFromText('MULTIPOLYGON(((0 0, 1 0, 1 1, 0 0)))'), "
    "ST_GeomFromText('GEOMETRYCOLLECTION(POINT(1 1))'))",
    "(2" + ", NULL" * (len(COLUMNS) - 1) + ")",
    "(3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, -0.25, 0, 0, 0, 0.01, 0, 0.0000000001, "
    "-0.000000000000000000000000000001, 0, 0, b'0', b'0', b'0', '1000-01-01', "
    "'1000-01-01 00:00:00', '9999-12-31 23:59:59.999999', '1970-01-01 00:00:01.001', "
    "'838:59:59', '-00:00:00.000001', 1901, '', '', '', x'', x'', '', '', '', '', x'', x'', "
    "x'', x'', 'a', '', '[]', ST_GeomFromText('POINT(0 0)'), ST_GeomFromText('POINT(0 0)'), "
    "ST_GeomFromText('LINESTRING(0 0, 0 1)'), ST_GeomFromText('POLYGON((0 0, 2 0, 2 2, 0 0))'), "
    "ST_GeomFromText('MULTIPOINT(0 0)'), ST_GeomFromText('MULTILINESTRING((0 0, 0 1))'), "
    "ST_GeomFromText('MULTIPOLYGON(((0 0, 2 0, 2 2, 0 0)))'), "
    "ST_GeomFromText('GEOMETRYCOLLECTION(POINT(0 0))'))",
]


@pytest.fixture(scope="module")
def server() -> MariaDB:
    return ensure_server()


@pytest.fixture
def table(server: MariaDB) -> Iterator[tuple[str, str, str]]:
    """A fresh database with the every-type table (empty), and the GTID before its rows."""
    database = server.create_database("types")
    name = f"t_{uuid.uuid4().hex[:8]}"
    conn = server.connect(database)
    try:
        with conn.cursor() as cur:
            columns = ", ".join(f"`{n}` {t}" for n, t in COLUMNS.items())
            cur.execute(f"CREATE TABLE `{name}` ({columns})")
            cur.execute("SELECT @@gtid_binlog_pos")
            start = str(cur.fetchone()[0])
            cur.execute(f"INSERT INTO `{name}` VALUES " + ", ".join(ROWS))
    finally:
        conn.close()
    yield database, name, start
    server.drop_database(database)


def _ctx() -> JobContext:
    state = Path(tempfile.gettempdir()) / "syncx-test-types"
    return JobContext.of("types", state, Setting(), run_id=uuid.uuid4().hex[:8])


def _by_sqlalchemy(server: MariaDB, database: str, name: str) -> dict[str, MysqlType]:
    url = f"mysql+pymysql://{server.user}@{server.host}:{server.port}/{database}"
    engine = sa.create_engine(url)
    try:
        with pytest.warns(sa.exc.SAWarning, match="geometry|point|linestring|polygon"):
            columns = sa.inspect(engine).get_columns(name)
    finally:
        engine.dispose()
    return {str(c["name"]): mysql_type(c["type"]) for c in columns}


def _by_protocol(server: MariaDB, database: str, name: str) -> dict[str, MysqlType]:
    conn = server.connect(database)
    try:
        cursor = conn.cursor()
        cursor.execute(f"SELECT * FROM `{name}` WHERE 1 = 0")
        fields = cursor._result.fields  # pymysql's protocol metadata
        cursor.close()
    finally:
        conn.close()
    return {
        f.name: mysql_type_of_field(f.type_code, f.length, f.scale, f.flags, f.charsetnr)
        for f in fields
    }


def _by_information_schema(server: MariaDB, database: str, name: str) -> dict[str, MysqlType]:
    conn = server.connect(database)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, NUMERIC_PRECISION, NUMERIC_SCALE "
                "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA=%s AND TABLE_NAME=%s",
                (database, name),
            )
            rows = cur.fetchall()
    finally:
        conn.close()
    return {str(r[0]): mysql_type_of_info(str(r[1]), str(r[2]), r[3], r[4]) for r in rows}


def _by_binlog(server: MariaDB, database: str, name: str, start: str) -> dict[str, MysqlType]:
    stream = BinLogStreamReader(
        connection_settings={"host": server.host, "port": server.port, "user": server.user},
        server_id=uuid.uuid4().int % 2**31 + 100,
        is_mariadb=True,
        auto_position=start,
        blocking=False,
        only_events=[rev.WriteRowsEvent],
        only_tables=[name],
        only_schemas=[database],
    )
    try:
        for event in stream:
            return {c.name: mysql_type_of_binlog(c) for c in event.columns}
    finally:
        stream.close()
    pytest.fail("no row event of the every-type table in the binlog")


def test_four_ways_in_give_one_type_for_every_column(
    server: MariaDB, table: tuple[str, str, str]
) -> None:
    database, name, start = table
    ways = {
        "sqlalchemy": _by_sqlalchemy(server, database, name),
        "protocol": _by_protocol(server, database, name),
        "information_schema": _by_information_schema(server, database, name),
        "binlog": _by_binlog(server, database, name, start),
    }
    for way, types in ways.items():
        assert list(types) == list(COLUMNS) or sorted(types) == sorted(COLUMNS), way
    disagreements = {
        column: {way: types[column].arrow for way, types in ways.items()}
        for column in COLUMNS
        if len({(t[column].arrow, t[column].wire) for t in ways.values()}) > 1
    }
    assert not disagreements, disagreements
    arrow = {c: ways["sqlalchemy"][c].arrow for c in COLUMNS}
    assert arrow["mi"] == pa.int32() and arrow["mu"] == pa.uint32() and arrow["bu"] == pa.uint64()
    assert arrow["f"] == pa.float32() and arrow["f30"] == pa.float64()
    assert arrow["d6530"] == pa.decimal256(65, 30) and arrow["d3810"] == pa.decimal128(38, 10)
    assert arrow["b1"] == pa.bool_() and arrow["b64"] == pa.uint64()
    assert arrow["ts3"] == pa.timestamp("us", tz="UTC") and arrow["tm"] == pa.duration("us")
    assert arrow["mg"] == pa.binary() and arrow["st"] == pa.string()
    selects = {
        column: {(t[column].text_select, t[column].arrow_select) for t in ways.values()}
        for column in COLUMNS
    }
    assert all(len(s) == 1 for s in selects.values()), selects


def _mysqlreader_rows(server: MariaDB, database: str, name: str) -> pa.Table:
    params = MysqlReaderParams.model_validate(
        {
            "connection": [
                {
                    "jdbcUrl": [f"jdbc:mysql://{server.host}:{server.port}/{database}"],
                    "table": [name],
                }
            ],
            "username": server.user,
            "driver": "pymysql",
        }
    )
    reader = MysqlReader(params, _ctx())
    batches: list[pa.RecordBatch] = []
    try:
        for split in reader.plan(1):
            opened = reader.open(split, None)
            batches += [b for b in opened.batches() if b is not None]
            opened.close()
    finally:
        reader.close()
    return pa.Table.from_batches(batches).sort_by("id")


def _binlogreader_rows(server: MariaDB, database: str, name: str, start: str) -> pa.Table:
    params = BinlogReaderParams.model_validate(
        {
            "jdbcUrl": f"jdbc:mysql://{server.host}:{server.port}/{database}",
            "username": server.user,
            "table": [f"{database}.{name}"],
            "pavingData": False,
            "start": {"gtid": start},
            "stopAt": "now",
        }
    )
    reader = BinlogReader(params, _ctx())
    (split,) = reader.plan(1)
    opened = reader.open(split, None)
    rows: list[pa.Table] = []
    try:
        for batch in opened.batches():
            if batch is not None and batch.num_rows:
                after = batch.column("after")
                rows.append(pa.Table.from_arrays(after.flatten(), schema=pa.schema(after.type)))
    finally:
        opened.close()
        reader.close()
    return pa.concat_tables(rows).sort_by("id")


def test_binlog_values_equal_what_the_mysqlreader_reads(
    server: MariaDB, table: tuple[str, str, str]
) -> None:
    database, name, start = table
    copied = _mysqlreader_rows(server, database, name)
    streamed = _binlogreader_rows(server, database, name, start)
    assert copied.num_rows == len(ROWS)
    assert [f.type for f in streamed.schema] == [f.type for f in copied.schema]
    for column in COLUMNS:
        want: list[Any] = copied.column(column).to_pylist()
        got: list[Any] = streamed.column(column).to_pylist()
        assert got == want, column


@pytest.mark.parametrize(
    ("precision", "scale", "digits", "fraction"),
    [
        (12, 2, 8, 2),
        (12, 2, 12, 2),
        (10, 0, 10, 0),
        (18, 10, 18, 10),
        (9, 4, 9, 4),
        (20, 4, 20, 4),
        (12, 2, 14, 2),  # more digits than the column holds
        (3, 0, 9, 0),
        (3, 0, 5, 0),  # more digits than the column holds, within an int64
        (12, 2, 8, 3),  # more decimals than the column holds
    ],
)
def test_connectorx_decimals_take_the_column_type_exactly_as_arrow_casts_them(
    precision: int, scale: int, digits: int, fraction: int
) -> None:
    """connectorx reads every DECIMAL as decimal128(38, 10); the rescale to the column's type
    (NumPy on int64 where the values allow, Arrow's cast otherwise) gives what Arrow's cast
    gives, values and nulls, and fails where it fails (digits the column cannot hold)."""
    rng = random.Random(precision * 100 + digits * 10 + fraction)
    values: list[Decimal | None] = [
        None
        if rng.random() < 0.1
        else Decimal(rng.randrange(-(10**digits) + 1, 10**digits)).scaleb(-fraction)
        for _ in range(3000)
    ]
    values += [
        Decimal(10**digits - 1).scaleb(-fraction),
        Decimal(-(10**digits) + 1).scaleb(-fraction),
    ]
    mt = mysql_type_of_info("decimal", f"decimal({precision},{scale})", precision, scale)
    assert mt.arrow == pa.decimal128(precision, scale)
    whole = pa.array(values, pa.decimal128(38, 10))
    for start in (0, 7):  # connectorx's pages arrive as slices of one array
        array = whole.slice(start)
        try:
            expected = pc.cast(array, mt.arrow)
        except pa.ArrowInvalid:
            with pytest.raises(pa.ArrowInvalid):
                from_connectorx(array, mt, "price")
            continue
        got, errors = from_connectorx(array, mt, "price")
        assert errors == {}
        assert got.type == mt.arrow
        assert got.equals(expected)
        assert got.to_pylist() == [
            None if v is None else v.quantize(Decimal(1).scaleb(-scale)) for v in values[start:]
        ]
