"""Kill-and-restore harness: run ``syncx run`` in a subprocess, SIGKILL it, resume, repeat.

A crash test runs one job over and over on one state directory: each run is killed, either by a
real ``SIGKILL`` at a seeded random moment or by an exact crash point armed through
``SYNCX_CRASH_AT`` (:mod:`sync.faults`), and the next run resumes it, until a run exits 0. Then
the target must hold exactly the source: same rows, no duplicate keys, nothing staged left over.

How a killed job is resumed matters. ``--restore latest-or-new`` restores the latest checkpoint,
or starts anew when there is none; but when the latest checkpoint is *final* (the kill came after
the job's last checkpoint was stored), it starts a NEW run, which for a bounded source reads
everything again. A killed job is resumed with ``--restore latest`` then: that commits the final
checkpoint's handles again (idempotent) and ends. :func:`restore_args` makes that choice, and
:func:`run_until_done` stops at the first run that exits 0.

Everything here is connector-agnostic: the conformance kit (:mod:`sync.testing.kit`) and the
project's own crash tests build a job file and the expected rows and reuse
:func:`run_with_kills` (or :func:`run_until_done` with :func:`mixed_kill_plan`) and
:func:`assert_exact`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "CRASH_POINTS",
    "CrashHarnessError",
    "CrashReport",
    "Kill",
    "RunRecord",
    "assert_exact",
    "compare_exact",
    "crash_seed",
    "latest_checkpoint",
    "mixed_kill_plan",
    "restore_args",
    "run_syncx",
    "run_until_done",
    "run_with_kills",
    "syncx_command",
    "table_checksum",
    "write_job",
]

CRASH_POINTS = (
    "barrier-sent",
    "writer-prepared",
    "checkpoint-stored",
    "writer-committed",
    "final-committed",
)
"""The crash points :mod:`sync.faults` knows (``SYNCX_CRASH_AT=name@count``)."""

_FAULT_VARIABLES = ("SYNCX_CRASH_AT", "SYNCX_FAIL_AT")


class CrashHarnessError(AssertionError):
    """A run ended in a way a crash test does not allow (a crash, a hang, a wrong exit code)."""


@dataclass(frozen=True)
class Kill:
    """How one run is interrupted: SIGKILL after ``after`` seconds, at crash point ``crash_at``,
    or once ``when`` holds.

    ``after`` counts from the start of the process, or, with ``after_output``, from the moment
    that text first appears in the run's output (``"stored"``: the run's first checkpoint is
    stored, so the kill lands in the middle of the work rather than during start-up).
    ``crash_at`` is a ``SYNCX_CRASH_AT`` value such as ``"checkpoint-stored@2"``: the process
    kills itself the second time it passes that point. ``when`` is asked every 20 ms, with the
    process id, whether the moment has come (a stored checkpoint holds some position, the
    process has some file open). Any may be given; whichever comes first kills.
    """

    after: float | None = None
    crash_at: str | None = None
    after_output: str | None = None
    when: Callable[[int], bool] | None = None

    def __post_init__(self) -> None:
        if self.after is None and self.crash_at is None and self.when is None:
            msg = "a Kill needs `after` (seconds), `crash_at` (a crash point) or `when`"
            raise ValueError(msg)
        if self.crash_at is not None:
            for item in self.crash_at.split(","):
                name = item.partition("@")[0].strip()
                if name not in CRASH_POINTS:
                    msg = f"unknown crash point {name!r}; known: {', '.join(CRASH_POINTS)}"
                    raise ValueError(msg)

    def describe(self) -> str:
        """A short label for reports: ``sigkill@1.23s`` or ``crash@checkpoint-stored@2``."""
        parts = []
        if self.after is not None:
            since = f" after {self.after_output!r}" if self.after_output else ""
            parts.append(f"sigkill@{self.after:.2f}s{since}")
        if self.crash_at is not None:
            parts.append(f"crash@{self.crash_at}")
        if self.when is not None:
            parts.append(f"sigkill@{getattr(self.when, '__name__', 'when')}")
        return "+".join(parts)


@dataclass
class RunRecord:
    """One ``syncx run`` process: how it was started, interrupted and how it ended."""

    index: int
    args: list[str]
    kill: Kill | None
    exit_code: int
    elapsed: float
    log: Path
    """File holding the run's stdout and stderr."""

    @property
    def killed(self) -> bool:
        """True when the process died of SIGKILL (ours or a crash point's)."""
        return self.exit_code == -signal.SIGKILL

    @property
    def output(self) -> str:
        """Everything the run printed (stdout and stderr, interleaved)."""
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no output)"

    def tail(self, lines: int = 25) -> str:
        """The last lines of the run's output, for failure messages."""
        return "\n".join(self.output.splitlines()[-lines:])

    def describe(self) -> str:
        """One line: index, restore mode, kill, exit code, duration."""
        restore = next((a for a in self.args if a.startswith("--restore=")), "fresh")
        kill = self.kill.describe() if self.kill else "no kill"
        return (
            f"run {self.index}: {restore}, {kill} -> exit {self.exit_code} in {self.elapsed:.2f}s"
        )


@dataclass
class CrashReport:
    """What :func:`run_until_done` did: every run, the kills that landed, the time it took."""

    seed: int | None
    runs: list[RunRecord] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def kills(self) -> int:
        """Runs that were really killed (a planned kill that came after the run ended is none)."""
        return sum(1 for run in self.runs if run.killed)

    @property
    def exit_codes(self) -> list[int]:
        """Each run's exit code, in order (``-9`` for SIGKILL)."""
        return [run.exit_code for run in self.runs]

    @property
    def kill_points(self) -> list[str]:
        """What killed each killed run."""
        return [run.kill.describe() for run in self.runs if run.killed and run.kill]

    def summary(self) -> str:
        """Seed, kill count, time and one line per run: print it when a test fails."""
        head = (
            f"seed={self.seed} kills={self.kills} runs={len(self.runs)} "
            f"elapsed={self.elapsed:.1f}s (rerun with SYNCX_CRASH_SEED={self.seed})"
        )
        return "\n".join([head, *(f"  {run.describe()}" for run in self.runs)])


def crash_seed(name: str) -> int:
    """The seed of a crash test's kill plan: ``SYNCX_CRASH_SEED`` when set (to replay a
    failure), else a stable one per ``name``."""
    override = os.environ.get("SYNCX_CRASH_SEED")
    return int(override) if override else zlib.crc32(name.encode())


def syncx_command() -> list[str]:
    """The command that runs this checkout's ``syncx`` with the current interpreter.

    The console script beside ``sys.executable`` when there is one (a venv), else
    ``python -c "from sync.cli import main; main()"``.
    """
    script = Path(sys.executable).with_name("syncx")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-c", "from sync.cli import main; main()"]


def write_job(path: Path, job: Mapping[str, Any]) -> Path:
    """Write a job mapping as JSON to ``path`` (the job's name is the file's stem)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(job, indent=1), encoding="utf-8")
    return path


def _clean_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """The environment for a run: ours without stray fault variables, plus ``env``."""
    merged = {k: v for k, v in os.environ.items() if k not in _FAULT_VARIABLES}
    merged.update(env or {})
    return merged


def run_syncx(
    args: Sequence[str | Path],
    *,
    log: Path,
    kill: Kill | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120.0,
    index: int = 0,
) -> RunRecord:
    """Run ``syncx ARGS`` once, interrupted as ``kill`` says; never raises on its exit code.

    A run still alive ``timeout`` seconds after its start is killed and reported as hung
    (:class:`CrashHarnessError`): a crash test must never wait forever.
    """
    run_env = _clean_env(env)
    if kill is not None and kill.crash_at is not None:
        run_env["SYNCX_CRASH_AT"] = kill.crash_at
    argv = [str(a) for a in args]
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*syncx_command(), *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=run_env,
            cwd=cwd,
            start_new_session=True,
        )
        try:
            if kill is not None and kill.when is not None:
                _kill_when(process, kill.when, started + timeout)
            if kill is not None and kill.after is not None:
                ready = True
                if kill.after_output is not None:
                    ready = _wait_for_output(process, log, kill.after_output, started + timeout)
                if ready:
                    try:
                        process.wait(timeout=kill.after)
                    except subprocess.TimeoutExpired:
                        process.kill()  # SIGKILL, as the OOM killer or a power cut would
            process.wait(timeout=max(0.0, timeout - (time.monotonic() - started)))
        except subprocess.TimeoutExpired as exc:
            process.kill()
            process.wait()
            msg = f"syncx {' '.join(argv)} hung for more than {timeout}s (log: {log})"
            raise CrashHarnessError(msg) from exc
    return RunRecord(
        index=index,
        args=argv,
        kill=kill,
        exit_code=process.returncode,
        elapsed=time.monotonic() - started,
        log=log,
    )


def _kill_when(
    process: subprocess.Popen[bytes], when: Callable[[int], bool], deadline: float
) -> None:
    """SIGKILL ``process`` as soon as ``when(pid)`` holds (unless it ends first)."""
    while time.monotonic() < deadline and process.poll() is None:
        if when(process.pid):
            process.kill()
            return
        time.sleep(0.02)


def _wait_for_output(
    process: subprocess.Popen[bytes], log: Path, text: str, deadline: float
) -> bool:
    """Wait until ``text`` is in the log (True) or the process has ended (False)."""
    needle = text.encode()
    while time.monotonic() < deadline:
        if needle in log.read_bytes():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.01)
    return False


def latest_checkpoint(state_dir: Path) -> dict[str, Any] | None:
    """The newest readable checkpoint file of a state directory, as stored (JSON), or None."""
    folder = state_dir / "checkpoints"
    for path in sorted(folder.glob("chk-*.json"), reverse=True):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(raw, dict):
            return raw
    return None


def restore_args(state_dir: Path) -> list[str]:
    """How to resume a killed job: ``--restore latest`` when its latest checkpoint is final, else
    ``--restore latest-or-new`` (which restores the latest checkpoint, or starts anew if none).

    ``latest-or-new`` on a final checkpoint would start a new run and read a bounded source
    again; after a kill the job must instead finish the run whose final checkpoint was stored.
    """
    latest = latest_checkpoint(state_dir)
    if latest is not None and latest.get("final"):
        return ["--restore=latest"]
    return ["--restore=latest-or-new"]


def run_until_done(
    job_path: Path,
    state_dir: Path,
    kill_plan: Sequence[Kill],
    env: Mapping[str, str] | None = None,
    *,
    seed: int | None = None,
    extra_args: Sequence[str] = (),
    log_dir: Path | None = None,
    run_timeout: float = 120.0,
) -> CrashReport:
    """Run a job, killing it as ``kill_plan`` says, resuming after each kill, until a run exits 0.

    Run *i* is interrupted by ``kill_plan[i]``; once the plan is used up, runs go uninterrupted
    and the next one must succeed. The first run starts fresh; every later one resumes as
    :func:`restore_args` says. A run that ends with anything but SIGKILL or exit 0 raises
    :class:`CrashHarnessError` with the report so far and that run's output. ``state_dir`` must
    not hold a completed run of the job already. ``extra_args`` go to every run
    (``--checkpoint-interval 0.3``).
    """
    report = CrashReport(seed=seed)
    plan = deque(kill_plan)
    logs = log_dir or state_dir.parent / f"{state_dir.name}-logs"
    started = time.monotonic()
    index = 0
    while True:
        kill = plan.popleft() if plan else None
        restore = restore_args(state_dir) if index else []
        args = [
            "run",
            str(job_path),
            f"--state-dir={state_dir}",
            *restore,
            *extra_args,
        ]
        record = run_syncx(
            args,
            log=logs / f"run-{index:03d}.log",
            kill=kill,
            env=env,
            timeout=run_timeout,
            index=index,
        )
        report.runs.append(record)
        report.elapsed = time.monotonic() - started
        index += 1
        if record.exit_code == 0:
            return report
        if record.killed and kill is not None:
            continue
        msg = (
            f"{record.describe()}: expected SIGKILL or exit 0\n{report.summary()}\n"
            f"--- output of run {record.index} ---\n{record.tail()}"
        )
        raise CrashHarnessError(msg)


def mixed_kill_plan(
    rng: random.Random,
    *,
    random_kills: int,
    window: tuple[float, float],
    crash_points: Sequence[str],
    progress_kills: int = 0,
    progress_window: tuple[float, float] = (0.0, 0.6),
    progress_output: str = " stored",
    last: str | None = "final-committed@1",
) -> list[Kill]:
    """A shuffled plan of kills, then ``last``.

    - ``random_kills`` SIGKILLs at uniform times in ``window`` (seconds after a run starts: some
      land during start-up or restore, most while reading);
    - ``progress_kills`` SIGKILLs at uniform times in ``progress_window`` after
      ``progress_output`` appears in the run's output (by default its first stored checkpoint:
      they land while reading or during the next checkpoint, never in start-up);
    - one run per ``crash_points`` entry (``"checkpoint-stored@2"``);
    - ``last``: a crash point that only a finishing run reaches, so it goes at the end.

    Draws only from ``rng``: the same seed gives the same plan.
    """
    low, high = window
    plan = [Kill(after=round(rng.uniform(low, high), 3)) for _ in range(random_kills)]
    plan.extend(
        Kill(after=round(rng.uniform(*progress_window), 3), after_output=progress_output)
        for _ in range(progress_kills)
    )
    plan.extend(Kill(crash_at=point) for point in crash_points)
    rng.shuffle(plan)
    if last is not None:
        plan.append(Kill(crash_at=last))
    return plan


# -- checking the target -----------------------------------------------------------------------


def table_checksum(table: pa.Table, key: Sequence[str]) -> str:
    """SHA-256 of the rows sorted by ``key``: equal tables (as multisets of rows) hash equally."""
    ordered = table.sort_by([(k, "ascending") for k in key]).combine_chunks()
    digest = hashlib.sha256()
    for batch in ordered.to_batches(max_chunksize=65536):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as stream:
            stream.write_batch(batch)
        digest.update(sink.getvalue().to_pybytes())
    return digest.hexdigest()


def _key_rows(table: pa.Table, key: Sequence[str]) -> set[tuple[Any, ...]]:
    columns = [table.column(k).to_pylist() for k in key]
    return set(zip(*columns, strict=True))


def compare_exact(expected: pa.Table, actual: pa.Table, key: Sequence[str]) -> list[str]:
    """What differs between two tables seen as sets of keyed rows; empty when they are equal.

    Checks the row count, duplicate keys in ``actual``, keys missing or extra, and then every
    column of every row (tables sorted by ``key``).
    """
    problems: list[str] = []
    actual = actual.select(expected.schema.names).cast(expected.schema)
    if actual.num_rows != expected.num_rows:
        problems.append(f"row count: expected {expected.num_rows:,}, got {actual.num_rows:,}")
    counts = actual.group_by(list(key)).aggregate([([], "count_all")])
    duplicated = counts.filter(pc.greater(counts["count_all"], 1))
    if duplicated.num_rows:
        extra = int(pc.sum(duplicated["count_all"]).as_py()) - duplicated.num_rows
        sample = duplicated.slice(0, 3).to_pylist()
        problems.append(
            f"{duplicated.num_rows:,} duplicated keys ({extra:,} extra rows), e.g. {sample}"
        )
    want, got = _key_rows(expected, key), _key_rows(actual, key)
    missing, unexpected = want - got, got - want
    if missing:
        problems.append(f"{len(missing):,} keys missing, e.g. {sorted(missing)[:3]}")
    if unexpected:
        problems.append(f"{len(unexpected):,} unexpected keys, e.g. {sorted(unexpected)[:3]}")
    if not problems:
        order = [(k, "ascending") for k in key]
        left = expected.sort_by(order).combine_chunks()
        right = actual.sort_by(order).combine_chunks()
        for name in expected.schema.names:
            differs = pc.invert(pc.equal(left[name], right[name]).fill_null(False))
            both_null = pc.and_(left[name].is_null(), right[name].is_null())
            bad = pc.sum(pc.and_(differs, pc.invert(both_null)).cast(pa.int64())).as_py() or 0
            if bad:
                problems.append(f"column {name}: {bad:,} rows differ")
    return problems


def assert_exact(
    expected: pa.Table, actual: pa.Table, key: Sequence[str], context: str = ""
) -> None:
    """Fail unless ``actual`` holds exactly ``expected``'s rows (see :func:`compare_exact`)."""
    problems = compare_exact(expected, actual, key)
    if problems:
        detail = "\n  ".join(problems)
        raise AssertionError(f"target differs from source:\n  {detail}\n{context}".rstrip())
    if table_checksum(expected, key) != table_checksum(
        actual.select(expected.schema.names).cast(expected.schema), key
    ):
        raise AssertionError(f"target and source checksums differ\n{context}".rstrip())


def run_with_kills(job: dict[str, Any], tmp_path: Path, name: str, **kills: Any) -> CrashReport:
    """Run ``job`` (saved as ``<name>.json``) with ``syncx run`` until a run succeeds: SIGKILLed
    at random moments (``kills``: :func:`mixed_kill_plan`'s options) and at one exact
    step of each checkpoint phase, resumed after each kill, checkpoints every 0.3 s. The plan is
    drawn from ``SYNCX_CRASH_SEED`` (default: from ``name``)."""
    seed = crash_seed(name)
    rng = random.Random(seed)
    job_path = tmp_path / f"{name}.json"
    job_path.write_text(json.dumps(job), encoding="utf-8")
    points = [
        f"checkpoint-stored@{rng.randint(1, 3)}",
        f"writer-prepared@{rng.randint(1, 4)}",
        f"writer-committed@{rng.randint(1, 3)}",
        f"barrier-sent@{rng.randint(1, 6)}",
    ]
    plan = mixed_kill_plan(rng, crash_points=points, **kills)
    args = ["--checkpoint-interval", "0.3"]
    report = run_until_done(job_path, tmp_path / "state", plan, seed=seed, extra_args=args)
    print(report.summary())
    return report
