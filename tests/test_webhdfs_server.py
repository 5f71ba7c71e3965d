"""The WebHDFS test server behaves like Hadoop for the real ``hdfs`` (HdfsCLI) client."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from hdfs import InsecureClient
from hdfs.util import HdfsError
from urllib3.exceptions import ProtocolError

from tests.servers.webhdfs import TMP_PREFIX, WebHdfsServer

pytestmark = pytest.mark.hdfs

REPO = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


@pytest.fixture
def server(tmp_path: Path) -> Iterator[WebHdfsServer]:
    with WebHdfsServer(tmp_path / "hdfs") as srv:
        yield srv


@pytest.fixture
def client(server: WebHdfsServer) -> InsecureClient:
    return InsecureClient(server.url, user="syncx")


def _raises(exception: str) -> pytest.RaisesExc[HdfsError]:
    """Expect an HdfsError carrying the given Hadoop exception name."""
    return pytest.raises(HdfsError, check=lambda err: err.exception == exception)


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(TMP_PREFIX)]


def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def _read(client: InsecureClient, path: str, **kwargs) -> bytes:
    with client.read(path, **kwargs) as reader:
        return reader.read()


# ----------------------------------------------------------------------- data transfer


def test_write_read_round_trip(client: InsecureClient, server: WebHdfsServer) -> None:
    client.write("/data/hello.txt", b"hello webhdfs")
    assert _read(client, "/data/hello.txt") == b"hello webhdfs"
    assert (server.root / "data" / "hello.txt").read_bytes() == b"hello webhdfs"
    assert _read(client, "/data/hello.txt", offset=6, length=3) == b"web"
    assert _read(client, "/data/hello.txt", offset=6) == b"webhdfs"

    client.write("/data/text.txt", "zażółć\n", encoding="utf-8")
    with client.read("/data/text.txt", encoding="utf-8") as reader:
        assert reader.read() == "zażółć\n"

    client.write("/data/empty", b"")
    assert _read(client, "/data/empty") == b""
    assert client.status("/data/empty")["length"] == 0


def test_large_file_is_streamed_both_ways(
    client: InsecureClient, server: WebHdfsServer, tmp_path: Path
) -> None:
    chunk = os.urandom(MB)
    expected = hashlib.sha256()
    for index in range(20):
        expected.update(bytes([index]) + chunk[1:])

    # A generator body makes requests use Transfer-Encoding: chunked.
    client.write("/big/chunked.bin", (bytes([index]) + chunk[1:] for index in range(20)))
    assert client.status("/big/chunked.bin")["length"] == 20 * MB

    actual = hashlib.sha256()
    sizes = []
    with client.read("/big/chunked.bin", chunk_size=MB) as reader:
        for piece in reader:
            sizes.append(len(piece))
            actual.update(piece)
    assert actual.hexdigest() == expected.hexdigest()
    assert sum(sizes) == 20 * MB

    # A file object body is sent with Content-Length.
    local = tmp_path / "big.bin"
    with local.open("wb") as handle:
        for index in range(20):
            handle.write(bytes([index]) + chunk[1:])
    with local.open("rb") as handle:
        client.write("/big/sized.bin", handle)
    assert client.checksum("/big/sized.bin") == client.checksum("/big/chunked.bin")

    # upload()/download() go through LISTSTATUS, CREATE and OPEN.
    client.upload("/big/uploaded.bin", str(local))
    downloaded = client.download("/big/uploaded.bin", str(tmp_path / "down.bin"))
    assert hashlib.sha256(Path(downloaded).read_bytes()).hexdigest() == expected.hexdigest()
    assert not _temp_files(server.root)


def test_context_manager_writer_and_overwrite(client: InsecureClient) -> None:
    with client.write("/w.txt") as writer:
        writer.write(b"first ")
        writer.write(b"version")
    assert _read(client, "/w.txt") == b"first version"

    with _raises("FileAlreadyExistsException") as info:
        client.write("/w.txt", b"second")
    assert "FileAlreadyExists" in info.value.exception
    assert "already exists" in info.value.message
    assert _read(client, "/w.txt") == b"first version"

    client.write("/w.txt", b"second", overwrite=True)
    assert _read(client, "/w.txt") == b"second"

    client.makedirs("/dir")
    with _raises("FileAlreadyExistsException"):
        client.write("/dir", b"x", overwrite=True)


def test_append(client: InsecureClient) -> None:
    client.write("/log.txt", b"one\n")
    client.write("/log.txt", b"two\n", append=True)
    with client.write("/log.txt", append=True) as writer:
        writer.write(b"three\n")
    assert _read(client, "/log.txt") == b"one\ntwo\nthree\n"

    with _raises("FileNotFoundException") as info:
        client.write("/missing.txt", b"x", append=True)
    assert "not found" in info.value.message
    client.makedirs("/d")
    with _raises("FileNotFoundException"):
        client.write("/d", b"x", append=True)


def test_read_missing_file(client: InsecureClient) -> None:
    with _raises("FileNotFoundException") as info, client.read("/nope.txt"):
        pass
    assert info.value.message == "File /nope.txt not found."
    assert "FileNotFound" in info.value.exception

    client.makedirs("/adir")
    with _raises("FileNotFoundException") as info, client.read("/adir"):
        pass
    assert info.value.message == "Path is not a file: /adir"

    client.write("/short", b"abc")
    with _raises("IOException") as info, client.read("/short", offset=3):
        pass
    assert "out of the range [0, 3)" in info.value.message


def test_special_characters_in_names(client: InsecureClient, server: WebHdfsServer) -> None:
    names = ["with space.txt", "plus+sign.txt", "percent%41.txt", "hash#.txt", "ünïcødé.txt"]
    for name in names:
        client.write(f"/odd dir/{name}", name.encode())
    assert sorted(client.list("/odd dir")) == sorted(names)
    for name in names:
        assert _read(client, f"/odd dir/{name}") == name.encode()
        assert (server.root / "odd dir" / name).read_bytes() == name.encode()
    client.rename("/odd dir/plus+sign.txt", "/odd dir/renamed + again.txt")
    assert _read(client, "/odd dir/renamed + again.txt") == b"plus+sign.txt"


# ----------------------------------------------------------------------------- metadata


def test_list_status_and_content_summary(client: InsecureClient, server: WebHdfsServer) -> None:
    client.makedirs("/tree/sub/deeper")
    client.write("/tree/b.txt", b"bb")
    client.write("/tree/a.txt", b"a")
    client.write("/tree/sub/c.txt", b"ccc")

    assert client.list("/tree") == ["a.txt", "b.txt", "sub"]
    listing = dict(client.list("/tree", status=True))
    assert listing["sub"]["type"] == "DIRECTORY"
    assert listing["sub"]["childrenNum"] == 2

    status = client.status("/tree/a.txt")
    assert set(status) == {
        "accessTime",
        "blockSize",
        "childrenNum",
        "fileId",
        "group",
        "length",
        "modificationTime",
        "owner",
        "pathSuffix",
        "permission",
        "replication",
        "storagePolicy",
        "type",
    }
    assert status["type"] == "FILE"
    assert status["length"] == 1
    assert status["pathSuffix"] == ""
    assert status["owner"] == "syncx"
    assert status["group"] == "supergroup"
    assert status["permission"] == "644"
    assert status["blockSize"] == 134217728
    assert status["replication"] == 1
    mtime = (server.root / "tree" / "a.txt").stat().st_mtime_ns // 1_000_000
    assert status["modificationTime"] == mtime

    directory = client.status("/tree")
    assert directory["type"] == "DIRECTORY"
    assert directory["permission"] == "755"
    assert (directory["length"], directory["blockSize"], directory["replication"]) == (0, 0, 0)
    assert directory["childrenNum"] == 3

    summary = client.content("/tree")
    assert summary["directoryCount"] == 3
    assert summary["fileCount"] == 3
    assert summary["length"] == 6
    assert summary["quota"] == -1
    assert client.content("/tree/sub/c.txt")["fileCount"] == 1

    assert client.status("/tree/none", strict=False) is None
    with _raises("FileNotFoundException") as info:
        client.status("/tree/none")
    assert info.value.message == "File does not exist: /tree/none"
    with _raises("FileNotFoundException") as info:
        client.list("/tree/none")
    assert "does not exist" in info.value.message
    with pytest.raises(HdfsError, match="is not a directory"):
        client.list("/tree/a.txt")
    assert [d for d, _, _ in client.walk("/tree")] == ["/tree", "/tree/sub", "/tree/sub/deeper"]

    client.set_times("/tree/a.txt", modification_time=1_600_000_000_000)
    assert client.status("/tree/a.txt")["modificationTime"] == 1_600_000_000_000
    client.set_permission("/tree/a.txt", "600")
    client.set_owner("/tree/a.txt", owner="someone")
    assert client.checksum("/tree/a.txt")["length"] == 28


def test_makedirs_and_parents_that_are_files(client: InsecureClient) -> None:
    client.makedirs("/m/n/o")
    client.makedirs("/m/n/o")  # existing directory: still true
    assert client.status("/m/n/o")["type"] == "DIRECTORY"

    client.write("/m/file", b"x")
    with _raises("FileAlreadyExistsException") as info:
        client.makedirs("/m/file")
    assert info.value.message == "Path is not a directory: /m/file"
    with _raises("ParentNotDirectoryException") as info:
        client.makedirs("/m/file/sub")
    assert info.value.message == "/m/file (is not a directory)"
    with _raises("ParentNotDirectoryException"):
        client.write("/m/file/sub/x.txt", b"x")
    # Non-creating operations report a file on the path as AccessControlException.
    with _raises("AccessControlException"):
        client.status("/m/file/sub")

    client.write("/new/parents/created.txt", b"x")
    assert client.status("/new/parents")["type"] == "DIRECTORY"
    with _raises("InvalidPathException"):
        client.write("/bad:name.txt", b"x")


def test_rename_rules(client: InsecureClient) -> None:
    client.write("/r/src.txt", b"src")
    client.write("/r/other.txt", b"other")
    client.makedirs("/r/dir")

    # Onto an existing file: HDFS answers false, the client raises.
    assert client._rename("/r/src.txt", destination="/r/other.txt").json() == {"boolean": False}
    with pytest.raises(HdfsError, match="Unable to rename"):
        client.rename("/r/src.txt", "/r/other.txt")
    assert _read(client, "/r/other.txt") == b"other"

    # Missing source, missing destination parent: false.
    assert client._rename("/r/none", destination="/r/x").json() == {"boolean": False}
    assert client._rename("/r/src.txt", destination="/nope/x").json() == {"boolean": False}
    # A directory into its own subtree: false.
    assert client._rename("/r", destination="/r/dir/r2").json() == {"boolean": False}
    # Destination under a file: ParentNotDirectoryException.
    with _raises("ParentNotDirectoryException"):
        client.rename("/r/src.txt", "/r/other.txt/x")

    # Onto an existing directory: moved into it.
    client.rename("/r/src.txt", "/r/dir")
    assert client.list("/r/dir") == ["src.txt"]
    assert client.status("/r/src.txt", strict=False) is None

    # Plain rename keeps the inode id, like HDFS.
    file_id = client.status("/r/dir/src.txt")["fileId"]
    client.rename("/r/dir/src.txt", "/r/renamed.txt")
    assert client.status("/r/renamed.txt")["fileId"] == file_id
    client.rename("/r/dir", "/r/dir2")
    assert "dir2" in client.list("/r")


def test_delete_rules(client: InsecureClient, server: WebHdfsServer) -> None:
    client.write("/del/sub/f.txt", b"x")
    with _raises("PathIsNotEmptyDirectoryException") as info:
        client.delete("/del", recursive=False)
    assert info.value.message == "/del is non empty"
    assert client.delete("/del/sub/f.txt") is True
    assert client.delete("/del/sub") is True  # now empty
    client.write("/del/sub/g.txt", b"x")
    assert client.delete("/del", recursive=True) is True
    assert not (server.root / "del").exists()
    assert client.delete("/del") is False
    assert client.delete("/", recursive=True) is False


# ----------------------------------------------------------------- permissions and faults


def test_deny_writes(client: InsecureClient, server: WebHdfsServer) -> None:
    client.write("/locked/existing.txt", b"data")
    client.write("/free/f.txt", b"data")
    server.deny_writes("/locked")

    with _raises("AccessControlException") as info:
        client.write("/locked/new.txt", b"x")
    assert info.value.message.startswith("Permission denied: user=syncx, access=WRITE, inode=")
    assert '"/locked"' in info.value.message
    for action in (
        lambda: client.write("/locked/existing.txt", b"x", overwrite=True),
        lambda: client.write("/locked/existing.txt", b"x", append=True),
        lambda: client.makedirs("/locked/sub"),
        lambda: client.delete("/locked/existing.txt"),
        lambda: client.delete("/", recursive=True),
        lambda: client.rename("/locked/existing.txt", "/free/moved.txt"),
        lambda: client.rename("/free/f.txt", "/locked/f.txt"),
        lambda: client.set_times("/locked/existing.txt", modification_time=1),
    ):
        with _raises("AccessControlException"):
            action()
    # Reads still work, and so do writes elsewhere.
    assert _read(client, "/locked/existing.txt") == b"data"
    assert client.list("/locked") == ["existing.txt"]
    client.write("/free/g.txt", b"ok")
    assert not _temp_files(server.root)

    server.allow_writes("/locked")
    client.write("/locked/new.txt", b"x")


def test_read_only_local_directory_denies_writes(
    client: InsecureClient, server: WebHdfsServer
) -> None:
    client.makedirs("/ro")
    (server.root / "ro").chmod(0o555)
    try:
        with _raises("AccessControlException") as info:
            client.write("/ro/f.txt", b"x")
        assert 'inode="/ro":syncx:supergroup:dr-xr-xr-x' in info.value.message
        assert client.status("/ro")["permission"] == "555"
    finally:
        (server.root / "ro").chmod(0o755)


def test_standby_and_ha_failover(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    with WebHdfsServer(root) as standby, WebHdfsServer(root) as active:
        standby.standby = True
        with _raises("StandbyException") as info:
            InsecureClient(standby.url, user="syncx").status("/")
        assert "not supported in state standby" in info.value.message

        response = requests.get(f"{standby.url}/webhdfs/v1/?op=GETFILESTATUS&user.name=syncx")
        assert response.status_code == 403
        assert response.json()["RemoteException"]["javaClassName"] == (
            "org.apache.hadoop.ipc.StandbyException"
        )

        ha = InsecureClient(f"{standby.url};{active.url}", user="syncx")
        ha.write("/ha.txt", b"failover")
        assert _read(ha, "/ha.txt") == b"failover"

        # Fail over the other way: the same files are visible.
        standby.standby = False
        active.standby = True
        assert _read(ha, "/ha.txt") == b"failover"
        assert ("namenode", "OPEN", 307) in [(r.role, r.op, r.status) for r in standby.requests]


def test_pause_and_resume(client: InsecureClient, server: WebHdfsServer) -> None:
    client.write("/p.txt", b"x")
    server.pause()
    with _raises("StandbyException"):
        client.status("/p.txt")
    response = requests.get(f"{server.url}/webhdfs/v1/p.txt?op=GETFILESTATUS")
    assert response.status_code == 503
    server.resume()
    assert client.status("/p.txt")["length"] == 1


def test_pause_cuts_running_transfers(client: InsecureClient, server: WebHdfsServer) -> None:
    client.write("/big.bin", (os.urandom(MB) for _ in range(24)))
    with client.read("/big.bin") as reader:
        assert len(reader.read(MB)) == MB
        server.pause()
        with pytest.raises(ProtocolError, match="IncompleteRead"):
            while reader.read(MB):
                pass
    server.resume()

    with pytest.raises(requests.ConnectionError), client.write("/cut.bin") as writer:
        writer.write(b"a" * MB)
        _wait_for(lambda: bool(_temp_files(server.root)))
        server.pause()
        for _ in range(64):
            writer.write(b"b" * MB)
    server.resume()
    _wait_for(lambda: not _temp_files(server.root))
    assert client.status("/cut.bin", strict=False) is None


def test_writes_are_atomic_and_leased(client: InsecureClient, server: WebHdfsServer) -> None:
    client.makedirs("/atomic")
    with client.write("/atomic/f.bin") as writer:
        writer.write(b"partial")
        _wait_for(lambda: bool(_temp_files(server.root)))
        assert client.status("/atomic/f.bin", strict=False) is None
        assert client.list("/atomic") == []
        assert client.content("/atomic")["fileCount"] == 0
        with _raises("AlreadyBeingCreatedException"):
            client.write("/atomic/f.bin", b"other writer")
        writer.write(b" and the rest")
    assert _read(client, "/atomic/f.bin") == b"partial and the rest"
    assert not _temp_files(server.root)


# ------------------------------------------------------------------------- raw protocol


def test_redirects_go_to_the_datanode_port(server: WebHdfsServer) -> None:
    base = f"{server.url}/webhdfs/v1"
    assert server.datanode_port != server.namenode_port

    created = requests.put(
        f"{base}/raw/file.txt?op=CREATE&overwrite=false&user.name=syncx", allow_redirects=False
    )
    assert created.status_code == 307
    location = urlsplit(created.headers["Location"])
    assert (location.hostname, location.port) == ("127.0.0.1", server.datanode_port)
    assert location.path == "/webhdfs/v1/raw/file.txt"
    query = parse_qs(location.query)
    assert query["op"] == ["CREATE"]
    assert query["overwrite"] == ["false"]
    assert query["namenoderpcaddress"] == [f"127.0.0.1:{server.namenode_port}"]

    stored = requests.put(created.headers["Location"], data=b"raw bytes")
    assert stored.status_code == 201
    assert stored.headers["Location"] == (f"hdfs://127.0.0.1:{server.namenode_port}/raw/file.txt")

    opened = requests.get(f"{base}/raw/file.txt?op=OPEN&offset=4", allow_redirects=False)
    assert opened.status_code == 307
    assert urlsplit(opened.headers["Location"]).port == server.datanode_port
    assert requests.get(opened.headers["Location"]).content == b"bytes"

    appended = requests.post(f"{base}/raw/file.txt?op=APPEND", allow_redirects=False)
    assert appended.status_code == 307
    assert urlsplit(appended.headers["Location"]).port == server.datanode_port
    assert requests.post(appended.headers["Location"], data=b"!").status_code == 200

    noredirect = requests.get(f"{base}/raw/file.txt?op=OPEN&noredirect=true")
    assert urlsplit(noredirect.json()["Location"]).port == server.datanode_port

    # The DataNode only serves redirected requests.
    direct = requests.get(
        f"http://127.0.0.1:{server.datanode_port}/webhdfs/v1/raw/file.txt?op=OPEN"
    )
    assert direct.status_code == 400
    assert requests.get(f"{base}/raw/file.txt?op=OPEN").content == b"raw bytes!"

    roles = [(r.role, r.op, r.status) for r in server.requests]
    assert ("namenode", "CREATE", 307) in roles
    assert ("datanode", "CREATE", 201) in roles


def test_error_documents(server: WebHdfsServer) -> None:
    base = f"{server.url}/webhdfs/v1"
    missing = requests.get(f"{base}/x?op=GETFILESTATUS")
    assert missing.status_code == 404
    assert missing.json() == {
        "RemoteException": {
            "exception": "FileNotFoundException",
            "javaClassName": "java.io.FileNotFoundException",
            "message": "File does not exist: /x",
        }
    }
    bad_op = requests.get(f"{base}/x?op=NOPE")
    assert bad_op.status_code == 400
    assert bad_op.json()["RemoteException"]["exception"] == "IllegalArgumentException"
    wrong_method = requests.get(f"{base}/x?op=MKDIRS")
    assert wrong_method.status_code == 400
    unsupported = requests.put(f"{base}/x?op=SETACL")
    assert unsupported.status_code == 400
    assert unsupported.json()["RemoteException"]["exception"] == "UnsupportedOperationException"
    bad_bool = requests.delete(f"{base}/x?op=DELETE&recursive=maybe")
    assert bad_bool.status_code == 400
    assert requests.put(f"{base}/d?op=mkdirs").json() == {"boolean": True}
    assert requests.get(f"{base}/?op=GETHOMEDIRECTORY&user.name=syncx").json() == {
        "Path": "/user/syncx"
    }


def test_stop_and_restart_on_the_same_ports(tmp_path: Path) -> None:
    server = WebHdfsServer(tmp_path / "root")
    server.start()
    client = InsecureClient(server.url, user="syncx")
    client.write("/keep.txt", b"kept")
    url = server.url
    server.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/webhdfs/v1/?op=GETFILESTATUS", timeout=5)
    server.start()
    try:
        assert server.url == url
        assert _read(client, "/keep.txt") == b"kept"
    finally:
        server.stop()


def test_standalone_main(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "tests.servers.webhdfs", "--root", str(tmp_path)]
    with subprocess.Popen(
        [*command, "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            client = InsecureClient(url, user="syncx")
            client.write("/standalone.txt", b"ok")
            assert (tmp_path / "standalone.txt").read_bytes() == b"ok"
        finally:
            process.terminate()
            _out, err = process.communicate(timeout=10)
        assert process.returncode == 0, err
