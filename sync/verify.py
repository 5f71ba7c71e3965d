"""``syncx verify JOB``: prove that a job's target holds exactly its source, without copying it.

Both sides are read through reader plugins as Arrow batches: the job's own reader, and the reader
its writer names for reading back what it wrote (:meth:`sync.contract.Writer.read_back`: a MySQL
table, a Parquet/ORC/text folder on ``file://`` or HDFS...). Columns are paired by position, as a
ChunJun job pairs them. Every row becomes canonical text (so ``int32`` 7 and ``int64`` 7, a
``TIMESTAMP`` in UTC and its naive Parquet twin, a ``TIME`` and its Hive string compare equal)
and is hashed with DuckDB, vectorized. Rows fall into buckets by their key; a bucket keeps the
count, the XOR and the sum of its rows' hashes, so the order in which splits arrive does not
matter and one pass over each side finds the buckets that differ (pt-table-checksum's chunks and
data-diff's bisection, one level deep). A second pass over the differing buckets only keeps key
and hash of their rows and names the keys that are missing from the target, extra in it, or
different (the first few in full, the rest counted).

Only bounded readers can be verified (for a CDC job, verify the replicated tables with a job
reading them). ``--where`` filters both sides (DuckDB SQL over the source's column names).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from sync.canonical import canonical_text, canonical_value
from sync.contract import JobContext, Reader
from sync.errors import JobFailedError, JobFileError
from sync.jobfile import LoadedJob
from sync.model import Params
from sync.registry import load, require

__all__ = ["Difference", "VerifyReport", "verify"]

log = logging.getLogger(__name__)

_SEPARATOR = "\x1f"
_NULL = "\x00"
_CHUNK_ROWS = 65_536


@dataclass
class _Bucket:
    count: int = 0
    xor: int = 0
    total: int = 0

    def add(self, count: int, xor: int, total: int) -> None:
        self.count += count
        self.xor ^= xor
        self.total = (self.total + total) % (1 << 64)


@dataclass(frozen=True)
class Difference:
    """One key that differs: ``missing`` from the target, ``extra`` in it, or ``different``."""

    kind: str
    key: str
    source: dict[str, Any] | None = None
    target: dict[str, Any] | None = None


@dataclass
class VerifyReport:
    """What ``syncx verify`` found."""

    job: str
    key: list[str]
    source_rows: int = 0
    target_rows: int = 0
    buckets: int = 0
    differing_buckets: int = 0
    missing: int = 0
    extra: int = 0
    different: int = 0
    duplicate: int = 0
    examples: list[Difference] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        """True when the target holds exactly the source's rows."""
        problems = self.missing + self.extra + self.different + self.duplicate
        return not (problems or self.differing_buckets)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` report."""
        return {
            "job": self.job,
            "equal": self.equal,
            "key": self.key,
            "sourceRows": self.source_rows,
            "targetRows": self.target_rows,
            "buckets": self.buckets,
            "differingBuckets": self.differing_buckets,
            "missing": self.missing,
            "extra": self.extra,
            "different": self.different,
            "duplicate": self.duplicate,
            "examples": [d.__dict__ for d in self.examples],
        }


class _Side:
    """One side of the comparison: a reader and how its columns map onto the source's names."""

    def __init__(self, name: str, reader: Reader, parallelism: int) -> None:
        self.name = name
        self.reader = reader
        self.parallelism = parallelism

    def chunks(self) -> Iterator[pa.Table]:
        """Every row of every split, in tables of about :data:`_CHUNK_ROWS` rows (hashing has a
        cost per call); splits are read ``parallelism`` at a time."""
        splits = self.reader.plan(self.parallelism)
        pending: list[pa.RecordBatch] = []
        for batch in _parallel(
            [lambda s=split: self._read(s) for split in splits], self.parallelism
        ):
            if pending and batch.schema != pending[0].schema:
                yield pa.Table.from_batches(pending)
                pending = []
            pending.append(batch)
            if sum(b.num_rows for b in pending) >= _CHUNK_ROWS:
                yield pa.Table.from_batches(pending)
                pending = []
        if pending:
            yield pa.Table.from_batches(pending)

    def _read(self, split: Any) -> Iterator[pa.RecordBatch]:
        opened = self.reader.open(split, None)
        try:
            for batch in opened.batches():
                if batch is not None and batch.num_rows:
                    yield batch
        finally:
            opened.close()


def _parallel(
    producers: list[Callable[[], Iterator[pa.RecordBatch]]], threads: int
) -> Iterator[pa.RecordBatch]:
    """Batches of several producers, ``threads`` of them running at once (bounded queue)."""
    import queue  # noqa: PLC0415 - only here

    out: queue.Queue[Any] = queue.Queue(maxsize=4)
    pending = list(reversed(producers))
    lock = threading.Lock()
    done = object()

    def work() -> None:
        try:
            while True:
                with lock:
                    if not pending:
                        break
                    producer = pending.pop()
                for batch in producer():
                    out.put(batch)
        except BaseException as exc:  # handed to the consumer
            out.put(exc)
        out.put(done)

    workers = [threading.Thread(target=work, daemon=True) for _ in range(max(1, threads))]
    for worker in workers:
        worker.start()
    finished = 0
    while finished < len(workers):
        item = out.get()
        if item is done:
            finished += 1
        elif isinstance(item, BaseException):
            raise item
        else:
            yield item


class _Hasher:
    """Hashes of a side's rows (DuckDB, vectorized) in the source's column names and types."""

    def __init__(self, names: list[str], key: list[str], where: str | None, buckets: int) -> None:
        missing = [k for k in key if k not in names]
        if missing:
            msg = f"--key {', '.join(missing)}: not a column read by the job ({', '.join(names)})"
            raise JobFileError(msg)
        self.duckdb = require("duckdb", "transform", "syncx verify")
        self.connection = self.duckdb.connect()
        self.names = names
        self.key = key
        self.where = where
        self.buckets = buckets
        columns = [f"c{i}" for i in range(len(names))]
        keys = ", ".join(f"c{names.index(k)}" for k in key)
        self._bucket = f"hash({keys}) % {buckets}"
        self._row = f"hash({', '.join(columns)})"

    def table(self, chunk: pa.Table) -> pa.Table:
        """The chunk with the source's column names, filtered by ``--where``."""
        if chunk.num_columns != len(self.names):
            msg = (
                f"the target has {chunk.num_columns} columns and the source {len(self.names)}: "
                "verify pairs columns by position, as the job does"
            )
            raise JobFailedError(msg)
        table = chunk.rename_columns(self.names)
        if self.where:
            table = self._query(table, f"SELECT * FROM t WHERE {self.where}", "--where")
            table = table.to_arrow_table()
        return table

    def digest(self, chunk: pa.Table) -> list[tuple[int, int, int, int]]:
        """(bucket, rows, XOR of hashes, sum of hashes mod 2^64) of one chunk."""
        sql = (
            f"SELECT b, count(*), bit_xor(h), sum(h::HUGEINT) % 18446744073709551616 FROM "
            f"(SELECT {self._bucket} AS b, {self._row} AS h FROM t) GROUP BY b"
        )
        rows = self._query(self._values(self.table(chunk)), sql).fetchall()
        return [(int(b), int(n), int(x), int(s)) for b, n, x, s in rows]

    def rows_in(self, chunk: pa.Table, buckets: set[int]) -> list[tuple[str, int, str]]:
        """(key, row hash, row as canonical text) of the rows of ``chunk`` in ``buckets``."""
        table = self.table(chunk)
        values = self._values(table).append_column("i", pa.array(range(table.num_rows)))
        listed = ",".join(str(b) for b in sorted(buckets))
        sql = f"SELECT i, {self._row} FROM t WHERE {self._bucket} IN ({listed}) ORDER BY i"
        found = self._query(values, sql).fetchall()
        if not found:
            return []
        taken = table.take([int(i) for i, _ in found])
        texts = [pc.fill_null(canonical_text(taken[n]), _NULL) for n in self.names]
        rows = pc.binary_join_element_wise(*texts, _SEPARATOR).to_pylist()
        keys = [texts[self.names.index(k)].to_pylist() for k in self.key]
        return [
            (_SEPARATOR.join(str(part[j]) for part in keys), int(h), str(rows[j]))
            for j, (_, h) in enumerate(found)
        ]

    def _values(self, table: pa.Table) -> pa.Table:
        return pa.table({f"c{i}": canonical_value(table[n]) for i, n in enumerate(self.names)})

    def _query(self, table: pa.Table, sql: str, what: str = "verify") -> Any:
        self.connection.register("t", table)
        try:
            return self.connection.execute(sql)
        except self.duckdb.Error as exc:
            msg = f"{what}: {exc}"
            raise JobFileError(msg) from exc


def verify(
    job: LoadedJob,
    ctx: JobContext,
    *,
    key: list[str] | None = None,
    where: str | None = None,
    buckets: int = 1024,
    show: int = 10,
    progress: Callable[[str, int], None] | None = None,
) -> VerifyReport:
    """Compare the job's source with what its writer wrote; see the module docs."""
    source_reader = job.reader_cls(job.reader_params, ctx)
    writer = job.writer_cls(job.writer_params, ctx)
    back = writer.read_back()
    if back is None:
        msg = f"{job.file.content.writer.name} cannot read back what it writes: nothing to verify"
        raise JobFileError(msg)
    if not source_reader.bounded:
        msg = (
            f"{job.file.content.reader.name} is a stream: verify the tables it replicates with a "
            "job that reads them (a bounded reader)"
        )
        raise JobFileError(msg)
    target_name, extra = back
    target_cls = load("reader", target_name)
    target_params = target_cls.Parameters.model_validate(
        _carried_over(job.writer_params, target_cls.Parameters, job.reader_params) | extra
    )
    target_reader = target_cls(target_params, ctx)
    try:
        source_reader.check()
        target_reader.check()
        schema = source_reader.schema()
        names = list(schema.names) if schema is not None else None
        key = key or source_reader.key_columns()
        if not key:
            msg = "no key to compare rows by: pass --key COLUMN[,COLUMN] (the table has none)"
            raise JobFileError(msg)
        parallelism = max(1, ctx.readers)
        sides = [
            _Side("source", source_reader, parallelism),
            _Side("target", target_reader, parallelism),
        ]
        report = VerifyReport(job=job.name, key=key, buckets=buckets)
        digests = _digest_both(sides, names, key, where, buckets, report, progress)
        differing = {
            b for b in set(digests[0]) | set(digests[1]) if digests[0].get(b) != digests[1].get(b)
        }
        report.differing_buckets = len(differing)
        if differing:
            _explain(sides, names, key, where, buckets, differing, report, show)
        return report
    finally:
        source_reader.close()
        target_reader.close()


def _carried_over(params: Params, to: type[Params], source: Params) -> dict[str, Any]:
    """The fields ``params`` shares with the model ``to``, by their job-file names (and the
    source reader's ``splitPk``, so a SQL target is read in key ranges as the source is)."""
    shared = set(type(params).model_fields) & set(to.model_fields)
    raw = params.model_dump(by_alias=True, include=shared, exclude_none=True)
    if "split_pk" in to.model_fields and getattr(source, "split_pk", None) is not None:
        raw["splitPk"] = source.split_pk  # type: ignore[attr-defined]
    return raw


def _digest_both(
    sides: list[_Side],
    names: list[str] | None,
    key: list[str],
    where: str | None,
    buckets: int,
    report: VerifyReport,
    progress: Callable[[str, int], None] | None,
) -> list[dict[int, tuple[int, int, int]]]:
    results: list[dict[int, _Bucket]] = [{}, {}]
    errors: list[BaseException] = []

    def run(index: int) -> None:
        side = sides[index]
        hasher: _Hasher | None = None
        rows = 0
        try:
            for chunk in side.chunks():
                if hasher is None:
                    hasher = _Hasher(names or chunk.column_names, key, where, buckets)
                for b, n, x, s in hasher.digest(chunk):
                    results[index].setdefault(b, _Bucket()).add(n, x, s)
                rows += chunk.num_rows
                if progress is not None:
                    progress(side.name, rows)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    report.source_rows = sum(b.count for b in results[0].values())
    report.target_rows = sum(b.count for b in results[1].values())
    return [{k: (v.count, v.xor, v.total) for k, v in r.items()} for r in results]


def _explain(
    sides: list[_Side],
    names: list[str] | None,
    key: list[str],
    where: str | None,
    buckets: int,
    differing: set[int],
    report: VerifyReport,
    show: int,
) -> None:
    """Second pass: the keys of the differing buckets, side by side."""
    rows: list[dict[str, tuple[int, str]]] = [{}, {}]
    for index, side in enumerate(sides):
        hasher: _Hasher | None = None
        for chunk in side.chunks():
            hasher = hasher or _Hasher(names or chunk.column_names, key, where, buckets)
            for k, h, r in hasher.rows_in(chunk, differing):
                if k in rows[index]:
                    report.duplicate += 1
                    _example(
                        report,
                        show,
                        Difference("duplicate", k, *_pair(index, (h, r), names or key)),
                    )
                rows[index][k] = (h, r)
    source, target = rows
    column_names = names or key
    for k in sorted(source.keys() | target.keys()):
        here, there = source.get(k), target.get(k)
        if there is None:
            kind = "missing"
        elif here is None:
            kind = "extra"
        elif here[0] != there[0]:
            kind = "different"
        else:
            continue
        setattr(report, kind, getattr(report, kind) + 1)
        _example(
            report,
            show,
            Difference(kind, k, _as_row(here, column_names), _as_row(there, column_names)),
        )


def _example(report: VerifyReport, show: int, difference: Difference) -> None:
    if len(report.examples) < show:
        report.examples.append(difference)


def _pair(
    index: int, found: tuple[int, str], names: list[str]
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    row = _as_row(found, names)
    return (row, None) if index == 0 else (None, row)


def _as_row(found: tuple[int, str] | None, names: list[str]) -> dict[str, Any] | None:
    if found is None:
        return None
    values = found[1].split(_SEPARATOR)
    return {n: (None if v == _NULL else v) for n, v in zip(names, values, strict=False)}
