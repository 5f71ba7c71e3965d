"""``binlogreader``'s snapshot: each captured table copied by a ``mysqlreader``, as ``r`` changes.

The copy is the MySQL reader's (:class:`readers.mysql.MysqlReader`: keyset pagination in key
ranges, resumable after its last key, its fast drivers and type mapping), built by composition
from its public parameters: the table, its columns in order, and the key to paginate by
(``splitPk`` when the first primary-key column is an integer, ``orderByColumn`` otherwise). The
table's layout (:class:`~readers.binlog.decoder.TableShape`) comes from
``information_schema.COLUMNS`` through the one MySQL type table, so snapshot rows and streamed
changes have the same Arrow types; batches are cast to it to be sure (a value that does not fit
is a dirty record).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
from typing_extensions import override

from libs.cdc import Layout, SourceInfo, TableLayout, envelope_schema, paving_schema
from libs.mysql.types import column_type_of_info
from libs.types import conform
from readers.binlog.decoder import TableShape
from readers.binlog.params import PLUGIN
from readers.binlog.positions import BinlogPosition, SnapshotPosition, SnapshotSplit
from readers.binlog.server import BinlogServer, query
from sync.contract import DirtyRecord, JobContext, Position, Split, SplitReader, decode, encode
from sync.registry import require

if TYPE_CHECKING:
    from readers.mysql import MysqlReader

__all__ = ["SnapshotSplitReader", "SnapshotTable", "snapshot_changes", "to_layout"]


@dataclass(frozen=True)
class SnapshotTable:
    """One captured table's copy: the ``mysqlreader`` that reads it and its CDC layout."""

    reader: MysqlReader
    shape: TableShape

    @classmethod
    def of(cls, server: BinlogServer, db: str, table: str, ctx: JobContext) -> SnapshotTable:
        """The copy of ``db.table``: its columns and key from ``information_schema``."""
        require("sqlalchemy", "binlog", PLUGIN)
        conn = server.connect()
        try:
            rows = query(
                conn,
                "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, NUMERIC_PRECISION, NUMERIC_SCALE "
                "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA=%s AND TABLE_NAME=%s "
                "ORDER BY ORDINAL_POSITION",
                (db, table),
            )
            key_rows = query(
                conn,
                "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE "
                "TABLE_SCHEMA=%s AND TABLE_NAME=%s AND CONSTRAINT_NAME='PRIMARY' "
                "ORDER BY ORDINAL_POSITION",
                (db, table),
            )
        finally:
            conn.close()
        names = [str(r[0]) for r in rows]
        types = [column_type_of_info(str(r[1]), str(r[2]), r[3], r[4]) for r in rows]
        key = [str(r[0]) for r in key_rows]
        shape = TableShape.of(db, table, names, types, key)
        first = key[0] if key else None
        integer_key = first is not None and types[names.index(first)].family == "int"

        # the MySQL reader's fast drivers and type mapping, by composition (plugin imports plugin)
        from readers.mysql import MysqlReader, MysqlReaderParams  # noqa: PLC0415

        params = MysqlReaderParams.model_validate(
            {
                # validating the parameters moves the URL's password into the `password` secret
                "url": server.url.set(database=db).render_as_string(hide_password=False),
                "table": f"{db}.{table}",
                "column": names,
                "splitPk": first if integer_key else None,
                "orderByColumn": first,
            }
        )
        return cls(MysqlReader(params, ctx), shape)


def to_layout(
    batch: pa.RecordBatch, shape: TableShape, report: Callable[[DirtyRecord], None]
) -> pa.RecordBatch:
    """A plain batch with the table's layout (a no-op when the types agree already)."""
    schema = shape.layout.schema
    if batch.schema.equals(schema, check_metadata=False):
        return batch
    renamed = batch.rename_columns(list(shape.names))
    fitted, dirty = conform(renamed, pa.schema([f.with_nullable(True) for f in schema]))
    for record in dirty:
        report(record)
    return pa.RecordBatch.from_arrays(list(fitted.columns), schema=schema)


class SnapshotSplitReader(SplitReader):
    """A key range of one table, read by the table's ``mysqlreader``; rows become ``r`` changes."""

    def __init__(
        self,
        copy: SnapshotTable,
        split: SnapshotSplit,
        position: SnapshotPosition | None,
        form: Layout,
        report_dirty: Callable[[DirtyRecord], None],
    ) -> None:
        self._copy = copy
        inner = Split.from_json(split.inner, copy.reader.split_type)
        start = decode(copy.reader.position_type, position.inner) if position else None
        self._inner = copy.reader.open(inner, start)
        at = BinlogPosition.from_json(split.at)
        self._source = SourceInfo(at.file, at.pos, at.gtid, 0, snapshot=True)
        self._form = form
        self._report_dirty = report_dirty

    @override
    def batches(self) -> Iterator[pa.RecordBatch | None]:
        shape = self._copy.shape
        for batch in self._inner.batches():
            if batch is None or not batch.num_rows:
                yield batch
                continue
            rows = to_layout(batch, shape, self._report_dirty)
            yield snapshot_changes(shape.layout, rows, self._form, self._source)

    @override
    def snapshot(self) -> Position:
        inner = self._inner.snapshot()
        return None if inner is None else SnapshotPosition(encode(inner))

    @override
    def close(self) -> None:
        self._inner.close()


def snapshot_changes(
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
