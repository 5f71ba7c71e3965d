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

``--where`` filters both sides (DuckDB SQL over the source's column names, in UTC).
``--since VALUE`` keeps the rows whose incremental column (the reader's
:meth:`~sync.contract.Reader.incremental_column`, ChunJun's ``increColumn``; or
``--since-column``) is at or after VALUE: pushed down to each side's reader where it can filter
(:meth:`~sync.contract.Reader.read_since`: a SQL condition, so a big table is not read whole),
and applied to both sides as a DuckDB condition, so they are filtered alike.

**A CDC job** (a stream reader with :meth:`~sync.contract.Reader.tables`) is verified table by
table: each captured table as it is now against its target (``Writer.read_back(table)``), "up
to the position the target has reached". That position is in the job's newest checkpoint whose
output is surely committed (:meth:`sync.state.StateDir.committed`), taken before anything is
read; after both sides were read, the reader lists the rows changed from there to the source's
end now (:meth:`~sync.contract.Reader.changes_since`), and their keys are left out of the
comparison and counted as changed since the target's position. A key not changed in between
holds the same row in the source now as at that position, and so must in the target: verify
reports equal while replication runs behind, and names a key the target lost or changed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import pyarrow as pa
import pyarrow.compute as pc

from sync.canonical import canonical_text, canonical_value
from sync.contract import CompletedCheckpoint, JobContext, Reader, Writer
from sync.errors import JobFailedError, JobFileError
from sync.job import job_changes
from sync.jobfile import LoadedJob
from sync.model import Params
from sync.registry import load, require
from sync.state import Checkpoint, StateDir

__all__ = ["Difference", "VerifyOptions", "VerifyReport", "verify"]

log = logging.getLogger(__name__)

_SEPARATOR = "\x1f"
_NULL = "\x00"
_CHUNK_ROWS = 65_536

Progress = Callable[[str, int], None]
"""Called with a side's name (``source``, ``target``; ``db.table source`` for CDC) and the rows
read on it so far."""


@dataclass(frozen=True)
class VerifyOptions:
    """What to compare, from the command line."""

    key: list[str] | None = None
    """Columns identifying a row (default: the source table's primary key)."""
    where: str | None = None
    since: str | None = None
    since_column: str | None = None
    buckets: int = 1024
    show: int = 10


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
    """One key that differs: ``missing`` from the target, ``extra`` in it, ``different`` or
    ``duplicate``; ``table`` is the source table of a CDC job."""

    kind: str
    key: str
    source: dict[str, Any] | None = None
    target: dict[str, Any] | None = None
    table: str | None = None


@dataclass
class VerifyReport:
    """What ``syncx verify`` found: of one comparison, or of a CDC job (then ``tables`` holds
    one report per table and the counts are their sums)."""

    job: str
    key: list[str]
    table: str | None = None
    """The source table (``db.table``) of one table of a CDC job."""
    source_rows: int = 0
    target_rows: int = 0
    source_read: int = 0
    """Rows read from the source, before ``--where``/``--since`` (after what the reader's query
    filtered)."""
    target_read: int = 0
    buckets: int = 0
    differing_buckets: int = 0
    missing: int = 0
    extra: int = 0
    different: int = 0
    duplicate: int = 0
    examples: list[Difference] = field(default_factory=list)
    changed: int | None = None
    """CDC: keys changed after the target's position, left out of the comparison."""
    checkpoint: int | None = None
    """CDC: the checkpoint whose position the target was compared at."""
    tables: list[VerifyReport] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        """True when the target holds exactly the source's rows (CDC: every key not changed
        since the target's position)."""
        if self.tables:
            return all(t.equal for t in self.tables)
        problems = self.missing + self.extra + self.different + self.duplicate
        return not problems and (not self.differing_buckets or self.changed is not None)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` report."""
        out: dict[str, Any] = {"job": self.job, "equal": self.equal}
        if self.table is not None:
            out["table"] = self.table
        out |= {
            "key": self.key,
            "sourceRows": self.source_rows,
            "targetRows": self.target_rows,
            "sourceRowsRead": self.source_read,
            "targetRowsRead": self.target_read,
            "buckets": self.buckets,
            "differingBuckets": self.differing_buckets,
            "missing": self.missing,
            "extra": self.extra,
            "different": self.different,
            "duplicate": self.duplicate,
            "examples": [
                {k: v for k, v in d.__dict__.items() if k != "table" or v is not None}
                for d in self.examples
            ],
        }
        if self.changed is not None:
            out |= {"changedSinceTarget": self.changed, "checkpoint": self.checkpoint}
        if self.tables:
            out["tables"] = [t.to_json() for t in self.tables]
        return out

    def add(self, part: VerifyReport, show: int) -> None:
        """Count one table's report into this CDC job's."""
        self.tables.append(part)
        for name in (
            "source_rows",
            "target_rows",
            "source_read",
            "target_read",
            "buckets",
            "differing_buckets",
            "missing",
            "extra",
            "different",
            "duplicate",
        ):
            setattr(self, name, getattr(self, name) + getattr(part, name))
        self.changed = (self.changed or 0) + (part.changed or 0)
        self.examples.extend(part.examples[: max(0, show - len(self.examples))])


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

    def __init__(
        self, names: list[str], key: list[str], condition: str | None, buckets: int
    ) -> None:
        missing = [k for k in key if k not in names]
        if missing:
            msg = f"--key {', '.join(missing)}: not a column read by the job ({', '.join(names)})"
            raise JobFileError(msg)
        self.duckdb = require("duckdb", "transform", "syncx verify")
        self.connection = self.duckdb.connect()
        self.connection.execute("SET TimeZone = 'UTC'")  # as the readers give timestamps
        self.names = names
        self.key = key
        self.condition = condition
        self.buckets = buckets
        columns = [f"c{i}" for i in range(len(names))]
        keys = ", ".join(f"c{names.index(k)}" for k in key)
        self._bucket = f"hash({keys}) % {buckets}"
        self._row = f"hash({', '.join(columns)})"

    def table(self, chunk: pa.Table) -> pa.Table:
        """The chunk with the source's column names, filtered by ``--where``/``--since``."""
        if chunk.num_columns != len(self.names):
            msg = (
                f"the target has {chunk.num_columns} columns and the source {len(self.names)}: "
                "verify pairs columns by position, as the job does"
            )
            raise JobFailedError(msg)
        table = chunk.rename_columns(self.names)
        if self.condition:
            sql = f"SELECT * FROM t WHERE {self.condition}"
            table = self._query(table, sql, "--where/--since").to_arrow_table()
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
        rows = pc.binary_join_element_wise(*_texts(taken, self.names), _SEPARATOR).to_pylist()
        keys = _key_texts(taken, self.key)
        return [(keys[j], int(h), str(rows[j])) for j, (_, h) in enumerate(found)]

    def _values(self, table: pa.Table) -> pa.Table:
        return pa.table({f"c{i}": canonical_value(table[n]) for i, n in enumerate(self.names)})

    def _query(self, table: pa.Table, sql: str, what: str = "verify") -> Any:
        self.connection.register("t", table)
        try:
            return self.connection.execute(sql)
        except self.duckdb.Error as exc:
            msg = f"{what}: {exc}"
            raise JobFileError(msg) from exc


def _texts(table: pa.Table, names: list[str]) -> list[pa.ChunkedArray]:
    """The canonical text of the columns ``names`` (NULL as :data:`_NULL`)."""
    return [pc.fill_null(canonical_text(table[n]), _NULL) for n in names]


def _key_texts(table: pa.Table, key: list[str]) -> list[str]:
    """Each row's key as the report names it: its columns' canonical text, joined."""
    parts = [column.to_pylist() for column in _texts(table, key)]
    return [_SEPARATOR.join(values) for values in zip(*parts, strict=True)]


def verify(
    job: LoadedJob,
    ctx: JobContext,
    options: VerifyOptions,
    *,
    state: StateDir | None = None,
    progress: Progress | None = None,
) -> VerifyReport:
    """Compare the job's source with what its writer wrote (a CDC job: table by table, at the
    position the target reached, from ``state``); see the module docs."""
    reader = job.reader_cls(job.reader_params, ctx)
    writer = job.writer_cls(job.writer_params, ctx)
    opened: list[Reader[Any]] = [reader]
    try:
        tables = reader.tables()
        if tables is None:
            if not reader.bounded:
                msg = (
                    f"{job.file.content.reader.name} is a stream whose tables cannot be listed: "
                    "verify the tables it replicates with a job that reads them (a bounded reader)"
                )
                raise JobFileError(msg)
            target = _target_reader(job, writer, ctx, reader, None, [])
            opened.append(target)
            reader.check()
            target.check()
            found = _Comparison(job.name, None, reader, target, options, ctx)
            found.run(progress)
            return found.settle(None)
        return _verify_changes(job, ctx, options, reader, writer, tables, state, opened, progress)
    finally:
        for each in opened:
            each.close()


def _verify_changes(
    job: LoadedJob,
    ctx: JobContext,
    options: VerifyOptions,
    reader: Reader[Any],
    writer: Writer[Any],
    tables: dict[str, Reader[Any]],
    state: StateDir | None,
    opened: list[Reader[Any]],
    progress: Progress | None,
) -> VerifyReport:
    """A CDC job: every table compared, leaving out the keys changed after the position of the
    job's newest committed checkpoint (taken before anything is read)."""
    checkpoint = _target_checkpoint(job, state)
    splits, positions = checkpoint.typed(reader.position_type, reader.split_type)
    stored = CompletedCheckpoint(
        id=checkpoint.id,
        positions={k: v.position for k, v in positions.items()},
        done=frozenset(k for k, v in positions.items() if v.done),
        final=checkpoint.final,
    )
    changes = reader.changes_since(splits, stored)
    reader.check()
    if not tables:
        msg = f"{job.file.content.reader.name} captures no table now: nothing to verify"
        raise JobFileError(msg)
    comparisons = []
    for name, table_reader in tables.items():
        table_reader.check()
        schema = table_reader.schema()
        names = list(schema.names) if schema is not None else []
        target = _target_reader(job, writer, ctx, table_reader, name, names)
        opened.append(target)
        target.check()
        found = _Comparison(job.name, name, table_reader, target, options, ctx)
        found.run(progress)
        comparisons.append(found)
    changed = _changed_keys(changes, {c.table: c.key for c in comparisons if c.table})
    report = VerifyReport(job=job.name, key=[], changed=0, checkpoint=checkpoint.id)
    for found in comparisons:
        part = found.settle(changed[found.table or ""])
        part.checkpoint = checkpoint.id
        report.add(part, options.show)
    return report


def _target_checkpoint(job: LoadedJob, state: StateDir | None) -> Checkpoint:
    """The checkpoint whose positions the target has surely reached (exit 2 when none)."""
    found = state.committed() if state is not None else None
    if found is None:
        where = state.checkpoints if state is not None else "the job's state folder"
        msg = (
            f"no checkpoint of job {job.name} in {where}: a CDC job is verified at the source "
            "position its target reached, which its checkpoints record; run the job with "
            "checkpoints (setting.restore.isRestore) first, or pass the --state-dir it ran with"
        )
        raise JobFileError(msg)
    diffs = job_changes(found.fingerprint, job)
    if diffs:
        listed = ", ".join(diffs[:8]) + (" ..." if len(diffs) > 8 else "")
        msg = (
            f"the job changed since checkpoint {found.id} ({listed}): its positions may not be "
            "this job's; verify with the job file (and -p values) the job ran with"
        )
        raise JobFileError(msg)
    return found


def _target_reader(
    job: LoadedJob,
    writer: Writer[Any],
    ctx: JobContext,
    source: Reader[Any],
    table: str | None,
    columns: list[str],
) -> Reader[Any]:
    """The reader of what the job's writer wrote (for a CDC job, of ``table``'s target)."""
    back = writer.read_back(table, columns)
    if back is None:
        what = "what it writes" if table is None else f"a table for {table}'s changes"
        msg = f"{job.file.content.writer.name} cannot read back {what}: nothing to verify"
        raise JobFileError(msg)
    target_name, extra = back
    target_cls = cast("type[Reader[Any]]", load("reader", target_name))
    raw = _carried_over(job.writer_params, target_cls.Parameters, source.params)
    return target_cls(target_cls.Parameters.model_validate(raw | extra), ctx)


class _Comparison:
    """One source (a table) against its target: both passes, and what differs before the keys
    changed since the target's position are known."""

    def __init__(
        self,
        job: str,
        table: str | None,
        source: Reader[Any],
        target: Reader[Any],
        options: VerifyOptions,
        ctx: JobContext,
    ) -> None:
        self.table = table
        self.options = options
        schema = source.schema()
        self.names = list(schema.names) if schema is not None else None
        key = options.key or source.key_columns()
        if not key:
            msg = (
                f"no key to compare rows by{f' in {table}' if table else ''}: pass --key "
                "COLUMN[,COLUMN] (the table has none)"
            )
            raise JobFileError(msg)
        self.key = key
        conditions = [options.where] if options.where else []
        if options.since is not None:
            conditions.append(_since(source, target, self.names, options))
        self.condition = " AND ".join(f"({c})" for c in conditions) or None
        parallelism = max(1, ctx.readers)
        prefix = f"{table} " if table else ""
        self.sides = [
            _Side(f"{prefix}source", source, parallelism),
            _Side(f"{prefix}target", target, parallelism),
        ]
        self.report = VerifyReport(job=job, key=key, table=table, buckets=options.buckets)
        self.candidates: list[tuple[str, str, tuple[int, str] | None, tuple[int, str] | None]] = []

    def run(self, progress: Progress | None) -> None:
        """Both passes: bucket digests of each side, then the keys of the differing buckets."""
        digests = self._digest_both(progress)
        differing = {
            b for b in set(digests[0]) | set(digests[1]) if digests[0].get(b) != digests[1].get(b)
        }
        self.report.differing_buckets = len(differing)
        if differing:
            self._explain(differing)

    def _hasher(self, chunk: pa.Table) -> _Hasher:
        names = self.names or chunk.column_names
        return _Hasher(names, self.key, self.condition, self.report.buckets)

    def _digest_both(self, progress: Progress | None) -> list[dict[int, tuple[int, int, int]]]:
        """First pass, both sides at once: count, XOR and sum of row hashes per bucket."""
        results: list[dict[int, _Bucket]] = [{}, {}]
        read = [0, 0]
        errors: list[BaseException] = []

        def run(index: int) -> None:
            side = self.sides[index]
            hasher: _Hasher | None = None
            try:
                for chunk in side.chunks():
                    hasher = hasher or self._hasher(chunk)
                    for b, n, x, s in hasher.digest(chunk):
                        results[index].setdefault(b, _Bucket()).add(n, x, s)
                    read[index] += chunk.num_rows
                    if progress is not None:
                        progress(side.name, read[index])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        self.report.source_rows = sum(b.count for b in results[0].values())
        self.report.target_rows = sum(b.count for b in results[1].values())
        self.report.source_read, self.report.target_read = read
        return [{k: (v.count, v.xor, v.total) for k, v in r.items()} for r in results]

    def _explain(self, differing: set[int]) -> None:
        """Second pass: the keys of the differing buckets, side by side."""
        rows: list[dict[str, tuple[int, str]]] = [{}, {}]
        for index, side in enumerate(self.sides):
            hasher: _Hasher | None = None
            for chunk in side.chunks():
                hasher = hasher or self._hasher(chunk)
                for k, h, r in hasher.rows_in(chunk, differing):
                    if k in rows[index]:
                        pair = ((h, r), None) if index == 0 else (None, (h, r))
                        self.candidates.append(("duplicate", k, *pair))
                    rows[index][k] = (h, r)
        source, target = rows
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
            self.candidates.append((kind, k, here, there))

    def settle(self, changed: set[str] | None) -> VerifyReport:
        """The report, the keys in ``changed`` left out (``None``: not a CDC job)."""
        report = self.report
        names = self.names or self.key
        if changed is not None:
            report.changed = len(changed)
        for kind, k, here, there in self.candidates:
            if changed is not None and k in changed and kind != "duplicate":
                continue
            setattr(report, kind, getattr(report, kind) + 1)
            difference = Difference(
                kind, k, _as_row(here, names), _as_row(there, names), self.table
            )
            _example(report, self.options.show, difference)
        return report


def _since(
    source: Reader[Any], target: Reader[Any], names: list[str] | None, options: VerifyOptions
) -> str:
    """``--since``: pushed down to both readers where they can filter; the DuckDB condition
    that filters both sides alike."""
    assert options.since is not None
    column = options.since_column or source.incremental_column()
    if column is None:
        msg = (
            "--since needs a column: the job's reader has no incremental column (increColumn); "
            "set increColumn in the job, or name the column with --since-column COLUMN"
        )
        raise JobFileError(msg)
    index = None
    if names is not None:
        index = next((i for i, n in enumerate(names) if n.lower() == column.lower()), None)
        if index is None:
            msg = f"--since-column {column}: not a column read by the job ({', '.join(names)})"
            raise JobFileError(msg)
        column = names[index]
    try:
        pushed = source.read_since(column, options.since)
        schema = target.schema() if index is not None else None
        if schema is not None and len(schema) == len(names or ()):
            pushed = target.read_since(schema.names[index], options.since) and pushed
    except ValueError as exc:
        raise JobFileError(f"--since: {exc}") from exc
    log.info("--since %s on %s%s", options.since, column, "" if pushed else " (read whole)")
    quoted = '"' + column.replace('"', '""') + '"'
    return f"{quoted} >= '" + options.since.replace("'", "''") + "'"


def _changed_keys(
    changes: Iterable[tuple[str, pa.Table]], keys: dict[str, list[str]]
) -> dict[str, set[str]]:
    """The keys (as reported) of the rows changed, per compared table."""
    found: dict[str, set[str]] = {table: set() for table in keys}
    for table, rows in changes:
        key = keys.get(table)
        if key is None or not rows.num_rows:
            continue
        missing = [k for k in key if k not in rows.column_names]
        if missing:
            msg = f"{table}: its changes carry no column {', '.join(missing)} of the key"
            raise JobFailedError(msg)
        found[table].update(_key_texts(rows, key))
    return found


def _carried_over(params: Params, to: type[Params], source: Params) -> dict[str, Any]:
    """The fields ``params`` shares with the model ``to``, by their job-file names (and the
    source reader's ``splitPk``, so a SQL target is read in key ranges as the source is)."""
    shared = set(type(params).model_fields) & set(to.model_fields)
    raw = params.model_dump(by_alias=True, include=shared, exclude_none=True)
    if "split_pk" in to.model_fields and getattr(source, "split_pk", None) is not None:
        raw["splitPk"] = source.split_pk  # type: ignore[attr-defined]
    return raw


def _example(report: VerifyReport, show: int, difference: Difference) -> None:
    if len(report.examples) < show:
        report.examples.append(difference)


def _as_row(found: tuple[int, str] | None, names: list[str]) -> dict[str, Any] | None:
    if found is None:
        return None
    values = found[1].split(_SEPARATOR)
    return {n: (None if v == _NULL else v) for n, v in zip(names, values, strict=False)}
