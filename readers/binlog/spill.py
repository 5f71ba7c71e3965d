"""Changes waiting for their source transaction's end: in memory up to a bound, then on disk.

The stream emits a source transaction only whole (after its XID; an XA transaction at its
``XA COMMIT``), so its changes wait until then. A :class:`ChangeBuffer` holds them in emission
order: built :class:`Part` s (one batch of one table's changes each), then per table the changes
not built yet (fewer than a batch). While a buffer's parts hold at most
``transactionBufferBytes`` of Arrow data they stay in memory; past that they are written to the
buffer's spill file, and when the transaction is emitted they are read back one at a time, in
order: a 10-million-row ``UPDATE`` costs disk, not memory. Each open transaction has its buffer
(the flush window, which also holds the small transactions committed just before; and each
prepared XA transaction), so each has its bound and its file.

A spill file is a sequence of Arrow IPC streams, one per part (the parts of a transaction are of
several tables, hence several schemas, and a part is read back from its offset alone). It is
made in :attr:`~sync.contract.JobContext.temp_dir` (``tmp/`` in the job's state folder) already
unlinked (``O_TMPFILE``; else created and unlinked at once), readable by its owner only, so the
kernel frees it when it is closed — once its transaction is emitted, at an ``XA ROLLBACK``, when
the stream reconnects or stops — and when the process ends however it ends: a SIGKILL leaves no
file to clean up. It holds the captured rows (what the target gets), never a login.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from readers.binlog.decoder import Change, TableShape
from sync.contract import DirtyRecord
from sync.errors import FatalError, disk_full_as, is_disk_full

if TYPE_CHECKING:
    from readers.binlog.positions import BinlogPosition

__all__ = ["ChangeBuffer", "Part", "Spill", "records"]

log = logging.getLogger(__name__)

SPILLING = "spilling a source transaction into"
"""How a full disk while spilling is told: ``no space left on device spilling ... into DIR``."""


def records(change: Change, *, double_updates: bool) -> int:
    """The records ``change`` becomes (what :attr:`BinlogPosition.emitted` counts): one, two
    for an update when ``double_updates`` (paving with ``splitUpdate``)."""
    return 2 if double_updates and change[0] == "u" else 1


@contextlib.contextmanager
def _using(folder: Path) -> Iterator[None]:
    """A full disk under ``folder`` as :class:`DiskFullError`, any other failure of the spill
    folder or file as a fatal error naming the folder (not as a lost connection: a reconnect
    would not cure it)."""
    with disk_full_as(folder, what=SPILLING):
        try:
            yield
        except OSError as exc:
            if is_disk_full(exc):
                raise
            msg = (
                f"binlogreader cannot spill a big source transaction into {folder} "
                f"({exc.strerror or exc}): make that folder writable, or raise "
                "transactionBufferBytes to hold such transactions in memory"
            )
            raise FatalError(msg) from exc


class SpillFile:
    """One buffer's spill file: parts written back to back, read back by offset."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        with _using(folder):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._file = tempfile.TemporaryFile(dir=folder, prefix="binlog-spill-")  # noqa: SIM115 - closed by close()

    def write(self, batch: pa.RecordBatch) -> tuple[int, int]:
        """Append ``batch`` (straight into the file: no copy of it in memory); its (offset,
        size)."""
        with _using(self._folder):
            offset = self._file.seek(0, os.SEEK_END)
            with pa.ipc.new_stream(pa.PythonFile(self._file, mode="w"), batch.schema) as writer:
                writer.write_batch(batch)
            self._file.flush()
            return offset, self._file.tell() - offset

    def read(self, offset: int, size: int) -> pa.RecordBatch:
        """The batch written at ``offset``."""
        with _using(self._folder):
            self._file.seek(offset)
            data = self._file.read(size)
        return pa.ipc.open_stream(data).read_next_batch()

    def close(self) -> None:
        """Close (and so free) the file; again is harmless. What a failed write (a full disk)
        left buffered fails the close's flush again: the file is dropped all the same."""
        with contextlib.suppress(OSError):
            self._file.close()


class Spill:
    """Where a stream's buffers spill, past how many bytes each, and their files still open."""

    def __init__(self, folder: Path, limit: int) -> None:
        self.folder = folder
        self.limit = limit
        self._files: weakref.WeakSet[SpillFile] = weakref.WeakSet()

    def open(self) -> SpillFile:
        """A new spill file."""
        file = SpillFile(self.folder)
        self._files.add(file)
        return file

    def close_all(self) -> None:
        """Close every spill file still open (the stream stops or reconnects)."""
        for file in list(self._files):
            file.close()


@dataclass
class Part:
    """One batch of one table's changes in a buffer: in memory, or at ``offset`` of ``file``."""

    table: str
    records: int
    """The records it stands for (what ``emitted`` counts), left-out ones included."""
    last_ts: int
    """Epoch ms of its last change."""
    dirty: list[tuple[int, int, DirtyRecord]]
    """Changes left out because a value did not convert, reported when the part is emitted:
    (record offset in the part, records, the record)."""
    batch: pa.RecordBatch | None
    file: SpillFile | None = None
    offset: int = 0
    size: int = 0

    def load(self) -> pa.RecordBatch:
        """The batch, read back from the spill file if it is there."""
        if self.batch is not None:
            return self.batch
        assert self.file is not None
        return self.file.read(self.offset, self.size)

    def without(self, count: int) -> Part:
        """The part without its first ``count`` records (emitted before a restore; ``count``
        falls between two changes)."""
        left_out = sum(n for at, n, _ in self.dirty if at < count)
        return Part(
            self.table,
            self.records - count,
            self.last_ts,
            [(at - count, n, record) for at, n, record in self.dirty if at >= count],
            self.load().slice(count - left_out),
        )


@dataclass
class _Segment:
    """Consecutive changes of one table with one layout, not built into a part yet."""

    shape: TableShape
    changes: list[Change] = field(default_factory=list)


class ChangeBuffer:
    """Changes of whole source transactions (and of the open one) not emitted yet, in emission
    order: per table in the order the source made them (see the module)."""

    def __init__(
        self,
        build: Callable[[TableShape, list[Change]], Part],
        step: int,
        spill: Spill,
        *,
        double_updates: bool,
    ) -> None:
        self._build = build
        self._step = step
        self._spill = spill
        self._double = double_updates
        self.parts: list[Part] = []
        self._segments: list[_Segment] = []
        self._last: dict[str, _Segment] = {}
        self._memory = 0
        """Bytes of the parts in memory."""
        self._file: SpillFile | None = None
        self._files: list[SpillFile] = []
        """The files its parts are in: its own, and those of XA transactions it took."""
        self.rows = 0
        """Records admitted and not emitted."""
        self.opened = 0.0
        """When the first of them came (monotonic)."""
        self.boundary: BinlogPosition | None = None
        """The transaction boundary the changes end at (the flush window's)."""

    def admit(self, shape: TableShape, changes: list[Change], skip: dict[str, int]) -> None:
        """Changes of ``shape``'s table after the others; the first ``skip[table]`` records
        (emitted before a restore) are dropped from ``skip``'s count instead."""
        name = shape.layout.qualified
        segment = self._last.get(name)
        if segment is None or segment.shape is not shape:
            if segment is not None:
                self._seal(segment)  # the table's changes of its earlier layout go first
            segment = self._last[name] = _Segment(shape)
            self._segments.append(segment)
        for change in changes:
            count = records(change, double_updates=self._double)
            if skip.get(name, 0) > 0:
                skip[name] -= count
                continue
            self._count(count)
            segment.changes.append(change)
            if len(segment.changes) >= self._step:
                self._seal(segment)

    def take(self, other: ChangeBuffer, skip: dict[str, int]) -> None:
        """Everything of ``other`` (an XA transaction at its ``XA COMMIT``) after this buffer's
        changes, dropping as :meth:`admit` does; ``other`` is left empty."""
        if other.parts:
            self.seal()  # this buffer's changes go first
        for part in other.parts:
            count = min(skip.get(part.table, 0), part.records)
            if count:
                skip[part.table] -= count
            if count < part.records:
                self._count(part.records - count)
                self._append(part.without(count) if count else part)
        self._files += other._files
        for segment in other._segments:
            self.admit(segment.shape, segment.changes, skip)
        other._files = []
        other.clear()

    def seal(self) -> None:
        """Build every change not built yet into parts: :attr:`parts` is then everything."""
        for segment in self._segments:
            self._seal(segment)

    def clear(self) -> None:
        """Forget everything (emitted, rolled back, or read again after a reconnect) and close
        the spill files."""
        for file in self._files:
            file.close()
        self._files = []
        self._file = None
        self.parts = []
        self._segments = []
        self._last = {}
        self._memory = 0
        self.rows = 0
        self.boundary = None

    def _count(self, count: int) -> None:
        if not self.rows:
            self.opened = time.monotonic()
        self.rows += count

    def _seal(self, segment: _Segment) -> None:
        if segment.changes:
            self._append(self._build(segment.shape, segment.changes))
            segment.changes = []

    def _append(self, part: Part) -> None:
        self.parts.append(part)
        if part.batch is not None:
            self._memory += part.batch.nbytes
            if self._memory > self._spill.limit:
                self._spill_parts()

    def _spill_parts(self) -> None:
        """The parts in memory into the spill file (made at the first spill)."""
        if self._file is None:
            log.info(
                "binlogreader: a source transaction holds more than %d bytes of changes "
                "(transactionBufferBytes): spilling them to %s",
                self._spill.limit,
                self._spill.folder,
            )
            self._file = self._spill.open()
            self._files.append(self._file)
        for part in self.parts:
            if part.batch is not None:
                part.offset, part.size = self._file.write(part.batch)
                part.file, part.batch = self._file, None
        self._memory = 0
