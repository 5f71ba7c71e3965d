"""XA transaction ids of the exactly-once writer, and finding prepared ones."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

XA_FORMAT_ID = 0x53594E43
"""``formatID`` of syncx's XA transactions (``SYNC``)."""
_XID_TEXT = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass(frozen=True)
class Xid:
    """An XA transaction id: ``gtrid`` = ``syncx-<job identity>-<run>``, ``bqual`` =
    ``<subtask>-<attempt token>-<sequence>`` (both ASCII, within MySQL's 64-byte limits)."""

    gtrid: str
    bqual: str
    format_id: int = XA_FORMAT_ID

    def __post_init__(self) -> None:
        for part in (self.gtrid, self.bqual):
            if not _XID_TEXT.match(part):
                msg = f"not a valid XA id part: {part!r}"
                raise ValueError(msg)

    def sql(self) -> str:
        """The xid as XA statements take it."""
        return f"'{self.gtrid}','{self.bqual}',{self.format_id}"

    def to_json(self) -> list[Any]:
        """The form stored in a writer handle."""
        return [self.format_id, self.gtrid, self.bqual]

    @classmethod
    def from_json(cls, raw: Sequence[Any]) -> Xid:
        """Rebuild an xid stored by :meth:`to_json`."""
        return cls(gtrid=str(raw[1]), bqual=str(raw[2]), format_id=int(raw[0]))

    def __str__(self) -> str:
        return f"{self.gtrid}/{self.bqual}"


def xa_recover(cursor: Any) -> list[Xid]:
    """Every prepared XA transaction on the server that syncx started (``XA RECOVER``)."""
    cursor.execute("XA RECOVER")
    found = []
    for format_id, gtrid_length, bqual_length, data in cursor.fetchall():
        if int(format_id) != XA_FORMAT_ID:
            continue
        raw = data if isinstance(data, bytes | bytearray) else str(data).encode("latin-1")
        gtrid = bytes(raw[: int(gtrid_length)]).decode("ascii", "replace")
        bqual = bytes(raw[int(gtrid_length) : int(gtrid_length) + int(bqual_length)]).decode(
            "ascii", "replace"
        )
        with contextlib.suppress(ValueError):
            found.append(Xid(gtrid, bqual, int(format_id)))
    return found
