"""Never delete what the user did not mean: ``defaultFS`` with a path, ``overwrite`` on a root or
top-level folder, and ``overwrite`` finding more than data files -- for ``filewriter`` and
``hdfswriter``, on file:// and on the WebHDFS test server."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.orc as orc
import pyarrow.parquet as pq
import pytest

from libs.fs import FileSystem, LocalFileSystem
from libs.webhdfs import open_filesystem
from sync.contract import JobContext
from sync.errors import FatalError, JobFileError
from sync.jobfile import load_job
from sync.model import Setting
from tests.conftest import RunCli, stream_job
from tests.servers.webhdfs import WebHdfsServer
from writers.file import STAGING, FileWriter, FileWriterParams, StagedFileWriter
from writers.hdfs import HdfsWriter, HdfsWriterParams

W = "job.content[0].writer.parameter"


@dataclass
class Place:
    """A filesystem to write to: its defaultFS, a folder of the test's own, and a way in."""

    kind: str
    default_fs: str
    config: dict[str, Any]
    fs: FileSystem
    root: str

    def write(self, relative: str, data: bytes) -> None:
        path = self.fs.join(self.root, relative)
        self.fs.makedirs(path.rsplit("/", 1)[0])
        with self.fs.open_write(path) as stream:
            stream.write(data)

    def exists(self, relative: str) -> bool:
        return self.fs.exists(self.fs.join(self.root, relative))


@pytest.fixture(params=["file", "webhdfs"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    if request.param == "file":
        (tmp_path / "fs").mkdir()
        yield Place("file", "file:///", {}, LocalFileSystem(), str(tmp_path / "fs" / "target"))
        return
    with WebHdfsServer(tmp_path / "hdfs") as server:
        url = f"webhdfs://127.0.0.1:{server.namenode_port}"
        config = {"hadoop.user.name": "syncx"}
        fs = open_filesystem(url, config, where="test", plugin="test")
        yield Place("webhdfs", url, config, fs, f"/t/{uuid.uuid4().hex[:8]}")


def _ctx(tmp_path: Path) -> JobContext:
    return JobContext.of("job", tmp_path / "state", Setting(), run_id="run1", batch_rows=1000)


def _hdfswriter(place: Place, tmp_path: Path, **params: Any) -> HdfsWriter:
    model = HdfsWriterParams.model_validate(
        {"defaultFS": place.default_fs, "hadoopConfig": place.config, "path": place.root, **params}
    )
    return HdfsWriter(model, _ctx(tmp_path))


def _filewriter(path: str, tmp_path: Path, **params: Any) -> FileWriter:
    return FileWriter(FileWriterParams.model_validate({"path": path, **params}), _ctx(tmp_path))


def _parquet() -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"a": [1]}), sink)
    return sink.getvalue().to_pybytes()


def _orc() -> bytes:
    sink = pa.BufferOutputStream()
    orc.write_table(pa.table({"a": [1]}), sink)
    return sink.getvalue().to_pybytes()


def _issues(params: dict[str, Any], tmp_path: Path, kind: str = "writer") -> list[str]:
    name = params.pop("name")
    side = {"name": name, "parameter": params}
    job = stream_job(writer=side) if kind == "writer" else stream_job()
    if kind == "reader":
        job["job"]["content"][0]["reader"] = side
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job), encoding="utf-8")
    try:
        load_job(path)
    except JobFileError as exc:
        return [str(issue) for issue in exc.issues]
    return []


# -- at validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "name"), [("writer", "hdfswriter"), ("reader", "hdfsreader")])
def test_default_fs_with_a_path_is_refused(tmp_path: Path, kind: str, name: str) -> None:
    base = {"name": name, "path": "/orders", "fileType": "parquet"}
    assert _issues({**base, "defaultFS": "file:///data/out"}, tmp_path, kind) == [
        f"job.content[0].{kind}.parameter.defaultFS: carries a path (/data/out), which Hadoop "
        "ignores: only the scheme and host of defaultFS name the filesystem, and path alone says "
        "where files are; write defaultFS: file:/// and put the folder into path "
        "(path: /data/out/...)"
    ]
    (issue,) = _issues({**base, "defaultFS": "hdfs://nn:8020/user/etl"}, tmp_path, kind)
    assert "write defaultFS: hdfs://nn:8020/ and put the folder into path" in issue
    for fine in ("file:///", "hdfs://nn:8020", "hdfs://nn:8020/", "webhdfs://nn:9870"):
        assert _issues({**base, "defaultFS": fine}, tmp_path, kind) == [], fine
    for key in ("fs.defaultFS", "fs.default.name"):
        config = {"hadoopConfig": {key: "hdfs://nn:8020/warehouse"}}
        (issue,) = _issues({**base, **config}, tmp_path, kind)
        assert issue.startswith(
            f"job.content[0].{kind}.parameter.hadoopConfig: {key} carries a path (/warehouse)"
        )


@pytest.mark.parametrize("folder", ["/", "/tmp", "/home/", "/data/..", "//", "/a/../b"])
def test_overwrite_of_a_root_or_top_level_folder_is_refused(tmp_path: Path, folder: str) -> None:
    for writer in (
        {"name": "filewriter", "path": folder},
        {"name": "hdfswriter", "path": folder, "defaultFS": "hdfs://nn:8020", "fileType": "orc"},
        {
            "name": "hdfswriter",
            "path": "/",
            "fileName": folder.strip("/"),
            "fileType": "orc",
            "defaultFS": "file:///",
        },
    ):
        (issue,) = _issues({**writer, "writeMode": "overwrite"}, tmp_path)
        assert issue.startswith(f"{W}.path: writeMode overwrite empties the target folder, and")
        assert "write into a folder at least two levels deep" in issue
        assert _issues({**writer, "writeMode": "append"}, tmp_path) == []
    assert (
        _issues({"name": "filewriter", "path": "/data/orders", "mode": "overwrite"}, tmp_path) == []
    )


# -- at the start of a run -----------------------------------------------------------------------

DATA = {
    "parquet": ["old.parquet", "part-0.snappy.parquet", "000000_0", "dt=1/x.parq", "dt=2/h=3/0"],
    "orc": ["old.orc", "000000_0", "dt=1/part-1.zlib.orc", "empty.orc"],
    "text": ["old.txt", "000000_0", "part-m-00000.gz", "dt=1/x.csv", "dt=1/y.txt.bz2", "e.tsv"],
}
HIDDEN = ["_SUCCESS", ".keep", "dt=1/_SUCCESS"]
FOREIGN = {
    "parquet": ["notes.md", "keep/a.parquet", "dt=1/README.txt", "000000_1"],
    "orc": ["old.parquet", "lib/", "000000_1"],
    "text": ["picture.png", "blob", "old.orc", "logs/x.txt"],
}


def _content(file_type: str, name: str) -> bytes:
    if name.startswith("empty"):
        return b""
    if name.endswith(".parquet") or (file_type == "parquet" and name != "000000_1"):
        return _parquet()
    if name.endswith(".orc") or (file_type == "orc" and name != "000000_1"):
        return _orc()
    if name in ("blob", "000000_1"):
        return b"\x00\x01binary\x00"
    if name.endswith(".gz"):
        return b"\x1f\x8b\x08\x00rest"
    return b"1\x01a\n2\x01b\n"


def _refused(name: str) -> tuple[str, bool]:
    """What the refusal names for a foreign entry: a file by its path, a folder that is no
    partition folder as a whole (``the folder x``); and whether it is such a folder."""
    top = name.rstrip("/").split("/")[0]
    if ("/" in name or name.endswith("/")) and "=" not in top:
        return top, True
    return name, False


def _seed(place: Place, file_type: str, names: list[str]) -> None:
    for name in names:
        if name.endswith("/"):
            place.fs.makedirs(place.fs.join(place.root, name.rstrip("/")))
        else:
            place.write(name, _content(file_type, name))


@pytest.mark.hdfs
@pytest.mark.parametrize("file_type", ["parquet", "orc", "text"])
def test_overwrite_deletes_only_data_files_and_partition_folders(
    place: Place, tmp_path: Path, file_type: str
) -> None:
    data, foreign = DATA[file_type], FOREIGN[file_type]
    _seed(place, file_type, data + HIDDEN + foreign)
    writer = _hdfswriter(place, tmp_path, fileType=file_type, writeMode="overwrite")
    writer.check()
    with pytest.raises(FatalError) as caught:
        writer.begin([], fresh=True)
    message = str(caught.value)
    assert message.startswith(
        f"{W}.writeMode: overwrite deletes only {file_type} data files and partition folders of "
    )
    assert message.endswith(
        "; move them away, or set overwriteAll: true to delete everything in the folder"
    )
    for name in foreign:
        path, folder = _refused(name)
        assert f"{'the folder ' if folder else ''}{place.root}/{path}" in message, name
    for name in data + HIDDEN + foreign:
        assert place.exists(name.rstrip("/")), f"{name} was deleted though the run was refused"
    for name in data:
        assert name not in message
    # once the other files are moved away, overwrite deletes the data and keeps hidden names
    for name in foreign:
        place.fs.delete(place.fs.join(place.root, _refused(name)[0]), recursive=True)
    writer = _hdfswriter(place, tmp_path, fileType=file_type, writeMode="overwrite")
    writer.check()
    writer.begin([], fresh=True)
    writer.finish()
    for name in [*data, "dt=1/_SUCCESS"]:
        assert not place.exists(name), name
    assert place.exists("_SUCCESS")
    assert place.exists(".keep")
    assert not place.exists(STAGING)  # empty after the job: removed


@pytest.mark.hdfs
def test_overwrite_all_deletes_every_visible_entry(place: Place, tmp_path: Path) -> None:
    names = DATA["parquet"] + HIDDEN + FOREIGN["parquet"]
    _seed(place, "parquet", names)
    writer = _hdfswriter(
        place, tmp_path, fileType="parquet", writeMode="overwrite", overwriteAll=True
    )
    writer.check()
    writer.begin([], fresh=True)
    writer.finish()
    assert [n for n in names if place.exists(n.rstrip("/"))] == ["_SUCCESS", ".keep"]


@pytest.mark.parametrize("file_type", ["parquet", "csv", "json"])
def test_filewriter_overwrite_keeps_what_is_not_its_data(tmp_path: Path, file_type: str) -> None:
    target = tmp_path / "out"
    (target / "year=2024").mkdir(parents=True)
    extension = {"parquet": "parquet", "csv": "csv", "json": "jsonl"}[file_type]
    data = [target / f"part-0.{extension}", target / "year=2024" / f"part-1.{extension}"]
    for path in data:
        path.write_bytes(_parquet() if file_type == "parquet" else b"a\n")
    (target / "config.yaml").write_text("keep: me\n")
    writer: StagedFileWriter[Any] = _filewriter(
        str(target), tmp_path, fileType=file_type, writeMode="overwrite"
    )
    writer.check()
    with pytest.raises(FatalError, match=r"also holds .*/config\.yaml; move them away"):
        writer.begin([], fresh=True)
    assert all(path.exists() for path in data)
    writer = _filewriter(
        str(target), tmp_path, fileType=file_type, writeMode="overwrite", overwriteAll=True
    )
    writer.begin([], fresh=True)
    assert sorted(p.name for p in target.iterdir()) == [STAGING]


def test_a_refused_overwrite_run_exits_1_naming_the_file(tmp_path: Path, run_cli: RunCli) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "part-0.parquet").write_bytes(_parquet())
    (target / "thesis.docx").write_bytes(b"years of work")
    writer = {"name": "filewriter", "parameter": {"path": str(target), "writeMode": "overwrite"}}
    job = tmp_path / "job.json"
    job.write_text(json.dumps(stream_job(writer=writer)), encoding="utf-8")
    done = run_cli("run", job)
    assert done.returncode == 1, done.stderr
    assert f"also holds {target}/thesis.docx; move them away" in done.stderr
    assert "Traceback" not in done.stderr
    assert (target / "thesis.docx").read_bytes() == b"years of work"
    assert (target / "part-0.parquet").exists()


# -- after a successful job ----------------------------------------------------------------------


@pytest.mark.hdfs
def test_empty_staging_folders_are_removed_after_a_job(place: Place, tmp_path: Path) -> None:
    writer = _hdfswriter(place, tmp_path, fileType="parquet", partition=["p"])
    writer.check()
    writer.begin([], fresh=True)
    task = writer.open(0, 1, None)
    task.write(pa.record_batch({"a": [1, 2], "p": ["x", "y"]}))
    task.commit(task.prepare(1))
    task.close()
    assert place.exists(f"{STAGING}/job")
    writer.finish()
    assert not place.exists(STAGING)
    assert place.exists("p=x") and place.exists("p=y")
    # another job's staged files keep .syncx-staging (only this job's own folder goes)
    place.write(f"{STAGING}/other/part.parquet.inprogress", b"x")
    writer = _hdfswriter(place, tmp_path, fileType="parquet", partition=["p"])
    writer.check()
    writer.begin([], fresh=True)
    writer.finish()
    assert not place.exists(f"{STAGING}/job")
    assert place.exists(f"{STAGING}/other/part.parquet.inprogress")


@pytest.mark.parametrize("writer", ["filewriter", "hdfswriter"])
def test_a_finished_run_leaves_no_staging_folder(
    tmp_path: Path, run_cli: RunCli, writer: str
) -> None:
    target = tmp_path / "out" / "orders"
    parameter: dict[str, Any] = {"path": str(target), "writeMode": "overwrite"}
    if writer == "hdfswriter":
        parameter |= {"defaultFS": "file:///", "fileType": "orc"}
    job = tmp_path / "job.json"
    job.write_text(
        json.dumps(
            stream_job(
                counts=[50, 50],
                writer={"name": writer, "parameter": parameter},
                setting={"speed": {"channel": 2}},
            )
        ),
        encoding="utf-8",
    )
    for _ in range(2):  # a second run overwrites the first one's files
        done = run_cli("run", job)
        assert done.returncode == 0, done.stderr
        assert not (target / STAGING).exists()
        assert [p.name for p in target.iterdir() if p.name.startswith(".")] == []
        assert len(list(target.iterdir())) >= 1
