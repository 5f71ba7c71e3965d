"""Parquet and ORC: Arrow's C++ writers and readers, row groups and stripes as splits."""

from __future__ import annotations

import datetime as dt
import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.orc as paorc
import pyarrow.parquet as pq

from libs.formats import thrift
from libs.formats.base import (
    MIB,
    READ_CHUNK,
    FileFormat,
    FormatWriter,
    Opener,
    Widening,
    float_option,
    int_option,
    unit_range,
)
from libs.formats.thrift import I16, I32, I64, LIST, STRUCT, Struct, ThriftList, Value
from sync.errors import FatalError

log = logging.getLogger(__name__)

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

    def merge(self, sources: list[Opener], target: BinaryIO, options: dict[str, object]) -> None:
        """Concatenate the sources' row groups byte for byte under one footer (as parquet-mr's
        ``ParquetFileWriter.appendFile``): nothing is decoded, memory stays flat. Sources that
        cannot be concatenated (another schema, an encrypted footer, anything unexpected) are
        read back and re-encoded, as ORC files are."""
        try:
            pieces, footer = _concatenation(sources)
        except ValueError as exc:
            log.debug("Parquet files re-encoded to merge them, not concatenated: %s", exc)
            super().merge(sources, target, options)
            return
        except BaseException:
            target.close()
            raise
        try:
            target.write(PARQUET_MAGIC)
            for piece in pieces:
                with piece.opener() as stream:
                    for start, end in piece.ranges:
                        stream.seek(start)
                        _copy(stream, target, end - start)
                target.write(piece.tail)
            target.write(footer)
        finally:
            target.close()

    def _contents(
        self, stream: BinaryIO, options: dict[str, object]
    ) -> tuple[pa.Schema | None, Iterator[pa.RecordBatch]]:
        del options
        parquet = pq.ParquetFile(stream)
        groups = range(parquet.num_row_groups)
        return parquet.schema_arrow, (
            batch for group in groups for batch in parquet.read_row_group(group).to_batches()
        )


# -- Parquet concatenation -----------------------------------------------------------------------
# Field ids of parquet.thrift (apache/parquet-format): FileMetaData, RowGroup, ColumnChunk,
# ColumnMetaData, OffsetIndex, PageLocation.

PARQUET_MAGIC = b"PAR1"
FOOTER_READ = 64 * 1024
"""Bytes read from the end of a file for its footer (a longer footer takes a second read)."""
INDEX_READ = 64 * MIB
"""At most this much is read from the end of a file for its offset indexes."""
_FILE_ROWS, _FILE_ROW_GROUPS = 3, 4
_FILE_SAME = {1: "version", 2: "schema", 5: "key_value_metadata", 7: "column_orders"}
_FILE_ENCRYPTION = (8, 9)  # encryption_algorithm, footer_signing_key_metadata
_GROUP_COLUMNS, _GROUP_ROWS, _GROUP_OFFSET, _GROUP_ORDINAL = 1, 3, 5, 7
_CHUNK_PATH, _CHUNK_OFFSET, _CHUNK_META = 1, 2, 3
_CHUNK_OFFSET_INDEX, _CHUNK_OFFSET_INDEX_LENGTH = 4, 5
_CHUNK_COLUMN_INDEX, _CHUNK_COLUMN_INDEX_LENGTH = 6, 7
_CHUNK_ENCRYPTION = (8, 9)  # crypto_metadata, encrypted_column_metadata
_META_COMPRESSED, _META_DATA_PAGE, _META_DICTIONARY_PAGE = 7, 9, 11
_META_OFFSETS = (9, 10, 11)  # data, index and dictionary pages
_META_BLOOM_FILTER, _META_BLOOM_FILTER_LENGTH = 14, 15
_INDEX_PAGES, _PAGE_OFFSET = 1, 1


@dataclass
class _Piece:
    """What one source gives the merged file: its byte ranges (row groups, column indexes,
    bloom filters) copied as they are, then its offset indexes rewritten for their new place."""

    opener: Opener
    ranges: list[tuple[int, int]]
    tail: bytes


@dataclass
class _Source:
    footer: Struct
    end: int
    """Where its footer starts: its data is ``[4, end)``."""
    offset_indexes: dict[int, Struct]
    """The offset index at each position (page offsets are absolute: they are moved)."""
    holes: list[tuple[int, int]]
    """The ranges of those offset indexes, not copied."""


def _concatenation(sources: list[Opener]) -> tuple[list[_Piece], bytes]:
    """The pieces of the concatenated file and its footer (length and magic included); a
    ValueError says why the sources cannot be concatenated. Nothing is written yet."""
    if not sources:
        raise ValueError("no files")
    pieces: list[_Piece] = []
    groups: list[Struct] = []
    rows = 0
    first: Struct | None = None
    position = len(PARQUET_MAGIC)
    for number, opener in enumerate(sources):
        with opener() as stream:
            source = _read_source(stream)
        if first is None:
            first = source.footer
        for key, name in _FILE_SAME.items():
            if source.footer.get(key) != first.get(key):
                raise ValueError(f"file {number + 1} has another {name} than file 1")
        piece = _relocate(source, opener, position, groups)
        rows += _int(source.footer, _FILE_ROWS)
        position += sum(end - start for start, end in piece.ranges) + len(piece.tail)
        pieces.append(piece)
    assert first is not None
    footer = Struct(list(first.fields))
    footer.set(_FILE_ROWS, I64, rows)
    footer.set(_FILE_ROW_GROUPS, LIST, ThriftList(STRUCT, list(groups)))
    encoded = thrift.encode(footer)
    return pieces, encoded + len(encoded).to_bytes(4, "little") + PARQUET_MAGIC


def _read_source(stream: BinaryIO) -> _Source:
    """A source's footer and offset indexes, checked for what concatenation needs. Read as
    readers do, from the end (only the closing magic is checked), in one or two reads to the end
    of the file: a read cut short is a request broken off on WebHDFS."""
    size = stream.seek(0, io.SEEK_END)
    if size < 12:
        raise ValueError("a file is too short for Parquet")
    tail = _read_tail(stream, size, size - min(size, FOOTER_READ))
    if tail[-4:] == b"PARE":
        raise ValueError("a file has an encrypted footer")
    if tail[-4:] != PARQUET_MAGIC:
        raise ValueError("a file is not Parquet (no PAR1 at its end)")
    end = size - 8 - int.from_bytes(tail[-8:-4], "little")
    if end < 4:
        raise ValueError("a file's footer length is wrong")
    if end < size - len(tail):
        tail = _read_tail(stream, size, end)
    footer, used = thrift.decode(tail, len(tail) - (size - end))
    if used != len(tail) - 8:
        raise ValueError("a file's footer has bytes after its metadata")
    if any(footer.get(key) is not None for key in _FILE_ENCRYPTION):
        raise ValueError("a file is encrypted")
    source = _Source(footer, end, {}, [])
    for group in _structs(footer, _FILE_ROW_GROUPS):
        for chunk in _structs(group, _GROUP_COLUMNS):
            if any(chunk.get(key) is not None for key in (_CHUNK_PATH, *_CHUNK_ENCRYPTION)):
                raise ValueError("a column chunk is in another file or encrypted")
            offset = _optional_int(chunk, _CHUNK_OFFSET_INDEX)
            if offset is not None:
                length = _int(chunk, _CHUNK_OFFSET_INDEX_LENGTH)
                if not 4 <= offset < offset + length <= end:
                    raise ValueError("an offset index is outside its file")
                source.holes.append((offset, offset + length))
    source.holes.sort()
    if any(a[1] > b[0] for a, b in zip(source.holes, source.holes[1:], strict=False)):
        raise ValueError("offset indexes overlap")
    if source.holes and source.holes[0][0] < size - len(tail):  # writers put them last
        if size - source.holes[0][0] > INDEX_READ:
            raise ValueError("the offset indexes are not near the footer")
        tail = _read_tail(stream, size, source.holes[0][0])
    for hole_start, hole_end in source.holes:
        at = len(tail) - (size - hole_start)
        index, used = thrift.decode(tail, at)
        if used != at + hole_end - hole_start:
            raise ValueError("an offset index is not as long as its column chunk says")
        source.offset_indexes[hole_start] = index
    return source


def _read_tail(stream: BinaryIO, size: int, start: int) -> bytes:
    stream.seek(start)
    return _read_exactly(stream, size - start)


def _relocate(source: _Source, opener: Opener, base: int, groups: list[Struct]) -> _Piece:
    """Move the row groups of ``source`` (appended to ``groups``) to their place in the merged
    file, where its data starts at ``base``; its offset indexes are written after its data."""
    ranges: list[tuple[int, int]] = []
    start = 4
    for hole_start, hole_end in [*source.holes, (source.end, source.end)]:
        if hole_start > start:
            ranges.append((start, hole_start))
        start = hole_end
    copied = sum(end - start for start, end in ranges)

    def moved(offset: int) -> int:
        """The new position of a source position (which must be in a copied range)."""
        skipped = 0
        for range_start, range_end in ranges:
            if range_start <= offset < range_end:
                return base + skipped + offset - range_start
            skipped += range_end - range_start
        raise ValueError(f"an offset ({offset}) points outside the data of its file")

    tail = bytearray()
    rows = 0
    for old_group in _structs(source.footer, _FILE_ROW_GROUPS):
        group = Struct(list(old_group.fields))
        chunks: list[Value] = []
        for old_chunk in _structs(group, _GROUP_COLUMNS):
            chunk = Struct(list(old_chunk.fields))
            meta = Struct(list(_struct(chunk, _CHUNK_META).fields))
            pages = (_optional_int(meta, _META_DICTIONARY_PAGE), _int(meta, _META_DATA_PAGE))
            _check_range(min(p for p in pages if p), _int(meta, _META_COMPRESSED), moved)
            for key in _META_OFFSETS:
                _move(meta, key, moved)
            _move(meta, _META_BLOOM_FILTER, moved, _META_BLOOM_FILTER_LENGTH)
            chunk.set(_CHUNK_META, STRUCT, meta)
            if _optional_int(chunk, _CHUNK_OFFSET):  # deprecated; 0: not set
                _move(chunk, _CHUNK_OFFSET, moved)
            _move(chunk, _CHUNK_COLUMN_INDEX, moved, _CHUNK_COLUMN_INDEX_LENGTH)
            old = _optional_int(chunk, _CHUNK_OFFSET_INDEX)
            if old is not None:
                index = _moved_offset_index(source.offset_indexes[old], moved)
                chunk.set(_CHUNK_OFFSET_INDEX, I64, base + copied + len(tail))
                chunk.set(_CHUNK_OFFSET_INDEX_LENGTH, I32, len(index))
                tail += index
            chunks.append(chunk)
        group.set(_GROUP_COLUMNS, LIST, ThriftList(STRUCT, chunks))
        _move(group, _GROUP_OFFSET, moved)
        if group.get(_GROUP_ORDINAL) is not None:
            if len(groups) > 32767:
                raise ValueError("more row groups than a row group ordinal counts")
            group.set(_GROUP_ORDINAL, I16, len(groups))
        rows += _int(group, _GROUP_ROWS)
        groups.append(group)
    if rows != _int(source.footer, _FILE_ROWS):
        raise ValueError("a file's row groups do not add up to its rows")
    return _Piece(opener, ranges, bytes(tail))


def _moved_offset_index(index: Struct, moved: Callable[[int], int]) -> bytes:
    pages: list[Value] = []
    for old_page in _structs(index, _INDEX_PAGES):
        page = Struct(list(old_page.fields))
        _move(page, _PAGE_OFFSET, moved)
        pages.append(page)
    new = Struct(list(index.fields))
    new.set(_INDEX_PAGES, LIST, ThriftList(STRUCT, pages))
    return thrift.encode(new)


def _move(
    struct: Struct, key: int, moved: Callable[[int], int], length_key: int | None = None
) -> None:
    """Move the offset in field ``key``; with ``length_key``, the bytes it points to must all
    be in one copied range."""
    offset = _optional_int(struct, key)
    if offset is None:
        return
    length = None if length_key is None else _optional_int(struct, length_key)
    if length is not None:
        _check_range(offset, length, moved)
    struct.set(key, I64, moved(offset))


def _check_range(offset: int, length: int, moved: Callable[[int], int]) -> None:
    if length <= 0 or moved(offset + length - 1) - moved(offset) != length - 1:
        raise ValueError(f"{length} bytes at {offset} are not all in the data of their file")


def _optional_int(struct: Struct, key: int) -> int | None:
    value = struct.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ValueError(f"field {key} is not an integer")
    return value


def _int(struct: Struct, key: int) -> int:
    value = _optional_int(struct, key)
    if value is None:
        raise ValueError(f"field {key} is missing")
    return value


def _struct(struct: Struct, key: int) -> Struct:
    value = struct.get(key)
    if isinstance(value, Struct):
        return value
    raise ValueError(f"field {key} is not a struct")


def _structs(struct: Struct, key: int) -> list[Struct]:
    value = struct.get(key)
    if not isinstance(value, ThriftList) or not all(isinstance(v, Struct) for v in value.items):
        raise ValueError(f"field {key} is not a list of structs")
    return [v for v in value.items if isinstance(v, Struct)]


def _read_exactly(stream: BinaryIO, length: int) -> bytes:
    data = stream.read(length)
    while len(data) < length and (more := stream.read(length - len(data))):
        data += more
    if len(data) != length:
        raise ValueError("a file is shorter than its footer says")
    return data


def _copy(source: BinaryIO, target: BinaryIO, length: int) -> None:
    """Copy ``length`` bytes in chunks of :data:`READ_CHUNK` (memory stays flat)."""
    while length > 0:
        chunk = source.read(min(length, READ_CHUNK))
        if not chunk:
            msg = f"a Parquet file ended {length} bytes early while being merged"
            raise OSError(msg)
        target.write(chunk)
        length -= len(chunk)


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
