"""``kafkareader`` (``kafkasource``): see :mod:`readers.kafka.reader`."""

from __future__ import annotations

from readers.kafka.params import KafkaColumn, KafkaReaderParams
from readers.kafka.reader import KafkaChannel, KafkaOffsets, KafkaReader

__all__ = ["KafkaChannel", "KafkaColumn", "KafkaOffsets", "KafkaReader", "KafkaReaderParams"]
