"""``binlogreader``'s checkpointed state: split data, split positions and the GTID state.

Positions and split data are :class:`sync.contract.State` s. A reader declares one
``position_type`` and one ``split_type``, but it has two kinds of splits (the tables' snapshot
key ranges and the stream), so each is a small tagged family: the stored form carries
``"kind"`` and :meth:`SplitPosition.from_json` / :meth:`SplitData.from_json` rebuild the right
class. Checkpoints written before these classes existed hold plain dicts without ``"v"`` and
``"kind"`` (a stream position ``{file, pos, gtid, ts[, emitted, after_ts]}``, a snapshot split's
inner position such as ``{"after": 41}``): they load as version 1 of the same classes.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from sync.contract import State

__all__ = [
    "BinlogPosition",
    "GtidState",
    "SnapshotPosition",
    "SnapshotSplit",
    "SplitData",
    "SplitPosition",
    "StreamSplit",
    "binlog_bytes",
    "file_index",
    "mariadb_before",
]


class _Tagged(State):
    """A family of :class:`State` s stored with a ``"kind"``; the base rebuilds any member."""

    KIND: ClassVar[str] = ""

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "kind": self.KIND}

    @classmethod
    def from_legacy(cls, raw: dict[str, Any]) -> _Tagged:
        """Rebuild a stored form written before kinds were stored."""
        msg = f"{cls.__name__}: the checkpoint holds no kind ({sorted(raw)})"
        raise ValueError(msg)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Self:
        data = dict(raw)
        kind = data.pop("kind", None)
        if kind is None:
            return cls.from_legacy(data)  # type: ignore[return-value]
        family = next(c for c in cls.__mro__ if _Tagged in c.__bases__)
        subclasses: Sequence[type[_Tagged]] = family.__subclasses__()
        members = {sub.KIND: sub for sub in subclasses}
        member = cls if kind == cls.KIND else members.get(str(kind))
        if member is None:
            msg = f"{cls.__name__}: unknown kind {kind!r} in the checkpoint"
            raise ValueError(msg)
        return member.from_fields(data)  # type: ignore[return-value]

    @classmethod
    def from_fields(cls, data: dict[str, Any]) -> Self:
        """Rebuild from the stored fields without a kind (:meth:`State.from_json`)."""
        return super().from_json(data)


# -- positions ----------------------------------------------------------------------------------


class SplitPosition(_Tagged):
    """A binlogreader split's position: :class:`BinlogPosition` or :class:`SnapshotPosition`."""

    @classmethod
    def from_legacy(cls, raw: dict[str, Any]) -> _Tagged:
        """A stream position ``{file, pos, gtid, ts, ...}`` or a snapshot split's inner one."""
        if "file" in raw or "gtid" in raw:
            return BinlogPosition.from_fields(raw)
        return SnapshotPosition(inner=raw)


def file_index(name: str | None) -> int:
    """The sequence number of a binlog file name (``mysql-bin.000042`` → 42; -1 for none)."""
    if not name:
        return -1
    match = re.search(r"(\d+)$", name)
    return int(match.group(1)) if match else -1


def binlog_bytes(sizes: dict[str, int], start: tuple[str, int], end: tuple[str, int]) -> int:
    """Binlog bytes from ``start`` to ``end`` (file, position), over the files in ``sizes``
    (file → size); a file missing from ``sizes`` counts up to ``end`` only."""
    if start[0] == end[0]:
        return max(0, end[1] - start[1])
    first, last = file_index(start[0]), file_index(end[0])
    total = 0
    for name in {*sizes, end[0]}:
        index = file_index(name)
        if first <= index <= last:
            low = start[1] if index == first else 0
            high = end[1] if index == last else sizes.get(name, 0)
            total += max(0, high - low)
    return total


@dataclass(frozen=True)
class BinlogPosition(SplitPosition):
    """A stream position: a transaction boundary plus the changes emitted after it."""

    KIND: ClassVar[str] = "stream"

    file: str | None = None
    pos: int | None = None
    gtid: str | None = None
    ts: int | None = None
    """Event time (s) of the last transaction, for messages and lag."""
    emitted: dict[str, int] = field(default_factory=dict)
    """Changes per table emitted after the boundary (dropped again on restore)."""
    after_ts: int | None = None
    """Start by timestamp: transactions before this time (s) are skipped."""

    def with_emitted(self, emitted: dict[str, int]) -> BinlogPosition:
        """The same boundary with ``emitted`` changes after it."""
        return dataclasses.replace(self, emitted=dict(emitted))

    def describe(self) -> str:
        """``file:pos, GTID ...`` for messages."""
        parts = []
        if self.file:
            parts.append(f"{self.file}:{self.pos}")
        if self.gtid:
            parts.append(f"GTID {self.gtid}")
        return ", ".join(parts) or "(start)"

    def reached(self, end: tuple[str, int]) -> bool:
        """Whether this boundary is at or past binlog coordinates ``end``."""
        if self.file is None or self.pos is None:
            return False
        return (file_index(self.file), self.pos) >= (file_index(end[0]), end[1])


@dataclass(frozen=True)
class SnapshotPosition(SplitPosition):
    """A snapshot split's position: the ``mysqlreader`` split position it wraps (stored form)."""

    KIND: ClassVar[str] = "snapshot"

    inner: Any = None


# -- split data ---------------------------------------------------------------------------------


class SplitData(_Tagged):
    """A binlogreader split's data: :class:`SnapshotSplit` or :class:`StreamSplit` (it was
    always stored with its ``kind``: the old form loads as version 1)."""


@dataclass(frozen=True)
class SnapshotSplit(SplitData):
    """A key range of one table copied at the handover position ``at``."""

    KIND: ClassVar[str] = "snapshot"

    db: str = ""
    table: str = ""
    inner: dict[str, Any] = field(default_factory=dict)
    """The ``mysqlreader`` split (its stored form)."""
    at: dict[str, Any] = field(default_factory=dict)
    """The handover :class:`BinlogPosition` (its stored form)."""


@dataclass(frozen=True)
class StreamSplit(SplitData):
    """The binlog from ``start``, after the snapshot splits ``snapshot`` (their ids)."""

    KIND: ClassVar[str] = "stream"

    start: dict[str, Any] = field(default_factory=dict)
    """The start :class:`BinlogPosition` (its stored form)."""
    snapshot: list[str] = field(default_factory=list)


# -- GTIDs --------------------------------------------------------------------------------------


class GtidState:
    """The GTID state after the last transaction seen: MariaDB's per-domain list or MySQL's set."""

    def __init__(self, text: str | None, *, mariadb: bool) -> None:
        self.mariadb = mariadb
        self._domains: dict[int, str] = {}
        self._set: Any = None
        if mariadb:
            for raw in (text or "").split(","):
                part = raw.strip()
                if part:
                    self._domains[int(part.split("-")[0])] = part
        elif text:
            from pymysqlreplication.gtid import GtidSet  # noqa: PLC0415 - optional driver

            self._set = GtidSet(text)

    def add(self, gtid: str) -> None:
        """A transaction with ``gtid`` was seen."""
        if self.mariadb:
            self._domains[int(gtid.split("-", maxsplit=1)[0])] = gtid
            return
        from pymysqlreplication.gtid import Gtid, GtidSet  # noqa: PLC0415

        if self._set is None:
            self._set = GtidSet(gtid)
        else:
            self._set.merge_gtid(Gtid(gtid))

    def text(self) -> str | None:
        """The state as the server writes it (``0-1-5,1-1-9`` or ``uuid:1-9``)."""
        if self.mariadb:
            return ",".join(self._domains[d] for d in sorted(self._domains)) or None
        return str(self._set) if self._set is not None else None


def mariadb_before(gtid: str, oldest: str) -> bool:
    """Whether MariaDB GTID state ``gtid`` lies before ``oldest`` in some domain."""

    def parse(text: str) -> dict[int, int]:
        out = {}
        for raw in text.split(","):
            part = raw.strip()
            if part:
                domain, _server, seq = part.split("-")
                out[int(domain)] = int(seq)
        return out

    mine, first = parse(gtid), parse(oldest)
    return any(mine.get(domain, 0) < seq for domain, seq in first.items())
