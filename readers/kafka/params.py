"""``parameter`` of ``kafkareader`` (``kafkasource``): ChunJun's names, plus ``stopAt``."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from libs.kafka.settings import validate_settings
from libs.types import arrow_type
from sync.model import Params

__all__ = ["KafkaColumn", "KafkaReaderParams", "parse_offsets"]

_OFFSET_ENTRY = re.compile(
    r"^\s*(?:topic\s*:\s*(?P<topic>[\w.\-]+)\s*,\s*)?partition\s*:\s*(?P<partition>\d+)\s*,"
    r"\s*offset\s*:\s*(?P<offset>\d+)\s*$",
    re.IGNORECASE,
)


class KafkaColumn(Params):
    """A field picked from JSON messages: its name, type and (temporal types) Java format."""

    name: str
    type: str = "string"
    format: str | None = Field(default=None, description="e.g. yyyy-MM-dd HH:mm:ss")

    @field_validator("type")
    @classmethod
    def _known(cls, value: str) -> str:
        arrow_type(value, default_string=True)
        return value


def parse_offsets(text: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """``partition:0,offset:42;partition:1,offset:300`` (``topic:t,`` first with several
    topics) → ``(topic, partition)`` → offset."""
    found: dict[tuple[str, int], int] = {}
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        match = _OFFSET_ENTRY.match(entry)
        if match is None:
            msg = f"'{entry}' is not partition:N,offset:N (topic:T,partition:N,offset:N)"
            raise ValueError(msg)
        topic = match.group("topic")
        if topic is None:
            if len(topics) != 1:
                msg = "name the topic of each entry (topic:T,partition:N,offset:N): several topics"
                raise ValueError(msg)
            topic = topics[0]
        elif topic not in topics:
            msg = f"topic {topic} is not one of the topics read"
            raise ValueError(msg)
        found[(topic, int(match.group("partition")))] = int(match.group("offset"))
    return found


class KafkaReaderParams(Params):
    """``parameter`` of ``kafkareader``."""

    topic: str | None = Field(default=None, description="Topic(s), comma-separated.")
    topics: list[str] = Field(default_factory=list, description="Topics, as a list.")
    mode: Literal[
        "group-offsets", "earliest-offset", "latest-offset", "timestamp", "specific-offsets"
    ] = Field(
        default="group-offsets",
        description="Where to start when no checkpoint or stored position exists.",
    )
    timestamp: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="mode timestamp: start at this time (ms since the epoch)."
    )
    offset: str | None = Field(
        default=None,
        description="mode specific-offsets: partition:0,offset:42;partition:1,offset:300.",
    )
    group_id: str = Field(
        default="default", description="Consumer group whose offsets are committed."
    )
    codec: Literal["text", "json"] = Field(
        default="text",
        description='text: {"message": raw}; json: the fields of column (raw kept as message).',
    )
    column: list[KafkaColumn | str] = Field(
        default_factory=list, description="json: the fields to pick, with their types."
    )
    encoding: str = Field(default="UTF-8", description="Character set of the messages.")
    blank_ignore: bool = Field(default=False, description="Skip empty messages.")
    consumer_settings: dict[str, Any] = Field(
        description="Client settings (must hold bootstrap.servers); Java keys are translated.",
        examples=[{"bootstrap.servers": "localhost:9092"}],
    )
    stop_at: Literal["latest"] | Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description=(
            "A bounded run: latest (the end offsets when the run starts) or a timestamp in ms; "
            "without it the reader runs until stopped."
        ),
    )
    create_topic: bool = Field(default=False, description="Create missing topics.")
    topic_partitions: Annotated[int, Field(gt=0)] = Field(
        default=1, description="Partitions of a topic created by createTopic."
    )

    @field_validator("consumer_settings")
    @classmethod
    def _settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        return validate_settings(value, "consumer")

    @field_validator("mode", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> KafkaReaderParams:
        if not self.topic_list():
            msg = "topic (or topics) is required"
            raise ValueError(msg)
        if self.mode == "timestamp" and self.timestamp is None:
            msg = "mode timestamp needs timestamp (ms since the epoch)"
            raise ValueError(msg)
        if self.mode == "specific-offsets":
            if not self.offset:
                msg = "mode specific-offsets needs offset (partition:0,offset:42;...)"
                raise ValueError(msg)
            parse_offsets(self.offset, self.topic_list())
        return self

    def topic_list(self) -> list[str]:
        """Every topic read, once each."""
        named = [t.strip() for t in (self.topic or "").split(",") if t.strip()]
        return list(dict.fromkeys([*named, *self.topics]))

    def columns(self) -> list[KafkaColumn]:
        """``column`` with plain names read as string fields."""
        return [KafkaColumn(name=c) if isinstance(c, str) else c for c in self.column]
