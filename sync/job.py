"""Running a validated job: state directory, restore, restart strategy, incremental state.

``run_job`` owns one run of a job: it takes the state directory's lock, decides where to start
(a restored checkpoint or anew), runs :class:`sync.runtime.Execution` attempts under
``setting.restart``, and leaves the incremental state for the next scheduled run.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, SecretStr

from sync.contract import Estimate, Handle, JobContext, Reader, Semantic, Split, Writer, decode
from sync.dirty import DirtySink
from sync.errors import JobFailedError, JobFileError, JobInterruptedError
from sync.jobfile import LoadedJob
from sync.metrics import Metric, Metrics
from sync.model import Params
from sync.ratelimit import RateLimiter
from sync.registry import canonical_name
from sync.runtime import Execution, is_retriable, new_run_id
from sync.state import Checkpoint, SplitState, StateDir
from sync.transform import build_transform

__all__ = [
    "DEFAULT_CHECKPOINT_INTERVAL",
    "RunOptions",
    "RunReport",
    "default_state_dir",
    "fingerprint",
    "job_changes",
    "job_semantic",
    "run_job",
    "secret_values",
]

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT_INTERVAL = 10.0
RestoreMode = Literal["latest", "latest-or-new"] | Path | None


@dataclass
class RunOptions:
    """What the command line adds to the job file."""

    state_dir: Path | str | None = None
    """A path, or a URL of shared storage (``file:///mnt/x``, ``webhdfs://nn:9870/x``)."""
    restore: RestoreMode = None
    force_restore: bool = False
    checkpoint_interval: float | None = None
    retain_checkpoints: int = 3
    stop_request: threading.Event = field(default_factory=threading.Event)
    runner: Literal["local", "ray"] | None = None
    """``--runner``; ``None``: ``setting.runner``."""
    address: str | None = None
    """``--address`` of a Ray cluster (``None``: start a local Ray)."""
    on_start: Callable[[Metrics], None] | None = None


@dataclass
class RunReport:
    """How a run ended, for the summary line and ``--metrics-file``."""

    job: str
    status: Literal["succeeded", "stopped"]
    semantic: Semantic
    metrics: dict[str, float | int]
    last_checkpoint: int | None
    restored_from: int | None
    restarts: int
    dirty_path: str | None
    state_dir: str
    runner: str = "local"
    nodes: int = 1
    """Nodes the subtasks ran on (in the last attempt)."""

    def to_json(self) -> dict[str, Any]:
        """The ``--metrics-file`` content."""
        return dataclasses.asdict(self)


def default_state_dir(job: LoadedJob) -> Path:
    """``.syncx/state/<job name>`` under the working directory."""
    return Path(".syncx") / "state" / job.name


def secret_values(job: LoadedJob) -> set[str]:
    """Every secret the job file holds (passwords), to be masked in any output."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            if secret:
                found.add(secret)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(job.reader_params)
    walk(job.writer_params)
    return found


def fingerprint(job: LoadedJob, *, exclude_defaults: bool = False) -> dict[str, Any]:
    """What must not change between a checkpoint and the job restoring from it (no secrets);
    with ``exclude_defaults``, only the parameters the job sets to something else."""

    def dump(params: Params) -> dict[str, Any]:
        return params.model_dump(mode="json", by_alias=True, exclude_defaults=exclude_defaults)

    content = job.file.content
    return {
        "reader": {
            "name": canonical_name("reader", content.reader.name),
            "parameter": dump(job.reader_params),
        },
        "writer": {
            "name": canonical_name("writer", content.writer.name),
            "parameter": dump(job.writer_params),
        },
        "transformer": content.transformer.transform_sql if content.transformer else None,
    }


def job_changes(stored: dict[str, Any], job: LoadedJob) -> list[str]:
    """Paths of ``job``'s fingerprint that differ from a checkpoint's ``stored`` one.

    A parameter newer than the checkpoint (a syncx upgrade added it) that the job leaves at its
    default is not a change: the upgrade alone must not make a restore refuse.
    """
    return _diff(stored, fingerprint(job), fingerprint(job, exclude_defaults=True), "")


def _diff(old: Any, new: Any, explicit: Any, path: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        given = explicit if isinstance(explicit, dict) else {}
        diffs: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            if key not in old and key not in given:
                continue
            sub = f"{path}.{key}" if path else str(key)
            diffs.extend(_diff(old.get(key), new.get(key), given.get(key), sub))
        return diffs
    return [] if old == new else [path]


def job_semantic(reader: Reader, writer: Writer) -> Semantic:
    """The job's delivery guarantee: the weaker of what the reader and the writer give."""
    semantics = {reader.effective_semantic(), writer.effective_semantic()}
    return "at-least-once" if "at-least-once" in semantics else "exactly-once"


def run_job(job: LoadedJob, options: RunOptions) -> RunReport:
    """Run ``job`` to its end (or until stopped); raise a :class:`SyncxError` when it fails."""
    setting = job.file.job.setting
    state = StateDir(options.state_dir or default_state_dir(job))
    state.prepare()
    state.lock()
    try:
        checkpoint = _starting_checkpoint(state, options)
        if checkpoint is not None:
            _check_fingerprint(checkpoint, job, options.force_restore)
        run_id = checkpoint.run_id if checkpoint else new_run_id()
        metrics = Metrics()
        if checkpoint is not None:
            metrics.restore(checkpoint.metrics)
        dirty_folder = Path(setting.dirty.path) if setting.dirty.path else state.root / "dirty"
        dirty = DirtySink(dirty_folder, job.name, run_id, setting.error_limit, metrics)
        if options.on_start:
            options.on_start(metrics)
        runner = _Runner(job, options, state, run_id, metrics, dirty)
        try:
            return runner.run(checkpoint)
        finally:
            dirty.close()
            runner.close()
    finally:
        state.unlock()


def _starting_checkpoint(state: StateDir, options: RunOptions) -> Checkpoint | None:
    restore = options.restore
    if restore is None:
        return None
    if isinstance(restore, Path):
        return state.load(restore)
    latest = state.latest(force=options.force_restore)
    if latest is None:
        if restore == "latest-or-new":
            return None
        msg = (
            f"--restore latest: no checkpoint in {state.checkpoints}; run without --restore, or "
            "with --restore latest-or-new to start anew when there is none"
        )
        raise JobFileError(msg)
    if restore == "latest-or-new" and latest.final:
        return None
    return latest


def _check_fingerprint(checkpoint: Checkpoint, job: LoadedJob, force: bool) -> None:
    diffs = job_changes(checkpoint.fingerprint, job)
    if diffs and not force:
        listed = ", ".join(diffs[:8]) + (" ..." if len(diffs) > 8 else "")
        msg = (
            f"the job changed since checkpoint {checkpoint.id} ({listed}); restoring could lose "
            "or duplicate data. Run without --restore to start anew, or pass --force-restore"
        )
        raise JobFileError(msg)
    if diffs:
        log.warning("restoring checkpoint %d although the job changed: %s", checkpoint.id, diffs)


class _Runner:
    """Attempts of one run under the restart strategy."""

    def __init__(
        self,
        job: LoadedJob,
        options: RunOptions,
        state: StateDir,
        run_id: str,
        metrics: Metrics,
        dirty: DirtySink,
    ) -> None:
        self.job = job
        self.options = options
        self.state = state
        self.run_id = run_id
        self.metrics = metrics
        self.dirty = dirty
        self.setting = job.file.job.setting
        speed = self.setting.speed
        self.limiter = RateLimiter(speed.bytes, speed.record)
        restore = self.setting.restore
        self.interval = options.checkpoint_interval or restore.checkpoint_interval
        if self.interval is None and restore.is_restore:
            self.interval = DEFAULT_CHECKPOINT_INTERVAL
        content = job.file.content
        self.transform = build_transform(content.transformer, content.reader.table)
        self.semantic: Semantic = "at-least-once"
        self.runner = options.runner or self.setting.runner
        self.attempts = 0
        self.nodes = 1

    def close(self) -> None:
        """Leave the cluster a Ray run joined."""
        if self.runner == "ray":
            from sync.runners import ray  # noqa: PLC0415 - imported when the run started

            ray.disconnect()

    def _connect(self) -> None:
        """Join (or start) the Ray cluster; refuse state that its nodes cannot share."""
        if self.runner != "ray":
            return
        from sync.runners import ray  # noqa: PLC0415 - Ray is imported only when used

        ray.connect(self.options.address)
        log.debug("ray: connected")
        nodes = ray.node_count()
        if nodes > 1 and not self.state.shared:
            msg = (
                f"--state-dir {self.state}: a path on this machine, but the Ray cluster has "
                f"{nodes} nodes: a driver restarted on another node would not find the "
                "checkpoints. Pass shared storage: --state-dir file:///a/shared/mount or "
                "webhdfs://namenode:9870/path"
            )
            raise JobFileError(msg)

    def run(self, checkpoint: Checkpoint | None) -> RunReport:
        self._connect()
        restored_from = checkpoint.id if checkpoint else None
        restarts = 0
        failures: list[float] = []
        strategy = self.setting.restart
        while True:
            try:
                completed, last = self._attempt(checkpoint)
                break
            except BaseException as exc:
                if not is_retriable(exc) or isinstance(
                    exc, JobInterruptedError | KeyboardInterrupt
                ):
                    raise
                if self.options.stop_request.is_set():
                    raise
                now = time.monotonic()
                failures = [t for t in failures if now - t < strategy.failure_interval] + [now]
                allowed = self._may_restart(restarts, failures)
                if not allowed:
                    raise _as_job_failure(exc, restarts) from exc
                restarts += 1
                log.warning(
                    "job failed (%s: %s); restart %d in %ss from the last checkpoint",
                    type(exc).__name__,
                    exc,
                    restarts,
                    strategy.delay_interval,
                )
                if self.options.stop_request.wait(strategy.delay_interval):
                    raise JobInterruptedError("stopped while waiting to restart") from exc
                checkpoint = self._latest_of_run() or checkpoint
                self.metrics.restore(checkpoint.metrics if checkpoint else {})
        return RunReport(
            job=self.job.name,
            status="succeeded" if completed else "stopped",
            semantic=self.semantic,
            metrics=self.metrics.snapshot(),
            last_checkpoint=last,
            restored_from=restored_from,
            restarts=restarts,
            dirty_path=str(self.dirty.path) if self.dirty.path.exists() else None,
            state_dir=str(self.state),
            runner=self.runner,
            nodes=self.nodes,
        )

    def _may_restart(self, restarts: int, failures: list[float]) -> bool:
        strategy = self.setting.restart
        if strategy.strategy in ("NoRestart", "none"):
            return False
        if strategy.strategy == "failureRate":
            return len(failures) <= strategy.failure_rate
        return restarts < strategy.restart_attempts

    def _latest_of_run(self) -> Checkpoint | None:
        latest = self.state.latest(force=self.options.force_restore)
        return latest if latest is not None and latest.run_id == self.run_id else None

    def _attempt(self, checkpoint: Checkpoint | None) -> tuple[bool, int | None]:
        """One execution from ``checkpoint`` (or anew); returns (completed, last checkpoint)."""
        job, setting = self.job, self.setting
        halt = threading.Event()
        job_state, handles = self._recovery(checkpoint)
        ctx = JobContext.of(
            job.name,
            self.state.identity_path,
            setting,
            run_id=self.run_id,
            checkpoints=self.interval is not None,
            job_state=job_state,
            batch_rows=self.limiter.batch_rows(4096),
            report_dirty=self.dirty.report,
            report_lag=lambda seconds: self.metrics.set(Metric.CDC_LAG, seconds),
            stopping=halt,
            temp_dir=self.state.temp,
        )
        reader = job.reader_cls(job.reader_params, ctx)
        writer = job.writer_cls(job.writer_params, ctx)
        try:
            return self._execute(checkpoint, reader, writer, handles, halt)
        finally:
            reader.close()
            writer.close()

    def _execute(
        self,
        checkpoint: Checkpoint | None,
        reader: Reader,
        writer: Writer,
        handles: list[Handle],
        halt: threading.Event,
    ) -> tuple[bool, int | None]:
        job, setting = self.job, self.setting
        self.semantic = job_semantic(reader, writer)
        reader.check()
        writer.check()
        if checkpoint is not None:
            splits, positions = checkpoint.typed(reader.position_type, reader.split_type)
        else:
            splits, positions = reader.plan(setting.speed.readers), {}
        writer.begin([decode(writer.handle_type, h) for h in handles], fresh=checkpoint is None)
        if reader.bounded:
            pending = [s for s in splits if not positions.get(s.id, SplitState()).done]
            self.metrics.progress.begin(_estimate(reader, pending))
        self.attempts += 1
        options: dict[str, Any] = {}
        execution_class: Callable[..., Execution] = Execution
        if self.runner == "ray":
            from sync.runners.ray import RayExecution  # noqa: PLC0415 - Ray only when used

            speed = setting.speed
            options = {"attempt": self.attempts, "limits": (speed.bytes, speed.record)}
            execution_class = RayExecution
        execution = execution_class(
            **options,
            reader=reader,
            writer=writer,
            splits=splits,
            positions=positions,
            readers=setting.speed.readers,
            writers=setting.speed.writers,
            state=self.state,
            fingerprint=fingerprint(job),
            run_id=self.run_id,
            first_checkpoint_id=self.state.next_id(),
            checkpoint_interval=self.interval,
            checkpoint_timeout=setting.restore.checkpoint_timeout,
            tolerable_failed_checkpoints=setting.restore.tolerable_failed_checkpoints,
            retain_checkpoints=self.options.retain_checkpoints,
            metrics=self.metrics,
            dirty=self.dirty,
            limiter=self.limiter,
            halt=halt,
            stop_request=self.options.stop_request,
            transform=self.transform,
        )
        try:
            result = execution.run()
        finally:
            self.nodes = len(getattr(execution, "nodes", ())) or 1
        if result.completed:
            writer.finish()
            if result.job_state is not None and result.last_checkpoint is not None:
                self.state.write_job_state(result.job_state)
        return result.completed, result.last_checkpoint

    def _recovery(self, checkpoint: Checkpoint | None) -> tuple[dict[str, Any], list[Any]]:
        """The incremental state to start from and the handles ``Writer.begin`` must commit.

        Restoring: the checkpoint's handles. Starting anew after a run whose final checkpoint was
        stored: its handles too (the run may have died before committing them: commits are
        idempotent), and its incremental state, which is newer than ``job-state.json`` then.
        """
        if checkpoint is not None:
            return self.state.read_job_state(), checkpoint.all_handles()
        latest = self.state.latest(force=True)  # a fresh run re-reads anyway
        if latest is not None and latest.final:
            return latest.job_state or self.state.read_job_state(), latest.all_handles()
        return self.state.read_job_state(), []


def _estimate(reader: Reader, splits: list[Split]) -> Estimate | None:
    """The reader's estimate of ``splits``; only for the progress line, so never fatal."""
    try:
        return reader.estimate(splits)
    except Exception as exc:  # an estimate is a nicety: the job goes on without one
        first = (str(exc).splitlines() or [""])[0]
        log.warning("no progress estimate (%s: %s)", type(exc).__name__, first)
        return None


def _as_job_failure(exc: BaseException, restarts: int) -> BaseException:
    if isinstance(exc, JobFailedError | JobFileError) and not restarts:
        return exc
    after = f" after {restarts} restart(s)" if restarts else ""
    text = str(exc) if isinstance(exc, JobFailedError) else f"{type(exc).__name__}: {exc}"
    return JobFailedError(f"job failed{after}: {text}")
