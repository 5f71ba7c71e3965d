"""Testing tools shipped with syncx: the connector conformance kit and the kill harness.

- :mod:`sync.testing.kit`: base classes a connector's pytest module subclasses
  (:class:`ReaderConformance`, :class:`WriterConformance`, :class:`CrashConformance`) with one
  fixture each; see ``docs/writing-a-connector.md``.
- :mod:`sync.testing.crash`: run ``syncx run`` in a subprocess, SIGKILL it, restore, repeat,
  and compare the target with the source.

This package imports only the engine (never ``libs``, ``readers`` or ``writers``) and needs
pytest only to run the tests it defines.
"""

from __future__ import annotations

from sync.testing.kit import (
    CrashConformance,
    JobCase,
    ReaderCase,
    ReaderConformance,
    WriterCase,
    WriterConformance,
    build_reader,
    build_writer,
    crash_round,
    json_round_trip,
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
