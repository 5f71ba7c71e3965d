"""The job-file model: ChunJun/Flinkx's ``job.content[].reader|writer`` + ``job.setting`` shape.

Every key is spelled as ChunJun spells it (camelCase aliases); where ChunJun versions differ both
spellings are accepted. A plugin's ``parameter`` is kept as a plain mapping here and validated by
the plugin's own model (see :mod:`sync.jobfile`), so this module knows no plugin.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
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
    "Retries",
    "Schedule",
    "ScheduleNotify",
    "Setting",
    "Speed",
    "TransformerSpec",
    "default_fs_without_path",
    "hadoop_config_without_default_fs_path",
    "parse_duration",
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
    """``setting.speed``: parallelism and the job-wide rate limit.

    As in ChunJun (``SpeedConf``): ``bytes`` and ``record`` at 0 or below mean no limit (its own
    examples write ``-1048576``), and ``readerChannel``/``writerChannel`` at 0 or below (its
    default ``-1``) mean ``channel``."""

    channel: PositiveInt = 1
    reader_channel: int | None = Field(
        default=None, description="Reader subtasks; 0, below or unset: `channel`."
    )
    writer_channel: int | None = Field(
        default=None, description="Writer subtasks; 0, below or unset: `channel`."
    )
    bytes: int = Field(default=0, description="Bytes per second; 0 or below: no limit.")
    record: int = Field(default=0, description="Records per second; 0 or below: no limit.")
    rebalance: bool = Field(
        default=False,
        description=(
            "Accepted for ChunJun compatibility: syncx chains reader and writer subtasks one to "
            "one when their counts are equal and deals batches round robin otherwise."
        ),
    )

    @property
    def readers(self) -> int:
        """Reader subtasks in effect."""
        return _or_channel(self.reader_channel, self.channel)

    @property
    def writers(self) -> int:
        """Writer subtasks in effect."""
        return _or_channel(self.writer_channel, self.channel)


def _or_channel(value: int | None, channel: int) -> int:
    return value if value is not None and value > 0 else channel


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
    level: Literal["trace", "debug", "info", "warn", "warning", "error"] = Field(
        default="info", description="Any case, as log4j takes it (INFO, Debug)."
    )
    path: str | None = None
    pattern: str | None = None

    @field_validator("level", mode="before")
    @classmethod
    def _lower_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


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


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> Any:
    """``90``, ``"30s"``, ``"15m"``, ``"1h30m"``, ``"2d"`` → seconds (a float); others pass on."""
    if isinstance(value, bool) or not isinstance(value, str):
        return value
    text = value.strip().replace(" ", "")
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    if not text or _DURATION.sub("", text):
        msg = "not a duration: write seconds or e.g. 30s, 15m, 1h30m, 2d"
        raise ValueError(msg)
    return sum(float(n) * _UNIT_SECONDS[unit.lower()] for n, unit in _DURATION.findall(text))


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0}, {"type": "string"}]}),
]
"""Seconds, or a string such as ``30s``, ``15m``, ``1h30m``, ``2d``."""


class Retries(Params):
    """``schedule.retries``: how a failed or timed-out run is tried again (from its checkpoint)."""

    attempts: Annotated[int, Field(ge=1)] = Field(
        default=1, description="Tries of one fire in all, the first included."
    )
    delay: Annotated[Duration, Field(ge=0)] = Field(default=60, description="Wait before try 2.")
    backoff: Annotated[float, Field(ge=1)] = Field(
        default=2, description="Each further wait is the one before times this."
    )
    max_delay: Annotated[Duration, Field(ge=0)] = Field(
        default=1800, description="Longest wait between tries."
    )

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before try ``attempt`` (2, 3, ...)."""
        return min(self.delay * self.backoff ** max(attempt - 2, 0), self.max_delay)


NotifyEvent = Literal["failure", "timeout", "missed", "abandoned", "success"]
_NOTIFY_DEFAULT: tuple[NotifyEvent, ...] = ("failure", "timeout", "missed")


class ScheduleNotify(Params):
    """``schedule.notify``: a webhook (JSON POST) and/or a command run on chosen outcomes."""

    on: list[NotifyEvent] = Field(default_factory=lambda: list(_NOTIFY_DEFAULT))
    webhook: str | None = Field(default=None, description="URL that receives a JSON POST.")
    command: str | None = Field(
        default=None, description="Shell command; SYNCX_EVENT, SYNCX_JOB, ... in its environment."
    )

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        """YAML 1.1 reads the key ``on`` as ``true``: take it back as ``on``."""
        if isinstance(data, dict) and True in data:
            data = {("on" if key is True else key): value for key, value in data.items()}
        return data


class Schedule(Params):
    """The ``schedule`` block: when ``syncx schedule serve`` runs the job, and how."""

    cron: str | None = Field(default=None, description="Five-field cron expression.")
    every: Annotated[Duration, Field(gt=0)] | None = Field(
        default=None, description="A fixed period instead of cron (15m, 30s, ...)."
    )
    timezone: str = Field(default="UTC", description="IANA time zone of the cron expression.")
    catchup: Literal["none", "latest", "all"] = Field(
        default="latest", description="Fires missed while the scheduler was down: run which."
    )
    overlap: Literal["skip", "queue", "cancel"] = Field(
        default="skip", description="A fire while the previous run still runs."
    )
    jitter: Annotated[Duration, Field(ge=0)] = Field(
        default=0, description="Start up to this long after the fire time (spreads load)."
    )
    retries: Retries = Field(default_factory=Retries)
    timeout: Annotated[Duration, Field(gt=0)] | None = Field(
        default=None, description="Stop a run (final checkpoint first) after this long."
    )
    notify: ScheduleNotify | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            from sync.schedule.timing import check_cron  # noqa: PLC0415 - the optional extra

            check_cron(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            msg = "unknown time zone: use an IANA name such as UTC, Europe/Berlin, Asia/Shanghai"
            raise ValueError(msg) from exc
        return value

    @model_validator(mode="after")
    def _one_timing(self) -> Schedule:
        if (self.cron is None) == (self.every is None):
            msg = "give exactly one of 'cron' and 'every'"
            raise ValueError(msg)
        return self


class Setting(Params):
    """``job.setting``."""

    speed: Speed = Field(default_factory=Speed)
    error_limit: ErrorLimit = Field(default_factory=ErrorLimit)
    restore: RestoreSetting = Field(default_factory=RestoreSetting)
    dirty: DirtySetting = Field(default_factory=DirtySetting)
    log: LogSetting = Field(default_factory=LogSetting)
    restart: RestartSetting = Field(default_factory=RestartSetting)
    schedule: Schedule | None = Field(
        default=None, description="The top-level `schedule` block, ChunJun-JSON style."
    )
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
    schedule: Schedule | None = Field(
        default=None, description="When `syncx schedule serve` runs this job."
    )

    @model_validator(mode="after")
    def _one_schedule(self) -> JobFile:
        if self.schedule is not None and self.job.setting.schedule is not None:
            msg = "give either 'schedule' or 'job.setting.schedule', not both"
            raise ValueError(msg)
        return self

    @property
    def schedule_spec(self) -> Schedule | None:
        """The schedule block, wherever the file put it."""
        return self.schedule or self.job.setting.schedule

    @property
    def content(self) -> Content:
        """The single content entry (ChunJun runs one reader→writer pair per job)."""
        return self.job.content[0]


def default_fs_without_path(value: str | None) -> str | None:
    """A validator's check that ``defaultFS`` names a filesystem only (``hdfs://ns``,
    ``file:///``): Hadoop takes the scheme and authority of ``fs.defaultFS`` and ignores its
    path, so ``file:///data/out`` with ``path: /orders`` writes to ``/orders``, not under
    ``/data/out`` -- with ``writeMode: overwrite``, a different folder is emptied."""
    if value is None:
        return value
    _refuse_a_path(value, "")
    return value


def hadoop_config_without_default_fs_path(config: dict[str, Any]) -> dict[str, Any]:
    """The check of :func:`default_fs_without_path` for ``fs.defaultFS`` (and its old name
    ``fs.default.name``) in ``hadoopConfig``."""
    for key in ("fs.defaultFS", "fs.default.name"):
        value = config.get(key)
        if isinstance(value, str):
            _refuse_a_path(value, f"{key} ")
    return config


def _refuse_a_path(value: str, key: str) -> None:
    parts = urlsplit(value.strip())
    if parts.path not in ("", "/"):
        authority = parts.netloc.rpartition("@")[2]
        msg = (
            f"{key}carries a path ({parts.path}), which Hadoop ignores: only the scheme and host of "
            f"defaultFS name the filesystem, and path alone says where files are; write "
            f"defaultFS: {parts.scheme}://{authority}/ and put the folder into path "
            f"(path: {parts.path.rstrip('/')}/...)"
        )
        raise ValueError(msg)


def regex(value: str | None) -> str | None:
    """A validator's check that ``value`` (when given) is a regular expression."""
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            msg = f"not a regular expression: {exc}"
            raise ValueError(msg) from exc
    return value
