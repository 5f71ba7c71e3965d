"""Format contracts shared by every file format, and Hive's type rules."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

import pyarrow as pa
import pyarrow.compute as pc

from libs.types import time_text

FormatName = Literal["csv", "json", "parquet", "orc", "text"]
Opener = Callable[[], BinaryIO]
"""Opens one source file for reading (used by :meth:`FileFormat.merge`)."""

MIB = 1024 * 1024
READ_CHUNK = 4 * MIB
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

    def buffered(self) -> int:
        """Bytes of rows held in memory for the file (Parquet's next row group), not written."""
        return 0

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


def int_option(value: object, default: int) -> int:
    return int(value) if isinstance(value, int | float | str) and value else default


def float_option(value: object, default: float) -> float:
    return float(value) if isinstance(value, int | float) and value else default


def unit_range(options: dict[str, object], count: int) -> tuple[int, int]:
    units = options.get("units")
    if isinstance(units, list | tuple) and len(units) == 2:
        return max(0, int(units[0])), min(count, int(units[1]))
    return 0, count
