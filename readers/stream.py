"""``streamreader`` (``streamsource``): generated rows, as ChunJun's stream reader makes them.

One split per reader channel; ``sliceRecordCount[i]`` rows for channel ``i`` (0 or absent: rows
forever). Values are generated column-wise with NumPy and are a pure function of (channel, row
number), so a split resumed from its position (the rows emitted so far) continues with exactly
the rows it would have produced: the generator is a reproducible source for restore tests.

Types: ``id`` (0, 1, 2, ... per channel, as in ChunJun), byte, short, int/integer, long/bigint,
float, double, bigdecimal/decimal, biginteger, boolean, char, string (also every unknown name, as
ChunJun does), date, timestamp/datetime (increasing, one second a row), time, binary. A ``value``
makes the column that constant.

State: a split's data is :class:`StreamSplitData` (channel, row count), its position
:class:`RowsRead` (rows emitted). Checkpoints of the version before typed state stored the
position as a bare number and the split data as a plain object; both still restore.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, WithJsonSchema
from typing_extensions import override

from libs.types import arrow_type
from sync.contract import Estimate, JobContext, Reader, Split, SplitReader, State
from sync.errors import JobFileError
from sync.model import Params

__all__ = [
    "RowsRead",
    "StreamColumn",
    "StreamReader",
    "StreamReaderParams",
    "StreamSplitData",
]

_EPOCH = dt.datetime(2024, 1, 1)
_UNBOUNDED = 0
_BLOCK = 4096
"""Rows generated together from one seed: values depend on (channel, row), not on batch sizes."""


class StreamColumn(Params):
    """One generated column."""

    name: str
    type: str = "string"
    value: Any = Field(default=None, description="A constant for every row.")


class StreamReaderParams(Params):
    """``parameter`` of ``streamreader``."""

    column: list[StreamColumn] = Field(min_length=1)
    slice_record_count: list[
        Annotated[
            int,
            Field(ge=0),
            WithJsonSchema(
                {
                    "anyOf": [
                        {"type": "integer", "minimum": 0},
                        {"type": "string", "pattern": "^[0-9]+$"},
                    ]
                }
            ),
        ]
    ] = Field(
        default_factory=list,
        description="Rows per channel (one number per channel, or one for all); 0 = unbounded.",
    )
    permits_per_second: Annotated[float, Field(ge=0)] = Field(
        default=0, description="Rows per second per channel; 0 = as fast as possible."
    )


@dataclass(frozen=True)
class StreamSplitData(State):
    """One channel's split: which channel, and how many rows it generates (0: forever)."""

    channel: int
    rows: int


@dataclass(frozen=True)
class RowsRead(State):
    """A position counting rows: those of the split read (emitted) so far, so a resumed split
    continues with row ``rows``. ``filereader`` and ``hdfsreader`` use it too."""

    rows: int

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | int) -> Self:
        """Also the bare number stored before positions were typed."""
        return cls(rows=raw) if isinstance(raw, int) else super().from_json(raw)


class StreamReader(Reader[StreamReaderParams]):
    """Generates rows from a column list."""

    Parameters = StreamReaderParams
    position_type = RowsRead
    split_type = StreamSplitData

    def __init__(self, params: StreamReaderParams, ctx: JobContext) -> None:
        super().__init__(params, ctx)
        self._schema = pa.schema(
            [
                pa.field(c.name, arrow_type(_type_name(c.type), default_string=True))
                for c in params.column
            ]
        )

    @override
    def check(self) -> None:
        for index, column in enumerate(self.params.column):
            if column.value is None:
                continue
            try:
                pc.cast(pa.array([str(column.value)]), self._schema.field(index).type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                msg = (
                    f"job.content[0].reader.parameter.column[{index}].value: cannot be read as "
                    f"{column.type}"
                )
                raise JobFileError(msg) from exc

    @override
    def schema(self) -> pa.Schema:
        return self._schema

    @property
    @override
    def bounded(self) -> bool:
        counts = self.params.slice_record_count
        return bool(counts) and all(count != _UNBOUNDED for count in counts)

    @override
    def plan(self, parallelism: int) -> list[Split]:
        counts = self.params.slice_record_count or [_UNBOUNDED]
        if len(counts) == 1:
            counts = counts * parallelism
        if len(counts) != parallelism:
            msg = (
                f"job.content[0].reader.parameter.sliceRecordCount: {len(counts)} counts for "
                f"{parallelism} reader channels; give one count per channel (or one for all)"
            )
            raise JobFileError(msg)
        return [
            Split(f"channel-{i}", StreamSplitData(channel=i, rows=counts[i]))
            for i in range(parallelism)
        ]

    @override
    def estimate(self, splits: Sequence[Split]) -> Estimate:
        """Exact: the rows each channel generates."""
        return Estimate(rows=sum(split.data.rows for split in splits))

    @override
    def open(self, split: Split, position: RowsRead | None) -> SplitReader:
        return _StreamSplit(self, split.data, position.rows if position else 0)


class _StreamSplit(SplitReader):
    def __init__(self, reader: StreamReader, split: StreamSplitData, start: int) -> None:
        self._reader = reader
        self._channel = split.channel
        self._total = split.rows
        self._next = start
        self._stopping: threading.Event = reader.ctx.stopping
        self._cached: tuple[int, pa.RecordBatch] | None = None

    @override
    def batches(self) -> Iterator[pa.RecordBatch | None]:
        permits = self._reader.params.permits_per_second
        rows_per_batch = self._reader.ctx.batch_rows
        if permits:
            rows_per_batch = max(1, min(rows_per_batch, int(permits // 10) or 1))
        started, emitted = time.monotonic(), 0
        while self._total == _UNBOUNDED or self._next < self._total:
            if self._stopping.is_set():
                return
            count = (
                rows_per_batch
                if self._total == _UNBOUNDED
                else min(rows_per_batch, self._total - self._next)
            )
            if permits:
                due = started + (emitted + count) / permits
                wait = due - time.monotonic()
                if wait > 0:
                    self._stopping.wait(min(wait, 1.0))
                    if due - time.monotonic() > 0:
                        yield None
                        continue
            batch = self._generate(self._next, count)
            self._next += count
            emitted += count
            yield batch

    @override
    def snapshot(self) -> RowsRead:
        return RowsRead(rows=self._next)

    def _generate(self, start: int, count: int) -> pa.RecordBatch:
        """Rows ``start`` .. ``start + count``, cut from blocks that depend only on the row."""
        blocks = []
        first, last = start // _BLOCK, (start + count - 1) // _BLOCK
        for block in range(first, last + 1):
            whole = self._block(block)
            lo = max(start, block * _BLOCK) - block * _BLOCK
            hi = min(start + count, (block + 1) * _BLOCK) - block * _BLOCK
            blocks.append(whole.slice(lo, hi - lo))
        return (
            blocks[0]
            if len(blocks) == 1
            else pa.Table.from_batches(blocks).combine_chunks().to_batches()[0]
        )

    def _block(self, block: int) -> pa.RecordBatch:
        """Block ``block`` of this channel: a pure function of (channel, block), so resumes and
        restores with another batch size continue with exactly the same rows."""
        if self._cached is not None and self._cached[0] == block:
            return self._cached[1]
        rng = np.random.default_rng([self._channel, block])
        start = block * _BLOCK
        arrays = []
        for spec, field in zip(self._reader.params.column, self._reader.schema(), strict=True):
            if spec.value is not None:
                arrays.append(pc.cast(pa.array([str(spec.value)] * _BLOCK), field.type))
            else:
                arrays.append(_random_column(_type_name(spec.type), field.type, rng, start, _BLOCK))
        batch = pa.RecordBatch.from_arrays(arrays, schema=self._reader.schema())
        self._cached = (block, batch)
        return batch


def _type_name(name: str) -> str:
    key = name.strip().lower()
    return {"bigdecimal": "decimal(38,6)", "biginteger": "biginteger"}.get(key, key)


def _random_column(
    kind: str, arrow: pa.DataType, rng: np.random.Generator, start: int, count: int
) -> pa.Array:
    """One generated column; ``start`` is the row number of the first row."""
    if kind == "id":
        return pa.array(np.arange(start, start + count, dtype=np.int64))
    if pa.types.is_integer(arrow):
        info = np.iinfo(arrow.to_pandas_dtype())
        return pa.array(
            rng.integers(
                info.min, info.max, size=count, endpoint=True, dtype=arrow.to_pandas_dtype()
            )
        )
    if pa.types.is_floating(arrow):
        return pa.array(rng.standard_normal(count) * 1000, type=arrow)
    if pa.types.is_decimal(arrow):
        cents = pc.cast(pa.array(rng.integers(-(10**9), 10**9, size=count)), pa.decimal128(20, 0))
        return pc.multiply(cents, pa.scalar(Decimal("0.01"), pa.decimal128(3, 2))).cast(
            arrow, safe=False
        )
    if pa.types.is_boolean(arrow):
        return pa.array(rng.integers(0, 2, size=count).astype(bool))
    if pa.types.is_timestamp(arrow):
        seconds = np.arange(start, start + count, dtype=np.int64)
        micros = (seconds * 1_000_000) + int(_EPOCH.timestamp() * 1_000_000)
        return pa.array(micros, type=pa.timestamp("us")).cast(arrow)
    if pa.types.is_date(arrow):
        days = (
            rng.integers(0, 3650, size=count, dtype=np.int32)
            + (_EPOCH.date() - dt.date(1970, 1, 1)).days
        )
        return pa.array(days, type=pa.date32())
    if pa.types.is_time(arrow):
        return pa.array(rng.integers(0, 86_400_000_000, size=count), type=pa.time64("us"))
    if pa.types.is_binary(arrow):
        return pc.cast(_random_strings(rng, count), pa.binary())
    return _random_strings(rng, count)


def _random_strings(rng: np.random.Generator, count: int) -> pa.Array:
    numbers = pa.array(rng.integers(0, 2**62, size=count, dtype=np.int64))
    return pc.binary_join_element_wise("s", pc.cast(numbers, pa.string()), "")
