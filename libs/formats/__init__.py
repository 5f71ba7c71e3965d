"""File formats shared by the file and HDFS plugins: writing batches, reading them back by row.

Every format writes Arrow batches column-wise (Parquet, ORC and CSV through Arrow's C++ writers,
Hive text through Arrow compute kernels) and reads them as a stream of batches from a row
offset, which is a file split's position.

- ``parquet``: row groups are buffered up to ``rowGroupSize`` rows or ``rowGroupBytes`` of
  Arrow data (at most ``ROW_GROUP_MEMORY``, 16 MiB), so small input batches do not make tiny
  row groups and a wide table does not hold a huge one in memory. Only the columns whose values
  repeat get a dictionary. Timestamps are INT64
  ``TIMESTAMP(MICROS)`` (Hive 3+, Spark, Trino read them), or INT96 with ``timestampType: int96``
  for older Hive and Impala. Decimals keep their precision and scale. Merging files of one
  schema concatenates their row groups byte for byte under one footer, without decoding them
  (:mod:`~libs.formats.thrift` reads and rewrites the footer); files of different schemas are
  read back and re-encoded.
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

Modules: :mod:`~libs.formats.base` (the contracts and Hive's type rules),
:mod:`~libs.formats.columnar` (Parquet, ORC), :mod:`~libs.formats.text` (Hive text, CSV, JSON),
:mod:`~libs.formats.thrift` (Thrift's compact protocol, for Parquet footers).
"""

from __future__ import annotations

from libs.formats.base import FileFormat
from libs.formats.columnar import Orc, Parquet
from libs.formats.text import Csv, HiveText, Json

__all__ = ["FORMATS", "format_named"]

FORMATS: dict[str, FileFormat] = {
    "parquet": Parquet(),
    "orc": Orc(),
    "text": HiveText(),
    "csv": Csv(),
    "json": Json(),
}
_ALIASES = {"jsonl": "json", "ndjson": "json", "txt": "text", "textfile": "text"}


def format_named(name: str) -> FileFormat:
    """The format for a ``fileType`` name."""
    key = name.lower()
    return FORMATS[_ALIASES.get(key, key)]
