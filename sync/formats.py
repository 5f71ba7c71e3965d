"""File formats shared by the file and HDFS plugins: writing batches, reading them back by row.

Every format writes Arrow batches column-wise (Parquet and CSV through Arrow's C++ writers) and
reads them as a stream of batches from a row offset, which is a file split's position.
"""

from __future__ import annotations

import io
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import BinaryIO, Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

__all__ = ["FORMATS", "FileFormat", "FormatWriter", "format_named"]

FormatName = Literal["csv", "json", "parquet"]


class FormatWriter(ABC):
    """An open output file of one format."""

    @abstractmethod
    def write(self, batch: pa.RecordBatch) -> None:
        """Append a batch."""

    @abstractmethod
    def close(self) -> None:
        """Finish the file (footer) and close the stream, making it durable."""


class FileFormat(ABC):
    """A format: its file extension, a writer, and a batch reader from a row offset."""

    extension: str

    @abstractmethod
    def writer(
        self, stream: BinaryIO, schema: pa.Schema, options: dict[str, object]
    ) -> FormatWriter:
        """Open a writer on ``stream``."""

    @abstractmethod
    def read(
        self, stream: BinaryIO, start_row: int, batch_rows: int, options: dict[str, object]
    ) -> Iterator[pa.RecordBatch]:
        """Batches of the file from row ``start_row`` on."""


class _ParquetWriter(FormatWriter):
    def __init__(self, stream: BinaryIO, schema: pa.Schema, options: dict[str, object]) -> None:
        self._stream = stream
        self._writer = pq.ParquetWriter(
            stream,
            schema,
            compression=str(options.get("compress") or "snappy"),
            use_dictionary=bool(options.get("enableDictionary", True)),
        )
        self._row_group = int(options.get("rowGroupSize") or 128 * 1024)  # type: ignore[call-overload]

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch, row_group_size=self._row_group)

    def close(self) -> None:
        self._writer.close()
        self._stream.close()


class _Parquet(FileFormat):
    extension = "parquet"

    def writer(
        self, stream: BinaryIO, schema: pa.Schema, options: dict[str, object]
    ) -> FormatWriter:
        return _ParquetWriter(stream, schema, options)

    def read(
        self, stream: BinaryIO, start_row: int, batch_rows: int, options: dict[str, object]
    ) -> Iterator[pa.RecordBatch]:
        parquet = pq.ParquetFile(stream)
        groups, skipped = [], 0
        for index in range(parquet.num_row_groups):
            rows = parquet.metadata.row_group(index).num_rows
            if skipped + rows <= start_row:
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

    def close(self) -> None:
        self._writer.close()
        self._stream.close()


class _Csv(FileFormat):
    extension = "csv"

    def writer(
        self, stream: BinaryIO, schema: pa.Schema, options: dict[str, object]
    ) -> FormatWriter:
        return _CsvWriter(stream, schema, options)

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

    def close(self) -> None:
        self._stream.close()


class _Json(FileFormat):
    """JSON lines: one object per line."""

    extension = "jsonl"

    def writer(
        self, stream: BinaryIO, schema: pa.Schema, options: dict[str, object]
    ) -> FormatWriter:
        return _JsonWriter(stream, schema, options)

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


FORMATS: dict[str, FileFormat] = {"parquet": _Parquet(), "csv": _Csv(), "json": _Json()}
_ALIASES = {"jsonl": "json", "ndjson": "json", "text": "csv", "txt": "csv"}


def format_named(name: str) -> FileFormat:
    """The format for a ``fileType`` name."""
    key = name.lower()
    return FORMATS[_ALIASES.get(key, key)]
