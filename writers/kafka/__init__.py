"""``kafkawriter`` (``kafkasink``): see :mod:`writers.kafka.writer`."""

from __future__ import annotations

from writers.kafka.params import KafkaWriterParams
from writers.kafka.writer import KafkaTxn, KafkaWriter

__all__ = ["KafkaTxn", "KafkaWriter", "KafkaWriterParams"]
