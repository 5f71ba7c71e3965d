"""``parameter`` of ``kafkawriter`` (``kafkasink``): ChunJun's names plus syncx's CDC options."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from libs.kafka.settings import validate_settings
from sync.model import Params

__all__ = ["KafkaWriterParams"]


class KafkaWriterParams(Params):
    """``parameter`` of ``kafkawriter``."""

    topic: str | None = Field(
        default=None,
        description=(
            "Target topic. For CDC input it may name the source table: {db} (or {schema}) and "
            "{table} are replaced, e.g. cdc.{db}.{table}."
        ),
    )
    table_id_to_topic_mapping: dict[str, str] = Field(
        default_factory=dict,
        description="CDC input: source table (db.table, or table) → topic. Not with `topic`.",
    )
    producer_settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Client settings (must hold bootstrap.servers); Java keys are translated.",
        examples=[{"bootstrap.servers": "localhost:9092"}],
    )
    consumer_settings: dict[str, Any] = Field(
        default_factory=dict,
        description="ChunJun 1.10's docs name producerSettings so: accepted, with a warning.",
    )
    table_fields: list[str] = Field(
        default_factory=list,
        description="Names of the incoming columns, by position, in the JSON messages.",
    )
    partition_assign_columns: list[str] = Field(
        default_factory=list,
        description="The message key is the JSON object of these columns (each in tableFields).",
    )
    partition_strategy: Literal["all-to-zero", "hash-by-key"] | None = Field(
        default=None,
        description=(
            "all-to-zero: every message to partition 0; hash-by-key: by the key (murmur2, as "
            "Java clients do). Default: by key when there is one, else spread."
        ),
    )
    data_compel_order: bool = Field(
        default=False, description="Keep the input order: needs one writer channel."
    )
    semantic: Literal["exactly-once", "at-least-once"] = Field(
        default="exactly-once",
        description=(
            "exactly-once: one Kafka transaction per writer channel and checkpoint (consumers "
            "must read with isolation.level=read_committed); at-least-once: an idempotent "
            "producer flushed at each checkpoint."
        ),
    )
    cdc_format: Literal["auto", "debezium", "paving"] = Field(
        default="auto",
        description=(
            "CDC input: debezium (before/after/op/source/ts_ms) needs binlogreader's envelope "
            "(pavingData: false), paving its flat layout; auto follows the input."
        ),
    )
    tombstones: bool = Field(
        default=False, description="CDC input: a null-valued message after each delete."
    )
    create_topic: bool = Field(default=False, description="Create missing topics.")
    topic_partitions: Annotated[int, Field(gt=0)] = Field(
        default=1, description="Partitions of a topic created by createTopic."
    )
    transactional_id_prefix: str | None = Field(
        default=None,
        description="Prefix of the transactional ids (default syncx-<job id>): stable per job.",
    )
    timezone: str | None = Field(default=None, description="Accepted for ChunJun (unused).")
    encoding: str = Field(default="UTF-8", description="Accepted for ChunJun (UTF-8 only).")

    @field_validator("producer_settings", "consumer_settings")
    @classmethod
    def _settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        return validate_settings(value, "producer") if value else value

    @model_validator(mode="after")
    def _consistent(self) -> KafkaWriterParams:
        if self.topic and self.table_id_to_topic_mapping:
            msg = "set either topic or tableIdToTopicMapping, not both"
            raise ValueError(msg)
        if not self.topic and not self.table_id_to_topic_mapping:
            msg = "topic (or tableIdToTopicMapping for CDC input) is required"
            raise ValueError(msg)
        if self.producer_settings and self.consumer_settings:
            msg = "set producerSettings only (consumerSettings is its ChunJun 1.10 doc spelling)"
            raise ValueError(msg)
        if not self.producer_settings and not self.consumer_settings:
            msg = "producerSettings is required (it must hold bootstrap.servers)"
            raise ValueError(msg)
        outside = [c for c in self.partition_assign_columns if c not in self.table_fields]
        if outside and self.table_fields:
            msg = f"partitionAssignColumns {', '.join(outside)} must be in tableFields"
            raise ValueError(msg)
        if self.partition_assign_columns and not self.table_fields:
            msg = "partitionAssignColumns needs tableFields (the columns are named there)"
            raise ValueError(msg)
        if self.encoding.replace("-", "").lower() != "utf8":
            msg = "only UTF-8 is supported"
            raise ValueError(msg)
        return self

    def settings(self) -> dict[str, Any]:
        """The producer settings map, whichever key the job used."""
        return self.producer_settings or self.consumer_settings
