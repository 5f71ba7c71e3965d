"""Change-data-capture batches: their Arrow layout, building them, and reading them back.

A CDC reader (``binlogreader``) emits Arrow record batches like any reader; what makes them
*changes* is the schema metadata. Every CDC batch holds the changes of **one source table**, in
the order the source committed them, in one of two layouts:

**Envelope** (``pavingData: false``; what Debezium users expect)::

    op      string      c (insert), u (update), d (delete), r (snapshot read)
    before  struct<the table's columns>   null for c and r
    after   struct<the table's columns>   null for d
    source  struct<file, pos, gtid, ts, db, table, snapshot>

``source.ts`` is the event time in milliseconds since the epoch; ``file``/``pos`` the binlog
coordinates of the event's transaction end; ``gtid`` its GTID (MariaDB ``d-s-n``, MySQL
``uuid:n``), null when the server has none.

**Paving** (``pavingData: true``; ChunJun's flat layout)::

    schema, table   string
    ts              int64    unique and increasing per reader: (event ms << 22) | sequence
    opTime          int64    event time, ms since the epoch
    type            string   INSERT | UPDATE | DELETE (UPDATE_BEFORE + UPDATE_AFTER with
                             splitUpdate)
    before_<col>... the row before the change (null for INSERT)
    after_<col>...  the row after it (null for DELETE)

Snapshot rows are ``r`` in the envelope and ``INSERT`` in the paving layout.

A **DDL batch** (``ddl: apply``) is one row ``op="ddl", db, table, statement, source``.

The metadata keys: ``syncx.cdc`` = ``envelope`` | ``paving`` | ``ddl``; ``syncx.cdc.table`` =
``db.table``; ``syncx.cdc.key`` = the JSON list of the source table's primary-key columns.
A writer that knows nothing of CDC writes these batches as ordinary rows (a changelog in files);
a writer that applies changes (``sqlwriter`` and its subclasses) reads them with :func:`decode`,
which turns either layout into :class:`Changes`: the rows to upsert and the keys to delete, in
order, with a primary-key change already split into a delete of the old key and an upsert of the
new one; :func:`net_effect` reduces them to each key's last change, what an applier writes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "CDC_KEY",
    "CDC_KIND",
    "CDC_TABLE",
    "SOURCE_TYPE",
    "Changes",
    "DdlChange",
    "DdlStatement",
    "Layout",
    "SourceInfo",
    "TableLayout",
    "build_changes",
    "ddl_batch",
    "decode",
    "envelope_schema",
    "is_cdc",
    "is_ddl",
    "net_effect",
    "parse_ddl",
    "paving_schema",
    "split_top_level",
    "touched_rows",
]

CDC_KIND = b"syncx.cdc"
CDC_TABLE = b"syncx.cdc.table"
CDC_KEY = b"syncx.cdc.key"

Layout = Literal["envelope", "paving"]
Op = Literal["c", "u", "d", "r"]

SOURCE_TYPE = pa.struct(
    [
        ("file", pa.string()),
        ("pos", pa.int64()),
        ("gtid", pa.string()),
        ("ts", pa.int64()),
        ("db", pa.string()),
        ("table", pa.string()),
        ("snapshot", pa.bool_()),
    ]
)
"""Where a change comes from (Debezium's ``source`` block, trimmed)."""

_PAVING_TYPES: dict[str, str] = {"c": "INSERT", "r": "INSERT", "u": "UPDATE", "d": "DELETE"}


@dataclass(frozen=True)
class TableLayout:
    """A source table's columns (as Arrow fields, in table order) and primary key."""

    db: str
    table: str
    schema: pa.Schema
    key: tuple[str, ...] = ()

    @property
    def qualified(self) -> str:
        """``db.table``."""
        return f"{self.db}.{self.table}"

    def metadata(self, kind: str) -> dict[bytes, bytes]:
        """The schema metadata of this table's CDC batches."""
        return {
            CDC_KIND: kind.encode(),
            CDC_TABLE: self.qualified.encode(),
            CDC_KEY: json.dumps(list(self.key)).encode(),
        }


@dataclass(frozen=True)
class SourceInfo:
    """The ``source`` of one change."""

    file: str | None
    pos: int | None
    gtid: str | None
    ts_ms: int
    snapshot: bool = False


def _row_struct(layout: TableLayout) -> pa.StructType:
    return pa.struct([pa.field(f.name, f.type, nullable=True) for f in layout.schema])


def envelope_schema(layout: TableLayout) -> pa.Schema:
    """The envelope layout of ``layout``'s changes."""
    row = _row_struct(layout)
    return pa.schema(
        [
            pa.field("op", pa.string(), nullable=False),
            pa.field("before", row),
            pa.field("after", row),
            pa.field("source", SOURCE_TYPE),
        ],
        metadata=layout.metadata("envelope"),
    )


def paving_schema(layout: TableLayout) -> pa.Schema:
    """ChunJun's flat layout of ``layout``'s changes."""
    fields = [
        pa.field("schema", pa.string()),
        pa.field("table", pa.string()),
        pa.field("ts", pa.int64()),
        pa.field("opTime", pa.int64()),
        pa.field("type", pa.string()),
    ]
    fields += [pa.field(f"before_{f.name}", f.type) for f in layout.schema]
    fields += [pa.field(f"after_{f.name}", f.type) for f in layout.schema]
    return pa.schema(fields, metadata=layout.metadata("paving"))


@dataclass
class _Images:
    """One image (before or after) of many changes: rows kept as they come, turned into columns
    at the end in one ``zip`` (appending each value to its column list was the CDC reader's
    second largest cost)."""

    width: int
    rows: list[Sequence[Any] | None] = field(default_factory=list)

    def add(self, values: Sequence[Any] | None) -> None:
        self.rows.append(values)

    def arrays(self, schema: pa.Schema) -> list[pa.Array]:
        blank = (None,) * self.width
        rows = [blank if values is None else values for values in self.rows]
        columns = list(zip(*rows, strict=True)) if rows else [()] * self.width
        return [
            pa.array(values, type=f.type, from_pandas=False)
            for values, f in zip(columns, schema, strict=True)
        ]

    def struct(self, schema: pa.Schema, row: pa.StructType) -> pa.Array:
        mask = pa.array([values is None for values in self.rows], type=pa.bool_())
        return pa.StructArray.from_arrays(self.arrays(schema), fields=list(row), mask=mask)


def build_changes(
    layout: TableLayout,
    form: Layout,
    changes: Sequence[tuple[Op, Sequence[Any] | None, Sequence[Any] | None, SourceInfo]],
    *,
    split_update: bool = False,
    sequence: int = 0,
) -> pa.RecordBatch:
    """One batch of ``layout``'s ``changes``: ``(op, before, after, source)`` with row values
    already of the column types (Python values Arrow converts to ``layout.schema``).

    ``sequence`` numbers the paving layout's ``ts`` (the low 22 bits). Values Arrow cannot hold
    raise ``pa.ArrowInvalid`` / ``pa.ArrowTypeError`` (the caller finds the bad row).
    """
    width = len(layout.schema)
    before, after = _Images(width), _Images(width)
    ops: list[str] = []
    sources: list[SourceInfo] = []
    for op, old, new, source in changes:
        if form == "paving" and op == "u" and split_update:
            for kind, image_old, image_new in (
                ("UPDATE_BEFORE", old, None),
                ("UPDATE_AFTER", None, new),
            ):
                ops.append(kind)
                before.add(image_old)
                after.add(image_new)
                sources.append(source)
            continue
        ops.append(_PAVING_TYPES[op] if form == "paving" else op)
        before.add(old)
        after.add(new)
        sources.append(source)
    if form == "envelope":
        row = _row_struct(layout)
        source_array = pa.StructArray.from_arrays(
            [
                pa.array([s.file for s in sources], pa.string()),
                pa.array([s.pos for s in sources], pa.int64()),
                pa.array([s.gtid for s in sources], pa.string()),
                pa.array([s.ts_ms for s in sources], pa.int64()),
                pa.array([layout.db] * len(sources), pa.string()),
                pa.array([layout.table] * len(sources), pa.string()),
                pa.array([s.snapshot for s in sources], pa.bool_()),
            ],
            fields=list(SOURCE_TYPE),
        )
        return pa.RecordBatch.from_arrays(
            [
                pa.array(ops, pa.string()),
                before.struct(layout.schema, row),
                after.struct(layout.schema, row),
                source_array,
            ],
            schema=envelope_schema(layout),
        )
    count = len(ops)
    ts = [((s.ts_ms << 22) | ((sequence + i) & 0x3FFFFF)) for i, s in enumerate(sources)]
    arrays = [
        pa.array([layout.db] * count, pa.string()),
        pa.array([layout.table] * count, pa.string()),
        pa.array(ts, pa.int64()),
        pa.array([s.ts_ms for s in sources], pa.int64()),
        pa.array(ops, pa.string()),
        *before.arrays(layout.schema),
        *after.arrays(layout.schema),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=paving_schema(layout))


def ddl_batch(db: str, table: str | None, statement: str, source: SourceInfo) -> pa.RecordBatch:
    """A one-row DDL batch (``ddl: apply``)."""
    schema = pa.schema(
        [
            pa.field("op", pa.string(), nullable=False),
            pa.field("db", pa.string()),
            pa.field("table", pa.string()),
            pa.field("statement", pa.string()),
            pa.field("source", SOURCE_TYPE),
        ],
        metadata={CDC_KIND: b"ddl", CDC_TABLE: f"{db}.{table or ''}".encode()},
    )
    source_array = pa.array(
        [
            {
                "file": source.file,
                "pos": source.pos,
                "gtid": source.gtid,
                "ts": source.ts_ms,
                "db": db,
                "table": table,
                "snapshot": False,
            }
        ],
        type=SOURCE_TYPE,
    )
    return pa.RecordBatch.from_arrays(
        [
            pa.array(["ddl"]),
            pa.array([db]),
            pa.array([table], pa.string()),
            pa.array([statement]),
            source_array,
        ],
        schema=schema,
    )


# -- reading CDC batches back ----------------------------------------------------------------


@dataclass(frozen=True)
class Changes:
    """Changes of one source table, normalized for an applier.

    ``rows`` holds one row per action, in order: for an upsert the row after the change, for a
    delete the row before it (only its key columns matter). ``upsert[i]`` says which. An update
    that changes the primary key is a delete of the old key followed by an upsert of the new.
    """

    table: str
    """The source table, ``db.table``."""
    key: tuple[str, ...]
    """The source table's primary key (empty when it has none)."""
    rows: pa.RecordBatch
    upsert: list[bool]


@dataclass(frozen=True)
class DdlChange:
    """A schema change to apply (``ddl: apply``)."""

    db: str
    table: str | None
    statement: str
    source: dict[str, Any]


def is_cdc(schema: pa.Schema) -> bool:
    """Whether batches of ``schema`` are CDC batches."""
    return bool(schema.metadata) and CDC_KIND in schema.metadata  # type: ignore[operator]


def is_ddl(schema: pa.Schema) -> bool:
    """Whether batches of ``schema`` are DDL batches."""
    return (schema.metadata or {}).get(CDC_KIND) == b"ddl"


def decode(batch: pa.RecordBatch) -> Changes | DdlChange | None:
    """A CDC batch as :class:`Changes` (or :class:`DdlChange`); ``None`` for ordinary rows."""
    meta = batch.schema.metadata or {}
    kind = meta.get(CDC_KIND)
    if kind is None:
        return None
    if kind == b"ddl":
        row = batch.to_pylist()[0]
        return DdlChange(row["db"], row["table"], row["statement"], dict(row["source"] or {}))
    table = meta.get(CDC_TABLE, b"").decode()
    key = tuple(json.loads(meta.get(CDC_KEY, b"[]")))
    codes, before, after = _images(batch, kind)
    take, upsert = _actions(codes, before, after, key)
    width = batch.num_rows
    both = pa.Table.from_batches([before, after]).combine_chunks()
    rows = both.take(pa.array([i if src == 0 else width + i for src, i in take], pa.int64()))
    result = pa.RecordBatch.from_arrays(
        [rows.column(i).combine_chunks() for i in range(rows.num_columns)], schema=rows.schema
    )
    return Changes(table, key, result, upsert)


def touched_rows(batch: pa.RecordBatch) -> tuple[str, pa.Table] | None:
    """The source table (``db.table``) of a CDC batch and every row image it holds, before and
    after each change (the missing image of an insert or a delete left out): the rows its
    changes touched. ``None`` for a DDL batch or ordinary rows."""
    kind = (batch.schema.metadata or {}).get(CDC_KIND)
    if kind is None or kind == b"ddl":
        return None
    codes, before, after = _images(batch, kind)
    had = pa.array([code in ("u", "d", "ub") for code in codes])
    has = pa.array([code in ("c", "r", "u", "ua") for code in codes])
    rows = pa.Table.from_batches([before.filter(had), after.filter(has)])
    return batch.schema.metadata[CDC_TABLE].decode(), rows


def _images(batch: pa.RecordBatch, kind: bytes) -> tuple[list[str], pa.RecordBatch, pa.RecordBatch]:
    """The operation codes of a change batch (``c u d r``, ``ub ua`` for a split update) and its
    before and after images (rows of the table's columns, null where a change has none)."""
    if kind == b"envelope":
        codes = batch.column("op").to_pylist()
        return codes, _flatten(batch.column("before")), _flatten(batch.column("after"))
    if kind == b"paving":
        names = batch.schema.names
        row_names = [n.removeprefix("after_") for n in names if n.startswith("after_")]
        before = pa.RecordBatch.from_arrays(
            [batch.column(f"before_{n}") for n in row_names], names=row_names
        )
        after = pa.RecordBatch.from_arrays(
            [batch.column(f"after_{n}") for n in row_names], names=row_names
        )
        codes = [_PAVING_CODES.get(t, "?") for t in batch.column("type").to_pylist()]
        return codes, before, after
    msg = f"unknown CDC batch kind {kind!r}"
    raise ValueError(msg)


_PAVING_CODES = {
    "INSERT": "c",
    "UPDATE": "u",
    "DELETE": "d",
    "UPDATE_BEFORE": "ub",
    "UPDATE_AFTER": "ua",
}


def _flatten(column: pa.Array | pa.ChunkedArray) -> pa.RecordBatch:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    struct_type = column.type
    fields = [struct_type.field(i) for i in range(struct_type.num_fields)]
    arrays = column.flatten()
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _actions(
    codes: list[str], before: pa.RecordBatch, after: pa.RecordBatch, key: tuple[str, ...]
) -> tuple[list[tuple[int, int]], list[bool]]:
    """Which image of which row each action takes (0 before, 1 after) and whether it upserts."""
    changed = _key_changed(codes, before, after, key)
    take: list[tuple[int, int]] = []
    upsert: list[bool] = []
    for index, code in enumerate(codes):
        if code in ("c", "r", "ua"):
            take.append((1, index))
            upsert.append(True)
        elif code in ("d", "ub"):
            take.append((0, index))
            upsert.append(False)
        elif code == "u":
            if changed[index]:
                take.append((0, index))
                upsert.append(False)
            take.append((1, index))
            upsert.append(True)
        else:
            msg = f"unknown CDC operation {code!r}"
            raise ValueError(msg)
    return take, upsert


def net_effect(
    keys: Sequence[tuple[Any, ...]], upsert: Sequence[bool]
) -> tuple[list[int], list[int]]:
    """What changes in order amount to when applied by key: each key's last change, split into
    the rows of the keys it deletes and the rows of the keys it upserts (both in order).

    Deleting the first and replacing the second (or deleting every touched key and inserting the
    second) leaves a table as applying the changes one by one would, in a few statements.
    """
    last: dict[tuple[Any, ...], int] = {}
    for index, key in enumerate(keys):
        last[key] = index
    final = sorted(last.values())
    return [i for i in final if not upsert[i]], [i for i in final if upsert[i]]


def _key_changed(
    codes: list[str], before: pa.RecordBatch, after: pa.RecordBatch, key: tuple[str, ...]
) -> list[bool]:
    """For updates: whether the key differs between the images (no key: always, to be safe)."""
    if "u" not in codes:
        return [False] * len(codes)
    if not key or any(k not in before.schema.names for k in key):
        return [True] * len(codes)
    differs = pa.array([False] * len(codes))
    for name in key:
        left, right = before.column(name), after.column(name)
        unequal = pc.fill_null(pc.not_equal(left, right), True)
        differs = pc.or_(differs, unequal)
    return differs.to_pylist()  # type: ignore[no-any-return]


# -- DDL statements ---------------------------------------------------------------------------

_NAME = r"(?:`(?:[^`]|``)+`|[\w$]+)"
_QUALIFIED = rf"({_NAME}(?:\s*\.\s*{_NAME})?)"
_COMMENTS = re.compile(r"/\*.*?\*/|--[^\n]*|#[^\n]*", re.DOTALL)
_CREATE = re.compile(
    rf"^CREATE\s+(?:OR\s+REPLACE\s+)?(TEMPORARY\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?{_QUALIFIED}",
    re.IGNORECASE,
)
_DROP = re.compile(
    r"^DROP\s+(TEMPORARY\s+)?TABLES?\s+(?:IF\s+EXISTS\s+)?(.+?)\s*(?:RESTRICT|CASCADE)?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_ALTER = re.compile(
    rf"^ALTER\s+(?:ONLINE\s+)?(?:IGNORE\s+)?TABLE\s+(?:IF\s+EXISTS\s+)?{_QUALIFIED}\s*(.*)$",
    re.IGNORECASE | re.DOTALL,
)
_TRUNCATE = re.compile(rf"^TRUNCATE\s+(?:TABLE\s+)?{_QUALIFIED}", re.IGNORECASE)
_RENAME = re.compile(r"^RENAME\s+TABLES?\s+(.+)$", re.IGNORECASE | re.DOTALL)


def _unquote(name: str) -> str:
    name = name.strip()
    if name.startswith("`") and name.endswith("`"):
        return name[1:-1].replace("``", "`")
    return name


def _split_name(text: str, default_db: str | None) -> tuple[str | None, str]:
    parts = re.findall(_NAME, text)
    if len(parts) >= 2:
        return _unquote(parts[0]), _unquote(parts[1])
    return default_db, _unquote(parts[0]) if parts else ""


def split_top_level(text: str, separator: str = ",") -> list[str]:
    """``text`` split at ``separator`` outside parentheses, quotes and backticks."""
    parts: list[str] = []
    depth, quote, start = 0, "", 0
    for index, char in enumerate(text):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"`":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(text[start:index].strip())
            start = index + 1
    tail = text[start:].strip()
    if tail:
        parts.append(tail)
    return parts


AlterAction = tuple[str, str | None, str]
"""``(kind, column, clause)``: kind is add | drop | modify | change | rename | default | index |
other; ``clause`` is the action's text as written."""

_ALTER_ACTIONS: list[tuple[str, re.Pattern[str]]] = [
    (
        "index",
        re.compile(
            r"^(?:ADD|DROP)\s+(?:CONSTRAINT|PRIMARY|UNIQUE|INDEX|KEY|FULLTEXT|SPATIAL|FOREIGN)\b",
            re.IGNORECASE,
        ),
    ),
    ("add", re.compile(rf"^ADD\s+(?:COLUMN\s+)?(?:IF\s+NOT\s+EXISTS\s+)?({_NAME})", re.IGNORECASE)),
    ("drop", re.compile(rf"^DROP\s+(?:COLUMN\s+)?(?:IF\s+EXISTS\s+)?({_NAME})", re.IGNORECASE)),
    (
        "modify",
        re.compile(rf"^MODIFY\s+(?:COLUMN\s+)?(?:IF\s+EXISTS\s+)?({_NAME})", re.IGNORECASE),
    ),
    (
        "change",
        re.compile(rf"^CHANGE\s+(?:COLUMN\s+)?(?:IF\s+EXISTS\s+)?({_NAME})", re.IGNORECASE),
    ),
    ("rename", re.compile(rf"^RENAME\s+COLUMN\s+({_NAME})", re.IGNORECASE)),
    ("default", re.compile(rf"^ALTER\s+(?:COLUMN\s+)?({_NAME})\s", re.IGNORECASE)),
]


@dataclass(frozen=True)
class DdlStatement:
    """What a DDL statement does to which tables (enough to decide on and apply it)."""

    kind: Literal["create", "drop", "alter", "truncate", "rename", "other"]
    tables: list[tuple[str | None, str]]
    """``(db, table)`` named by the statement (db ``None``: the statement's default database)."""
    actions: list[AlterAction] = field(default_factory=list)
    temporary: bool = False


def parse_ddl(statement: str, default_db: str | None) -> DdlStatement:
    """Recognize CREATE/DROP/ALTER/TRUNCATE/RENAME TABLE; anything else is ``other``."""
    text = _COMMENTS.sub(" ", statement).strip().rstrip(";").strip()
    match = _CREATE.match(text)
    if match:
        return DdlStatement(
            "create", [_split_name(match.group(2), default_db)], temporary=bool(match.group(1))
        )
    match = _DROP.match(text)
    if match:
        names = [_split_name(part, default_db) for part in split_top_level(match.group(2))]
        return DdlStatement("drop", names, temporary=bool(match.group(1)))
    match = _TRUNCATE.match(text)
    if match:
        return DdlStatement("truncate", [_split_name(match.group(1), default_db)])
    match = _RENAME.match(text)
    if match:
        names = []
        for pair in split_top_level(match.group(1)):
            sides = re.split(r"\s+TO\s+", pair, flags=re.IGNORECASE)
            names.extend(_split_name(side, default_db) for side in sides)
        return DdlStatement("rename", names)
    match = _ALTER.match(text)
    if match:
        actions: list[AlterAction] = []
        for clause in split_top_level(match.group(2)):
            kind, column = "other", None
            for name, pattern in _ALTER_ACTIONS:
                found = pattern.match(clause)
                if found:
                    kind = name
                    column = _unquote(found.group(1)) if found.groups() else None
                    break
            if kind == "rename" and re.match(r"^RENAME\s+(?:TO|AS)\b", clause, re.IGNORECASE):
                kind = "other"
            actions.append((kind, column, clause))
        return DdlStatement("alter", [_split_name(match.group(1), default_db)], actions)
    return DdlStatement("other", [])
