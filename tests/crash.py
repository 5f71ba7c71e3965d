"""The project's crash tests: the kill machinery of :mod:`sync.testing.crash`, plus what only
the file writers' tests need (reading a folder of part files, listing staged leftovers).

The kill-and-restore harness lives in the package (:mod:`sync.testing.crash`) so that the
connector conformance kit and these tests share one piece of code; it is re-exported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from sync.testing.crash import (
    CRASH_POINTS,
    CrashHarnessError,
    CrashReport,
    Kill,
    RunRecord,
    assert_exact,
    compare_exact,
    crash_seed,
    latest_checkpoint,
    mixed_kill_plan,
    restore_args,
    run_syncx,
    run_until_done,
    run_with_kills,
    syncx_command,
    table_checksum,
    write_job,
)

__all__ = [
    "CRASH_POINTS",
    "CrashHarnessError",
    "CrashReport",
    "FileType",
    "Kill",
    "RunRecord",
    "assert_exact",
    "compare_exact",
    "crash_seed",
    "latest_checkpoint",
    "mixed_kill_plan",
    "read_folder",
    "restore_args",
    "run_syncx",
    "run_until_done",
    "run_with_kills",
    "staging_leftovers",
    "syncx_command",
    "table_checksum",
    "write_job",
]

FileType = Literal["parquet", "csv", "json"]
_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "parquet": (".parquet",),
    "csv": (".csv",),
    "json": (".jsonl", ".json"),
}


def _visible_files(folder: Path, file_type: FileType) -> list[Path]:
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file()
        and not path.name.startswith((".", "_"))
        and path.name.endswith(_EXTENSIONS[file_type])
    )


def read_folder(folder: Path, file_type: FileType, schema: pa.Schema) -> pa.Table:
    """Every visible part file of ``folder`` as one table with ``schema`` (hidden files skipped).

    Each file is read on its own and cast to ``schema``, so differently inferred types (an
    all-integral double column in CSV) do not get in the way of an exact comparison.
    """
    tables: list[pa.Table] = []
    for path in _visible_files(folder, file_type):
        if file_type == "parquet":
            table = pq.read_table(path)
        elif file_type == "csv":
            convert = pacsv.ConvertOptions(
                column_types={f.name: f.type for f in schema},
                strings_can_be_null=True,  # NULL is written unquoted and empty,
                quoted_strings_can_be_null=False,  # an empty string as ""
            )
            table = pacsv.read_csv(path, convert_options=convert)
        else:
            parse = pajson.ParseOptions(explicit_schema=schema)
            table = pajson.read_json(path, parse_options=parse)
        tables.append(table.select(schema.names).cast(schema))
    if not tables:
        return schema.empty_table()
    return pa.concat_tables(tables)


def staging_leftovers(folder: Path, job_name: str) -> list[str]:
    """Files left in a file writer's staging folder ``<folder>/.syncx-staging/<job>/``."""
    staging = folder / ".syncx-staging" / job_name
    if not staging.exists():
        return []
    return sorted(str(p.relative_to(staging)) for p in staging.rglob("*"))
