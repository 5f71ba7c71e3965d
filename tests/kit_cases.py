"""The conformance kit's (:mod:`sync.testing`) cases for a reader/writer pair over one backend.

The SQL and Kafka conformance modules run the same cases: a reader over 40 seeded rows, a writer
writing 30, and a crash round copying 300 from one table (topic) to another. Each module gives a
:class:`Target` (what differs: how a table is made and read back, and the plugins' blocks), and
these functions build the cases from it.
"""

from __future__ import annotations

from typing import Any, Protocol

import pyarrow as pa

from sync.testing import JobCase, ReaderCase, WriterCase

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("amount", pa.float64())])
KEY = ["id"]


def rows(count: int, first: int = 1) -> pa.Table:
    """``count`` rows of :data:`SCHEMA` with ids from ``first``; every fourth name is null."""
    ids = list(range(first, first + count))
    return pa.table(
        {
            "id": ids,
            "name": [f"név-{i}" if i % 4 else None for i in ids],
            "amount": [i * 0.5 for i in ids],
        },
        schema=SCHEMA,
    )


class Target(Protocol):
    """Where a reader/writer pair reads and writes: tables (topics) of :data:`SCHEMA`."""

    def create(self, rows: pa.Table | None = None) -> str:
        """A new uuid-named table holding ``rows``; its name."""
        ...

    def read(self, table: str) -> pa.Table:
        """Every row visible in ``table``."""
        ...

    def reader(self, table: str) -> dict[str, Any]:
        """The reader's job-file block (``name``, ``parameter``) reading ``table``."""
        ...

    def writer(self, table: str) -> dict[str, Any]:
        """The writer's job-file block writing ``table``."""
        ...

    def staged(self, job_id: str) -> list[str]:
        """What job ``job_id`` left staged (the kit's ``leftovers``)."""
        ...


def job(reader: dict[str, Any], writer: dict[str, Any]) -> dict[str, Any]:
    """A job file copying with ``reader`` to ``writer`` on two channels."""
    return {
        "job": {
            "content": [{"reader": reader, "writer": writer}],
            "setting": {"speed": {"channel": 2}},
        }
    }


def reader_case(target: Target, **options: Any) -> ReaderCase:
    """The reader over a new table of 40 rows; ``options``: :class:`ReaderCase`'s."""
    expected = rows(40)
    spec = target.reader(target.create(expected))
    return ReaderCase(spec["name"], spec["parameter"], expected, KEY, **options)


def writer_case(target: Target) -> WriterCase:
    """The writer writing 30 rows into a new table."""
    table = target.create()
    spec = target.writer(table)
    return WriterCase(
        spec["name"],
        spec["parameter"],
        rows(30),
        KEY,
        read_back=lambda: target.read(table),
        leftovers=target.staged,
    )


def job_case(target: Target) -> JobCase:
    """The crash round's job: the reader copies a table of 300 rows to a new one by the writer."""
    expected = rows(300)
    source, sink = target.create(expected), target.create()
    return JobCase(
        job(target.reader(source), target.writer(sink)),
        expected,
        KEY,
        lambda: target.read(sink),
        target.staged,
    )
