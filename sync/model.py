"""The job-file model: ChunJun/Flinkx's ``job.content[].reader|writer`` + ``job.setting`` shape.

Every key is spelled as ChunJun spells it (camelCase aliases); where ChunJun versions differ both
spellings are accepted. A plugin's ``parameter`` is kept as a plain mapping here and validated by
the plugin's own model (see :mod:`sync.jobfile`), so this module knows no plugin.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "Content",
    "DirtySetting",
    "ErrorLimit",
    "Job",
    "JobFile",
    "LogSetting",
    "Params",
    "PluginSpec",
    "RestartSetting",
    "RestoreSetting",
    "Setting",
    "Speed",
    "TransformerSpec",
    "regex",
]


class Params(BaseModel):
    """Base of every model in a job file: camelCase keys, unknown keys rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


PositiveInt = Annotated[int, Field(gt=0)]


class Speed(Params):
    """``setting.speed``: parallelism and the job-wide rate limit (0 means unlimited)."""

    channel: PositiveInt = 1
    reader_channel: PositiveInt | None = Field(
        default=None, description="Reader subtasks; defaults to `channel`."
    )
    writer_channel: PositiveInt | None = Field(
        default=None, description="Writer subtasks; defaults to `channel`."
    )
    bytes: Annotated[int, Field(ge=0)] = Field(default=0, description="Bytes per second, 0 = off.")
    record: Annotated[int, Field(ge=0)] = Field(
        default=0, description="Records per second, 0 = off."
    )

    @property
    def readers(self) -> int:
        """Reader subtasks in effect."""
        return self.reader_channel or self.channel

    @property
    def writers(self) -> int:
        """Writer subtasks in effect."""
        return self.writer_channel or self.channel


class ErrorLimit(Params):
    """``setting.errorLimit``: how much dirty data a job tolerates before it fails."""

    record: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="Fail when more than this many records are dirty."
    )
    percentage: Annotated[float, Field(ge=0, le=100)] | None = Field(
        default=None,
        description=(
            "Fail when dirty records exceed this ratio (0-1) of the records read. A value above 1 "
            "is read as a percent, as ChunJun 1.10's examples write it (10.0 = 10%)."
        ),
    )

    @property
    def ratio(self) -> float | None:
        """``percentage`` as a ratio 0-1."""
        if self.percentage is None:
            return None
        return self.percentage / 100 if self.percentage > 1 else self.percentage


class RestoreSetting(Params):
    """``setting.restore``: checkpointing and ChunJun's resume-column settings."""

    is_restore: bool = Field(default=False, description="Take periodic checkpoints.")
    is_stream: bool = Field(default=False, description="ChunJun's real-time flag (informational).")
    restore_column_name: str | None = Field(
        default=None, description="Ascending column whose last value is a split's position."
    )
    restore_column_index: int | None = Field(default=None, description="Index of that column.")
    restore_column_type: str | None = Field(default=None, description="Type of that column.")
    max_row_num_for_checkpoint: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="Accepted for ChunJun compatibility; checkpoints are timed."
    )
    checkpoint_interval: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="Seconds between checkpoints (default 10 when isRestore is true).",
    )
    checkpoint_timeout: Annotated[float, Field(gt=0)] = Field(
        default=600, description="Seconds before an incomplete checkpoint is declared failed."
    )
    tolerable_failed_checkpoints: Annotated[int, Field(ge=0)] = Field(
        default=0, description="Consecutive failed checkpoints tolerated before the job fails."
    )


class DirtySetting(Params):
    """``setting.dirty``: where rejected records go (JSON lines, one file per run)."""

    path: str | None = Field(default=None, description="Folder; default <state-dir>/dirty.")
    hadoop_config: dict[str, Any] = Field(default_factory=dict)


class LogSetting(Params):
    """``setting.log``: ChunJun's logging switches."""

    is_logger: bool = False
    level: Literal["trace", "debug", "info", "warn", "warning", "error"] = "info"
    path: str | None = None
    pattern: str | None = None


class RestartSetting(Params):
    """``setting.restart``: Flink's restart strategies, applied in-process from a checkpoint."""

    strategy: Literal["NoRestart", "fixedDelay", "failureRate", "none", "fixed-delay"] = Field(
        default="NoRestart", validation_alias=AliasChoices("strategy", "type")
    )
    restart_attempts: Annotated[int, Field(ge=0)] = Field(default=3)
    delay_interval: Annotated[float, Field(ge=0)] = Field(
        default=10, description="Seconds between attempts."
    )
    failure_rate: Annotated[int, Field(ge=1)] = Field(
        default=3, description="failureRate: most failures within failureInterval."
    )
    failure_interval: Annotated[float, Field(gt=0)] = Field(
        default=60, description="failureRate: the window in seconds."
    )


class Setting(Params):
    """``job.setting``."""

    speed: Speed = Field(default_factory=Speed)
    error_limit: ErrorLimit = Field(default_factory=ErrorLimit)
    restore: RestoreSetting = Field(default_factory=RestoreSetting)
    dirty: DirtySetting = Field(default_factory=DirtySetting)
    log: LogSetting = Field(default_factory=LogSetting)
    restart: RestartSetting = Field(default_factory=RestartSetting)
    runner: Literal["local", "ray"] = Field(
        default="local",
        description="Where the subtasks run: local threads, or actors on a Ray cluster "
        "(`syncx run --runner` overrides it).",
    )


class TableRef(Params):
    """ChunJun's ``reader.table`` / ``writer.table``: the name used by ``transformSql``."""

    table_name: str


class PluginSpec(Params):
    """``reader`` or ``writer``: a plugin name and its parameters (validated by the plugin)."""

    name: str
    parameter: dict[str, Any] = Field(default_factory=dict)
    table: TableRef | None = None
    type: Any = Field(default=None, description="ChunJun's connector type id (ignored).")


class TransformerSpec(Params):
    """ChunJun's ``transformer``: a SQL projection/filter over ``sourceTable``."""

    transform_sql: str


class Content(Params):
    """One ``job.content[]`` entry."""

    reader: PluginSpec
    writer: PluginSpec
    transformer: TransformerSpec | None = None


class Job(Params):
    """``job``."""

    content: list[Content] = Field(min_length=1, max_length=1)
    setting: Setting = Field(default_factory=Setting)


class JobFile(Params):
    """The whole file. ``name`` is syncx's own (ChunJun has none): it names the state folder."""

    job: Job
    name: str | None = Field(
        default=None, description="Job name for the state folder; default the file's stem."
    )

    @property
    def content(self) -> Content:
        """The single content entry (ChunJun runs one reader→writer pair per job)."""
        return self.job.content[0]


def regex(value: str | None) -> str | None:
    """A validator's check that ``value`` (when given) is a regular expression."""
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            msg = f"not a regular expression: {exc}"
            raise ValueError(msg) from exc
    return value
