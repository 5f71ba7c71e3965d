"""``libs.fs.DurableFile``: the local file writer behind staged files and Kafka spools.

It writes aligned chunks with ``O_DIRECT`` where the system and the filesystem take it (the test
folder's, ext4 here) and through the page cache where they do not: the tests run both ways, the
second as on a system without ``O_DIRECT`` (macOS), and the bytes read back must be exactly the
bytes written, whatever the sizes of the writes and of the file against the block and the chunk.
Not covered: a filesystem that refuses ``O_DIRECT`` at open or at write (none here; tmpfs takes
it since Linux 6.6) and the durability itself, which needs a power cut.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import random
import signal
import time
from pathlib import Path

import pytest

from libs import fs
from libs.fs import DurableFile, LocalFileSystem
from sync.errors import DiskFullError
from tests.conftest import Mount

CHUNK = fs._CHUNK
O_DIRECT = os.O_DIRECT
"""Linux's flag, kept here: the page-cache tests take it away from ``os``."""
SIZES = [0, 1, 4095, 4096, 4097, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12345]


def _direct_allowed(folder: Path) -> bool:
    """Whether ``folder``'s filesystem opens files with ``O_DIRECT``."""
    probe = folder / "probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | O_DIRECT, 0o644)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return False
    os.close(fd)
    probe.unlink()
    return True


@pytest.fixture(params=["direct", "page-cache"])
def folder(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test folder, written with ``O_DIRECT`` where it allows, or as without it."""
    if request.param == "page-cache":
        monkeypatch.delattr(os, "O_DIRECT")
    return tmp_path


@pytest.mark.parametrize("size", SIZES)
def test_bytes_read_back_exactly(folder: Path, size: int) -> None:
    data = random.Random(size).randbytes(size)
    path = folder / "f.bin"
    file = DurableFile(path)
    direct = hasattr(os, "O_DIRECT") and _direct_allowed(folder)
    assert bool(fcntl.fcntl(file.fileno(), fcntl.F_GETFL) & O_DIRECT) == direct
    pieces = random.Random(size + 1)
    done = 0
    while done < size:
        step = min(size - done, pieces.choice([1, 7, 4096, 65536, CHUNK + 3]))
        assert file.write(memoryview(data)[done : done + step]) == step
        done += step
        assert file.tell() == done
    file.close()
    assert path.read_bytes() == data


def test_local_open_write_buffers_small_writes_and_tells(folder: Path) -> None:
    """The path the file writer takes: a buffered stream over the durable file."""
    lines = [f"{i},{'x' * (i % 50)}\n".encode() for i in range(200_000)]
    with LocalFileSystem().open_write(str(folder / "sub" / "t.csv")) as stream:
        for index, line in enumerate(lines):
            stream.write(line)
            if index % 50_000 == 0:
                assert stream.tell() == sum(map(len, lines[: index + 1]))
    assert (folder / "sub" / "t.csv").read_bytes() == b"".join(lines)


def test_flushes_in_the_background_while_written(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``_SYNC_EVERY`` bytes the device is flushed from the background (``fdatasync``),
    so that ``close`` has only the last stretch to flush; the bytes stay exact."""
    real, calls = os.fdatasync, []

    def fdatasync(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    data = random.Random(3).randbytes(fs._SYNC_EVERY + 2 * CHUNK + 77)
    path = folder / "flushed.bin"
    with DurableFile(path) as file:
        file.write(data)
    assert calls, "no background fdatasync"
    assert path.read_bytes() == data


@pytest.mark.parametrize(("code", "raised"), [(errno.EIO, OSError), (errno.ENOSPC, DiskFullError)])
def test_a_failed_background_flush_fails_the_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, raised: type[Exception]
) -> None:
    """The kernel reports a failed writeback once: the background ``fdatasync`` that got it
    must fail the file, or the final fsync would say all is well."""

    def fdatasync(fd: int) -> None:
        del fd
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    path = tmp_path / "failed.bin"
    file = DurableFile(path)
    with pytest.raises(raised) as caught:
        file.write(b"z" * (fs._SYNC_EVERY + CHUNK))
        file.close()
    assert caught.value.errno == code if raised is OSError else str(path) in str(caught.value)
    file.close()
    assert file.closed


def test_abandon_closes_without_the_tail(tmp_path: Path) -> None:
    path = tmp_path / "gone.bin"
    file = DurableFile(path)
    file.write(b"x" * (CHUNK + 10))
    file.abandon()
    assert file.closed
    assert path.stat().st_size == CHUNK  # the full chunk went out, the tail did not
    file.abandon()  # twice is harmless
    file.close()


def test_a_full_disk_names_the_file(small_fs: Mount) -> None:
    point = small_fs("full", "2m")
    path = point / "big.bin"
    file = DurableFile(path)
    with pytest.raises(DiskFullError) as caught:
        for _ in range(4):
            file.write(b"y" * CHUNK)
        file.close()
    assert str(path) in str(caught.value)
    with contextlib.suppress(DiskFullError):
        file.close()
    assert file.closed


def test_a_forked_child_writes_too(tmp_path: Path) -> None:
    """The background writer thread does not survive a fork; the child gets its own."""
    warm = DurableFile(tmp_path / "parent.bin")
    warm.write(b"p" * (CHUNK + 1))  # the parent's writer thread is running
    warm.close()
    data = random.Random(7).randbytes(2 * CHUNK + 5)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with DurableFile(tmp_path / "child.bin") as child:
                child.write(data)
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    if done == (0, 0):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child's write never finished")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert (tmp_path / "child.bin").read_bytes() == data
