"""Kafka messages to Arrow batches: ``text``, ``json`` rows, and Debezium envelopes as changes.

``text``: one column ``message`` with the raw text (ChunJun's ``{"message": raw}``).

``json``: the fields named in ``column``, cast to their types (a ``format`` parses temporal text
with a Java pattern); a declared ``message`` field missing from a message gets the raw text, as
ChunJun keeps it. Without ``column`` every top-level field is read (types inferred per batch) and
``message`` holds the raw text. The common case parses a whole poll with Arrow's JSON reader; a
poll holding a message that is not JSON (or whose values do not fit) is parsed message by message,
and each bad message is a dirty record, never a crash.

**Debezium envelopes** (``codec: json``, values with ``op`` and ``before``/``after``, bare or
under ``payload``): the poll becomes CDC batches (:mod:`libs.cdc`, envelope layout), one per run
of consecutive changes of one table (``source.db``.``source.table``, else the topic), keyed by
the message key's fields. The SQL and MySQL writers apply them by key as they apply
``binlogreader``'s, so binlog → Kafka → MySQL is a replication path. Null values (tombstones) are
skipped. Numbers with a fraction are read as decimals, so DECIMAL columns keep their digits.
"""

from __future__ import annotations

import decimal
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from libs import cdc
from libs.types import arrow_type, conform, java_date_format
from readers.kafka.params import KafkaReaderParams
from sync.contract import DirtyRecord

__all__ = ["Decoder", "Polled"]

_OPS = frozenset({"c", "u", "d", "r"})


@dataclass(frozen=True)
class Polled:
    """Messages of one poll as the decoder needs them, column-wise."""

    topics: list[str]
    keys: list[bytes | None]
    values: list[bytes | None]

    def __len__(self) -> int:
        return len(self.values)


class Decoder:
    """Turns polled messages into batches; rejects go to ``report_dirty``."""

    def __init__(
        self, params: KafkaReaderParams, report_dirty: Callable[[DirtyRecord], None]
    ) -> None:
        self.params = params
        self.report_dirty = report_dirty
        self.columns = params.columns()
        self.schema = (
            pa.schema(
                [pa.field(c.name, arrow_type(c.type, default_string=True)) for c in self.columns]
            )
            if self.columns
            else None
        )
        self.utf8 = params.encoding.replace("-", "").lower() in ("utf8", "")
        self.parse_options = (
            pajson.ParseOptions(
                explicit_schema=pa.schema([(f.name, _json_type(f.type)) for f in self.schema]),
                unexpected_field_behavior="ignore",
            )
            if self.schema is not None
            else None
        )

    def text_of(self, value: bytes) -> str:
        """A message value as text in ``encoding`` (undecodable bytes replaced)."""
        return value.decode("utf-8" if self.utf8 else self.params.encoding, errors="replace")

    def decode(self, polled: Polled) -> list[pa.RecordBatch]:
        """Batches for the polled messages (in order); null values (tombstones) are skipped."""
        values = polled.values
        if self.params.blank_ignore or None in values:
            keep = [
                i
                for i, v in enumerate(values)
                if v is not None and (not self.params.blank_ignore or v.strip())
            ]
            polled = Polled(
                [polled.topics[i] for i in keep],
                [polled.keys[i] for i in keep],
                [values[i] for i in keep],
            )
        if not len(polled):
            return []
        if self.params.codec == "text":
            texts = [self.text_of(v or b"") for v in polled.values]
            return [pa.record_batch({"message": pa.array(texts, pa.string())})]
        if _change(_loads(polled.values[0])) is not None:
            return self._changes(polled)
        return [self._rows(polled.values)]

    # -- rows ---------------------------------------------------------------------------------

    def _rows(self, values: list[bytes | None]) -> pa.RecordBatch:
        raws = [v or b"" for v in values]
        batch = self._parse_all(raws)
        if batch is None:
            batch, texts = self._rows_one_by_one(raws)
            return self._shape(batch, lambda: texts)
        return self._shape(batch, lambda: pa.array([self.text_of(r) for r in raws], pa.string()))

    def _parse_all(self, raws: list[bytes]) -> pa.RecordBatch | None:
        """The messages parsed together by Arrow (with the declared fields' JSON types first,
        inferred types next), or ``None`` when one of them does not parse (or is not one line,
        or not UTF-8)."""
        if not self.utf8:
            return None
        buffer = pa.py_buffer(b"\n".join(raws))
        read = pajson.ReadOptions(use_threads=False, block_size=max(1 << 20, buffer.size + 1))
        for parse in (self.parse_options, None):
            try:
                table = pajson.read_json(buffer, read_options=read, parse_options=parse)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                continue
            return _combine(table) if table.num_rows == len(raws) else None
        return None

    def _rows_one_by_one(self, raws: list[bytes]) -> tuple[pa.RecordBatch, pa.Array]:
        rows: list[dict[str, Any]] = []
        texts: list[str] = []
        for raw in raws:
            text = self.text_of(raw)
            value = _loads(raw)
            if not isinstance(value, dict):
                self.report_dirty(
                    DirtyRecord({"message": text}, "not a JSON object (codec: json)", "conversion")
                )
                continue
            rows.append(value)
            texts.append(text)
        names = list(dict.fromkeys(k for row in rows for k in row))
        arrays = [_column([row.get(n) for row in rows]) for n in names]
        return pa.RecordBatch.from_arrays(arrays, names=names), pa.array(texts, pa.string())

    def _shape(self, batch: pa.RecordBatch, texts: Callable[[], pa.Array]) -> pa.RecordBatch:
        """The declared columns (or all, plus ``message``), cast; bad rows are dirty.
        ``texts`` gives the raw texts, built only when a ``message`` column needs them."""
        if self.schema is None:
            if "message" in batch.schema.names:
                return batch
            return pa.RecordBatch.from_arrays(
                [*batch.columns, texts()], names=[*batch.schema.names, "message"]
            )
        rows = batch.num_rows if batch.num_columns else len(texts())
        arrays = []
        for column, field in zip(self.columns, self.schema, strict=True):
            if column.name in batch.schema.names:
                array = batch.column(column.name)
            else:
                array = pa.nulls(rows, pa.string())
            if column.name == "message":
                array = pc.coalesce(pc.cast(array, pa.string()), texts())
            if column.format and pa.types.is_temporal(field.type):
                array = pc.strptime(
                    pc.cast(array, pa.string()),
                    java_date_format(column.format),
                    "us",
                    error_is_null=True,
                )
            elif pa.types.is_time(field.type) and pa.types.is_string(array.type):
                array = _time_of_day(array, field.type)
            arrays.append(array)
        loose = pa.RecordBatch.from_arrays(arrays, names=[c.name for c in self.columns])
        shaped, dirty = conform(loose, self.schema)
        for record in dirty:
            self.report_dirty(record)
        return shaped

    # -- Debezium envelopes -------------------------------------------------------------------

    def _changes(self, polled: Polled) -> list[pa.RecordBatch]:
        batches: list[pa.RecordBatch] = []
        run: list[tuple[dict[str, Any], list[str]]] = []
        run_table: str | None = None
        for topic, raw_key, value in zip(polled.topics, polled.keys, polled.values, strict=True):
            change = _change(_loads(value))
            if change is None or change.get("op") not in _OPS:
                self.report_dirty(
                    DirtyRecord(
                        {"message": self.text_of(value or b"")},
                        "not a Debezium change (op c/u/d/r with before/after)",
                        "conversion",
                    )
                )
                continue
            source = change.get("source") or {}
            table = (
                f"{source['db']}.{source['table']}"
                if source.get("db") and source.get("table")
                else f"{topic}.{topic}"
            )
            key = _payload(_loads(raw_key))
            key_names = list(key) if isinstance(key, dict) else []
            if run and table != run_table:
                batches.append(self._change_batch(run_table or "", run))
                run = []
            run_table = table
            run.append((change, key_names))
        if run:
            batches.append(self._change_batch(run_table or "", run))
        return batches

    def _change_batch(
        self, table: str, run: list[tuple[dict[str, Any], list[str]]]
    ) -> pa.RecordBatch:
        names = list(
            dict.fromkeys(
                k
                for change, _ in run
                for image in ("before", "after")
                for k in (change.get(image) or {})
            )
        )
        declared = {f.name: f.type for f in self.schema} if self.schema is not None else {}
        fields = []
        for name in names:
            values = [
                (change.get(image) or {}).get(name)
                for change, _ in run
                for image in ("before", "after")
            ]
            kind = declared.get(name) or _column(values).type
            fields.append(pa.field(name, pa.string() if pa.types.is_null(kind) else kind))
        db, _, name = table.partition(".")
        key = tuple(run[-1][1]) if all(k == run[-1][1] for _, k in run) else ()
        layout = cdc.TableLayout(db, name, pa.schema(fields), key)

        def image(change: dict[str, Any], which: str) -> list[Any] | None:
            row = change.get(which)
            return None if row is None else [row.get(n) for n in names]

        changes = []
        for change, _ in run:
            source = change.get("source") or {}
            info = cdc.SourceInfo(
                file=source.get("file"),
                pos=source.get("pos"),
                gtid=source.get("gtid"),
                ts_ms=int(source.get("ts_ms") or change.get("ts_ms") or 0),
                snapshot=str(source.get("snapshot")).lower() == "true",
            )
            changes.append((change["op"], image(change, "before"), image(change, "after"), info))
        return cdc.build_changes(layout, "envelope", changes)


def _json_type(kind: pa.DataType) -> pa.DataType:
    """How Arrow's JSON reader should read a declared column: JSON-native types as they are,
    the rest as text (cast to the declared type afterwards)."""
    if pa.types.is_integer(kind):
        return pa.int64()
    if pa.types.is_floating(kind):
        return pa.float64()
    if pa.types.is_boolean(kind):
        return kind
    return pa.string()


def _time_of_day(text: pa.Array, kind: pa.DataType) -> pa.Array:
    """``HH:MM:SS[.ffffff]`` text as a time column (Arrow casts no text to time); text that is
    not a time stays text, and the row becomes dirty when the batch is cast."""
    try:
        stamps = pc.cast(pc.binary_join_element_wise("1970-01-01 ", text, ""), pa.timestamp("us"))
        return pc.cast(stamps, kind)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return text


def _loads(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw, parse_float=decimal.Decimal)
    except (ValueError, UnicodeDecodeError):
        return None


def _payload(value: Any) -> Any:
    """A Debezium message's content, bare or under ``payload`` (with ``schema``)."""
    if isinstance(value, dict) and "payload" in value and "schema" in value:
        return value["payload"]
    return value


def _change(value: Any) -> dict[str, Any] | None:
    """The change of a Debezium envelope message, or ``None``."""
    value = _payload(value)
    if isinstance(value, dict) and "op" in value and ("before" in value or "after" in value):
        return value
    return None


def _column(values: list[Any]) -> pa.Array:
    """Values Arrow infers a type for; mixed ones as their JSON text."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array(
            [
                None if v is None else v if isinstance(v, str) else json.dumps(v, default=str)
                for v in values
            ],
            pa.string(),
        )


def _combine(table: pa.Table) -> pa.RecordBatch:
    batches = table.combine_chunks().to_batches()
    if batches:
        return batches[0]
    return pa.RecordBatch.from_arrays([pa.nulls(0)] * table.num_columns, schema=table.schema)
