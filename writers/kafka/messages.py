"""Batches to Kafka messages: one JSON message per row, or per row change for CDC input.

**Rows**: the value is the JSON object of the row, its keys ``tableFields`` by position (the
incoming names when absent or shorter, as ChunJun ignores a short list); the key is the JSON
object of ``partitionAssignColumns``, or none.

**Changes** (CDC batches of :mod:`libs.cdc`): one message per row change, keyed by the JSON
object of the source table's primary key (of the row before a delete, after anything else), so
hashing by key keeps each key's changes in order on one partition. The value is ChunJun's flat
row (``paving``) or Debezium's envelope (``before``, ``after``, ``op``, ``source`` with
``ts_ms``/``db``/``table``/``file``/``pos``/``gtid``/``snapshot``, and ``ts_ms``); with
``tombstones`` a delete is followed by a message of the same key and a null value, so a
compacted topic forgets the key. An update that changes the key is written as a delete of the
old key and an insert of the new one (as Debezium does), each on its key's partition. The topic is the table's in ``tableIdToTopicMapping``
(``db.table`` or ``table``), or ``topic`` with ``{db}``/``{schema}``/``{table}`` filled.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from libs import cdc
from libs.kafka.jsonenc import json_column, json_object
from sync.errors import FatalError
from writers.kafka.params import KafkaWriterParams

__all__ = ["Messages", "encode"]

log = logging.getLogger(__name__)

WHERE = "job.content[0].writer.parameter"

_NO_TEXT = pa.scalar(None, pa.string())


@dataclass(frozen=True)
class Messages:
    """Messages for one topic, in order, as Arrow string arrays: a null value is a tombstone;
    ``keys`` is ``None`` when the messages have no key."""

    topic: str
    keys: pa.Array | None
    values: pa.Array
    rows: np.ndarray
    """The batch row each message comes from (for dirty records)."""


def encode(params: KafkaWriterParams, batch: pa.RecordBatch) -> Messages | None:
    """The messages of ``batch``; ``None`` for a DDL batch (not written to Kafka)."""
    if cdc.is_ddl(batch.schema):
        log.warning("kafkawriter: a DDL change is not written to Kafka (it has no row key)")
        return None
    if cdc.is_cdc(batch.schema):
        return _changes(params, batch)
    if not params.topic or "{" in params.topic:
        msg = (
            f"{WHERE}.tableIdToTopicMapping routes CDC input (binlogreader); plain rows need a "
            "fixed topic"
        )
        raise FatalError(msg)
    names = batch.schema.names
    if params.table_fields and len(params.table_fields) >= len(names):
        names = params.table_fields[: len(names)]
    values = json_object(names, batch.columns)
    keys = None
    if params.partition_assign_columns:
        index = {name: i for i, name in enumerate(names)}
        columns = [batch.column(index[c]) for c in params.partition_assign_columns]
        keys = json_object(params.partition_assign_columns, columns)
    return Messages(params.topic, keys, values, np.arange(batch.num_rows))


def topic_of(params: KafkaWriterParams, table: str) -> str:
    """The topic of a source table's changes (``table`` is ``db.table``)."""
    db, _, name = table.rpartition(".")
    mapping = params.table_id_to_topic_mapping
    if mapping:
        found = mapping.get(table) or mapping.get(name)
        if found is None:
            msg = (
                f"{WHERE}.tableIdToTopicMapping has no topic for table {table}: add it (as "
                f"'{table}' or '{name}')"
            )
            raise FatalError(msg)
        return found
    assert params.topic is not None
    return params.topic.replace("{db}", db).replace("{schema}", db).replace("{table}", name)


def _changes(params: KafkaWriterParams, batch: pa.RecordBatch) -> Messages:
    meta = batch.schema.metadata or {}
    kind = meta[cdc.CDC_KIND].decode()
    table = meta.get(cdc.CDC_TABLE, b"").decode()
    key = json.loads(meta.get(cdc.CDC_KEY, b"[]"))
    wanted = {"auto": kind, "debezium": "envelope", "paving": "paving"}[params.cdc_format]
    if wanted != kind:
        have = "envelope (pavingData: false)" if kind == "envelope" else "paving (pavingData: true)"
        msg = (
            f"{WHERE}.cdcFormat is {params.cdc_format} but the changes come in the {have} "
            "layout: set binlogreader's pavingData to match, or cdcFormat: auto"
        )
        raise FatalError(msg)
    batch = _split_key_changes(batch, kind, key)
    if kind == "envelope":
        ops = batch.column("op")
        deleted = tombstone = pc.equal(ops, "d")
        before, after = batch.column("before"), batch.column("after")
        key_columns = [
            pc.if_else(deleted, pc.struct_field(before, k), pc.struct_field(after, k)) for k in key
        ]
        source = batch.column("source")
        source_names = ["ts_ms" if n == "ts" else n for n in source.type.names]
        source_json = json_object(
            source_names, [pc.struct_field(source, i) for i in range(source.type.num_fields)]
        )
        now = pa.array([int(time.time() * 1000)] * batch.num_rows, pa.int64())
        values = pc.binary_join_element_wise(
            '{"before":',
            json_column(before),
            ',"after":',
            json_column(after),
            ',"op":',
            json_column(ops),
            ',"source":',
            source_json,
            ',"ts_ms":',
            json_column(now),
            "}",
            "",
        )
    else:
        types = batch.column("type")
        deleted = pc.is_in(types, pa.array(["DELETE", "UPDATE_BEFORE"]))
        tombstone = pc.equal(types, "DELETE")
        key_columns = [
            pc.if_else(deleted, batch.column(f"before_{k}"), batch.column(f"after_{k}"))
            for k in key
        ]
        values = json_object(batch.schema.names, batch.columns)
    keys = json_object(key, key_columns) if key else None
    rows = np.arange(batch.num_rows)
    if params.tombstones:
        # each delete is followed by a message of its key and a null value
        gone = np.asarray(tombstone.fill_null(False))
        rows = np.repeat(rows, 1 + gone)
        second = np.zeros(len(rows), bool)
        second[1:] = rows[1:] == rows[:-1]
        taken = pa.array(rows)
        values = pc.if_else(pa.array(second), _NO_TEXT, values.take(taken))
        keys = keys.take(taken) if keys is not None else None
    return Messages(topic_of(params, table), keys, values, rows)


def _split_key_changes(batch: pa.RecordBatch, kind: str, key: list[str]) -> pa.RecordBatch:
    """An update that changes the primary key as a delete of the old key and an insert of the
    new one (as Debezium does): the two keys may hash to different partitions, and a consumer
    applying by key must see the old key's delete after that key's earlier changes."""
    if not key:
        return batch
    if kind == "envelope":
        update = pc.equal(batch.column("op"), "u")
        old = [pc.struct_field(batch.column("before"), k) for k in key]
        new = [pc.struct_field(batch.column("after"), k) for k in key]
        codes = ("d", "c")
    else:
        update = pc.equal(batch.column("type"), "UPDATE")
        old = [batch.column(f"before_{k}") for k in key]
        new = [batch.column(f"after_{k}") for k in key]
        codes = ("DELETE", "INSERT")
    changed = pa.array([False] * batch.num_rows)
    for left, right in zip(old, new, strict=True):
        changed = pc.or_(changed, pc.fill_null(pc.not_equal(left, right), True))
    flags = pc.and_(update, changed).to_pylist()
    if not any(flags):
        return batch
    take: list[int] = []
    role: list[int] = []  # 0 as is, 1 the delete half, 2 the insert half
    for index, flag in enumerate(flags):
        take.extend([index, index] if flag else [index])
        role.extend([1, 2] if flag else [0])
    taken = batch.take(pa.array(take, pa.int64()))
    roles = pa.array(role, pa.int8())
    is_delete, is_insert = pc.equal(roles, 1), pc.equal(roles, 2)
    columns = []
    for name, column in zip(taken.schema.names, taken.columns, strict=True):
        if name in ("op", "type"):
            split = pc.if_else(is_delete, codes[0], pc.if_else(is_insert, codes[1], column))
        elif name == "before" or name.startswith("before_"):
            split = pc.if_else(is_insert, pa.scalar(None, column.type), column)
        elif name == "after" or name.startswith("after_"):
            split = pc.if_else(is_delete, pa.scalar(None, column.type), column)
        else:
            split = column
        columns.append(split)
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)
