"""File formats shared by the file and HDFS plugins: writing batches, reading them back by row.

Every format writes Arrow batches column-wise (Parquet, ORC and CSV through Arrow's C++ writers,
Hive text through Arrow compute kernels) and reads them as a stream of batches from a row
offset, which is a file split's position.

- ``parquet``: row groups are buffered up to ``rowGroupSize`` rows (or ``rowGroupBytes`` of
  Arrow data), so small input batches do not make tiny row groups. Timestamps are INT64
  ``TIMESTAMP(MICROS)`` (Hive 3+, Spark, Trino read them), or INT96 with ``timestampType: int96``
  for older Hive and Impala. Decimals keep their precision and scale.
- ``orc``: Arrow's ORC writer (``compress`` zlib, snappy, lz4, zstd or none); stripes of
  ``stripeSize`` bytes. ORC has no TIME, unsigned or 256-bit decimal types. pyarrow reads ORC
  timestamps as nanoseconds: those outside :data:`ORC_TIMESTAMPS` are written but cannot be
  read back (nor merged).
- ``text``: Hive's default text layout (LazySimpleSerDe): fields joined by ``fieldDelimiter``
  (default ``\\x01``), one row per line, no header, ``\\N`` for NULL, booleans ``true``/``false``,
  timestamps ``yyyy-MM-dd HH:mm:ss[.f...]``, decimals in plain notation with their scale, TIME as
  MySQL writes it (:func:`hive_text`), binary base64 as Hive writes it, optional gzip or
  bzip2 (files end in ``.gz``/``.bz2`` so that Hadoop picks the codec). Values are written as
  they are: like Hive's default table, a value holding the delimiter or a line break breaks its
  row. Reading splits lines on the delimiter column-wise; a short line gives NULLs for its
  missing fields and extra fields are ignored, as Hive does.
- ``csv`` and ``json`` (JSON lines) for the local file plugins.

Hive reads the first three: a column with no declared type whose Arrow type Hive has no
equivalent for is written as a type it has, keeping every value (:func:`hive_widening`).
"""

from __future__ import annotations

import base64
import bz2
import datetime as dt
import io
import json
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.orc as paorc
import pyarrow.parquet as pq

from libs.types import time_text
from sync.errors import FatalError, JobFileError

__all__ = [
    "FORMATS",
    "ORC_TIMESTAMPS",
    "FileFormat",
    "FormatWriter",
    "Opener",
    "Widening",
    "format_named",
    "hive_text",
    "hive_widening",
]

FormatName = Literal["csv", "json", "parquet", "orc", "text"]
Opener = Callable[[], BinaryIO]
"""Opens one source file for reading (used by :meth:`FileFormat.merge`)."""

_MIB = 1024 * 1024
_READ_CHUNK = 4 * _MIB
HIVE_NULL = "\\N"


class FormatWriter(ABC):
    """An open output file of one format."""

    @abstractmethod
    def write(self, batch: pa.RecordBatch) -> None:
        """Append a batch."""

    @abstractmethod
    def close(self) -> None:
        """Finish the file (footer) and close the stream, making it durable."""

    @abstractmethod
    def size(self) -> int:
        """Bytes the file has (or is estimated to have) so far, buffered rows included."""

    def flush(self) -> None:  # noqa: B027 - optional hook
        """Write buffered rows out, so that :meth:`size` is exact."""

    @property
    def size_ratio(self) -> float | None:
        """File bytes per Arrow byte written so far (for the next file's estimates)."""
        return None


class FileFormat(ABC):
    """A format: its file extension, a writer, and a batch reader from a row offset."""

    extension: str
    writer_class: Callable[[BinaryIO, pa.Schema, dict[str, object]], FormatWriter]
    hive_types: bool = False
    """Whether Hive reads these files: columns with no declared type are widened to a type Hive
    has (:func:`hive_widening`)."""

    def writer(
        self, stream: BinaryIO, schema: pa.Schema, options: dict[str, object]
    ) -> FormatWriter:
        """Open a writer on ``stream``."""
        return self.writer_class(stream, schema, options)

    @abstractmethod
    def read(
        self, stream: BinaryIO, start_row: int, batch_rows: int, options: dict[str, object]
    ) -> Iterator[pa.RecordBatch]:
        """Batches of the file from row ``start_row`` on."""

    def file_extension(self, options: dict[str, object]) -> str:
        """The extension of a written file (compressed text adds ``.gz``/``.bz2``)."""
        del options
        return self.extension

    def unsupported(self, kind: pa.DataType) -> str | None:
        """Why a column of this type cannot be written in this format (None: it can)."""
        del kind
        return None

    def matches(self, head: bytes) -> bool:
        """Whether a file starting with ``head`` (its first bytes) is in this format."""
        del head
        return True

    def units(self, stream: BinaryIO) -> list[int] | None:
        """Compressed bytes of each independently readable unit (Parquet row group, ORC
        stripe), for splitting one large file between readers; None when it has no such units."""
        del stream
        return None

    def widening(self, kind: pa.DataType) -> Widening | None:
        """How a column of ``kind`` with no declared type is written when this format (or Hive
        reading it) has no such type; None: as it is."""
        return hive_widening(kind) if self.hive_types else None

    def merge(self, sources: list[Opener], target: BinaryIO, options: dict[str, object]) -> None:
        """Write the rows of ``sources`` (files of this format), in order, as one file."""
        writer: FormatWriter | None = None
        try:
            for opener in sources:
                with opener() as stream:
                    schema, batches = self._contents(stream, options)
                    if writer is None and schema is not None:
                        writer = self.writer(target, schema, options)
                    for batch in batches:
                        if writer is None:
                            writer = self.writer(target, batch.schema, options)
                        writer.write(batch)
        finally:
            if writer is not None:
                writer.close()
            else:
                target.close()

    def _contents(
        self, stream: BinaryIO, options: dict[str, object]
    ) -> tuple[pa.Schema | None, Iterator[pa.RecordBatch]]:
        """A whole file for :meth:`merge`: its schema when the file states one, and its rows in
        the largest batches the format gives (Parquet row groups, ORC stripes)."""
        return None, self.read(stream, 0, 65_536, options)


# -- Hive types ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Widening:
    """The type a column is written as instead of its own, Hive's name for it, and why."""

    type: pa.DataType
    hive: str
    why: str


def _is_time_like(kind: pa.DataType) -> bool:
    """Whether ``kind`` holds MySQL TIME values (a time of day or a signed duration)."""
    return pa.types.is_time(kind) or pa.types.is_duration(kind)


_UNSIGNED = "Hive has no unsigned types"
_HIVE_WIDENINGS: list[tuple[Callable[[pa.DataType], bool], Widening]] = [
    (pa.types.is_uint8, Widening(pa.int16(), "smallint", _UNSIGNED)),
    (pa.types.is_uint16, Widening(pa.int32(), "int", _UNSIGNED)),
    (pa.types.is_uint32, Widening(pa.int64(), "bigint", _UNSIGNED)),
    (pa.types.is_uint64, Widening(pa.decimal128(20, 0), "decimal(20,0)", _UNSIGNED)),
    (
        _is_time_like,
        Widening(
            pa.string(),
            "string",
            "Hive has no TIME type: written as MySQL writes it, [-]HH:MM:SS[.ffffff]",
        ),
    ),
    (
        lambda kind: pa.types.is_decimal(kind) and kind.precision > 38,
        Widening(pa.string(), "string", "Hive decimals hold at most 38 digits: written as text"),
    ),
    (pa.types.is_float16, Widening(pa.float32(), "float", "Hive has no half floats")),
    (pa.types.is_null, Widening(pa.string(), "string", "a column of only NULLs has no type")),
]


def hive_widening(kind: pa.DataType) -> Widening | None:
    """The Hive type a column of Arrow type ``kind`` is written as when no type is declared and
    Hive has no equivalent (None: it has). Widening keeps every value: unsigned integers take
    the next larger signed type (``BIGINT UNSIGNED`` DECIMAL(20,0)), TIME and decimals beyond 38
    digits their text, as DataX and Hive users declare such MySQL columns."""
    if pa.types.is_decimal256(kind) and kind.precision <= 38:
        return Widening(
            pa.decimal128(kind.precision, kind.scale),
            f"decimal({kind.precision},{kind.scale})",
            "a 38-digit decimal is Hive's DECIMAL",
        )
    return next((widening for test, widening in _HIVE_WIDENINGS if test(kind)), None)


def _decimal_text(column: pa.Array) -> pa.Array:
    """Decimals in plain notation with their scale (``0.0000000000``): Arrow writes small
    values as ``1.000E-7`` and zero as ``0E-10``; those few are formatted again in Python."""
    text = pc.cast(column, pa.string())
    scientific = pc.fill_null(pc.match_substring(text, "E"), fill_value=False)
    if not pc.any(scientific).as_py():
        return text
    plain = [format(value, "f") for value in column.filter(scientific).to_pylist()]
    return pc.replace_with_mask(text, scientific, pa.array(plain, pa.string()))


def hive_text(column: pa.Array) -> pa.Array | None:
    """``column`` as text where Arrow's cast to string is not what Hive and MySQL users read:
    TIME as :func:`time_text`, decimals in plain notation with their scale; None where the
    cast is right. Used for text files and for columns written as ``string``."""
    if _is_time_like(column.type):
        return time_text(column)
    if pa.types.is_decimal(column.type):
        return _decimal_text(column)
    return None


# -- Parquet -------------------------------------------------------------------------------------


class _ParquetWriter(FormatWriter):
    def __init__(self, stream: BinaryIO, schema: pa.Schema, options: dict[str, object]) -> None:
        self._stream = stream
        int96 = options.get("timestampType") == "int96"
        self._writer = pq.ParquetWriter(
            stream,
            schema,
            compression=str(options.get("compress") or "none"),
            use_dictionary=bool(options.get("enableDictionary", True)),
            use_deprecated_int96_timestamps=int96,
            coerce_timestamps=None if int96 else "us",
        )
        self._max_rows = _int(options.get("rowGroupSize"), 128 * 1024)
        self._max_bytes = _int(options.get("rowGroupBytes"), 0)
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self._arrow_flushed = 0
        self._ratio = _float(options.get("sizeRatio"), 1.0)

    def write(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self._pending_bytes += batch.nbytes
        if self._pending_rows >= self._max_rows or (
            self._max_bytes and self._pending_bytes >= self._max_bytes
        ):
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending)
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self._arrow_flushed += self._pending_bytes
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0
        if self._arrow_flushed:
            self._ratio = self._stream.tell() / self._arrow_flushed

    def size(self) -> int:
        return self._stream.tell() + int(self._pending_bytes * self._ratio)

    @property
    def size_ratio(self) -> float | None:
        return self._ratio if self._arrow_flushed else None

    def close(self) -> None:
        try:
            self.flush()
            self._writer.close()
        finally:
            self._stream.close()


class _Parquet(FileFormat):
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
        first, last = _unit_range(options, parquet.num_row_groups)
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
            stripe_size=_int(options.get("stripeSize"), 64 * _MIB),
            dictionary_key_size_threshold=0.8 if options.get("enableDictionary", True) else 0.0,
        )
        self._ratio = _float(options.get("sizeRatio"), 0.5)
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


class _Orc(FileFormat):
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
        first, last = _unit_range(options, orc.nstripes)
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


class _TextWriter(FormatWriter):
    def __init__(self, stream: BinaryIO, schema: pa.Schema, options: dict[str, object]) -> None:
        del schema
        self._stream = stream
        self._delimiter = str(options.get("fieldDelimiter") or "\x01")
        self._encoding = str(options.get("encoding") or "utf-8")
        self._utf8 = self._encoding.replace("-", "").replace("_", "").lower() == "utf8"
        self._options_where = options.get("encodingParameter")
        compress = options.get("compress")
        self._compressor: zlib._Compress | bz2.BZ2Compressor | None = None
        if compress == "gzip":
            self._compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
        elif compress == "bzip2":
            self._compressor = bz2.BZ2Compressor(9)

    def write(self, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        data: bytes | memoryview = hive_text_lines(batch, self._delimiter)
        if not self._utf8:
            try:
                data = bytes(data).decode("utf-8").encode(self._encoding)
            except UnicodeEncodeError as exc:
                where = str(self._options_where or "encoding")
                bad = exc.object[exc.start : exc.end]
                msg = (
                    f"{where}: {self._encoding} cannot represent {bad!r} (a value written); "
                    "choose an encoding that can, such as utf-8"
                )
                raise JobFileError(msg) from exc
        if self._compressor is not None:
            data = self._compressor.compress(data)
        self._stream.write(data)

    def size(self) -> int:
        return self._stream.tell()

    def close(self) -> None:
        try:
            if self._compressor is not None:
                self._stream.write(self._compressor.flush())
        finally:
            self._stream.close()


def _text_column(column: pa.Array) -> pa.Array:
    """One column as Hive's text SerDe writes it, NULL as ``\\N``."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.dictionary_decode()
        kind = column.type
    special = hive_text(column)
    if special is not None:
        text = special
    elif (
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_fixed_size_binary(kind)
    ):
        text = pa.array(
            [
                None if v is None else base64.b64encode(v).decode("ascii")
                for v in column.to_pylist()
            ],
            pa.string(),
        )
    elif pa.types.is_timestamp(kind):
        if kind.tz is not None:
            column = column.cast(pa.timestamp(kind.unit))
        text = pc.cast(column, pa.string())
        text = pc.replace_substring_regex(text, r"(\.[0-9]*[1-9])0+$", r"\1")
        text = pc.replace_substring_regex(text, r"\.0+$", "")
    elif pa.types.is_floating(kind):
        text = pc.cast(column, pa.string())
        text = pc.replace_substring_regex(text, "^nan$", "NaN")
        text = pc.replace_substring_regex(text, "^inf$", "Infinity")
        text = pc.replace_substring_regex(text, "^-inf$", "-Infinity")
    elif pa.types.is_string(kind):
        text = column
    else:
        text = pc.cast(column, pa.string())
    return pc.fill_null(text, HIVE_NULL)


def hive_text_lines(batch: pa.RecordBatch, delimiter: str) -> memoryview:
    """The rows of ``batch`` as Hive text lines (UTF-8), each ending in a newline."""
    columns = [_text_column(batch.column(i)) for i in range(batch.num_columns)]
    if columns:
        joined = pc.binary_join_element_wise(*columns, delimiter)
    else:
        joined = pa.array([""] * batch.num_rows, pa.string())
    lines = pc.binary_join_element_wise(joined, "\n", "")
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)
    start, end = int(offsets[lines.offset]), int(offsets[lines.offset + len(lines)])
    data = lines.buffers()[2]
    return memoryview(data)[start:end] if data is not None else memoryview(b"")


class _Decompressor:
    """gzip (all members) or bzip2 (all streams) decompression of a stream of chunks."""

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._current = self._new()

    def _new(self) -> zlib._Decompress | bz2.BZ2Decompressor:
        return zlib.decompressobj(47) if self._kind == "gzip" else bz2.BZ2Decompressor()

    def feed(self, data: bytes) -> bytes:
        out = []
        while data:
            if self._current.eof:
                self._current = self._new()
            out.append(self._current.decompress(data))
            data = self._current.unused_data if self._current.eof else b""
        return b"".join(out)


def _raw_chunks(stream: BinaryIO) -> Iterator[bytes]:
    """The file's bytes in chunks, gzip and bzip2 recognized by their magic and decompressed."""
    first = stream.read(_READ_CHUNK)
    if not first:
        return
    kind = "gzip" if first[:2] == b"\x1f\x8b" else "bzip2" if first[:3] == b"BZh" else None
    if kind is None:
        yield first
        while chunk := stream.read(_READ_CHUNK):
            yield chunk
        return
    decompressor = _Decompressor(kind)
    yield decompressor.feed(first)
    while chunk := stream.read(_READ_CHUNK):
        yield decompressor.feed(chunk)


class _Text(FileFormat):
    """Hive's text layout (see the module docstring)."""

    extension = "txt"
    writer_class = _TextWriter
    hive_types = True

    def file_extension(self, options: dict[str, object]) -> str:
        suffix = {"gzip": ".gz", "bzip2": ".bz2"}.get(str(options.get("compress")), "")
        return self.extension + suffix

    def unsupported(self, kind: pa.DataType) -> str | None:
        if pa.types.is_nested(kind):
            return "nested values cannot be written as text; declare the column string"
        return None

    def matches(self, head: bytes) -> bool:
        return head[:4] != b"PAR1" and head[:3] != b"ORC"

    def read(
        self, stream: BinaryIO, start_row: int, batch_rows: int, options: dict[str, object]
    ) -> Iterator[pa.RecordBatch]:
        delimiter = str(options.get("fieldDelimiter") or "\x01")
        encoding = str(options.get("encoding") or "utf-8")
        fields = options.get("fields")
        state = {"fields": int(fields) if isinstance(fields, int) else None}
        to_skip = start_row
        rest = b""
        for chunk in _raw_chunks(stream):
            data = rest + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            block, rest = data[: cut + 1], data[cut + 1 :]
            if to_skip:
                block, to_skip = _skip_lines(block, to_skip)
                if not block:
                    continue
            yield from _text_batches(block, delimiter, encoding, batch_rows, state)
        if rest:
            block = rest + b"\n"
            if to_skip:
                block, to_skip = _skip_lines(block, to_skip)
            if block:
                yield from _text_batches(block, delimiter, encoding, batch_rows, state)

    def merge(self, sources: list[Opener], target: BinaryIO, options: dict[str, object]) -> None:
        """Concatenate: text lines, gzip members and bzip2 streams all concatenate."""
        try:
            for opener in sources:
                with opener() as stream:
                    while chunk := stream.read(_READ_CHUNK):
                        target.write(chunk)
        finally:
            target.close()


def _skip_lines(block: bytes, count: int) -> tuple[bytes, int]:
    """Drop up to ``count`` lines from the start of ``block``; return the rest and what is left
    to skip."""
    lines = block.count(b"\n")
    if lines <= count:
        return b"", count - lines
    position = 0
    for _ in range(count):
        position = block.index(b"\n", position) + 1
    return block[position:], 0


def _text_batches(
    block: bytes, delimiter: str, encoding: str, batch_rows: int, state: dict[str, int | None]
) -> Iterator[pa.RecordBatch]:
    if encoding.replace("-", "").replace("_", "").lower() == "utf8":
        text = pc.cast(pa.array([block], pa.binary()), pa.string())
    else:
        text = pa.array([block.decode(encoding)], pa.string())
    lines = pc.list_flatten(pc.split_pattern(text, "\n"))
    lines = lines.slice(0, len(lines) - 1)  # the block ends with a newline
    lines = pc.utf8_rtrim(lines, characters="\r")
    parts = pc.split_pattern(lines, delimiter)
    lengths = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
    if state["fields"] is None:
        state["fields"] = max(int(lengths.max()) if len(lengths) else 1, 1)
    count = state["fields"] or 1
    values = pc.list_flatten(parts)
    starts = np.asarray(parts.offsets)[:-1] - parts.offsets[0].as_py()
    columns = []
    for index in range(count):
        present = lengths > index
        taken = values.take(pa.array(np.where(present, starts + index, 0)))
        column = pc.if_else(pa.array(present), taken, pa.scalar(None, pa.string()))
        column = pc.if_else(pc.equal(column, HIVE_NULL), pa.scalar(None, pa.string()), column)
        columns.append(column)
    batch = pa.RecordBatch.from_arrays(columns, names=[f"_c{i}" for i in range(count)])
    for offset in range(0, batch.num_rows, batch_rows):
        yield batch.slice(offset, batch_rows)


# -- CSV and JSON lines --------------------------------------------------------------------------


class _CsvWriter(FormatWriter):
    def __init__(self, stream: BinaryIO, schema: pa.Schema, options: dict[str, object]) -> None:
        self._stream = stream
        write_options = pacsv.WriteOptions(
            include_header=bool(options.get("header", True)),
            delimiter=str(options.get("fieldDelimiter") or ","),
        )
        self._writer = pacsv.CSVWriter(stream, schema, write_options=write_options)

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)

    def size(self) -> int:
        return self._stream.tell()

    def close(self) -> None:
        self._writer.close()
        self._stream.close()


class _Csv(FileFormat):
    extension = "csv"
    writer_class = _CsvWriter

    def read(
        self, stream: BinaryIO, start_row: int, batch_rows: int, options: dict[str, object]
    ) -> Iterator[pa.RecordBatch]:
        header = bool(options.get("header", True))
        names = options.get("names")
        read_options = pacsv.ReadOptions(
            block_size=1 << 20,
            autogenerate_column_names=not header and not names,
            column_names=list(names) if names and not header else None,  # type: ignore[call-overload]
            skip_rows_after_names=start_row,
        )
        parse = pacsv.ParseOptions(delimiter=str(options.get("fieldDelimiter") or ","))
        convert = pacsv.ConvertOptions(
            column_types=options.get("types") or None,  # type: ignore[arg-type]
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,  # "" is an empty string, an empty field NULL
        )
        try:
            reader = pacsv.open_csv(
                stream, read_options=read_options, parse_options=parse, convert_options=convert
            )
        except pa.ArrowInvalid as exc:
            if "Empty CSV file" in str(exc):
                return
            raise
        for batch in reader:
            for offset in range(0, batch.num_rows, batch_rows):
                yield batch.slice(offset, batch_rows)


class _JsonWriter(FormatWriter):
    def __init__(self, stream: BinaryIO, schema: pa.Schema, options: dict[str, object]) -> None:
        del schema, options
        self._stream = stream

    def write(self, batch: pa.RecordBatch) -> None:
        lines = [json.dumps(row, default=str, ensure_ascii=False) for row in batch.to_pylist()]
        self._stream.write(("\n".join(lines) + "\n").encode())

    def size(self) -> int:
        return self._stream.tell()

    def close(self) -> None:
        self._stream.close()


class _Json(FileFormat):
    """JSON lines: one object per line."""

    extension = "jsonl"
    writer_class = _JsonWriter

    def read(
        self, stream: BinaryIO, start_row: int, batch_rows: int, options: dict[str, object]
    ) -> Iterator[pa.RecordBatch]:
        types = options.get("types")
        schema = pa.schema(list(types.items())) if isinstance(types, dict) else None
        parse = pajson.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="ignore" if schema else "infer"
        )
        text = io.TextIOWrapper(stream, encoding="utf-8")
        row, chunk = 0, []
        for line in text:
            if not line.strip():
                continue
            row += 1
            if row <= start_row:
                continue
            chunk.append(line if line.endswith("\n") else line + "\n")
            if len(chunk) >= batch_rows:
                yield from _json_batches(chunk, parse)
                chunk = []
        if chunk:
            yield from _json_batches(chunk, parse)


def _json_batches(lines: list[str], parse: pajson.ParseOptions) -> Iterator[pa.RecordBatch]:
    table = pajson.read_json(io.BytesIO("".join(lines).encode()), parse_options=parse)
    yield from table.combine_chunks().to_batches()


# -- helpers -------------------------------------------------------------------------------------


def _int(value: object, default: int) -> int:
    return int(value) if isinstance(value, int | float | str) and value else default


def _float(value: object, default: float) -> float:
    return float(value) if isinstance(value, int | float) and value else default


def _unit_range(options: dict[str, object], count: int) -> tuple[int, int]:
    units = options.get("units")
    if isinstance(units, list | tuple) and len(units) == 2:
        return max(0, int(units[0])), min(count, int(units[1]))
    return 0, count


FORMATS: dict[str, FileFormat] = {
    "parquet": _Parquet(),
    "orc": _Orc(),
    "text": _Text(),
    "csv": _Csv(),
    "json": _Json(),
}
_ALIASES = {"jsonl": "json", "ndjson": "json", "txt": "text", "textfile": "text"}


def format_named(name: str) -> FileFormat:
    """The format for a ``fileType`` name."""
    key = name.lower()
    return FORMATS[_ALIASES.get(key, key)]
