"""A Kafka transaction's messages on local disk until the transaction commits.

librdkafka cannot commit a transaction prepared by a process that died, so the messages of a
checkpoint whose transaction had not committed when its process stopped must be written again
on the restore. The spool keeps them for that: one Arrow IPC stream file per transaction (topic,
key, value of each message, in produce order), written as the messages are produced, made
durable (:class:`~libs.fs.DurableFile`, and an fsync of its folder) when the transaction is
prepared, that is before the checkpoint naming it is stored, and deleted once the transaction
aborted or committed (then an empty commit marker stays until the task's next commit). Writing
it costs a copy of the message bytes on their way to the disk, beside the producing thread; a
header on every message, which the alternative (finding the messages again in the topic log)
needs, cost several times more.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pyarrow as pa

from libs.fs import DurableFile, remove_later

__all__ = ["Spool", "commit_marker", "read_spool", "spool_folder"]

_SCHEMA = pa.schema(
    [
        ("topic", pa.dictionary(pa.int32(), pa.string())),
        ("key", pa.string()),
        ("value", pa.string()),
    ]
)


def spool_folder(temp_dir: Path) -> Path:
    """Where a job's Kafka spools live: ``kafka/`` in the job's temporary folder."""
    return temp_dir / "kafka"


class Spool:
    """The spool of one open transaction."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = DurableFile(path)
        self._stream = pa.ipc.new_stream(self._file, _SCHEMA)

    def add(self, topic: str, keys: pa.Array | None, values: pa.Array) -> None:
        """Append messages (``keys`` ``None``: messages without a key)."""
        count = len(values)
        topics = pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(count, np.int32)), pa.array([topic], pa.string())
        )
        if keys is None:
            keys = pa.nulls(count, pa.string())
        self._stream.write_batch(pa.record_batch([topics, keys, values], schema=_SCHEMA))

    def seal(self) -> None:
        """Close the file and make it durable: the checkpoint that names it is stored next."""
        self._stream.close()
        self._file.close()
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    def discard(self) -> None:
        """Close and delete the spool (its transaction aborted)."""
        with contextlib.suppress(Exception):
            self._stream.close()
        self._file.abandon()
        self.path.unlink(missing_ok=True)

    def committed(self) -> tuple[Path, Future[None]]:
        """Replace the spool by its commit marker (its transaction committed); returns the
        marker, and the deletion of the spool, which runs in the background (it can take a
        while: :func:`~libs.fs.remove_later`; a spool left beside its marker is deleted by the
        next start). The marker answers for the transaction when the broker's commit token
        does not show it (Tansu can leave an acknowledged commit unresolved, its token never
        applied): a restore must not write it again, nor fail for want of its spool."""
        marker = commit_marker(self.path)
        marker.touch()
        return marker, remove_later(self.path)


def commit_marker(spool: Path) -> Path:
    """The file that says ``spool``'s transaction committed."""
    return spool.with_name(spool.name + ".committed")


def read_spool(path: Path) -> Iterator[tuple[str, pa.Array | None, pa.Array]]:
    """A spool's messages as (topic, keys, values) batches, in produce order."""
    with pa.ipc.open_stream(pa.memory_map(str(path))) as stream:
        for batch in stream:
            topics, keys, values = batch.columns
            key_array = None if keys.null_count == len(keys) else keys
            yield topics.dictionary[0].as_py(), key_array, values
