"""``kafkareader`` (``kafkasource``): topics read with ``assign()``, offsets in checkpoints.

**Splits.** The engine's splits are fixed when a job starts, but a topic may gain partitions
while it runs, so a split is a reader *channel*: channel ``i`` of ``n`` owns the partitions
``(crc32(topic) + partition) % n == i``, assigns them itself, and looks for new partitions every
few seconds (a new partition is read from its beginning, as Flink does). A split's position is
the next offset of every partition it has read (``topic:partition`` → offset).

**Where a partition starts**: at the position of the checkpoint being restored, or where the
last successful run of the job ended (its incremental state); else by
``mode``: ``group-offsets`` (the group's committed offset; without one, the settings'
``auto.offset.reset``, default latest), ``earliest-offset``, ``latest-offset``, ``timestamp``
(the first message at or after it), ``specific-offsets`` (listed partitions; others by the
group's offset, else earliest). Offsets are resolved to numbers when assigned, so a position
never holds "latest".

**Guarantees.** Partitions are assigned, never subscribed (no rebalancing; the group is only
where offsets are committed). Consumers read ``isolation.level=read_committed``, with auto
commit off. The group's offsets are committed when a checkpoint is stored
(:meth:`Reader.notify_checkpoint_complete`, for every split: one read to its end is closed
before the final checkpoint), only then, so external lag monitors see the
job's progress and a restart from the group's offsets never skips a message.

**Bounded runs** (``stopAt``): ``latest`` reads every partition up to its end offset as of the
run's start; a timestamp stops each partition at its first message at or after it (and at that
end offset at the latest). The run then ends with a final checkpoint and exit 0, offsets saved
(for cron catch-up runs, as ``binlogreader``'s ``stopAt: now``). Without ``stopAt`` the reader
runs until stopped (SIGTERM: final checkpoint, exit 0).
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar

import pyarrow as pa
from typing_extensions import override

from libs.kafka.client import describe, driver, ensure_topics, list_topics, quiet
from libs.kafka.settings import client_config
from readers.kafka.decode import Decoder, Polled
from readers.kafka.params import KafkaReaderParams, parse_offsets
from sync.contract import (
    CompletedCheckpoint,
    JobContext,
    Position,
    Reader,
    Split,
    SplitReader,
    State,
)
from sync.errors import JobFailedError, RetriableError

__all__ = ["KafkaChannel", "KafkaOffsets", "KafkaReader"]

log = logging.getLogger(__name__)

WHERE = "job.content[0].reader.parameter"
_DISCOVERY_SECONDS = 5.0
_POLL_SECONDS = 0.5
_TIMEOUT = 10.0
_OFFSET_BEGINNING = -2


@dataclass(frozen=True)
class KafkaOffsets(State):
    """A split's position: the next offset of each partition read (``topic:partition``)."""

    offsets: dict[str, int]


@dataclass(frozen=True)
class KafkaChannel(State):
    """A split: the partitions of reader channel ``channel`` of ``channels``."""

    channel: int
    channels: int


def owner(topic: str, partition: int, channels: int) -> int:
    """The channel that reads a partition (stable across runs; never Python's ``hash``)."""
    return (zlib.crc32(topic.encode()) + partition) % channels


class KafkaReader(Reader[KafkaReaderParams]):
    """Reads topics, one split per reader channel."""

    Parameters = KafkaReaderParams
    position_type: ClassVar[type[State] | None] = KafkaOffsets
    split_type: ClassVar[type[State] | None] = KafkaChannel

    def __init__(self, params: KafkaReaderParams, ctx: JobContext) -> None:
        super().__init__(params, ctx)
        self._kafka: ModuleType | None = None
        self._lock = threading.Lock()
        self._ends: dict[tuple[str, int], int] | None = None
        self._committer: Any = None
        self.started_ms = 0
        """When the bounded run read its end offsets (ms since the epoch)."""

    @property
    def kafka(self) -> ModuleType:
        """The confluent_kafka module (imported on first use)."""
        if self._kafka is None:
            self._kafka = driver("kafkareader")
        return self._kafka

    def config(self) -> dict[str, str]:
        """The consumer's librdkafka config with syncx's keys.

        The prefetch queue is capped at 8 MiB a partition rather than librdkafka's 64 MiB,
        unless the settings say otherwise: memory stays flat whatever the topic's size, and a
        poll still finds tens of thousands of messages waiting. (Capping it by count as well,
        at 20,000 messages, made each consumer drain its queue and then wait a whole fetch
        round trip: 82,000 instead of 160,000 messages/s on the bench.)"""
        config, _ = client_config(
            self.params.consumer_settings,
            "consumer",
            {
                "group.id": self.params.group_id,
                "enable.auto.commit": "false",
                "enable.auto.offset.store": "false",
                "isolation.level": "read_committed",
            },
        )
        config.setdefault("queued.max.messages.kbytes", "8192")
        return config

    @override
    def check(self) -> None:
        _, dropped = client_config(self.params.consumer_settings, "consumer", {})
        if dropped:
            log.warning(
                "%s.consumerSettings: ignoring key(s) librdkafka has no equivalent for (or that "
                "syncx sets itself): %s",
                WHERE,
                ", ".join(dropped),
            )
        ensure_topics(
            self.kafka,
            self.config(),
            self.params.topic_list(),
            create=self.params.create_topic,
            partitions=self.params.topic_partitions,
            where=f"{WHERE}.topic",
            known=list_topics(self.kafka, self.config(), f"{WHERE}.consumerSettings"),
        )

    @property
    @override
    def bounded(self) -> bool:
        return self.params.stop_at is not None

    @override
    def plan(self, parallelism: int) -> list[Split]:
        return [
            Split(f"kafka-channel-{i}-of-{parallelism}", KafkaChannel(i, parallelism))
            for i in range(parallelism)
        ]

    @override
    def open(self, split: Split, position: Position | None) -> SplitReader:
        data: KafkaChannel = split.data
        offsets = position.offsets if isinstance(position, KafkaOffsets) else {}
        return _ChannelReader(self, data, offsets)

    @override
    def next_job_state(self, positions: dict[str, Position]) -> dict[str, Any] | None:
        """Every partition's next offset, for the next run (a scheduled catch-up run starts
        there, not by ``mode``)."""
        offsets = dict(self.ctx.job_state.get("offsets") or {})
        for position in positions.values():
            if isinstance(position, KafkaOffsets):
                offsets.update(position.offsets)
        return {"offsets": offsets}

    @override
    def notify_checkpoint_complete(self, checkpoint: CompletedCheckpoint) -> None:
        """Commit the group's offsets to the checkpoint's positions (every split's, those read
        to their end included), so lag monitors see progress and a group restart never skips."""
        offsets = []
        for position in checkpoint.positions.values():
            if isinstance(position, KafkaOffsets):
                for key, offset in position.offsets.items():
                    topic, _, partition = key.rpartition(":")
                    offsets.append(self.kafka.TopicPartition(topic, int(partition), offset))
        if not offsets:
            return
        if self._committer is None:
            self._committer = self.kafka.Consumer(quiet(self.config()))
        try:
            self._committer.commit(offsets=offsets, asynchronous=False)
        except self.kafka.KafkaException as exc:
            log.warning(
                "kafkareader: committing group %s's offsets of checkpoint %d failed (%s); the "
                "checkpoint holds them, the next one retries",
                self.params.group_id,
                checkpoint.id,
                describe(exc),
            )

    @override
    def close(self) -> None:
        if self._committer is not None:
            self._committer.close()
            self._committer = None

    def ends(self, consumer: Any) -> dict[tuple[str, int], int]:
        """Every partition's end offset when the run started (``stopAt``), read once."""
        with self._lock:
            if self._ends is None:
                self.started_ms = int(time.time() * 1000)
                ends: dict[tuple[str, int], int] = {}
                for topic, count in self.partitions(consumer).items():
                    for partition in range(count):
                        tp = self.kafka.TopicPartition(topic, partition)
                        ends[(topic, partition)] = self.watermarks(consumer, tp)[1]
                self._ends = ends
            return self._ends

    def partitions(self, consumer: Any) -> dict[str, int]:
        """Partition counts of the topics read, now."""
        try:
            metadata = consumer.list_topics(timeout=_TIMEOUT)
        except self.kafka.KafkaException as exc:
            raise RetriableError(f"Kafka metadata: {describe(exc)}") from exc
        return {
            topic: len(metadata.topics[topic].partitions)
            for topic in self.params.topic_list()
            if topic in metadata.topics and metadata.topics[topic].error is None
        }

    def watermarks(self, consumer: Any, tp: Any) -> tuple[int, int]:
        """A partition's low and high watermark."""
        try:
            low, high = consumer.get_watermark_offsets(tp, _TIMEOUT, cached=False)
        except self.kafka.KafkaException as exc:
            msg = f"Kafka offsets of {tp.topic}:{tp.partition}: {describe(exc)}"
            raise RetriableError(msg) from exc
        return int(low), int(high)


class _ChannelReader(SplitReader):
    """The partitions of one reader channel, on one consumer."""

    def __init__(self, reader: KafkaReader, split: KafkaChannel, offsets: dict[str, int]) -> None:
        self.reader = reader
        self.kafka = reader.kafka
        self.params = reader.params
        self.split = split
        self.offsets = dict(offsets)
        self.decoder = Decoder(reader.params, reader.ctx.report_dirty)
        eof = {"enable.partition.eof": "true"} if reader.bounded else {}
        self.consumer = self.kafka.Consumer(quiet({**reader.config(), **eof}))
        self.assigned: set[tuple[str, int]] = set()
        self.done: set[tuple[str, int]] = set()
        self.ends: dict[tuple[str, int], int] = reader.ends(self.consumer) if reader.bounded else {}
        self.stop_ms = self.params.stop_at if isinstance(self.params.stop_at, int) else None

    @override
    def batches(self) -> Iterator[pa.RecordBatch | None]:
        stopping = self.reader.ctx.stopping
        rows = self.reader.ctx.batch_rows
        next_discovery = 0.0
        while not stopping.is_set():
            if time.monotonic() >= next_discovery and not (self.reader.bounded and self.assigned):
                self._discover()
                next_discovery = time.monotonic() + _DISCOVERY_SECONDS
            if self.reader.bounded and self.done >= self.assigned:
                return
            try:
                polled = self.consumer.consume(rows, _POLL_SECONDS)
            except self.kafka.KafkaException as exc:
                raise RetriableError(f"Kafka consumer: {describe(exc)}") from exc
            kept = self._accept(polled)
            if not len(kept):
                yield None
                continue
            batches = self.decoder.decode(kept)
            if not batches:
                yield None
            yield from batches

    def _accept(self, polled: list[Any]) -> Polled:
        """Messages to decode; advances the offsets, stops partitions at their bounded end.

        A bounded partition ends at the end-of-partition event at or past its end offset, or at
        a message past it that was written after the run started. A message past the end offset
        written before the start is still read: a broker may under-report its end offset (Tansu
        counts its last batch's first offset), and such a message was there at the start.
        """
        topics: list[str] = []
        keys: list[bytes | None] = []
        values: list[bytes | None] = []
        last: dict[tuple[str, int], int] = {}
        done, ends, stop_ms = self.done, self.ends, self.stop_ms
        for message in polled:
            error = message.error()
            if error is not None:
                self._event(message, error)
                continue
            tp = (message.topic(), message.partition())
            if done and tp in done:
                continue
            offset = message.offset()
            if stop_ms is not None or (ends and offset >= ends.get(tp, offset + 1)):
                written = message.timestamp()[1]
                past_end = offset >= ends.get(tp, offset + 1) and written >= self.reader.started_ms
                if past_end or (stop_ms is not None and written >= stop_ms):
                    self._finish(tp)
                    continue
            last[tp] = offset
            topics.append(tp[0])
            keys.append(message.key())
            values.append(message.value())
        for (topic, partition), offset in last.items():
            self.offsets[f"{topic}:{partition}"] = offset + 1
        return Polled(topics, keys, values)

    def _event(self, message: Any, error: Any) -> None:
        """An end-of-partition event, or an error: fatal ones fail the job."""
        if error.code() == self.kafka.KafkaError._PARTITION_EOF:
            self._at_end(message)
        elif error.fatal() or not error.retriable():
            msg = f"Kafka consumer, {message.topic()}:{message.partition()}: {error.str()}"
            raise JobFailedError(msg)

    def _at_end(self, eof: Any) -> None:
        """A bounded run's partition is done when the consumer caught up with its end offset
        (the last offsets of a partition may be transaction markers, never delivered)."""
        tp = (eof.topic(), eof.partition())
        end = self.ends.get(tp)
        if end is not None and eof.offset() >= end and tp not in self.done:
            key = f"{tp[0]}:{tp[1]}"
            self.offsets[key] = max(self.offsets.get(key, 0), eof.offset())
            self._finish(tp)

    def _finish(self, tp: tuple[str, int]) -> None:
        self.done.add(tp)
        self.consumer.pause([self.kafka.TopicPartition(*tp)])

    def _discover(self) -> None:
        """Assign partitions this channel owns and has not assigned yet."""
        counts = self.reader.partitions(self.consumer)
        new = [
            (topic, partition)
            for topic, count in counts.items()
            for partition in range(count)
            if owner(topic, partition, self.split.channels) == self.split.channel
            and (topic, partition) not in self.assigned
        ]
        if not new:
            return
        first_run = not self.assigned
        starts = self._starts(new, first_run)
        tps = []
        for tp in new:
            self.assigned.add(tp)
            start = starts[tp]
            if self.reader.bounded and tp not in self.ends:
                self.done.add(tp)  # created after the run read its end offsets: past the bound
                continue
            # a start at or past the end offset is not skipped: a broker may under-report the end
            # (see _accept); the end-of-partition event ends the partition (_at_end)
            tps.append(self.kafka.TopicPartition(tp[0], tp[1], start))
            self.offsets.setdefault(f"{tp[0]}:{tp[1]}", start)
        if tps:
            self.consumer.incremental_assign(tps)
            log.info("kafkareader: channel %d reads %s", self.split.channel, _listed(tps))

    def _starts(self, new: list[tuple[str, int]], first_run: bool) -> dict[tuple[str, int], int]:
        """Where each new partition starts: its stored position, else by ``mode``."""
        starts: dict[tuple[str, int], int] = {}
        pending: list[tuple[str, int]] = []
        saved = self.reader.ctx.job_state.get("offsets") or {}
        for tp in new:
            key = f"{tp[0]}:{tp[1]}"
            stored = self.offsets.get(key, saved.get(key))
            if stored is not None:
                starts[tp] = stored
            else:
                pending.append(tp)
        if not pending:
            return starts
        # a partition added while the job runs is read from its beginning
        mode = self.params.mode if first_run else "earliest-offset"
        specific = (
            parse_offsets(self.params.offset or "", self.params.topic_list())
            if mode == "specific-offsets"
            else {}
        )
        committed = (
            self._committed(pending) if mode in ("group-offsets", "specific-offsets") else {}
        )
        by_time = self._by_time(pending) if mode == "timestamp" else {}
        for tp in pending:
            low, high = self.reader.watermarks(self.consumer, self.kafka.TopicPartition(*tp))
            if mode == "earliest-offset":
                start = low
            elif mode == "latest-offset":
                start = high
            elif mode == "timestamp":
                start = by_time.get(tp, high)
            elif mode == "specific-offsets" and tp in specific:
                start = specific[tp]
            elif committed.get(tp, -1) >= 0:
                start = committed[tp]
            elif mode == "specific-offsets" or self._reset() == "earliest":
                start = low
            else:
                start = high
            starts[tp] = max(low, min(start, high)) if start >= 0 else low
        return starts

    def _reset(self) -> str:
        value = str(self.params.consumer_settings.get("auto.offset.reset", "latest")).lower()
        return "earliest" if value in ("earliest", "smallest", "beginning") else "latest"

    def _committed(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        try:
            found = self.consumer.committed(
                [self.kafka.TopicPartition(*tp) for tp in tps], _TIMEOUT
            )
        except self.kafka.KafkaException as exc:
            raise RetriableError(f"Kafka committed offsets: {describe(exc)}") from exc
        return {(t.topic, t.partition): t.offset for t in found}

    def _by_time(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        stamp = self.params.timestamp or 0
        query = [self.kafka.TopicPartition(tp[0], tp[1], stamp) for tp in tps]
        try:
            found = self.consumer.offsets_for_times(query, _TIMEOUT)
        except self.kafka.KafkaException as exc:
            raise RetriableError(f"Kafka offsets for {stamp}: {describe(exc)}") from exc
        return {(t.topic, t.partition): t.offset for t in found if t.offset >= 0}

    @override
    def snapshot(self) -> KafkaOffsets:
        return KafkaOffsets(dict(self.offsets))

    @override
    def close(self) -> None:
        self.consumer.close()


def _listed(tps: list[Any]) -> str:
    return ", ".join(f"{t.topic}:{t.partition}@{t.offset}" for t in tps)
