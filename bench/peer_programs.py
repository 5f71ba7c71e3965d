"""The Python peers of ``bench/peers.py``, each run as its own process.

``peers.py`` starts ``python bench/peer_programs.py <program> ...`` for each run so that a peer's
wall time includes its start and its peak RSS is measured like syncx's (``ru_maxrss`` of the
child). Only the standard library is imported at the top: each program imports what it uses
and nothing of the benchmark's own (pymysql, numpy), so no peer carries another's memory.

Programs:

- ``raw``: the floor — connectorx reads the table into Arrow over 2 connections
  (``partition_on="id", partition_num=2``) and pyarrow writes one Snappy Parquet file;
- ``dlt``: a dlt pipeline, ``sql_table`` source (``--backend connectorx`` or dlt's default,
  ``sqlalchemy``) into the filesystem destination as Parquet or into MySQL through dlt's
  ``sqlalchemy`` destination.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def raw(conn: str, table: str, out: Path) -> None:
    """connectorx → Arrow → Snappy Parquet: what any MySQL → Parquet copy must at least do."""
    import connectorx as cx  # noqa: PLC0415 - imported only in its own process
    import pyarrow.parquet as pq  # noqa: PLC0415

    data = cx.read_sql(
        conn,
        f"SELECT * FROM `{table}`",
        return_type="arrow",
        partition_on="id",
        partition_num=2,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(data, out, compression="snappy")


def dlt_run(
    source: str,
    table: str,
    backend: str,
    backend_kwargs: dict[str, Any],
    destination: str,
    target: str,
    dataset: str,
    workdir: Path,
) -> None:
    """One dlt pipeline run: ``sql_table`` → Parquet files (``destination=filesystem``, ``target``
    a ``file://`` folder) or → MySQL (``destination=mysql``, ``target`` a SQLAlchemy URL)."""
    import dlt  # noqa: PLC0415 - imported only in its own process
    from dlt.sources.sql_database import sql_table  # noqa: PLC0415

    resource = sql_table(
        credentials=source,
        table=table,
        backend=backend,  # type: ignore[arg-type]
        backend_kwargs=backend_kwargs,
    )
    if destination == "filesystem":
        target_destination: Any = dlt.destinations.filesystem(bucket_url=target)
    else:
        target_destination = dlt.destinations.sqlalchemy(credentials=target)
    pipeline = dlt.pipeline(
        pipeline_name=f"peers_{backend}_{destination}",
        pipelines_dir=str(workdir),
        destination=target_destination,
        dataset_name=dataset,
    )
    info = pipeline.run(resource, loader_file_format="parquet", write_disposition="replace")
    info.raise_on_failed_jobs()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    programs = parser.add_subparsers(dest="program", required=True)
    raw_args = programs.add_parser("raw", help="connectorx → Arrow → Parquet")
    raw_args.add_argument("--conn", required=True, help="connectorx URL, mysql://...")
    raw_args.add_argument("--table", required=True)
    raw_args.add_argument("--out", type=Path, required=True, help="the Parquet file to write")
    dlt_args = programs.add_parser("dlt", help="a dlt pipeline")
    dlt_args.add_argument("--source", required=True, help="SQLAlchemy URL of the source")
    dlt_args.add_argument("--table", required=True)
    dlt_args.add_argument("--backend", default="sqlalchemy")
    dlt_args.add_argument("--backend-kwargs", default="{}", help="JSON object")
    dlt_args.add_argument("--destination", choices=["filesystem", "mysql"], required=True)
    dlt_args.add_argument("--target", required=True, help="file:// folder or SQLAlchemy URL")
    dlt_args.add_argument("--dataset", required=True)
    dlt_args.add_argument("--workdir", type=Path, required=True, help="dlt's pipelines_dir")
    args = parser.parse_args(argv)
    if args.program == "raw":
        raw(args.conn, args.table, args.out)
    else:
        dlt_run(
            args.source,
            args.table,
            args.backend,
            json.loads(args.backend_kwargs),
            args.destination,
            args.target,
            args.dataset,
            args.workdir,
        )


if __name__ == "__main__":
    main()
