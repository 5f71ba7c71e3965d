"""``kafkawriter`` (``kafkasink``): JSON messages into Kafka, exactly once with transactions.

**Exactly-once** (default). Each writer channel writes a checkpoint's messages inside one Kafka
transaction; ``prepare`` flushes it and adds the *commit token*, ``commit`` commits it after the
checkpoint is stored. A channel's producers have stable transactional ids,
``<prefix>-<channel>-<slot>`` (prefix ``syncx-<job id>``, the same across runs and restores of
one job): the next checkpoint's messages go to the next free slot while the previous one waits
for its commit, so a channel uses at most ``tolerableFailedCheckpoints + 2`` slots. Starting an
attempt initializes every slot's id once, which fences a zombie producer of an earlier process
and aborts what it left open. ``enable.idempotence`` and ``acks=all`` are forced;
``transaction.timeout.ms`` is sized from the checkpoint interval (a run without periodic
checkpoints keeps one transaction open to its end: 15 minutes, Kafka's default maximum), and a
broker whose ``transaction.max.timeout.ms`` is lower refuses it at start with a message saying
which knob to turn.

*The commit token and the spool.* librdkafka cannot commit a transaction prepared by a process
that died, so the crash window between "checkpoint stored" and "transaction committed" would lose
that checkpoint's messages. Each transaction therefore also commits, through
``send_offsets_to_transaction``, an offset of the checkpoint id for a syncx-owned group
(``<prefix>-<channel>-token``), and its messages are kept in a spool file on local disk
(:mod:`writers.kafka.spool`, in the state folder's ``tmp/kafka/``), made durable before the
checkpoint is stored and replaced by an empty commit marker once the transaction has committed.
On restore, a handle whose token is below its checkpoint and that has no commit marker belongs to
a transaction that never committed: its producer id is
fenced (the broker aborts the transaction) and the spool's messages are written again in one new
transaction with the token, in their produce order. A transaction that did commit is left alone,
so a restore neither loses nor repeats a message. Messages go to librdkafka a batch per call
(:mod:`libs.kafka.batch`), without a Python call per message.

**At-least-once** (``semantic: at-least-once``): one idempotent producer per channel, flushed at
each checkpoint; messages after the last checkpoint are written again on a restore.

Bad input: a message over ``message.max.bytes`` is a dirty record; a transaction fenced by
another process (a second run of the same job) fails the job naming the transactional id; a
restore that needs a spool which is gone (the state folder's ``tmp/`` emptied by hand, or a Ray
channel's spool on another node) fails naming the file and the checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, NoReturn

import numpy as np
import pyarrow as pa
from typing_extensions import override

from libs.kafka.batch import BatchProducer
from libs.kafka.client import describe, driver, ensure_topics, error_code, list_topics, quiet
from libs.kafka.settings import client_config
from sync.contract import DirtyRecord, Handle, JobContext, Semantic, State, Writer, WriterTask
from sync.errors import FatalError, JobFailedError, JobFileError, RetriableError
from writers.kafka.messages import WHERE, Messages, encode
from writers.kafka.params import KafkaWriterParams
from writers.kafka.spool import Spool, commit_marker, read_spool, spool_folder

__all__ = ["KafkaTxn", "KafkaWriter"]

log = logging.getLogger(__name__)

_MAX_TXN_MS = 900_000
_TIMEOUT = 30.0
_FENCED = {
    "_FENCED",
    "PRODUCER_FENCED",
    "INVALID_PRODUCER_EPOCH",
    "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
}


@dataclass(frozen=True)
class KafkaTxn(State):
    """The handle of one prepared transaction: enough to find out whether it committed and, if
    not, to write its messages again."""

    VERSION: ClassVar[int] = 2

    subtask: int
    transactional_id: str
    checkpoint: int
    token_group: str
    token_topic: str
    spool: str
    """The spool file's name in :func:`~writers.kafka.spool.spool_folder` (empty for a
    version 1 handle, whose messages were tagged in the topic log instead)."""
    count: int

    @classmethod
    @override
    def upgrade(cls, data: dict[str, Any], version: int) -> dict[str, Any]:
        # version 1 named a header tag and the partitions' start offsets, and had no spool
        del data["tag"], data["starts"]
        return {**data, "spool": ""}


class KafkaWriter(Writer[KafkaWriterParams]):
    """Writes JSON messages to Kafka topics."""

    Parameters = KafkaWriterParams
    handle_type: ClassVar[type[State] | None] = KafkaTxn

    def __init__(self, params: KafkaWriterParams, ctx: JobContext) -> None:
        super().__init__(params, ctx)
        self.prefix = params.transactional_id_prefix or f"syncx-{ctx.job_id}"
        self.slots = ctx.restore.tolerable_failed_checkpoints + 2
        self._kafka: ModuleType | None = None
        self._topics: dict[str, int] = {}
        self._fenced: dict[str, Any] = {}
        """Producers :meth:`begin` initialized, by transactional id, for the tasks to take."""

    @property
    def kafka(self) -> ModuleType:
        """The confluent_kafka module (imported on first use)."""
        if self._kafka is None:
            self._kafka = driver("kafkawriter")
        return self._kafka

    @override
    def effective_semantic(self) -> Semantic:
        return self.params.semantic

    def config(self, **overrides: str) -> dict[str, str]:
        """The producer's librdkafka config with syncx's keys."""
        forced = {"enable.idempotence": "true", "acks": "all", "partitioner": "murmur2_random"}
        config, _ = client_config(self.params.settings(), "producer", {**forced, **overrides})
        # librdkafka buffers up to 1 GiB (and 100,000 messages) per producer by default; a
        # channel has a producer per open transaction: capped, a slow broker slows the job
        config.setdefault("queue.buffering.max.kbytes", "16384")
        config.setdefault("queue.buffering.max.messages", "50000")
        if self.params.semantic == "exactly-once":
            config.setdefault("transaction.timeout.ms", str(self.transaction_timeout_ms()))
        return config

    def transaction_timeout_ms(self) -> int:
        """How long a transaction may stay open: a checkpoint interval per slot, plus a minute."""
        if not self.ctx.checkpoints:
            return _MAX_TXN_MS
        interval = self.ctx.restore.checkpoint_interval or 10.0
        return int(min(_MAX_TXN_MS, max(60_000, (interval * self.slots + 60) * 1000)))

    @override
    def check(self) -> None:
        settings_key = "producerSettings" if self.params.producer_settings else "consumerSettings"
        if settings_key == "consumerSettings":
            log.warning(
                "%s.consumerSettings is read as producerSettings (ChunJun 1.10's docs name it "
                "so); rename it",
                WHERE,
            )
        _, dropped = client_config(self.params.settings(), "producer", {})
        if dropped:
            log.warning(
                "%s.%s: ignoring Java client key(s) librdkafka has no equivalent for: %s",
                WHERE,
                settings_key,
                ", ".join(dropped),
            )
        if self.params.data_compel_order and self.ctx.writers > 1:
            msg = (
                f"{WHERE}.dataCompelOrder: true keeps the input order, which needs one writer "
                f"channel: set setting.speed.writerChannel to 1 (it is {self.ctx.writers})"
            )
            raise JobFileError(msg)
        self._topics = list_topics(self.kafka, self.config(), f"{WHERE}.{settings_key}")
        fixed = [self.params.topic] if self.params.topic and "{" not in self.params.topic else []
        self.ensure_topics([*fixed, *self.params.table_id_to_topic_mapping.values()])

    def ensure_topics(self, topics: list[str]) -> None:
        """Check (or create, with createTopic) topics before writing to them."""
        new = [t for t in topics if t not in self._topics]
        if not topics or (not new and self._topics):
            return
        self._topics.update(
            ensure_topics(
                self.kafka,
                self.config(),
                new,
                create=self.params.create_topic,
                partitions=self.params.topic_partitions,
                where=f"{WHERE}.topic",
                known=self._topics,
            )
        )

    def transactional_id(self, subtask: int, slot: int) -> str:
        """The stable transactional id of a channel's slot."""
        return f"{self.prefix}-{subtask}-{slot}"

    def token_group(self, subtask: int) -> str:
        """The syncx-owned group whose committed offset is a channel's last committed checkpoint."""
        return f"{self.prefix}-{subtask}-token"

    def producer(self, transactional_id: str | None, on_delivery: Any = None) -> Any:
        """A producer; transactional (and initialized, fencing older ones) when given an id;
        ``on_delivery`` hears of failed deliveries only. Successful deliveries are not reported
        at all (a transaction's commit fails when one of its messages did): serving a report per
        message was a third of the producing thread's time."""
        producer = self._connected(transactional_id, on_delivery)
        if transactional_id:
            self._init(producer, transactional_id)
        return producer

    def _connected(self, transactional_id: str | None, on_delivery: Any = None) -> Any:
        """A new producer (see :meth:`producer`), connected when transactional: an init that
        starts before the connection is up waits for librdkafka's next coordinator query, 0.5 s
        later (half the fresh inits here)."""
        overrides = {"transactional.id": transactional_id} if transactional_id else {}
        config: dict[str, Any] = quiet(self.config(**overrides))
        config["delivery.report.only.error"] = True
        if on_delivery is not None:
            config["on_delivery"] = on_delivery
        producer = self.kafka.Producer(config)
        if transactional_id:
            try:
                producer.list_topics(timeout=_TIMEOUT)
            except self.kafka.KafkaException as exc:
                fail(exc, transactional_id, self.transaction_timeout_ms())
        return producer

    def _init(self, producer: Any, transactional_id: str) -> None:
        """Initialize a transactional producer: fences older producers of its id."""
        try:
            producer.init_transactions(_TIMEOUT)
        except self.kafka.KafkaException as exc:
            fail(exc, transactional_id, self.transaction_timeout_ms())

    def group_metadata(self, group: str) -> Any:
        """The consumer-group metadata ``send_offsets_to_transaction`` needs for ``group``."""
        config = {"bootstrap.servers": self.config()["bootstrap.servers"], "group.id": group}
        consumer = self.kafka.Consumer(quiet(config))
        try:
            return consumer.consumer_group_metadata()
        finally:
            consumer.close()

    @property
    def partition(self) -> int:
        """The partition of every message (``all-to-zero``), or -1: librdkafka's partitioner."""
        return 0 if self.params.partition_strategy == "all-to-zero" else -1

    def spool_path(self, name: str) -> Path:
        """A transaction spool of this job's, by file name."""
        return spool_folder(self.ctx.temp_dir) / name

    @override
    def begin(self, handles: list[Handle], *, fresh: bool) -> None:
        if self.params.semantic != "exactly-once":
            return
        for handle in sorted(handles, key=lambda h: (h.subtask, h.checkpoint)):
            Recovery(self, handle).run()
        # spools and markers no restored handle names: transactions aborted with their process
        # (a restored handle's marker stays: this run may die before its next checkpoint, and
        # the marker must answer for the handle again then)
        named = {
            n for h in handles if h.spool for n in (h.spool, commit_marker(Path(h.spool)).name)
        }
        for leftover in spool_folder(self.ctx.temp_dir).glob(f"{self.prefix}-*"):
            if leftover.name not in named:
                leftover.unlink(missing_ok=True)
        # fence every slot's id (the broker aborts what an earlier process left open), one
        # after the other: Tansu can leave commits unresolved when transactions end at the same
        # moment, and fenced at once that happened in 4 of 6 crash rounds (1 of 12 one by one).
        # Their producers connect at once, though: librdkafka takes ~50 ms to connect a new
        # producer to its coordinator, 0.3 s of a 2-channel job's start one after the other.
        # The tasks take these producers (see fenced).
        ids = [
            self.transactional_id(subtask, slot)
            for subtask in range(self.ctx.writers)
            for slot in range(self.slots)
        ]
        with ThreadPoolExecutor(min(len(ids), 16), thread_name_prefix="kafka-connect") as pool:
            producers = list(pool.map(self._connected, ids))
        for tid, producer in zip(ids, producers, strict=True):
            self._init(producer, tid)
        self._fenced = dict(zip(ids, producers, strict=True))

    def client(self, producer: Any) -> BatchProducer:
        """The batch client of a producer of this writer's :meth:`config`, whose forced
        ``murmur2_random`` partitioner lets the client partition keys itself."""
        return BatchProducer(self.kafka, producer, murmur2=True)

    def fenced(self, transactional_id: str) -> Any:
        """The producer :meth:`begin` initialized for an id (once), else a new one."""
        return self._fenced.pop(transactional_id, None) or self.producer(transactional_id)

    @override
    def open(self, subtask: int, subtasks: int, schema: pa.Schema | None) -> WriterTask:
        if self.params.semantic == "exactly-once":
            return _TransactionalTask(self, subtask)
        return _IdempotentTask(self, subtask)


def fail(exc: BaseException, transactional_id: str, timeout_ms: int) -> NoReturn:
    """Raise the syncx error for a failed transactional call."""
    code = error_code(exc)
    if code in _FENCED:
        msg = (
            f"Kafka transactional id {transactional_id} was taken over by another producer: "
            "another run of this job (same job name and state directory, or the same "
            "transactionalIdPrefix) is writing to Kafka. Stop it; this run wrote nothing visible"
        )
        raise FatalError(msg) from exc
    if code == "INVALID_TRANSACTION_TIMEOUT":
        msg = (
            f"the broker refuses transaction.timeout.ms={timeout_ms}: it is above the broker's "
            "transaction.max.timeout.ms. Raise that on the broker, checkpoint more often "
            "(setting.restore.checkpointInterval), or set producerSettings.transaction.timeout.ms"
        )
        raise FatalError(msg) from exc
    error = exc.args[0] if exc.args else None
    if error is not None and getattr(error, "fatal", lambda: False)():
        raise FatalError(f"Kafka producer {transactional_id}: {describe(exc)}") from exc
    raise RetriableError(f"Kafka producer {transactional_id}: {describe(exc)}") from exc


@dataclass
class _Txn:
    """A transaction being written or waiting for its commit, on one slot's producer."""

    slot: int
    client: BatchProducer
    transactional_id: str
    spool: Spool
    token_topic: str = ""
    count: int = 0


class _Task(WriterTask):
    """What both semantics share: encoding, producing with backpressure, dirty records."""

    def __init__(self, writer: KafkaWriter, subtask: int) -> None:
        self.writer = writer
        self.kafka = writer.kafka
        self.subtask = subtask
        self.params = writer.params

    def produce_all(
        self, client: BatchProducer, messages: Messages, batch: pa.RecordBatch
    ) -> tuple[list[DirtyRecord], Messages]:
        """Produce ``messages``; ones over ``message.max.bytes`` are dirty. Returns the dirty
        records and the messages produced."""
        refused = client.produce(
            messages.topic, messages.keys, messages.values, self.writer.partition
        )
        if not refused:
            return [], messages
        dirty = [
            DirtyRecord(
                batch.slice(int(messages.rows[index]), 1).to_pylist()[0],
                f"message of {len(messages.values[index].as_py() or '')} bytes is over the "
                "producer's message.max.bytes (producerSettings.message.max.bytes, and the "
                "topic's max.message.bytes)",
            )
            for index in sorted(refused)
        ]
        keep = np.ones(len(messages.values), bool)
        keep[list(refused)] = False
        mask = pa.array(keep)
        keys = messages.keys.filter(mask) if messages.keys is not None else None
        kept = Messages(messages.topic, keys, messages.values.filter(mask), messages.rows[keep])
        return dirty, kept

    def messages(self, batch: pa.RecordBatch) -> Messages | None:
        """The batch's messages, their topic checked first."""
        messages = encode(self.params, batch)
        if messages is not None:
            self.writer.ensure_topics([messages.topic])
        return messages


class _TransactionalTask(_Task):
    """One transaction per checkpoint on a pool of slots (see the module docstring)."""

    def __init__(self, writer: KafkaWriter, subtask: int) -> None:
        super().__init__(writer, subtask)
        self._free: dict[int, BatchProducer] = {}
        self._open: _Txn | None = None
        self._prepared: dict[int, _Txn] = {}
        self._aborted: set[int] = set()
        """Checkpoints whose transaction this task aborted: never written again by a commit."""
        self._clients: list[BatchProducer] = []
        self._nonce = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._serial = 0
        self._metadata: Any = None
        self._marker: Path | None = None
        """The commit marker of this task's last committed transaction."""
        self._removals: list[Future[None]] = []
        """The background deletions of committed spools (waited for at close)."""

    def _begin(self) -> _Txn:
        busy = {t.slot for t in self._prepared.values()}
        slot = next((s for s in range(self.writer.slots) if s not in busy), None)
        if slot is None:
            msg = (
                f"kafkawriter: {len(busy)} prepared transactions of subtask {self.subtask} wait "
                f"for their commit, as many as its transactional ids "
                "(setting.restore.tolerableFailedCheckpoints + 2); raise tolerableFailedCheckpoints"
            )
            raise JobFailedError(msg)
        tid = self.writer.transactional_id(self.subtask, slot)
        client = self._free.pop(slot, None)
        if client is None:
            client = self.writer.client(self.writer.fenced(tid))
            self._clients.append(client)
        try:
            client.producer.begin_transaction()
        except self.kafka.KafkaException as exc:
            fail(exc, tid, self.writer.transaction_timeout_ms())
        self._serial += 1
        spool = Spool(self.writer.spool_path(f"{tid}-{self._nonce}-{self._serial}.arrows"))
        return _Txn(slot, client, tid, spool)

    @override
    def write(self, batch: pa.RecordBatch) -> list[DirtyRecord]:
        messages = self.messages(batch)
        if messages is None or not len(messages.values):
            return []
        if self._open is None:
            self._open = self._begin()
        txn = self._open
        txn.token_topic = txn.token_topic or messages.topic
        try:
            dirty, produced = self.produce_all(txn.client, messages, batch)
        except self.kafka.KafkaException as exc:
            fail(exc, txn.transactional_id, self.writer.transaction_timeout_ms())
        txn.spool.add(produced.topic, produced.keys, produced.values)
        txn.count += len(produced.values)
        return dirty

    @override
    def prepare(self, checkpoint_id: int) -> Handle:
        txn, self._open = self._open, None
        if txn is None:
            return None
        group = self.writer.token_group(self.subtask)
        producer = txn.client.producer
        try:
            remaining = producer.flush(_TIMEOUT)
            if remaining:
                msg = f"{remaining} message(s) not delivered within {_TIMEOUT}s"
                raise RetriableError(f"Kafka producer {txn.transactional_id}: {msg}")
            if self._metadata is None:
                self._metadata = self.writer.group_metadata(group)
            offsets = [self.kafka.TopicPartition(txn.token_topic, 0, checkpoint_id)]
            producer.send_offsets_to_transaction(offsets, self._metadata, _TIMEOUT)
        except self.kafka.KafkaException as exc:
            fail(exc, txn.transactional_id, self.writer.transaction_timeout_ms())
        txn.spool.seal()
        self._prepared[checkpoint_id] = txn
        return KafkaTxn(
            subtask=self.subtask,
            transactional_id=txn.transactional_id,
            checkpoint=checkpoint_id,
            token_group=group,
            token_topic=txn.token_topic,
            spool=txn.spool.path.name,
            count=txn.count,
        )

    @override
    def commit(self, handle: Handle) -> None:
        txn = self._prepared.pop(handle.checkpoint, None)
        if txn is None:
            if handle.checkpoint in self._aborted:
                log.warning(
                    "kafkawriter: not committing checkpoint %d's transaction %s: it was aborted",
                    handle.checkpoint,
                    handle.transactional_id,
                )
                return
            Recovery(self.writer, handle).run()
            return
        try:
            txn.client.producer.commit_transaction(_TIMEOUT)
        except self.kafka.KafkaException as exc:
            self._prepared[handle.checkpoint] = txn
            fail(exc, txn.transactional_id, self.writer.transaction_timeout_ms())
        marker, removal = txn.spool.committed()
        self._removals = [r for r in self._removals if not r.done()] + [removal]
        if self._marker is not None:
            self._marker.unlink(missing_ok=True)
        self._marker = marker
        self._free[txn.slot] = txn.client

    @override
    def abort(self, handle: Handle) -> None:
        txn = self._prepared.pop(handle.checkpoint, None)
        if txn is not None:
            self._aborted.add(handle.checkpoint)
            self._abort(txn)

    def _abort(self, txn: _Txn) -> None:
        txn.spool.discard()
        try:
            txn.client.producer.abort_transaction(_TIMEOUT)
            self._free[txn.slot] = txn.client
        except self.kafka.KafkaException as exc:
            log.warning(
                "aborting %s failed (%s); the next start fences it",
                txn.transactional_id,
                describe(exc),
            )

    @override
    def discard(self) -> None:
        txn, self._open = self._open, None
        if txn is not None:
            self._abort(txn)

    @override
    def close(self) -> None:
        for client in self._clients:
            client.close()
        for removal in futures.as_completed(self._removals):  # the run leaves no spool
            if removal.exception() is not None:
                log.warning("kafkawriter: a committed spool stays: %s", removal.exception())
        self._removals = []


class _IdempotentTask(_Task):
    """At-least-once: an idempotent producer, flushed at each checkpoint; a message the broker
    did not take (after librdkafka's retries) fails the checkpoint."""

    def __init__(self, writer: KafkaWriter, subtask: int) -> None:
        super().__init__(writer, subtask)
        self._errors: list[str] = []
        producer = writer.producer(None, on_delivery=self._delivered)
        self._client = BatchProducer(self.kafka, producer, per_message=True)

    def _delivered(self, error: Any, _message: Any) -> None:
        if error is not None:
            self._errors.append(error.str())

    @override
    def write(self, batch: pa.RecordBatch) -> list[DirtyRecord]:
        messages = self.messages(batch)
        if messages is None:
            return []
        return self.produce_all(self._client, messages, batch)[0]

    @override
    def prepare(self, checkpoint_id: int) -> Handle:
        remaining = self._client.producer.flush(_TIMEOUT)
        if remaining or self._errors:
            first = self._errors[0] if self._errors else f"not delivered within {_TIMEOUT}s"
            msg = f"Kafka producer: {remaining + len(self._errors)} message(s) lost: {first}"
            raise RetriableError(msg)
        return None

    @override
    def commit(self, handle: Handle) -> None:
        return None

    @override
    def abort(self, handle: Handle) -> None:
        return None

    @override
    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.producer.flush(5)


class Recovery:
    """Make sure a restored handle's transaction is committed: by its token, or by writing its
    messages again from its spool (see the module docstring)."""

    def __init__(self, writer: KafkaWriter, handle: KafkaTxn) -> None:
        self.writer = writer
        self.kafka = writer.kafka
        self.handle = handle

    def committed(self) -> bool:
        """Whether the token group's offset shows the handle's checkpoint (or a later one)."""
        config = self.writer.config()
        consumer = self.kafka.Consumer(
            quiet(
                {
                    "bootstrap.servers": config["bootstrap.servers"],
                    "group.id": self.handle.token_group,
                    "enable.auto.commit": "false",
                }
            )
        )
        try:
            tp = self.kafka.TopicPartition(self.handle.token_topic, 0)
            (found,) = consumer.committed([tp], _TIMEOUT)
        except self.kafka.KafkaException as exc:
            raise RetriableError(
                f"reading the commit token of {self.handle.transactional_id}: {describe(exc)}"
            ) from exc
        finally:
            consumer.close()
        return found.offset >= self.handle.checkpoint

    def run(self) -> None:
        """Commit the handle's messages unless they already are."""
        handle = self.handle
        path = self.writer.spool_path(handle.spool) if handle.spool else None
        marker = commit_marker(path) if path is not None else None
        if self.committed():
            for done in (path, marker):
                if done is not None:
                    done.unlink(missing_ok=True)
            return
        if marker is not None and marker.exists():  # committed; the broker lost its token
            path.unlink(missing_ok=True)
            return
        if path is None:
            msg = (
                f"checkpoint {handle.checkpoint}'s Kafka transaction {handle.transactional_id} "
                "did not commit, and it was written by a syncx older than the transaction "
                "spools (its messages are tagged in the topic log, which this syncx no longer "
                "reads back): restore this checkpoint with the syncx that wrote it, or start anew"
            )
            raise JobFailedError(msg)
        if not path.exists():
            msg = (
                f"checkpoint {handle.checkpoint}'s Kafka transaction {handle.transactional_id} "
                f"did not commit, and its spool {path}, which holds its {handle.count} "
                "messages, is gone: those messages are lost; restore an earlier checkpoint or "
                "start anew"
            )
            raise JobFailedError(msg)
        log.warning(
            "kafkawriter: checkpoint %d's transaction %s did not commit before the process "
            "stopped; writing its %d message(s) again",
            handle.checkpoint,
            handle.transactional_id,
            handle.count,
        )
        producer = self.writer.producer(handle.transactional_id)  # fences: the broker aborts it
        client = self.writer.client(producer)
        try:
            producer.begin_transaction()
            written = 0
            for topic, keys, values in read_spool(path):
                refused = client.produce(topic, keys, values, self.writer.partition)
                written += len(values) - len(refused)
            if written != handle.count:
                msg = (
                    f"the spool {path} of checkpoint {handle.checkpoint}'s Kafka transaction "
                    f"holds {written} messages where the checkpoint recorded {handle.count}"
                )
                raise JobFailedError(msg)
            metadata = self.writer.group_metadata(handle.token_group)
            tp = self.kafka.TopicPartition(handle.token_topic, 0, handle.checkpoint)
            producer.send_offsets_to_transaction([tp], metadata, _TIMEOUT)
            producer.commit_transaction(_TIMEOUT)
        except self.kafka.KafkaException as exc:
            fail(exc, handle.transactional_id, self.writer.transaction_timeout_ms())
        finally:
            client.close()
        marker.touch()  # the commit's token may be lost as well (see Spool.committed)
        path.unlink()
