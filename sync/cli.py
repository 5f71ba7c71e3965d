"""The ``syncx`` command line.

Exit codes: 0 success, 1 the job failed, 2 a bad job file or usage, 130 stopped by the user
before a bounded job finished (an unbounded job stopped by Ctrl-C/SIGTERM after its final
savepoint exits 0). Errors are one readable message, never a traceback (``--debug`` shows it).
"""

from __future__ import annotations

import gc
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from sync import __version__, registry
from sync.contract import JobContext
from sync.errors import DiskFullError, JobFileError, JobInterruptedError, SyncxError, is_disk_full
from sync.job import (
    RunOptions,
    RunReport,
    default_state_dir,
    job_semantic,
    run_job,
    secret_values,
)
from sync.jobfile import LoadedJob, load_job
from sync.metrics import Metric, Metrics, MetricsServer, ProgressLine
from sync.runners import RUNNERS
from sync.schema import job_schema, plugin_schema
from sync.state import StateDir
from sync.template import render as render_template
from sync.verify import VerifyOptions, VerifyReport
from sync.verify import verify as verify_job

__all__ = ["app", "main"]

app = typer.Typer(
    name="syncx",
    help="Declarative data synchronization: ChunJun/Flinkx job files, checkpoints, exactly-once.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
checkpoints_app = typer.Typer(help="Inspect a job's stored checkpoints.", no_args_is_help=True)
app.add_typer(checkpoints_app, name="checkpoints")

JobArg = Annotated[Path, typer.Argument(help="Job file (YAML or JSON, ChunJun shape).")]
ParamOpt = Annotated[
    list[str] | None, typer.Option("--param", "-p", help="Fill ${name} placeholders: name=value.")
]
StateOpt = Annotated[
    str | None,
    typer.Option(
        "--state-dir",
        help="State folder (default .syncx/state/<job>), or shared storage: file:///mount, "
        "webhdfs://namenode:9870/path, hdfs://...",
    ),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")]


class _Redactor(logging.Filter):
    """Masks secret values in every log record."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = redact(record.getMessage(), self.secrets)
            record.args = None
        return True


_REDACTOR = _Redactor()


def redact(text: str, secrets: set[str]) -> str:
    """``text`` with every secret replaced by ``***``."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time: while the live progress line shows,
    it is rich's proxy, which prints log lines above the line instead of through it."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        del value


def _setup_logging(level: str, debug: bool) -> None:
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_REDACTOR)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    name = {"warn": "WARNING", "trace": "DEBUG"}.get(level, level.upper())
    root.setLevel(logging.DEBUG if debug else getattr(logging, name, logging.INFO))


def _params(items: list[str] | None) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"-p expects name=value, got '{item}'", 2)
        values[key] = value
    return values


def _fail(message: str, code: int) -> None:
    typer.echo(f"syncx: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def _errors(debug: bool, secrets: set[str] | None = None) -> Iterator[None]:
    """Turn syncx errors into one message and an exit code; tracebacks only with --debug."""
    try:
        yield
    except SyncxError as exc:
        if debug:
            logging.getLogger(__name__).exception("failed")
        _fail(redact(str(exc), secrets or set()), exc.exit_code)
    except KeyboardInterrupt:
        _fail("stopped", JobInterruptedError.exit_code)
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:
        if debug:
            raise
        filename = getattr(exc, "filename", None)
        if is_disk_full(exc) and filename:  # one no wrapper named: still say where, how full
            _fail(str(DiskFullError(filename)), DiskFullError.exit_code)
        text = redact(f"{type(exc).__name__}: {exc}", secrets or set())
        _fail(f"job failed: {text} (run with --debug for the traceback)", 1)


def _load(job: Path, params: list[str] | None, debug: bool) -> LoadedJob:
    with _errors(debug):
        loaded = load_job(job, _params(params))
    _REDACTOR.secrets = secret_values(loaded)
    return loaded


@app.command()
def run(
    job: JobArg,
    param: ParamOpt = None,
    metrics_file: Annotated[
        Path | None, typer.Option("--metrics-file", help="Write the final metrics as JSON here.")
    ] = None,
    state_dir: StateOpt = None,
    restore: Annotated[
        str | None,
        typer.Option(help="Resume: 'latest', 'latest-or-new', or a checkpoint file's path."),
    ] = None,
    force_restore: Annotated[
        bool, typer.Option("--force-restore", help="Restore even though the job changed.")
    ] = False,
    checkpoint_interval: Annotated[
        float | None,
        typer.Option("--checkpoint-interval", min=0.01, help="Seconds between checkpoints."),
    ] = None,
    retain_checkpoints: Annotated[
        int, typer.Option("--retain-checkpoints", min=1, help="Completed checkpoints to keep.")
    ] = 3,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port", min=0, max=65535, help="Serve Prometheus /metrics on 127.0.0.1:PORT."
        ),
    ] = None,
    progress_interval: Annotated[
        float,
        typer.Option(
            "--progress-interval",
            min=0,
            help="When stderr is not a terminal: seconds between progress log lines (0: none).",
        ),
    ] = 30.0,
    runner: Annotated[
        str | None,
        typer.Option(
            "--runner", help="Where subtasks run: 'local' threads or 'ray' actors (setting.runner)."
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="--runner ray: the cluster to join, 'auto' or HOST:PORT (default: a local Ray).",
        ),
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Run a job to its end (or, for a stream, until Ctrl-C / SIGTERM)."""
    loaded = _load(job, param, debug)
    _fewer_collections()
    _setup_logging(loaded.file.job.setting.log.level, debug)
    restore_mode: Any = restore
    if restore not in (None, "latest", "latest-or-new"):
        restore_mode = Path(str(restore))
    if runner is not None and runner not in RUNNERS:
        _fail(f"--runner: unknown runner '{runner}'; known: {', '.join(RUNNERS)}", 2)
    if address is not None and (runner or loaded.file.job.setting.runner) != "ray":
        _fail("--address joins a Ray cluster: pass --runner ray (or setting.runner: ray)", 2)
    options = RunOptions(
        runner=runner,  # type: ignore[arg-type]
        address=address,
        state_dir=state_dir,
        restore=restore_mode,
        force_restore=force_restore,
        checkpoint_interval=checkpoint_interval,
        retain_checkpoints=retain_checkpoints,
    )
    progress: list[ProgressLine | MetricsServer] = []

    def on_start(metrics: Metrics) -> None:
        progress.append(ProgressLine(metrics, log_interval=progress_interval).__enter__())
        if metrics_port is not None:
            try:
                progress.append(MetricsServer(loaded.name, metrics, "127.0.0.1", metrics_port))
            except OSError as exc:
                msg = f"--metrics-port {metrics_port}: cannot listen ({exc.strerror or exc})"
                raise JobFileError(msg) from exc
            progress[-1].__enter__()

    options.on_start = on_start
    report: RunReport | None = None
    with _signals(options.stop_request), _errors(debug, _REDACTOR.secrets):
        try:
            report = run_job(loaded, options)
        finally:
            for line in progress:
                line.__exit__(None, None, None)
    assert report is not None
    if metrics_file is not None:
        metrics_file.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    typer.echo(_summary(report), err=True)
    if report.status == "stopped" and _bounded(loaded):
        raise typer.Exit(JobInterruptedError.exit_code)


GC_THRESHOLD = 50_000
"""Allocations between the cyclic collector's young-generation passes in ``syncx run``
(Python's default: 700)."""


def _fewer_collections() -> None:
    """Let the cyclic garbage collector run less often in a ``syncx run`` process: a job's data
    path allocates millions of short-lived tuples and lists (binlog row images, Python values on
    their way into Arrow) but makes almost no reference cycles, and at the default threshold
    the collections took 15-25% of the binlog reader's CPU time. What the process loaded so far
    (modules, the job) is frozen out of every future pass."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, middle, old)


@contextmanager
def _signals(stop_request: threading.Event) -> Iterator[None]:
    """First Ctrl-C/SIGTERM: stop after a final checkpoint; second: stop at once."""

    def handler(signum: int, frame: FrameType | None) -> None:
        del frame
        if stop_request.is_set():
            raise KeyboardInterrupt
        typer.echo(
            f"\nsyncx: {signal.Signals(signum).name}: taking a final checkpoint, then stopping "
            "(again to stop at once)",
            err=True,
        )
        stop_request.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _bounded(job: LoadedJob) -> bool:
    reader = job.reader_cls(job.reader_params, _offline_context(job))
    return reader.bounded


def _offline_context(job: LoadedJob, run_id: str = "validate", **services: Any) -> JobContext:
    return JobContext.of(
        job.name, default_state_dir(job), job.file.job.setting, run_id=run_id, **services
    )


def _summary(report: RunReport) -> str:
    m = report.metrics
    elapsed = float(m["elapsedSeconds"]) or 1e-9
    rate = float(m[Metric.NUM_WRITE]) / elapsed
    text = (
        f"syncx: job {report.job} {report.status}: read {int(m[Metric.NUM_READ]):,} rows, wrote "
        f"{int(m[Metric.NUM_WRITE]):,}, dirty {int(m[Metric.N_ERRORS]):,} in {elapsed:.1f}s "
        f"({rate:,.0f} rows/s); {report.semantic}"
    )
    if report.last_checkpoint is not None:
        text += f"; checkpoint {report.last_checkpoint} in {report.state_dir}"
    if report.restored_from is not None:
        text += f"; restored from checkpoint {report.restored_from}"
    if report.restarts:
        text += f"; {report.restarts} restart(s)"
    if report.runner != "local":
        text += f"; runner {report.runner} on {report.nodes} node(s)"
    if report.dirty_path:
        text += f"; dirty records in {report.dirty_path}"
    if report.status == "stopped":
        text += "; resume with --restore latest"
    return text


@app.command()
def validate(job: JobArg, param: ParamOpt = None, debug: DebugOpt = False) -> None:
    """Check a job file without connecting anywhere."""
    loaded = _load(job, param, debug)
    with _errors(debug, _REDACTOR.secrets):
        ctx = _offline_context(loaded)
        writer = loaded.writer_cls(loaded.writer_params, ctx)
        reader = loaded.reader_cls(loaded.reader_params, ctx)
        content = loaded.file.content
        setting = loaded.file.job.setting
        semantic = job_semantic(reader, writer)
        lines = [
            f"{job}: valid",
            f"  reader: {registry.canonical_name('reader', content.reader.name)} "
            f"({'bounded' if reader.bounded else 'unbounded'}), {setting.speed.readers} channel(s)",
            f"  writer: {registry.canonical_name('writer', content.writer.name)}, "
            f"{setting.speed.writers} channel(s), {semantic}",
        ]
        if semantic == "at-least-once":
            lines.append(
                "  note: at-least-once: rows after the last checkpoint may repeat on restore"
            )
        typer.echo("\n".join(lines))


@app.command()
def verify(
    job: JobArg,
    param: ParamOpt = None,
    key: Annotated[
        str | None,
        typer.Option("--key", help="Columns identifying a row, comma-separated (default the PK)."),
    ] = None,
    where: Annotated[
        str | None,
        typer.Option("--where", help="Only rows matching this SQL condition (source's columns)."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only rows whose incremental column (increColumn) is at or after this value; "
            "pushed down to the source (and a SQL target) query.",
        ),
    ] = None,
    since_column: Annotated[
        str | None,
        typer.Option("--since-column", help="The column --since compares (default increColumn)."),
    ] = None,
    buckets: Annotated[
        int, typer.Option("--buckets", min=1, max=1_000_000, help="Checksum chunks per side.")
    ] = 1024,
    show: Annotated[int, typer.Option("--show", min=0, help="Differences shown in full.")] = 10,
    json_report: Annotated[
        Path | None, typer.Option("--json", help="Write the report as JSON here.")
    ] = None,
    state_dir: StateOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Compare a job's source with its target by checksums; exit 0 when equal, 1 when not.

    A CDC job (binlogreader) is compared table by table at the position its newest committed
    checkpoint records (in --state-dir); keys changed since are counted, not compared."""
    loaded = _load(job, param, debug)
    with _errors(debug, _REDACTOR.secrets):
        if since_column is not None and since is None:
            raise JobFileError("--since-column needs --since VALUE")
        # large batches: verify's work per batch is vectorized, its overhead per batch is not
        ctx = _offline_context(loaded, "verify", batch_rows=65_536)
        options = VerifyOptions(
            key=[k.strip() for k in key.split(",") if k.strip()] if key else None,
            where=where,
            since=since,
            since_column=since_column,
            buckets=buckets,
            show=show,
        )
        report = verify_job(
            loaded,
            ctx,
            options,
            state=StateDir(state_dir or default_state_dir(loaded)),
            progress=_verify_progress() if sys.stderr.isatty() else None,
        )
    if json_report is not None:
        json_report.write_text(json.dumps(report.to_json(), indent=1, default=str), "utf-8")
    typer.echo(redact(_verify_summary(report), _REDACTOR.secrets))
    raise typer.Exit(0 if report.equal else 1)


def _verify_progress() -> Callable[[str, int], None]:
    def show(side: str, rows: int) -> None:
        sys.stderr.write(f"\rsyncx verify: {side} {rows:,} rows read   ")
        sys.stderr.flush()

    return show


def _verify_summary(report: VerifyReport) -> str:
    verdict = "EQUAL" if report.equal else "DIFFERENT"
    if not report.tables:
        return "\n".join(
            [f"syncx verify {report.job}: {verdict}: {_compared(report)}", *_found(report)]
        )
    lines = [
        f"syncx verify {report.job}: {verdict}: {len(report.tables)} table(s) at the position of "
        f"checkpoint {report.checkpoint}; {report.changed:,} key(s) changed since the target's "
        "position (not compared)"
    ]
    for part in report.tables:
        lines.append(
            f"  {part.table}: {'EQUAL' if part.equal else 'DIFFERENT'}: {_compared(part)}; "
            f"{part.changed:,} changed since the target's position (not compared)"
        )
        lines += ["  " + line for line in _found(part)]
    return "\n".join(lines)


def _compared(report: VerifyReport) -> str:
    return (
        f"source {report.source_rows:,} rows, target {report.target_rows:,} rows, key "
        f"{', '.join(report.key)}"
    )


def _found(report: VerifyReport) -> list[str]:
    """What differs in one comparison: counts, the examples, how many more."""
    if report.equal:
        return []
    lines = [
        f"  {report.differing_buckets} of {report.buckets} chunks differ: {report.missing} "
        f"missing from the target, {report.extra} extra in it, {report.different} different, "
        f"{report.duplicate} duplicated keys"
    ]
    for diff in report.examples:
        lines.append(f"  {diff.kind} {diff.key}: source {diff.source} target {diff.target}")
    hidden = report.missing + report.extra + report.different - len(report.examples)
    if hidden > 0:
        lines.append(f"  ... and {hidden} more (--show N, or --json for the report)")
    return lines


@app.command()
def plugins() -> None:
    """List installed readers and writers."""
    for kind in ("reader", "writer"):
        typer.echo(f"{kind}s:")
        for name, target in sorted(registry.known(kind).items()):
            typer.echo(f"  {name:<16} {target}")


@app.command()
def schema(
    plugin: Annotated[
        str | None, typer.Argument(help="A plugin name; default the whole job file.")
    ] = None,
) -> None:
    """Print the JSON Schema of the job file, or of one plugin's parameter block."""
    with _errors(False):
        if plugin is None:
            result = job_schema()
        else:
            kind: registry.Kind = (
                "writer" if plugin.lower().endswith(("writer", "sink")) else "reader"
            )
            result = plugin_schema(kind, plugin)
    typer.echo(json.dumps(result, indent=2))


@app.command()
def template(
    reader: Annotated[str, typer.Argument(help="Reader plugin, e.g. mysqlreader.")],
    writer: Annotated[str, typer.Argument(help="Writer plugin, e.g. hdfswriter.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="ChunJun's JSON shape (with // comments).")
    ] = False,
) -> None:
    """Print a job file for READER -> WRITER with every parameter of both (fill the ${...})."""
    with _errors(False):
        typer.echo(render_template(reader, writer, json_shape=as_json).text, nl=False)


@checkpoints_app.command("list")
def checkpoints_list(job: JobArg, param: ParamOpt = None, state_dir: StateOpt = None) -> None:
    """List the stored checkpoints of a job."""
    loaded = _load(job, param, False)
    with _errors(False):
        state = StateDir(state_dir or default_state_dir(loaded))
    paths = state.checkpoint_paths()
    if not paths:
        typer.echo(f"no checkpoints in {state.checkpoints}")
        return
    for path in paths:
        with _errors(False):
            try:
                chk = state.load(path)
            except SyncxError as exc:
                typer.echo(f"{path.rsplit('/', 1)[-1]}  unreadable: {exc}")
                continue
        done = sum(1 for s in chk.positions.values() if s.done)
        typer.echo(
            f"{chk.id:>6}  {chk.created}  {'final' if chk.final else 'periodic':<8} run {chk.run_id}  "
            f"splits {done}/{len(chk.splits)} done  read {int(chk.metrics.get('numRead', 0)):,}"
        )


@checkpoints_app.command("show")
def checkpoints_show(
    job: JobArg,
    checkpoint_id: Annotated[
        int | None, typer.Argument(help="Checkpoint id; default the latest.")
    ] = None,
    param: ParamOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Print one checkpoint: positions, writer handles, metrics (never secrets)."""
    loaded = _load(job, param, False)
    with _errors(False):
        state = StateDir(state_dir or default_state_dir(loaded))
    with _errors(False, _REDACTOR.secrets):
        chk = state.load(state.find(checkpoint_id)) if checkpoint_id is not None else state.latest()
        if chk is None:
            _fail(f"no checkpoints in {state.checkpoints}", 1)
        assert chk is not None
        typer.echo(redact(json.dumps(chk.to_json(), indent=2, default=str), _REDACTOR.secrets))


# -- syncx schedule ------------------------------------------------------------------------------

schedule_app = typer.Typer(
    help="Scheduled syncs: serve job files with a 'schedule' block; inspect and steer them.",
    no_args_is_help=True,
)
app.add_typer(schedule_app, name="schedule")
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Run history: sqlite:///PATH or postgresql://USER@HOST/DB (default SQLite "
        "in .syncx/schedule.db).",
    ),
]
ScheduledJobArg = Annotated[str, typer.Argument(help="Job name in the history, or a job file.")]


def _schedule_call(debug: bool, action: Callable[[Any], list[str] | str], db: str | None) -> None:
    """Open the history, run one ``syncx schedule`` command, print its lines."""
    from sync.schedule.commands import open_store  # noqa: PLC0415 - the optional extra

    with _errors(debug):
        store = open_store(db)
        try:
            out = action(store)
        finally:
            store.close()
    typer.echo(out if isinstance(out, str) else "\n".join(out))


@schedule_app.command("serve")
def schedule_serve(
    paths: Annotated[list[Path], typer.Argument(help="Job files or folders of job files.")],
    db: DbOpt = None,
    http: Annotated[
        str | None, typer.Option("--http", help="HOST:PORT for the status page and /metrics.")
    ] = None,
    instance: Annotated[
        str | None, typer.Option("--instance", help="This scheduler's name (default host:pid).")
    ] = None,
    lease: Annotated[
        float,
        typer.Option("--lease", min=1, help="Seconds a run's lease lasts between heartbeats."),
    ] = 30.0,
    param: ParamOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Run the scheduler in the foreground (for systemd or a container); SIGTERM stops it after
    the running jobs take a final checkpoint."""
    from sync.schedule import commands  # noqa: PLC0415 - the optional extra

    _setup_logging("info", debug)
    values = _params(param)

    def ready(scheduler: Any) -> None:
        handle = commands.stop_on_signals(scheduler)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: handle(signum))

    with _errors(debug):
        store = commands.open_store(db)
        try:
            commands.serve(
                paths,
                store,
                http=http,
                instance=instance,
                params=values,
                lease=lease,
                on_ready=ready,
            )
        finally:
            store.close()


@schedule_app.command("list")
def schedule_list(db: DbOpt = None, debug: DebugOpt = False) -> None:
    """Jobs in the run history: schedule, next fire, paused or not, last outcome."""
    from sync.schedule import commands  # noqa: PLC0415

    _schedule_call(debug, commands.job_list, db)


@schedule_app.command("history")
def schedule_history(
    job: ScheduledJobArg,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Runs to show.")] = 50,
    db: DbOpt = None,
    debug: DebugOpt = False,
) -> None:
    """A job's runs, newest first: fire time, attempt, outcome, rows, duration, error."""
    from sync.schedule import commands  # noqa: PLC0415

    _schedule_call(debug, lambda store: commands.history(store, job, limit), db)


@schedule_app.command("next")
def schedule_next(
    job: ScheduledJobArg,
    count: Annotated[int, typer.Option("-n", min=1, help="How many fires.")] = 5,
    db: DbOpt = None,
    debug: DebugOpt = False,
) -> None:
    """The next fires, local and UTC, with daylight-saving shifts marked."""
    from sync.schedule import commands  # noqa: PLC0415

    _schedule_call(debug, lambda store: commands.next_fires(store, job, count), db)


@schedule_app.command("trigger")
def schedule_trigger(job: ScheduledJobArg, db: DbOpt = None, debug: DebugOpt = False) -> None:
    """Queue a run now (the serving scheduler starts it)."""
    from sync.schedule import commands  # noqa: PLC0415

    _schedule_call(debug, lambda store: commands.trigger(store, job), db)


@schedule_app.command("pause")
def schedule_pause(job: ScheduledJobArg, db: DbOpt = None, debug: DebugOpt = False) -> None:
    """Stop firing a job until resumed (a running run finishes)."""
    from sync.schedule import commands  # noqa: PLC0415

    _schedule_call(debug, lambda store: commands.set_paused(store, job, True), db)


@schedule_app.command("resume")
def schedule_resume(job: ScheduledJobArg, db: DbOpt = None, debug: DebugOpt = False) -> None:
    """Fire a paused job again (fires during the pause are not caught up)."""
    from sync.schedule import commands  # noqa: PLC0415

    _schedule_call(debug, lambda store: commands.set_paused(store, job, False), db)


@schedule_app.command("backfill")
def schedule_backfill(
    job: ScheduledJobArg,
    start: Annotated[str, typer.Option("--from", help="First fire time (ISO; job's zone).")],
    end: Annotated[str, typer.Option("--to", help="Last fire time (ISO; job's zone).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the fires only.")] = False,
    db: DbOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Queue a run for every fire in [--from, --to], each with its own ${window_*}."""
    from sync.schedule import commands  # noqa: PLC0415

    _schedule_call(debug, lambda store: commands.backfill(store, job, start, end, dry_run), db)


# -- end of syncx schedule -----------------------------------------------------------------------
DRIVERS = ("connectorx", "mysqlclient", "pymysql", "pyarrow", "confluent-kafka")
"""Distributions whose versions ``--version`` lists (the drivers a job may use)."""


def _version(value: bool) -> None:
    if value:
        typer.echo(f"syncx {__version__}")
        for name in DRIVERS:
            try:
                found = metadata.version(name)
            except metadata.PackageNotFoundError:
                found = "not installed"
            typer.echo(f"  {name:<16} {found}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print the version and those of the installed drivers.",
        ),
    ] = False,
) -> None:
    """syncx."""


def main() -> None:
    """Console-script entry point."""
    app()
