"""The child of :meth:`sync.testing.kit.WriterConformance.test_begin_after_a_killed_run`.

``python -m sync.testing._killed_writer SPEC.json`` builds the writer the spec names, starts a
fresh run, writes the first part and prepares checkpoint 1, writes the second and prepares
checkpoint 2 (printing ``prepared <handle JSON>`` after each), writes the third, prints
``writing`` and waits to be killed: a process gone with two prepared checkpoints, neither
committed, and unprepared work open.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pyarrow as pa

from sync.contract import encode
from sync.testing.kit import build_writer


def main(spec_path: str) -> None:
    """Run the writer as the spec says, then wait to be killed."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    with pa.memory_map(spec["data"]) as source:
        rows = pa.ipc.open_file(source).read_all()
    writer = build_writer(
        spec["name"],
        spec["parameters"],
        Path(spec["state_dir"]),
        job_name=spec["job_name"],
        run_id=spec["run_id"],
    )
    writer.check()
    writer.begin([], fresh=True)
    task = writer.open(0, 1, rows.schema)
    start = 0
    for checkpoint, count in enumerate(spec["parts"], start=1):
        for batch in rows.slice(start, count).combine_chunks().to_batches():
            task.write(batch)
        start += count
        if checkpoint < len(spec["parts"]):
            handle = task.prepare(checkpoint)
            print("prepared", json.dumps(encode(handle)), flush=True)
    print("writing", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1])
