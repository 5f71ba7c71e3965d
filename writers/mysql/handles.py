"""``mysqlwriter``'s handles: an XA transaction prepared at a checkpoint, and ``sqlwriter``'s
kinds (changes staged by runs before this writer applied them itself)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from libs.mysql.xa import Xid
from writers.sql import SqlHandle

__all__ = ["MysqlHandle", "XaHandle"]


@dataclass(frozen=True, kw_only=True)
class XaHandle(SqlHandle):
    """A prepared XA transaction of one writer subtask (``segment`` is the xid's branch)."""

    xid: list[Any]
    """:meth:`libs.mysql.xa.Xid.to_json`."""
    rows: int = 0
    """Rows and changes written in it (for messages)."""
    deferred: int = 0
    """Records it deferred behind a DDL, replayed after its commit (see "DDL" in the docs)."""

    kind: ClassVar[str] = "xa"

    @property
    def xa(self) -> Xid:
        """The transaction id."""
        return Xid.from_json(self.xid)


@dataclass(frozen=True, kw_only=True)
class MysqlHandle(SqlHandle):
    """``mysqlwriter``'s ``handle_type``: rebuilds XA handles and ``sqlwriter``'s kinds."""

    KINDS: ClassVar[Mapping[str, type[SqlHandle]]] = {**SqlHandle.KINDS, XaHandle.kind: XaHandle}
