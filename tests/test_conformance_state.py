"""Typed state of the stream, file and HDFS plugins still loads what the previous version stored.

Before positions, split data and handles were :class:`~sync.contract.State` classes, a
checkpoint held a stream or file split's position as a bare row count, split data as a plain
object and a staged writer's handle as a plain ``{"groups", "new"}`` (or older
``{"files"}``) object, none with a version. A job killed by that version must restore here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from readers.file import FileReader, FileSplitData
from readers.hdfs import HdfsReader, HdfsSplitData
from readers.stream import RowsRead, StreamReader, StreamSplitData
from sync.contract import Split, decode
from sync.state import Checkpoint
from sync.testing import build_reader
from tests.crash import Kill, assert_exact, read_folder, run_syncx, write_job
from writers.file import StagedHandle

SCHEMA = pa.schema([("id", pa.int64()), ("s", pa.string())])
COLUMNS = [{"name": "id", "type": "id"}, {"name": "s", "type": "string"}]


def _legacy(value: Any) -> Any:
    """A typed value's stored form as the previous version stored it: no version, a bare
    row count for a position."""
    if isinstance(value, dict) and "v" in value:
        plain = {k: v for k, v in value.items() if k != "v"}
        if set(plain) == {"rows"}:
            return plain["rows"]
        if plain.get("files") == []:
            del plain["files"]
        if "units" in plain and plain["units"] is None:
            del plain["units"]
        return plain
    return value


def test_plain_forms_decode_as_the_declared_types() -> None:
    assert decode(StreamReader.position_type, 42) == RowsRead(rows=42)
    assert decode(FileReader.position_type, {"rows": 7}) == RowsRead(rows=7)
    split = Split.from_json({"id": "channel-1", "data": {"channel": 1, "rows": 9}}, StreamSplitData)
    assert split.data == StreamSplitData(channel=1, rows=9)
    assert decode(FileReader.split_type, {"path": "/a"}) == FileSplitData(path="/a")
    assert decode(HdfsReader.split_type, {"path": "/a"}) == HdfsSplitData(path="/a")
    assert decode(HdfsReader.split_type, {"path": "/b", "units": [0, 2]}).units == [0, 2]
    old = decode(StagedHandle, {"files": [["x.inprogress", "part-x.parquet"]]})
    assert old == StagedHandle(files=[["x.inprogress", "part-x.parquet"]])
    group = {"id": "g", "dir": "", "final": "f", "segments": ["s"], "closed": True}
    assert decode(StagedHandle, {"groups": [group], "new": ["s"]}).groups == [group]


def _stored(handles: dict[str, list[Any]], fmt: int) -> dict[str, Any]:
    return {
        "format": fmt,
        "id": 4,
        "runId": "r",
        "created": "",
        "final": False,
        "fingerprint": {},
        "splits": [],
        "positions": {},
        "handles": handles,
    }


def test_a_restore_commits_handles_in_checkpoint_order_across_subtasks() -> None:
    """Subtask 0 left checkpoints 3 and 4 uncommitted, subtask 1 only 3: both 3s come first."""
    stored = _stored(
        {
            "0": [{"checkpoint": 3, "handle": "s0-c3"}, {"checkpoint": 4, "handle": "s0-c4"}],
            "1": [{"checkpoint": 3, "handle": "s1-c3"}],
        },
        2,
    )
    assert Checkpoint.from_json(stored).all_handles() == ["s0-c3", "s1-c3", "s0-c4"]
    again = Checkpoint.from_json(Checkpoint.from_json(stored).to_json())
    assert again.all_handles() == ["s0-c3", "s1-c3", "s0-c4"]
    # format 1 had no checkpoint ids: each subtask's list ends at the checkpoint's own id
    old = Checkpoint.from_json(_stored({"1": ["s1-c4"], "0": ["s0-c3", "s0-c4"]}, 1))
    assert old.all_handles() == ["s0-c3", "s0-c4", "s1-c4"]


def test_checkpoint_of_the_previous_version_restores_exactly(tmp_path: Path) -> None:
    """Killed right after its first checkpoint, rewritten in the old plain form, restored."""
    out = tmp_path / "out"
    parameters = {"column": COLUMNS, "sliceRecordCount": [400, 400]}
    job = {
        "job": {
            "content": [
                {
                    "reader": {"name": "streamreader", "parameter": parameters},
                    "writer": {"name": "filewriter", "parameter": {"path": str(out)}},
                }
            ],
            "setting": {"speed": {"channel": 2, "record": 400}, "restore": {"isRestore": True}},
        }
    }
    path = write_job(tmp_path / "legacy.json", job)
    state = tmp_path / "state"
    args = ["run", str(path), f"--state-dir={state}", "--checkpoint-interval", "0.3"]
    killed = run_syncx(args, log=tmp_path / "run-0.log", kill=Kill(crash_at="checkpoint-stored@2"))
    assert killed.killed, killed.tail()
    stored = sorted((state / "checkpoints").glob("chk-*.json"))[-1]
    raw = json.loads(stored.read_text(encoding="utf-8"))
    assert raw["positions"] and any(raw["handles"].values()), raw
    raw["splits"] = [{**s, "data": _legacy(s["data"])} for s in raw["splits"]]
    raw["positions"] = {
        k: {**v, "position": _legacy(v["position"])} for k, v in raw["positions"].items()
    }
    # format 1 also listed a subtask's handles without their checkpoint ids
    raw["format"] = 1
    raw["handles"] = {k: [_legacy(e["handle"]) for e in v] for k, v in raw["handles"].items()}
    assert all(isinstance(v["position"], int) for v in raw["positions"].values()), raw
    assert all("v" not in h for v in raw["handles"].values() for h in v), raw
    stored.write_text(json.dumps(raw), encoding="utf-8")
    restored = run_syncx([*args, "--restore=latest"], log=tmp_path / "run-1.log")
    assert restored.exit_code == 0, restored.tail()
    reader = build_reader("streamreader", parameters, state)
    expected = pa.concat_tables(
        pa.Table.from_batches([b])
        for split in reader.plan(2)
        for b in reader.open(split, None).batches()
        if b is not None
    ).cast(SCHEMA)
    assert_exact(expected, read_folder(out, "parquet", SCHEMA), ["id", "s"], restored.tail())
