"""The connector conformance kit: one pytest suite every connector runs against itself.

A connector's test module subclasses one or more of the base classes below (their names do not
start with ``Test``, so pytest collects only the subclasses) and defines one fixture each:

- :class:`ReaderConformance` needs ``reader_case`` → :class:`ReaderCase`: the plugin name, its
  ``parameter`` block over seeded data, and the rows it must deliver;
- :class:`WriterConformance` needs ``writer_case`` → :class:`WriterCase`: the plugin name, its
  ``parameter`` block for an empty target, the rows to write and a function reading back what is
  visible in the target (and, optionally, what this job left staged);
- :class:`CrashConformance` needs ``job_case`` → :class:`JobCase`: a whole job file, the rows
  the target must hold at the end, and the same read-back functions.

Plugins are loaded by name through :mod:`sync.registry` and their parameters validated by their
own model, exactly as a job file would have them: the kit tests what a job would run.

What is checked (the contract of :mod:`sync.contract`):

- every split's data and every position a split reader returns after each item round-trip
  through ``json.dumps``/``json.loads`` and :meth:`State.from_json` unchanged, and are of the
  declared ``split_type``/``position_type``;
- resuming a split from the position after *every* item (a fresh reader, as a restore builds
  one) continues with exactly the rows that were left: none lost, none repeated;
- ``commit`` and ``abort`` are idempotent (twice is the same as once), ``abort`` after
  ``commit`` loses nothing, ``commit`` after ``abort`` brings nothing back (it may raise), a
  handle round-trips through JSON as ``handle_type``, and prepared data stays invisible until
  its commit (for ``exactly-once`` writers);
- ``Writer.begin`` after a killed process (a real ``SIGKILL`` of a child that prepared two
  checkpoints and was writing a third) commits the restored checkpoint's handles and removes
  everything else the job left;
- a crash round: the job runs as a real ``syncx run`` subprocess, is killed with ``SIGKILL`` at
  random moments and at exact checkpoint steps, restored with ``--restore latest`` until a run
  succeeds, and the target then holds exactly the expected rows (all of them, and for an
  ``at-least-once`` writer nothing that was not expected).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from sync import registry
from sync.contract import (
    Handle,
    JobContext,
    Position,
    Reader,
    Split,
    SplitReader,
    State,
    Writer,
    decode,
    encode,
    job_identity,
)
from sync.errors import JobFileError
from sync.jobfile import parse_params
from sync.model import Setting
from sync.testing.crash import (
    CrashReport,
    Kill,
    assert_exact,
    compare_exact,
    crash_seed,
    run_until_done,
    write_job,
)

__all__ = [
    "CrashConformance",
    "JobCase",
    "ReaderCase",
    "ReaderConformance",
    "WriterCase",
    "WriterConformance",
    "build_reader",
    "build_writer",
    "crash_round",
    "json_round_trip",
]

_JOB = "conformance"
_RUN = "conformance-run"
_CRASH_STATE = "crash-state"
"""The crash round's state folder under ``tmp_path``; its run logs are in ``crash-state-logs``."""

ReadBack = Callable[[], pa.Table]
"""Returns the rows visible in a writer's target now (with the expected rows' columns)."""
Leftovers = Callable[[str], list[str]]
"""Given the job's identity (:attr:`JobContext.job_id`, which names its transactions), returns
what the job left in the target besides visible rows (staged files, prepared transactions,
stage-table rows), by name: empty when nothing is left."""


@dataclass
class ReaderCase:
    """A reader over seeded data, and what it must deliver.

    An unbounded reader (a stream) is read until it has delivered as many rows as ``expected``
    holds and then ticks idle (``None``): its case has one split.
    """

    name: str
    """The plugin's name in a job file (``filereader``)."""
    parameters: dict[str, Any]
    """Its ``parameter`` block, as a job file holds it (aliases and all)."""
    expected: pa.Table
    """Every row the reader delivers, over all splits, in any order (its columns: those of the
    reader's batches that are compared; others are ignored)."""
    key: list[str]
    """Columns that identify a row of ``expected``."""
    channels: int = 1
    """Reader subtasks: ``plan`` is asked for this many."""
    batch_rows: int = 7
    """Rows per batch asked of the reader (small: many positions to resume from)."""


@dataclass
class WriterCase:
    """A writer over an empty target, the rows to write, and how to look at the target."""

    name: str
    parameters: dict[str, Any]
    rows: pa.Table
    """What the kit writes (in three parts: committed, aborted, never prepared); at least 3 rows."""
    key: list[str]
    read_back: ReadBack | None
    """The visible rows; ``None`` when the target cannot be looked at (a stream discarded)."""
    leftovers: Leftovers = field(default=lambda _job_id: [])


@dataclass
class JobCase:
    """A whole job for the crash round: reader, writer, and what the target holds at the end."""

    job: dict[str, Any]
    """The job file (``{"job": {"content": [...], "setting": {...}}}``); the kit adds
    checkpoints every 0.3 s and, unless ``setting.speed.record`` is set, paces it to last about
    ``seconds`` so that kills land while it works."""
    expected: pa.Table
    key: list[str]
    read_back: ReadBack
    leftovers: Leftovers = field(default=lambda _job_id: [])
    seconds: float = 3.0


# -- building plugins as a job would -----------------------------------------------------------


def _parameters(kind: registry.Kind, cls: type[Reader] | type[Writer], raw: dict[str, Any]) -> Any:
    params, issues = parse_params(cls.Parameters, raw, f"job.content[0].{kind}.parameter")
    if issues:
        raise JobFileError(issues)
    return params


def _context(job_name: str, state_dir: Path, run_id: str, batch_rows: int) -> JobContext:
    return JobContext.of(
        job_name, state_dir, Setting(), run_id=run_id, checkpoints=True, batch_rows=batch_rows
    )


def build_reader(
    name: str,
    parameters: dict[str, Any],
    state_dir: Path,
    *,
    job_name: str = _JOB,
    run_id: str = _RUN,
    batch_rows: int = 4096,
) -> Reader:
    """The reader plugin ``name`` with ``parameters``, loaded and validated as a job file's."""
    cls = registry.load("reader", name)
    assert issubclass(cls, Reader), f"{name} is not a reader"
    params = _parameters("reader", cls, parameters)
    return cls(params, _context(job_name, state_dir, run_id, batch_rows))


def build_writer(
    name: str,
    parameters: dict[str, Any],
    state_dir: Path,
    *,
    job_name: str = _JOB,
    run_id: str = _RUN,
) -> Writer:
    """The writer plugin ``name`` with ``parameters``, loaded and validated as a job file's."""
    cls = registry.load("writer", name)
    assert issubclass(cls, Writer), f"{name} is not a writer"
    params = _parameters("writer", cls, parameters)
    return cls(params, _context(job_name, state_dir, run_id, 4096))


def json_round_trip(kind: type[State] | None, value: Any) -> Any:
    """``value`` stored as a checkpoint stores it and rebuilt as the engine rebuilds it."""
    return decode(kind, json.loads(json.dumps(encode(value))))


def _check_state(kind: type[State] | None, value: Any, what: str) -> None:
    """``value`` is of the declared type and survives a JSON round trip unchanged."""
    if value is None:
        return
    if kind is not None:
        assert isinstance(value, kind), f"{what} {value!r} is not the declared {kind.__name__}"
    elif isinstance(value, State):
        msg = f"{what} is a {type(value).__name__} but the plugin declares no type for it"
        raise AssertionError(msg)
    rebuilt = json_round_trip(kind, value)
    assert rebuilt == value, f"{what} changed through JSON: {value!r} became {rebuilt!r}"


# -- readers -----------------------------------------------------------------------------------


@dataclass
class _Item:
    rows: pa.Table | None
    position: Position


def _as_table(batch: pa.RecordBatch | None) -> pa.Table | None:
    return None if batch is None else pa.Table.from_batches([batch])


def _drain(opened: SplitReader, kind: type[State] | None, until: int | None) -> list[_Item]:
    """Every item of an open split with the position after it (JSON round-tripped).

    A bounded split is read to its end; an unbounded one (``until`` rows wanted) until it has
    delivered ``until`` rows and then idles (an idle tick)."""
    items: list[_Item] = []
    rows = 0
    for number, batch in enumerate(opened.batches(), start=1):
        position = opened.snapshot()
        _check_state(kind, position, "a position")
        items.append(_Item(_as_table(batch), json_round_trip(kind, position)))
        opened.notify_checkpoint_complete(number, position)
        rows += 0 if batch is None else batch.num_rows
        if until is not None and batch is None and rows >= until:
            break
    return items


def _rows(items: list[_Item], schema: pa.Schema) -> pa.Table:
    tables = [item.rows.select(schema.names).cast(schema) for item in items if item.rows]
    return pa.concat_tables(tables) if tables else schema.empty_table()


class ReaderConformance:
    """The reader half of the kit. Define a ``reader_case`` fixture returning a
    :class:`ReaderCase`; the tests below run against it."""

    def _read_split(
        self,
        case: ReaderCase,
        state_dir: Path,
        split: Split,
        position: Position,
        wanted: int | None = None,
    ) -> list[_Item]:
        """Read a split from ``position`` with a fresh reader; an unbounded one until it has
        delivered ``wanted`` rows (default: all expected) and then ticks idle."""
        reader = build_reader(case.name, case.parameters, state_dir, batch_rows=case.batch_rows)
        try:
            reader.check()
            opened = reader.open(split, position)
            try:
                until = None if reader.bounded else case.expected.num_rows
                if until is not None and wanted is not None:
                    until = wanted
                return _drain(opened, type(reader).position_type, until)
            finally:
                opened.close()
        finally:
            reader.close()

    def _plan(self, case: ReaderCase, state_dir: Path) -> tuple[type[Reader], list[Split]]:
        reader = build_reader(case.name, case.parameters, state_dir, batch_rows=case.batch_rows)
        try:
            reader.check()
            splits = reader.plan(case.channels)
            assert reader.bounded or len(splits) == 1, (
                "an unbounded reader is read until it delivered the expected rows: give its "
                f"case one split, not {len(splits)}"
            )
            return type(reader), splits
        finally:
            reader.close()

    def test_splits_and_positions_round_trip_json(
        self, reader_case: ReaderCase, tmp_path: Path
    ) -> None:
        """Split data and every position are the declared types and survive JSON unchanged."""
        cls, splits = self._plan(reader_case, tmp_path / "state")
        assert splits, "the reader planned no splits over data that has rows"
        assert len({s.id for s in splits}) == len(splits), "split ids must be distinct"
        read = []
        for split in splits:
            _check_state(cls.split_type, split.data, f"split {split.id}'s data")
            stored = json.loads(json.dumps(split.to_json()))
            rebuilt = Split.from_json(stored, cls.split_type)
            assert rebuilt == split, f"split {split.id} changed through JSON: {rebuilt!r}"
            items = self._read_split(reader_case, tmp_path / "state", rebuilt, None)
            read.append(_rows(items, reader_case.expected.schema))
        assert_exact(reader_case.expected, pa.concat_tables(read), reader_case.key)

    def test_resume_after_every_item_is_exact(
        self, reader_case: ReaderCase, tmp_path: Path
    ) -> None:
        """From the position after any item, a fresh reader continues with exactly the rest."""
        case, state = reader_case, tmp_path / "state"
        schema = case.expected.schema
        _, splits = self._plan(case, state)
        resumes = 0
        for split in splits:
            items = self._read_split(case, state, split, None)
            whole = _rows(items, schema)
            for index, item in enumerate(items):
                head = _rows(items[: index + 1], schema)
                rest = self._read_split(
                    case, state, split, item.position, whole.num_rows - head.num_rows
                )
                again = pa.concat_tables([head, _rows(rest, schema)])
                problems = compare_exact(whole, again, case.key)
                assert not problems, (
                    f"split {split.id} resumed after item {index + 1} of {len(items)} "
                    f"(position {encode(item.position)!r}): " + "; ".join(problems)
                )
                resumes += 1
        assert resumes >= 2, (
            f"only {resumes} position(s) to resume from: give the case more rows or a smaller "
            "batch (batch_rows, fetchSize)"
        )


# -- writers -----------------------------------------------------------------------------------


def _parts(rows: pa.Table) -> tuple[pa.Table, pa.Table, pa.Table]:
    """The case's rows in three non-empty parts."""
    if rows.num_rows < 3:
        msg = "a WriterCase needs at least 3 rows"
        raise ValueError(msg)
    third = rows.num_rows // 3
    return rows.slice(0, third), rows.slice(third, third), rows.slice(2 * third)


def _batches(table: pa.Table) -> Iterator[pa.RecordBatch]:
    yield from table.combine_chunks().to_batches()


def _keys(table: pa.Table, key: list[str]) -> set[tuple[Any, ...]]:
    columns = [table.column(k).to_pylist() for k in key]
    return set(zip(*columns, strict=True))


class WriterConformance:
    """The writer half of the kit. Define a ``writer_case`` fixture returning a
    :class:`WriterCase`; the tests below run against it."""

    def _writer(self, case: WriterCase, state_dir: Path) -> Writer:
        return build_writer(case.name, case.parameters, state_dir, job_name=_JOB, run_id=_RUN)

    def _visible(self, case: WriterCase, expected: pa.Table, exactly_once: bool, when: str) -> None:
        """The target shows ``expected`` (exactly-once), or at least it (at-least-once)."""
        if case.read_back is None:
            return
        actual = case.read_back()
        if exactly_once:
            problems = compare_exact(expected, actual, case.key)
            assert not problems, f"{when}: " + "; ".join(problems)
            return
        missing = _keys(expected, case.key) - _keys(actual, case.key)
        assert not missing, (
            f"{when}: {len(missing)} committed rows missing, e.g. {sorted(missing)[:3]}"
        )

    def test_commit_and_abort_are_idempotent(self, writer_case: WriterCase, tmp_path: Path) -> None:
        """Prepared is invisible, commit shows it (twice: once), abort after commit loses
        nothing, abort is idempotent and commit after abort brings nothing back."""
        case = writer_case
        first, second, _ = _parts(case.rows)
        empty = case.rows.schema.empty_table()
        writer = self._writer(case, tmp_path / "state")
        cls = type(writer)
        exactly_once = writer.effective_semantic() == "exactly-once"
        try:
            writer.check()
            writer.begin([], fresh=True)
            task = writer.open(0, 1, case.rows.schema)
            try:
                for batch in _batches(first):
                    assert task.write(batch) == [], "clean rows came back as dirty records"
                handle = task.prepare(1)
                _check_state(cls.handle_type, handle, "a handle")
                self._visible(case, empty, exactly_once, "after prepare, before commit")
                if handle is not None:
                    task.commit(handle)
                    self._visible(case, first, exactly_once, "after commit")
                    task.commit(json_round_trip(cls.handle_type, handle))
                    self._visible(case, first, exactly_once, "after a second commit")
                    task.abort(handle)
                    self._visible(case, first, exactly_once, "after abort of a committed handle")
                for batch in _batches(second):
                    task.write(batch)
                aborted = task.prepare(2)
                if aborted is not None:
                    task.abort(aborted)
                    task.abort(json_round_trip(cls.handle_type, aborted))
                    self._visible(case, first, exactly_once, "after abort (twice)")
                    # refusing (raising) is allowed, bringing the rows back is not
                    with contextlib.suppress(Exception):
                        task.commit(aborted)
                    self._visible(case, first, exactly_once, "after commit of an aborted handle")
            finally:
                task.close()
        finally:
            writer.close()
        if exactly_once:
            left = case.leftovers(job_identity(_JOB, tmp_path / "state"))
            assert left == [], f"aborted work left behind: {left}"

    def test_begin_after_a_killed_run(self, writer_case: WriterCase, tmp_path: Path) -> None:
        """A process that prepared checkpoints 1 and 2 and was writing more is SIGKILLed;
        ``begin`` with checkpoint 1's handles commits them and removes the rest (twice: the same)."""
        case = writer_case
        first, _, _ = parts = _parts(case.rows)
        state = tmp_path / "state"
        handles = _killed_writer(case, state, tmp_path, list(parts))
        exactly_once = True
        for attempt in ("restore", "second restore"):
            writer = self._writer(case, state)
            exactly_once = writer.effective_semantic() == "exactly-once"
            restored = [decode(writer.handle_type, h) for h in handles[:1] if h is not None]
            try:
                writer.check()
                writer.begin(restored, fresh=False)
            finally:
                writer.close()
            # An at-least-once writer promises nothing here: the readers replay what it lost.
            if exactly_once:
                self._visible(case, first, exactly_once, f"after the {attempt} of checkpoint 1")
                left = case.leftovers(job_identity(_JOB, state))
                assert left == [], f"left behind after the {attempt}: {left}"


def _killed_writer(
    case: WriterCase, state_dir: Path, tmp_path: Path, parts: list[pa.Table]
) -> list[Handle]:
    """Run :mod:`sync.testing._killed_writer` in a child, SIGKILL it mid-write; its handles."""
    spec = tmp_path / "killed-writer.json"
    data = tmp_path / "killed-writer.arrow"
    with pa.OSFile(str(data), "wb") as sink, pa.ipc.new_file(sink, case.rows.schema) as out:
        for part in parts:
            out.write_table(part)
    spec.write_text(
        json.dumps(
            {
                "name": case.name,
                "parameters": case.parameters,
                "state_dir": str(state_dir),
                "job_name": _JOB,
                "run_id": _RUN,
                "data": str(data),
                "parts": [p.num_rows for p in parts],
            }
        ),
        encoding="utf-8",
    )
    child = subprocess.Popen(
        [sys.executable, "-m", "sync.testing._killed_writer", str(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    handles: list[Handle] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            verb, _, rest = line.strip().partition(" ")
            if verb == "prepared":
                handles.append(json.loads(rest))
            elif verb == "writing":
                break
        else:
            child.wait(timeout=30)
            stderr = child.stderr.read() if child.stderr else ""
            msg = f"the writer child ended before it was killed:\n{stderr[-3000:]}"
            raise AssertionError(msg)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    assert child.returncode == -signal.SIGKILL, f"child ended with {child.returncode}"
    assert len(handles) == 2, f"the child prepared {len(handles)} checkpoints, not 2"
    return handles


# -- the crash round ---------------------------------------------------------------------------


def crash_round(case: JobCase, tmp_path: Path, name: str) -> CrashReport:
    """Run ``case.job`` with ``syncx run`` until a run succeeds, restored after each kill:
    SIGKILLed at two exact steps of a checkpoint (a writer prepared, the checkpoint stored),
    then once at a random moment after its first checkpoint and once at a random moment of
    start-up or work (a kill that comes after the run ended is none), then after the final
    commit. The seed is ``SYNCX_CRASH_SEED`` or one per ``name``."""
    seed = crash_seed(name)
    rng = random.Random(seed)
    job = json.loads(json.dumps(case.job))
    setting = job["job"].setdefault("setting", {})
    speed = setting.setdefault("speed", {})
    if not speed.get("record"):
        speed["record"] = max(1, round(case.expected.num_rows / case.seconds))
    setting.setdefault("restore", {})["isRestore"] = True
    window = (0.6, max(0.7, case.seconds * 0.6))
    # the exact steps first (they always land: at least two kills), then random moments
    steps = [Kill(crash_at="writer-prepared@1"), Kill(crash_at="checkpoint-stored@1")]
    moments = [
        Kill(after=round(rng.uniform(0.0, 0.5), 3), after_output=" stored"),
        Kill(after=round(rng.uniform(*window), 3)),
    ]
    rng.shuffle(steps)
    rng.shuffle(moments)
    plan = [*steps, *moments, Kill(crash_at="final-committed@1")]
    job_path = write_job(tmp_path / f"{name}.json", job)
    state = tmp_path / _CRASH_STATE
    report = run_until_done(
        job_path, state, plan, seed=seed, extra_args=["--checkpoint-interval", "0.3"]
    )
    print(report.summary())
    return report


class CrashConformance:
    """The crash round of the kit. Define a ``job_case`` fixture returning a :class:`JobCase`."""

    exactly_once: ClassVar[bool] = True
    """False for a job whose writer is ``at-least-once``: rows may then repeat after a kill."""

    def test_sigkill_round_ends_exact(self, job_case: JobCase, tmp_path: Path) -> None:
        """Killed at random moments and checkpoint steps, restored until done: exact target."""
        name = f"conformance-{type(self).__name__}-{uuid.uuid4().hex[:6]}"
        report = crash_round(job_case, tmp_path, name)
        assert report.kills >= 2, f"only {report.kills} kill(s) landed:\n{report.summary()}"
        actual = job_case.read_back()
        context = report.summary()
        if self.exactly_once:
            assert_exact(job_case.expected, actual, job_case.key, context)
            left = job_case.leftovers(job_identity(name, tmp_path / _CRASH_STATE))
            assert left == [], f"left behind: {left}\n{context}"
            return
        missing = _keys(job_case.expected, job_case.key) - _keys(actual, job_case.key)
        assert not missing, f"{len(missing)} rows lost, e.g. {sorted(missing)[:3]}\n{context}"
        unexpected = pc.invert(
            pc.is_in(actual.column(job_case.key[0]), job_case.expected.column(job_case.key[0]))
        )
        assert not pc.any(unexpected).as_py(), f"rows that were never read arrived\n{context}"
