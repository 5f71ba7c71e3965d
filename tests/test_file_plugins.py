"""filereader / filewriter through the plugin contract: formats, resume, two-phase commit."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from readers.file import FileReader, FileReaderParams
from sync.contract import JobContext, SplitReader
from sync.errors import JobFileError
from sync.model import Setting
from writers.file import STAGING, FileWriter, FileWriterParams

FORMATS = ["parquet", "csv", "json"]


def _ctx(tmp_path: Path, batch_rows: int = 1000) -> JobContext:
    return JobContext.of("job", tmp_path / "state", Setting(), run_id="run1", batch_rows=batch_rows)


def _table(rows: int) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "name": [f"név-{i}-😀" if i % 7 else None for i in range(rows)],
            "price": pa.array([Decimal(i) / 100 for i in range(rows)], pa.decimal128(12, 2)),
            "at": pa.array(
                [dt.datetime(2024, 1, 1) + dt.timedelta(seconds=i) for i in range(rows)],
                pa.timestamp("us"),
            ),
        }
    )


def _writer(tmp_path: Path, fmt: str, **extra: object) -> FileWriter:
    params = FileWriterParams.model_validate(
        {"path": str(tmp_path / "out"), "fileType": fmt, **extra}
    )
    writer = FileWriter(params, _ctx(tmp_path))
    writer.check()
    return writer


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _drain(split: SplitReader, batches: int | None = None) -> list[dict]:
    rows: list[dict] = []
    for count, batch in enumerate(split.batches(), 1):
        assert batch is not None
        rows.extend(batch.to_pylist())
        if batches is not None and count == batches:
            break
    return rows


@pytest.mark.parametrize("fmt", FORMATS)
def test_two_phase_commit_and_round_trip(tmp_path: Path, fmt: str) -> None:
    table = _table(2500)
    writer = _writer(tmp_path, fmt)
    writer.begin([], fresh=True)
    task = writer.open(0, 1, None)
    for batch in table.to_batches(max_chunksize=1000):
        assert task.write(batch) == []
    handle = task.prepare(1)
    assert _visible(tmp_path / "out") == []  # prepared: durable but invisible
    staged = list((tmp_path / "out" / STAGING / "job").iterdir())
    assert len(staged) == 1
    task.commit(handle)
    task.commit(handle)  # idempotent
    files = _visible(tmp_path / "out")
    assert len(files) == 1
    assert files[0].suffix == {"parquet": ".parquet", "csv": ".csv", "json": ".jsonl"}[fmt]
    reader_params = FileReaderParams.model_validate(
        {
            "path": str(tmp_path / "out"),
            "fileType": fmt,
            "column": [
                {"name": "id", "type": "bigint"},
                {"name": "name", "type": "string"},
                {"name": "price", "type": "decimal(12,2)"},
                {"name": "at", "type": "timestamp"},
            ],
        }
    )
    reader = FileReader(reader_params, _ctx(tmp_path))
    (split,) = reader.plan(1)
    rows = _drain(reader.open(split, None))
    assert rows == table.to_pylist()


@pytest.mark.parametrize("fmt", FORMATS)
def test_resume_continues_with_exactly_the_rest(tmp_path: Path, fmt: str) -> None:
    table = _table(3300)
    writer = _writer(tmp_path, fmt)
    task = writer.open(0, 1, None)
    task.write(table.to_batches()[0])
    task.commit(task.prepare(1))
    params = FileReaderParams.model_validate({"path": str(tmp_path / "out"), "fileType": fmt})
    reader = FileReader(params, _ctx(tmp_path, batch_rows=500))
    (split,) = reader.plan(1)
    whole = _drain(reader.open(split, None))
    first = reader.open(split, None)
    head = _drain(first, batches=3)
    position = first.snapshot()
    assert position.rows == len(head) == 1500
    rest = _drain(reader.open(split, position))
    assert head + rest == whole
    assert len(whole) == 3300


def test_abort_and_begin_recovery(tmp_path: Path) -> None:
    writer = _writer(tmp_path, "parquet")
    task = writer.open(0, 1, None)
    batches = _table(300).to_batches(max_chunksize=100)
    task.write(batches[0])
    first = task.prepare(1)
    task.write(batches[1])
    second = task.prepare(2)
    task.write(batches[2])  # in progress, never prepared: a crash leaves it behind
    task.abort(second)
    task.abort(second)  # idempotent
    # a new run restoring checkpoint 1: commits its handle, removes everything else staged
    restored = _writer(tmp_path, "parquet")
    restored.begin([first], fresh=False)
    assert list((tmp_path / "out" / STAGING / "job").iterdir()) == []
    ids = ds.dataset(tmp_path / "out", format="parquet").to_table()["id"].to_pylist()
    assert ids == list(range(100))


def test_overwrite_empties_target_only_on_a_fresh_run(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.parquet").write_bytes(b"x")
    (tmp_path / "out" / "_SUCCESS").write_bytes(b"")
    writer = _writer(tmp_path, "parquet", writeMode="overwrite")
    writer.begin([], fresh=False)
    assert (tmp_path / "out" / "old.parquet").exists()
    writer.begin([], fresh=True)
    assert not (tmp_path / "out" / "old.parquet").exists()
    assert (tmp_path / "out" / "_SUCCESS").exists()  # hidden names are not data


def test_max_file_size_rolls_files(tmp_path: Path) -> None:
    writer = _writer(tmp_path, "csv", maxFileSize=20_000)
    task = writer.open(0, 1, None)
    for batch in _table(5000).to_batches(max_chunksize=200):
        task.write(batch)
    task.commit(task.prepare(1))
    files = _visible(tmp_path / "out")
    assert len(files) > 5
    assert all(p.stat().st_size < 20_000 + 15_000 for p in files)


def test_reader_skips_hidden_files_and_filters(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / ".staging").mkdir()
    for path in (
        folder / "a.csv",
        folder / "sub" / "b.csv",
        folder / ".staging" / "c.csv",
        folder / "_tmp.csv",
    ):
        path.write_text("id\n1\n")
    params = FileReaderParams.model_validate({"path": str(folder), "fileType": "csv"})
    names = [Path(s.data.path).name for s in FileReader(params, _ctx(tmp_path)).plan(1)]
    assert names == ["a.csv", "b.csv"]
    params = FileReaderParams.model_validate(
        {"path": str(folder / "*.csv"), "fileType": "csv", "filterRegex": "^a"}
    )
    assert [Path(s.data.path).name for s in FileReader(params, _ctx(tmp_path)).plan(1)] == ["a.csv"]


def test_missing_path_names_the_parameter(tmp_path: Path) -> None:
    params = FileReaderParams.model_validate({"path": str(tmp_path / "nothing"), "fileType": "csv"})
    with pytest.raises(
        JobFileError, match=r"job.content\[0\].reader.parameter.path: no files match"
    ):
        FileReader(params, _ctx(tmp_path)).check()
