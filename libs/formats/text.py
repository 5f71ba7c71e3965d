"""Hive text, CSV and JSON lines: line formats written and read column-wise with Arrow."""

from __future__ import annotations

import base64
import bz2
import io
import json
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from libs.formats.base import HIVE_NULL, READ_CHUNK, FileFormat, FormatWriter, Opener, hive_text
from sync.errors import JobFileError


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
    first = stream.read(READ_CHUNK)
    if not first:
        return
    kind = "gzip" if first[:2] == b"\x1f\x8b" else "bzip2" if first[:3] == b"BZh" else None
    if kind is None:
        yield first
        while chunk := stream.read(READ_CHUNK):
            yield chunk
        return
    decompressor = _Decompressor(kind)
    yield decompressor.feed(first)
    while chunk := stream.read(READ_CHUNK):
        yield decompressor.feed(chunk)


class HiveText(FileFormat):
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
                    while chunk := stream.read(READ_CHUNK):
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


class Csv(FileFormat):
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


class Json(FileFormat):
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
