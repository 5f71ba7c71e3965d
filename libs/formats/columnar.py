"""Parquet and ORC: Arrow's C++ writers and readers, row groups and stripes as splits."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.orc as paorc
import pyarrow.parquet as pq

from libs.formats.base import (
    MIB,
    FileFormat,
    FormatWriter,
    Widening,
    float_option,
    int_option,
    unit_range,
)
from sync.errors import FatalError

ROW_GROUP_MEMORY = 16 * MIB
"""Arrow bytes a Parquet file buffers for its next row group, whatever the writer's options say.
pyarrow has no row group that grows on disk: a row group is built from batches held in memory,
once per open file. ChunJun's 128 MiB default took a two-channel 2M-row orders run to 490 MB
peak RSS; 16 MiB (row groups of about 90,000 orders, 8-10 MiB of Snappy Parquet: the size of
DuckDB's) keeps it under 300 MB."""

DICTIONARY_SAMPLE_ROWS = 16384
"""Rows of a file's first row group that decide which of its columns get a dictionary."""


def dictionary_columns(table: pa.Table) -> list[str]:
    """The columns of ``table`` whose values repeat: at most half distinct in its first rows.

    Arrow's default dictionary-encodes every column and falls back to plain encoding once a
    column chunk's dictionary passes 1 MiB: it hashes every value of a column of keys,
    timestamps or free text for nothing. On the benchmark's orders table that was half of the
    Parquet encoding time, for a file 2% larger than with dictionaries only where values repeat.
    """
    sample = table.slice(0, DICTIONARY_SAMPLE_ROWS)
    chosen = []
    for field, column in zip(sample.schema, sample.columns, strict=True):
        if pa.types.is_nested(field.type) or not len(column):
            continue
        if pc.count_distinct(column, mode="all").as_py() * 2 <= len(column):
            chosen.append(field.name)
    return chosen


class _ParquetWriter(FormatWriter):
    """A Parquet file whose Arrow writer opens at its first row group, which decides the
    columns that get a dictionary (``enableDictionary``: :func:`dictionary_columns`)."""

    def __init__(self, stream: BinaryIO, schema: pa.Schema, options: dict[str, object]) -> None:
        self._stream = stream
        self._schema = schema
        self._options = options
        self._writer: pq.ParquetWriter | None = None
        self._max_rows = int_option(options.get("rowGroupSize"), 128 * 1024)
        self._max_bytes = min(
            int_option(options.get("rowGroupBytes"), ROW_GROUP_MEMORY), ROW_GROUP_MEMORY
        )
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self._arrow_flushed = 0
        self._ratio = float_option(options.get("sizeRatio"), 1.0)

    def _open(self, first: pa.Table | None) -> pq.ParquetWriter:
        options = self._options
        dictionary: list[str] | bool = False
        if first is not None and bool(options.get("enableDictionary", True)):
            dictionary = dictionary_columns(first)
        int96 = options.get("timestampType") == "int96"
        return pq.ParquetWriter(
            self._stream,
            self._schema,
            compression=str(options.get("compress") or "none"),
            use_dictionary=dictionary,
            use_deprecated_int96_timestamps=int96,
            coerce_timestamps=None if int96 else "us",
        )

    def write(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self._pending_bytes += batch.nbytes
        if self._pending_rows >= self._max_rows or self._pending_bytes >= self._max_bytes:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending)
        if self._writer is None:
            self._writer = self._open(table)
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self._arrow_flushed += self._pending_bytes
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0
        if self._arrow_flushed:
            self._ratio = self._stream.tell() / self._arrow_flushed

    def size(self) -> int:
        return self._stream.tell() + int(self._pending_bytes * self._ratio)

    def buffered(self) -> int:
        return self._pending_bytes

    @property
    def size_ratio(self) -> float | None:
        return self._ratio if self._arrow_flushed else None

    def close(self) -> None:
        try:
            self.flush()
            (self._writer or self._open(None)).close()
        finally:
            self._stream.close()


class Parquet(FileFormat):
    extension = "parquet"
    writer_class = _ParquetWriter
    hive_types = True

    def matches(self, head: bytes) -> bool:
        return head[:4] == b"PAR1"

    def units(self, stream: BinaryIO) -> list[int] | None:
        metadata = pq.ParquetFile(stream).metadata
        return [
            sum(
                metadata.row_group(g).column(c).total_compressed_size
                for c in range(metadata.num_columns)
            )
            for g in range(metadata.num_row_groups)
        ]

    def read(
        self, stream: BinaryIO, start_row: int, batch_rows: int, options: dict[str, object]
    ) -> Iterator[pa.RecordBatch]:
        parquet = pq.ParquetFile(stream)
        first, last = unit_range(options, parquet.num_row_groups)
        groups: list[int] = []
        skipped = 0
        for index in range(first, last):
            rows = parquet.metadata.row_group(index).num_rows
            if not groups and skipped + rows <= start_row:  # only the leading groups
                skipped += rows
                continue
            groups.append(index)
        to_skip = start_row - skipped
        if not groups:
            return
        for batch in parquet.iter_batches(batch_size=batch_rows, row_groups=groups):
            if to_skip >= batch.num_rows:
                to_skip -= batch.num_rows
                continue
            yield batch.slice(to_skip) if to_skip else batch
            to_skip = 0

    def _contents(
        self, stream: BinaryIO, options: dict[str, object]
    ) -> tuple[pa.Schema | None, Iterator[pa.RecordBatch]]:
        del options
        parquet = pq.ParquetFile(stream)
        groups = range(parquet.num_row_groups)
        return parquet.schema_arrow, (
            batch for group in groups for batch in parquet.read_row_group(group).to_batches()
        )


# -- ORC -----------------------------------------------------------------------------------------


class _OrcWriter(FormatWriter):
    """ORC buffers a stripe inside Arrow's writer: sizes between stripes are estimated."""

    def __init__(self, stream: BinaryIO, schema: pa.Schema, options: dict[str, object]) -> None:
        del schema
        self._stream = stream
        self._writer = paorc.ORCWriter(
            stream,
            compression=str(options.get("compress") or "uncompressed"),
            stripe_size=int_option(options.get("stripeSize"), 64 * MIB),
            dictionary_key_size_threshold=0.8 if options.get("enableDictionary", True) else 0.0,
        )
        self._ratio = float_option(options.get("sizeRatio"), 0.5)
        self._arrow_total = 0
        self._arrow_at_flush = 0
        self._flushed = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write(pa.Table.from_batches([batch]))
        self._arrow_total += batch.nbytes
        position = self._stream.tell()
        if position != self._flushed:
            self._flushed = position
            self._arrow_at_flush = self._arrow_total
            self._ratio = position / self._arrow_total

    def size(self) -> int:
        return self._flushed + int((self._arrow_total - self._arrow_at_flush) * self._ratio)

    @property
    def size_ratio(self) -> float | None:
        return self._ratio if self._flushed else None

    def close(self) -> None:
        try:
            self._writer.close()
        finally:
            self._stream.close()


_ORC_UNSUPPORTED: list[tuple[Callable[[pa.DataType], bool], str]] = [
    (pa.types.is_time, "ORC has no TIME type; declare the column string"),
    (
        pa.types.is_unsigned_integer,
        "ORC has no unsigned integers; declare the next larger signed type "
        "(bigint unsigned: decimal(20,0))",
    ),
    (pa.types.is_decimal256, "ORC decimals hold at most 38 digits"),
    (pa.types.is_float16, "ORC has no half floats; declare float"),
    (pa.types.is_null, "declare the column's type (a column of only NULLs has none)"),
    (pa.types.is_duration, "ORC has no duration type; declare bigint"),
]


class Orc(FileFormat):
    extension = "orc"
    writer_class = _OrcWriter
    hive_types = True

    def unsupported(self, kind: pa.DataType) -> str | None:
        return next((why for test, why in _ORC_UNSUPPORTED if test(kind)), None)

    def matches(self, head: bytes) -> bool:
        return head[:3] == b"ORC"

    def units(self, stream: BinaryIO) -> list[int] | None:
        orc = paorc.ORCFile(stream)
        if not orc.nstripes:
            return []
        return [orc.content_length // orc.nstripes] * orc.nstripes

    def read(
        self, stream: BinaryIO, start_row: int, batch_rows: int, options: dict[str, object]
    ) -> Iterator[pa.RecordBatch]:
        orc = paorc.ORCFile(stream)
        first, last = unit_range(options, orc.nstripes)
        to_skip = start_row
        for stripe in range(first, last):
            batch = _read_stripe(orc, stripe)
            if to_skip >= batch.num_rows:
                to_skip -= batch.num_rows
                continue
            if to_skip:
                batch = batch.slice(to_skip)
                to_skip = 0
            for offset in range(0, batch.num_rows, batch_rows):
                yield batch.slice(offset, batch_rows)

    def widening(self, kind: pa.DataType) -> Widening | None:
        if pa.types.is_timestamp(kind) and kind.tz is not None:
            return Widening(
                pa.timestamp(kind.unit),
                "timestamp",
                "the ORC readers of Hive 3 and Spark 3.1 know no TIMESTAMP_INSTANT: written as "
                "a TIMESTAMP in UTC",
            )
        return super().widening(kind)

    def _contents(
        self, stream: BinaryIO, options: dict[str, object]
    ) -> tuple[pa.Schema | None, Iterator[pa.RecordBatch]]:
        del options
        orc = paorc.ORCFile(stream)
        return orc.schema, (_read_stripe(orc, stripe) for stripe in range(orc.nstripes))


ORC_TIMESTAMPS = (dt.datetime(1677, 9, 21, 0, 12, 44), dt.datetime(2262, 4, 11, 23, 47, 16))
"""The timestamps pyarrow reads back from ORC files (it reads them as nanoseconds): writing
others works (Hive reads them), re-reading them to merge or with ``hdfsreader`` does not."""


def _read_stripe(orc: paorc.ORCFile, stripe: int) -> pa.RecordBatch:
    try:
        return orc.read_stripe(stripe)
    except pa.ArrowInvalid as exc:
        if "out of range for nanosecond resolution" not in str(exc):
            raise
        first, last = (f"{t:%Y-%m-%d}" for t in ORC_TIMESTAMPS)
        msg = (
            f"an ORC file holds a timestamp before {first} or after {last}, which pyarrow "
            f"cannot read back (it reads ORC timestamps as nanoseconds): {exc}"
        )
        raise FatalError(msg) from exc


# -- Hive text -----------------------------------------------------------------------------------
