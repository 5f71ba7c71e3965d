"""A protocol-faithful WebHDFS server (NameNode + DataNode) backed by a local folder.

No real HDFS can run in the test environment, so this module emulates what the
``hdfs`` client (HdfsCLI) and other WebHDFS clients see from a Hadoop 3 cluster:

* the NameNode (``url``) answers metadata operations with Hadoop's JSON and
  redirects data operations (CREATE, APPEND, OPEN, GETFILECHECKSUM) with
  ``307 Temporary Redirect`` to the DataNode, which listens on a second port
  and moves the bytes (uploads may use ``Transfer-Encoding: chunked``);
* errors are ``{"RemoteException": {...}}`` documents with Hadoop's exception
  names, Java class names, messages and HTTP statuses;
* HDFS namespace rules are kept (rename semantics, non-recursive delete,
  parent-is-a-file errors, invalid names, leases on files being written).

HDFS path ``/a/b`` maps to ``<root>/a/b``.  Uploads are written to a hidden
temporary file next to the target and renamed into place on completion, so a
file is never visible half-written (real HDFS shows a growing file instead).

Test hooks: :meth:`WebHdfsServer.deny_writes`, :meth:`WebHdfsServer.pause`,
:meth:`WebHdfsServer.resume`, the :attr:`WebHdfsServer.standby` flag and the
:attr:`WebHdfsServer.requests` log.  Run standalone with
``python -m tests.servers.webhdfs --root DIR --port N``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import socketserver
import stat
import struct
import sys
import threading
import uuid
import weakref
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, BinaryIO, ClassVar, cast
from urllib.parse import parse_qsl, quote, unquote, urlsplit

__all__ = ["RemoteException", "RequestRecord", "WebHdfsServer", "main"]

_log = logging.getLogger(__name__)

WEBHDFS_PREFIX = "/webhdfs/v1"
BLOCK_SIZE = 134_217_728
REPLICATION = 1
BYTES_PER_CRC = 512
GROUP = "supergroup"
TMP_PREFIX = ".webhdfs-tmp-"
CHUNK = 64 * 1024
FILE_MODE = 0o644
DIR_MODE = 0o755
_JSON = "application/json; charset=utf-8"
_OCTETS = "application/octet-stream"

_EXCEPTIONS: dict[str, tuple[str, int]] = {
    "AccessControlException": ("org.apache.hadoop.security.AccessControlException", 403),
    "AlreadyBeingCreatedException": (
        "org.apache.hadoop.hdfs.protocol.AlreadyBeingCreatedException",
        403,
    ),
    "EOFException": ("java.io.EOFException", 403),
    "FileAlreadyExistsException": ("org.apache.hadoop.fs.FileAlreadyExistsException", 403),
    "FileNotFoundException": ("java.io.FileNotFoundException", 404),
    "IllegalArgumentException": ("java.lang.IllegalArgumentException", 400),
    "InvalidPathException": ("org.apache.hadoop.fs.InvalidPathException", 400),
    "IOException": ("java.io.IOException", 403),
    "ParentNotDirectoryException": ("org.apache.hadoop.fs.ParentNotDirectoryException", 403),
    "PathIsNotEmptyDirectoryException": (
        "org.apache.hadoop.fs.PathIsNotEmptyDirectoryException",
        403,
    ),
    "RuntimeException": ("java.lang.RuntimeException", 500),
    "StandbyException": ("org.apache.hadoop.ipc.StandbyException", 403),
    "UnsupportedOperationException": ("java.lang.UnsupportedOperationException", 400),
}


def _op_names(names: str) -> frozenset[str]:
    """Turn a whitespace-separated list of op names into a set."""
    return frozenset(names.split())


# Every op Hadoop's {Get,Put,Post,Delete}OpParam enums know; the ones without a handler
# answer UnsupportedOperationException like a NameNode without that feature would.
_OPS: dict[str, tuple[str, frozenset[str]]] = {
    "GET": (
        "GetOpParam",
        _op_names(
            """OPEN GETFILESTATUS LISTSTATUS GETCONTENTSUMMARY GETQUOTAUSAGE GETFILECHECKSUM
            GETHOMEDIRECTORY GETDELEGATIONTOKEN GETTRASHROOT GETXATTRS LISTXATTRS GETACLSTATUS
            CHECKACCESS LISTSTATUS_BATCH GETSTORAGEPOLICY GETALLSTORAGEPOLICY GETSERVERDEFAULTS
            GETSNAPSHOTDIFF GETSNAPSHOTTABLEDIRECTORYLIST GETFILEBLOCKLOCATIONS
            GET_BLOCK_LOCATIONS GETECPOLICY NULL"""
        ),
    ),
    "PUT": (
        "PutOpParam",
        _op_names(
            """CREATE MKDIRS CREATESYMLINK RENAME SETREPLICATION SETOWNER SETPERMISSION SETTIMES
            RENEWDELEGATIONTOKEN CANCELDELEGATIONTOKEN MODIFYACLENTRIES REMOVEACLENTRIES
            REMOVEDEFAULTACL REMOVEACL SETACL SETXATTR REMOVEXATTR ALLOWSNAPSHOT DISALLOWSNAPSHOT
            CREATESNAPSHOT RENAMESNAPSHOT SETSTORAGEPOLICY SETQUOTA NULL"""
        ),
    ),
    "POST": ("PostOpParam", _op_names("APPEND CONCAT TRUNCATE UNSETSTORAGEPOLICY NULL")),
    "DELETE": ("DeleteOpParam", _op_names("DELETE DELETESNAPSHOT NULL")),
}

_STANDBY_MESSAGE = (
    "Operation category {category} is not supported in state standby. "
    "Visit https://s.apache.org/sbnn-error"
)


class RemoteException(Exception):
    """A Hadoop exception, rendered as a WebHDFS ``RemoteException`` JSON document."""

    def __init__(self, exception: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.exception = exception
        self.message = message
        java_class, default_status = _EXCEPTIONS.get(exception, ("java.io.IOException", 403))
        self.java_class_name = java_class
        self.status = status if status is not None else default_status

    def to_json(self) -> dict[str, Any]:
        """Return the JSON body Hadoop sends for this exception."""
        return {
            "RemoteException": {
                "exception": self.exception,
                "javaClassName": self.java_class_name,
                "message": self.message,
            }
        }


class _DropConnection(Exception):
    """Close the connection without (finishing) a response: client gone or fault injected."""


@dataclass(frozen=True)
class RequestRecord:
    """One request served, as recorded in :attr:`WebHdfsServer.requests`."""

    role: str
    method: str
    op: str
    path: str
    status: int


@dataclass
class _Lease:
    """The single-writer lease HDFS keeps on a file while it is being written."""

    token: str
    holder: str
    client: str


@dataclass
class _Upload:
    """An in-progress CREATE or APPEND: data goes to ``tmp``, renamed to ``local``."""

    path: str
    local: Path
    tmp: Path
    token: str
    holder: str
    overwrite: bool
    append: bool


class _SharedState:
    """Namespace state shared by every server instance on the same root (HA pairs)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.leases: dict[str, _Lease] = {}
        self.denied: list[str] = []


_SHARED: weakref.WeakValueDictionary[Path, _SharedState] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


def _shared_state(root: Path) -> _SharedState:
    """Return the state object of ``root``, creating it on first use."""
    with _SHARED_LOCK:
        state = _SHARED.get(root)
        if state is None:
            state = _SharedState()
            _SHARED[root] = state
        return state


# --------------------------------------------------------------------------- helpers


def _normalize(raw: str) -> str:
    """Turn a URL path or parameter into a normalized absolute HDFS path."""
    parts = [part for part in raw.split("/") if part]
    for part in parts:
        if part in (".", "..") or "\x00" in part:
            raise RemoteException(
                "InvalidPathException", f"Invalid path name Invalid file name: {raw}"
            )
    return "/" + "/".join(parts)


def _components(path: str) -> list[str]:
    """Split a normalized HDFS path into its components."""
    return [part for part in path.split("/") if part]


def _parent(path: str) -> str | None:
    """Return the parent of a normalized HDFS path (``None`` for the root)."""
    if path == "/":
        return None
    head = path.rsplit("/", 1)[0]
    return head or "/"


def _basename(path: str) -> str:
    """Return the last component of a normalized HDFS path."""
    return path.rsplit("/", 1)[-1]


def _is_under(path: str, prefix: str) -> bool:
    """Tell whether ``path`` equals ``prefix`` or lies below it."""
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def _check_valid_name(path: str) -> None:
    """Reject names HDFS refuses to create (DFSUtil.isValidName)."""
    if any(":" in part for part in _components(path)):
        raise RemoteException(
            "InvalidPathException", f"Invalid path name Invalid file name: {path}"
        )


def _millis(nanos: int) -> int:
    """Convert a nanosecond timestamp into HDFS milliseconds."""
    return nanos // 1_000_000


def _octal_permission(mode: int) -> str:
    """Render a mode the way FileStatus JSON does (``"755"``, ``"1777"``)."""
    return format(mode & 0o1777, "o")


def _symbolic_permission(mode: int) -> str:
    """Render a mode the way AccessControlException messages do (``drwxr-xr-x``)."""
    chars = ""
    for shift in (6, 3, 0):
        bits = (mode >> shift) & 7
        chars += (
            ("r" if bits & 4 else "-") + ("w" if bits & 2 else "-") + ("x" if bits & 1 else "-")
        )
    if mode & stat.S_ISVTX:
        chars = chars[:-1] + ("t" if mode & 1 else "T")
    return ("d" if stat.S_ISDIR(mode) else "-") + chars


def _visible(name: str) -> bool:
    """Hide in-progress upload files from listings."""
    return not name.startswith(TMP_PREFIX)


def _name_key(name: str) -> bytes:
    """Sort key giving HDFS' listing order (UTF-8 byte order)."""
    return name.encode("utf-8", "surrogateescape")


def _bool_param(params: dict[str, str], name: str, default: bool) -> bool:
    """Parse a WebHDFS boolean parameter (case-insensitive, like BooleanParam)."""
    value = params.get(name)
    if value is None or value == "":
        return default
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    raise RemoteException(
        "IllegalArgumentException",
        f'Invalid value for webhdfs parameter "{name}": Failed to parse "{value}" to Boolean.',
    )


def _long_param(
    params: dict[str, str], name: str, default: int | None, minimum: int | None = None
) -> int | None:
    """Parse a WebHDFS long parameter, checking its lower bound."""
    value = params.get(name)
    if value is None or value == "" or value.lower() == "null":
        return default
    try:
        number = int(value, 10)
    except ValueError:
        raise RemoteException(
            "IllegalArgumentException",
            f'Invalid value for webhdfs parameter "{name}": '
            f'Failed to parse "{value}" as a radix-10 long integer.',
        ) from None
    if minimum is not None and number < minimum:
        raise RemoteException(
            "IllegalArgumentException",
            f'Invalid value for webhdfs parameter "{name}": '
            f"Invalid parameter range: {name} = {value} < {minimum}",
        )
    return number


@contextlib.contextmanager
def _translate_os_errors(path: str) -> Iterator[None]:
    """Report local file-system errors as the Hadoop exception HDFS would raise."""
    try:
        yield
    except FileNotFoundError:
        raise RemoteException("FileNotFoundException", f"File does not exist: {path}") from None
    except NotADirectoryError:
        raise RemoteException(
            "ParentNotDirectoryException", f"{path} (is not a directory)"
        ) from None
    except IsADirectoryError:
        raise RemoteException(
            "FileAlreadyExistsException", f"{path} already exists as a directory"
        ) from None
    except PermissionError as exc:
        raise RemoteException("AccessControlException", f"Permission denied: {exc}") from None
    except OSError as exc:
        raise RemoteException("IOException", f"{exc.strerror or exc}: {path}") from None


# ------------------------------------------------------------------------ namespace


class _FileSystem:
    """HDFS namespace semantics implemented on top of a local directory."""

    def __init__(self, root: Path, owner: str, shared: _SharedState) -> None:
        self.root = root
        self.owner = owner
        self.shared = shared

    # -- path resolution ---------------------------------------------------------

    def local(self, path: str) -> Path:
        """Map a normalized HDFS path to the local file system."""
        return self.root.joinpath(*_components(path))

    def resolve(self, path: str, *, create: bool) -> Path:
        """Map ``path`` after checking its existing ancestors are directories.

        Like FSDirectory.resolvePath: a file on the way is ParentNotDirectoryException for
        operations that create names, AccessControlException for all others.
        """
        parts = _components(path)
        current = self.root
        for index, part in enumerate(parts[:-1]):
            current = current / part
            try:
                mode = current.stat().st_mode
            except FileNotFoundError:
                break
            if not stat.S_ISDIR(mode):
                message = "/" + "/".join(parts[: index + 1]) + " (is not a directory)"
                name = "ParentNotDirectoryException" if create else "AccessControlException"
                raise RemoteException(name, message)
        return self.root.joinpath(*parts)

    def _stat(self, local: Path) -> os.stat_result | None:
        """Return ``local``'s stat, or ``None`` when it does not exist."""
        try:
            return local.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _nearest_existing(self, path: str) -> str:
        """Return ``path`` or its closest existing ancestor."""
        current: str | None = path
        while current is not None:
            if self._stat(self.local(current)) is not None:
                return current
            current = _parent(current)
        return "/"

    # -- permissions -------------------------------------------------------------

    def _denied(self, target: str) -> bool:
        """Tell whether ``target`` lies under a prefix given to ``deny_writes``."""
        with self.shared.lock:
            return any(_is_under(target, prefix) for prefix in self.shared.denied)

    def _access_error(self, user: str, inode: str, access: str = "WRITE") -> RemoteException:
        """Build Hadoop's AccessControlException for ``inode``."""
        st = self._stat(self.local(inode))
        mode = st.st_mode if st is not None else stat.S_IFDIR | DIR_MODE
        return RemoteException(
            "AccessControlException",
            f"Permission denied: user={user}, access={access}, "
            f'inode="{inode}":{self.owner}:{GROUP}:{_symbolic_permission(mode)}',
        )

    def _require_write(
        self, inode: str | None, target: str, user: str, *, nearest: bool = True
    ) -> None:
        """Check WRITE access on ``inode`` (or its closest existing ancestor) for ``target``.

        Denied when ``target`` is under a ``deny_writes`` prefix or when the inode's local
        mode lacks the owner write bit.  With ``nearest=False`` a missing inode is not
        checked (like HDFS' parentAccess on a missing parent).
        """
        if inode is None:
            return
        if nearest:
            inode = self._nearest_existing(inode)
        st = self._stat(self.local(inode))
        if st is None:
            return
        if self._denied(target) or not st.st_mode & stat.S_IWUSR:
            raise self._access_error(user, inode)

    def _require_subtree(self, path: str, local: Path, user: str) -> None:
        """Check FsAction.ALL on every directory below ``path`` (recursive delete)."""
        with self.shared.lock:
            inner = [p for p in self.shared.denied if p != path and _is_under(p, path)]
        for prefix in inner:
            if self._stat(self.local(prefix)) is not None:
                raise self._access_error(user, prefix, "ALL")
        for dirpath, _dirnames, _files in os.walk(local):
            if not os.stat(dirpath).st_mode & stat.S_IWUSR:
                relative = Path(dirpath).relative_to(self.root).as_posix()
                raise self._access_error(user, _normalize(relative), "ALL")

    # -- status ------------------------------------------------------------------

    def _status_json(self, local: Path, suffix: str, st: os.stat_result) -> dict[str, Any]:
        """Build one FileStatus object exactly as Hadoop's JsonUtil does."""
        is_dir = stat.S_ISDIR(st.st_mode)
        children = 0
        if is_dir:
            with contextlib.suppress(OSError), os.scandir(local) as entries:
                children = sum(1 for entry in entries if _visible(entry.name))
        return {
            "accessTime": 0 if is_dir else _millis(st.st_atime_ns),
            "blockSize": 0 if is_dir else BLOCK_SIZE,
            "childrenNum": children,
            "fileId": st.st_ino,
            "group": GROUP,
            "length": 0 if is_dir else st.st_size,
            "modificationTime": _millis(st.st_mtime_ns),
            "owner": self.owner,
            "pathSuffix": suffix,
            "permission": _octal_permission(st.st_mode),
            "replication": 0 if is_dir else REPLICATION,
            "storagePolicy": 0,
            "type": "DIRECTORY" if is_dir else "FILE",
        }

    def file_status(self, path: str) -> dict[str, Any]:
        """GETFILESTATUS."""
        local = self.resolve(path, create=False)
        st = self._stat(local)
        if st is None:
            raise RemoteException("FileNotFoundException", f"File does not exist: {path}")
        return self._status_json(local, "", st)

    def list_status(self, path: str) -> list[dict[str, Any]]:
        """LISTSTATUS: children sorted by name, or the file itself with an empty suffix."""
        local = self.resolve(path, create=False)
        st = self._stat(local)
        if st is None:
            raise RemoteException("FileNotFoundException", f"File {path} does not exist.")
        if not stat.S_ISDIR(st.st_mode):
            return [self._status_json(local, "", st)]
        statuses = []
        with _translate_os_errors(path):
            names = sorted((n for n in os.listdir(local) if _visible(n)), key=_name_key)
        for name in names:
            child = local / name
            child_st = self._stat(child)
            if child_st is not None:
                statuses.append(self._status_json(child, name, child_st))
        return statuses

    def content_summary(self, path: str) -> dict[str, Any]:
        """GETCONTENTSUMMARY."""
        local = self.resolve(path, create=False)
        st = self._stat(local)
        if st is None:
            raise RemoteException("FileNotFoundException", f"File does not exist: {path}")
        directories = files = length = 0
        if stat.S_ISDIR(st.st_mode):
            for dirpath, dirnames, filenames in os.walk(local):
                dirnames[:] = [d for d in dirnames if _visible(d)]
                directories += 1
                for name in filenames:
                    if _visible(name):
                        with contextlib.suppress(OSError):
                            length += (Path(dirpath) / name).stat().st_size
                            files += 1
        else:
            files, length = 1, st.st_size
        return {
            "directoryCount": directories,
            "ecPolicy": "",
            "fileCount": files,
            "length": length,
            "quota": -1,
            "snapshotDirectoryCount": 0,
            "snapshotFileCount": 0,
            "snapshotLength": 0,
            "snapshotSpaceConsumed": 0,
            "spaceConsumed": length * REPLICATION,
            "spaceQuota": -1,
            "typeQuota": {},
        }

    def acl_status(self, path: str) -> dict[str, Any]:
        """GETACLSTATUS (no ACL entries, only the permission bits)."""
        status = self.file_status(path)
        return {
            "entries": [],
            "group": status["group"],
            "owner": status["owner"],
            "permission": status["permission"],
            "stickyBit": len(status["permission"]) == 4,
        }

    def redirect_status(self, path: str, op: str, offset: int = 0) -> None:
        """The NameNode's checks before redirecting OPEN, APPEND or GETFILECHECKSUM."""
        local = self.resolve(path, create=False)
        st = self._stat(local)
        if st is None:
            raise RemoteException("FileNotFoundException", f"File {path} not found.")
        length = 0 if stat.S_ISDIR(st.st_mode) else st.st_size
        if op == "OPEN" and offset >= length > 0:
            raise RemoteException(
                "IOException", f"Offset={offset} out of the range [0, {length}); OPEN, path={path}"
            )

    def _data_file(self, path: str) -> Path:
        """Resolve a path that must be an existing file (DataNode side)."""
        local = self.resolve(path, create=False)
        st = self._stat(local)
        if st is None:
            raise RemoteException("FileNotFoundException", f"File does not exist: {path}")
        if stat.S_ISDIR(st.st_mode):
            raise RemoteException("FileNotFoundException", f"Path is not a file: {path}")
        return local

    def open_file(self, path: str) -> tuple[BinaryIO, int]:
        """Open a file for OPEN; returns the handle and the size it had when opened."""
        local = self._data_file(path)
        with _translate_os_errors(path):
            handle = local.open("rb")
        return handle, os.fstat(handle.fileno()).st_size

    def checksum(self, path: str) -> dict[str, Any]:
        """GETFILECHECKSUM as MD5-of-MD5-of-CRC32 (dfs.checksum.type=CRC32)."""
        local = self._data_file(path)
        block_md5s: list[bytes] = []
        with _translate_os_errors(path), local.open("rb") as handle:
            while True:
                crcs = bytearray()
                done = 0
                while done < BLOCK_SIZE:
                    data = handle.read(min(CHUNK, BLOCK_SIZE - done))
                    if not data:
                        break
                    for start in range(0, len(data), BYTES_PER_CRC):
                        crc = zlib.crc32(data[start : start + BYTES_PER_CRC])
                        crcs += struct.pack(">I", crc)
                    done += len(data)
                if done == 0 and block_md5s:
                    break
                block_md5s.append(hashlib.md5(bytes(crcs)).digest())
                if done < BLOCK_SIZE:
                    break
        crc_per_block = BLOCK_SIZE // BYTES_PER_CRC if len(block_md5s) > 1 else 0
        file_md5 = hashlib.md5(b"".join(block_md5s)).digest()
        raw = struct.pack(">iq", BYTES_PER_CRC, crc_per_block) + file_md5
        return {
            "algorithm": f"MD5-of-{crc_per_block}MD5-of-{BYTES_PER_CRC}CRC32",
            "bytes": raw.hex(),
            "length": len(raw),
        }

    # -- namespace changes ---------------------------------------------------------

    def mkdirs(self, path: str, user: str) -> bool:
        """MKDIRS: create the directory and its missing parents."""
        _check_valid_name(path)
        with self.shared.lock, _translate_os_errors(path):
            local = self.resolve(path, create=True)
            st = self._stat(local)
            if st is not None:
                if not stat.S_ISDIR(st.st_mode):
                    raise RemoteException(
                        "FileAlreadyExistsException", f"Path is not a directory: {path}"
                    )
                return True
            self._require_write(_parent(path), path, user)
            self._make_parents(local, include_self=True)
            return True

    def _make_parents(self, local: Path, *, include_self: bool) -> None:
        """Create the missing directories leading to ``local`` with mode 755."""
        missing = []
        current = local if include_self else local.parent
        while current != self.root and not current.exists():
            missing.append(current)
            current = current.parent
        for directory in reversed(missing):
            directory.mkdir(exist_ok=True)
            directory.chmod(DIR_MODE)

    def rename(self, src: str, dst: str, user: str) -> bool:
        """RENAME with the (non-overwriting) semantics of ClientProtocol.rename."""
        _check_valid_name(dst)
        with self.shared.lock, _translate_os_errors(src):
            src_local = self.resolve(src, create=False)
            dst_local = self.resolve(dst, create=True)
            dst_st = self._stat(dst_local)
            if dst_st is not None and stat.S_ISDIR(dst_st.st_mode) and src != "/":
                dst = dst.rstrip("/") + "/" + _basename(src)
                dst_local = dst_local / _basename(src)
            self._require_write(_parent(src), src, user, nearest=False)
            self._require_write(_parent(dst), dst, user)
            if self._stat(src_local) is None:
                return False
            if src == dst:
                return True
            if src == "/" or _is_under(dst, src):
                return False
            if self._stat(dst_local) is not None:
                return False
            parent = self._stat(dst_local.parent)
            if parent is None or not stat.S_ISDIR(parent.st_mode):
                return False
            src_local.rename(dst_local)
            self._revoke_leases(src)
            return True

    def delete(self, path: str, recursive: bool, user: str) -> bool:
        """DELETE: ``False`` for a missing path, error for a non-empty one unless recursive."""
        with self.shared.lock, _translate_os_errors(path):
            local = self.resolve(path, create=False)
            st = self._stat(local)
            is_dir = st is not None and stat.S_ISDIR(st.st_mode)
            if is_dir and not recursive:
                with os.scandir(local) as entries:
                    if next(entries, None) is not None:
                        raise RemoteException(
                            "PathIsNotEmptyDirectoryException", f"{path} is non empty"
                        )
            self._require_write(_parent(path), path, user, nearest=False)
            if st is None:
                return False
            if is_dir:
                self._require_subtree(path, local, user)
            if path == "/":
                return False
            if is_dir:
                shutil.rmtree(local)
            else:
                local.unlink()
            self._revoke_leases(path)
            return True

    def check_attribute_change(self, path: str, user: str) -> None:
        """SETOWNER / SETPERMISSION: the path must exist and be writable; no change made."""
        with self.shared.lock:
            local = self.resolve(path, create=False)
            if self._stat(local) is None:
                raise RemoteException("FileNotFoundException", f"File does not exist: {path}")
            self._require_write(path, path, user, nearest=False)

    def set_times(self, path: str, user: str, mtime: int, atime: int) -> None:
        """SETTIMES (milliseconds, -1 keeps the current value)."""
        with self.shared.lock, _translate_os_errors(path):
            local = self.resolve(path, create=False)
            st = self._stat(local)
            if st is None:
                raise RemoteException(
                    "FileNotFoundException", f"File/Directory {path} does not exist."
                )
            self._require_write(path, path, user, nearest=False)
            atime_ns = st.st_atime_ns if atime == -1 else atime * 1_000_000
            mtime_ns = st.st_mtime_ns if mtime == -1 else mtime * 1_000_000
            os.utime(local, ns=(atime_ns, mtime_ns))

    def set_replication(self, path: str, user: str) -> bool:
        """SETREPLICATION: accepted for files (``true``), ``false`` otherwise."""
        with self.shared.lock:
            local = self.resolve(path, create=False)
            st = self._stat(local)
            if st is None or stat.S_ISDIR(st.st_mode):
                return False
            self._require_write(path, path, user, nearest=False)
            return True

    # -- writes (DataNode side) ----------------------------------------------------

    def _revoke_leases(self, path: str) -> None:
        """Drop the leases of files at or below ``path`` (their writers will fail)."""
        for leased in [p for p in self.shared.leases if _is_under(p, path)]:
            del self.shared.leases[leased]

    def _new_tmp(self, directory: Path) -> Path:
        """Create an empty hidden temporary file in ``directory``."""
        tmp = directory / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
        os.close(fd)
        tmp.chmod(FILE_MODE)
        return tmp

    def begin_create(
        self, path: str, *, overwrite: bool, create_parent: bool, user: str, client: str
    ) -> _Upload:
        """Start a CREATE: checks, parent creation, lease and temporary file."""
        _check_valid_name(path)
        holder = _holder()
        with self.shared.lock, _translate_os_errors(path):
            local = self.resolve(path, create=True)
            st = self._stat(local)
            if st is not None and stat.S_ISDIR(st.st_mode):
                raise RemoteException(
                    "FileAlreadyExistsException", f"{path} already exists as a directory"
                )
            if st is not None and overwrite:
                self._require_write(path, path, user, nearest=False)
            self._require_write(_parent(path), path, user)
            lease = self.shared.leases.get(path)
            if not overwrite and lease is not None:
                raise RemoteException(
                    "AlreadyBeingCreatedException",
                    f"Failed to CREATE_FILE {path} for {holder} on {client} because this file "
                    f"lease is currently owned by {lease.holder} on {lease.client}",
                )
            if not overwrite and st is not None:
                raise RemoteException(
                    "FileAlreadyExistsException", f"{path} for client {client} already exists"
                )
            if not create_parent and self._stat(local.parent) is None:
                raise RemoteException(
                    "FileNotFoundException", f"Parent directory doesn't exist: {_parent(path)}"
                )
            self._make_parents(local, include_self=False)
            tmp = self._new_tmp(local.parent)
            token = uuid.uuid4().hex
            self.shared.leases[path] = _Lease(token, holder, client)
        return _Upload(path, local, tmp, token, holder, overwrite, append=False)

    def begin_append(self, path: str, *, user: str, client: str) -> _Upload:
        """Start an APPEND: the current content is copied into the temporary file."""
        holder = _holder()
        with self.shared.lock, _translate_os_errors(path):
            local = self.resolve(path, create=False)
            st = self._stat(local)
            if st is None:
                raise RemoteException(
                    "FileNotFoundException",
                    f"Failed to append to non-existent file {path} for client {client}",
                )
            if stat.S_ISDIR(st.st_mode):
                raise RemoteException("FileNotFoundException", f"Path is not a file: {path}")
            self._require_write(path, path, user, nearest=False)
            lease = self.shared.leases.get(path)
            if lease is not None:
                raise RemoteException(
                    "AlreadyBeingCreatedException",
                    f"Failed to APPEND_FILE {path} for {holder} on {client} because this file "
                    f"lease is currently owned by {lease.holder} on {lease.client}",
                )
            tmp = self._new_tmp(local.parent)
            token = uuid.uuid4().hex
            self.shared.leases[path] = _Lease(token, holder, client)
        upload = _Upload(path, local, tmp, token, holder, overwrite=True, append=True)
        try:
            with _translate_os_errors(path):
                shutil.copyfile(local, tmp)
                tmp.chmod(stat.S_IMODE(st.st_mode))
        except BaseException:
            self.abort(upload)
            raise
        return upload

    def commit(self, upload: _Upload) -> None:
        """Make an upload visible atomically (rename over the target)."""
        path = upload.path
        with self.shared.lock:
            lease = self.shared.leases.get(path)
            if lease is None or lease.token != upload.token:
                raise RemoteException(
                    "FileNotFoundException",
                    f"File does not exist: {path} (lease lost). "
                    f"Holder {upload.holder} does not have any open files.",
                )
            del self.shared.leases[path]
            st = self._stat(upload.local)
            if st is not None and stat.S_ISDIR(st.st_mode):
                raise RemoteException(
                    "FileAlreadyExistsException", f"{path} already exists as a directory"
                )
            if st is None and upload.append:
                raise RemoteException("FileNotFoundException", f"File does not exist: {path}")
            if st is not None and not upload.overwrite:
                raise RemoteException("FileAlreadyExistsException", f"{path} already exists")
            with _translate_os_errors(path):
                upload.tmp.replace(upload.local)

    def abort(self, upload: _Upload) -> None:
        """Forget an upload: delete its temporary file and release its lease."""
        with contextlib.suppress(OSError):
            upload.tmp.unlink()
        with self.shared.lock:
            lease = self.shared.leases.get(upload.path)
            if lease is not None and lease.token == upload.token:
                del self.shared.leases[upload.path]


_HOLDER_COUNTER = itertools.count(1)


def _holder() -> str:
    """Name a DFSClient lease holder the way HDFS does."""
    return f"DFSClient_NONMAPREDUCE_{uuid.uuid4().int % 2_000_000_000}_{next(_HOLDER_COUNTER)}"


# -------------------------------------------------------------------------- HTTP


class _HttpServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that knows its WebHdfsServer and tracks open connections."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        webhdfs: WebHdfsServer,
    ) -> None:
        self.webhdfs = webhdfs
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Remember the connection so that ``stop()`` can cut it."""
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget a finished connection."""
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down every open (keep-alive) connection."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _BaseHandler(BaseHTTPRequestHandler):
    """Request parsing, body streaming and Hadoop-style responses shared by both roles."""

    protocol_version = "HTTP/1.1"
    server_version = "WebHdfsTestServer/1.0"
    # Headers and small bodies leave in one segment, and without Nagle delays.
    wbufsize = CHUNK
    disable_nagle_algorithm = True
    role: ClassVar[str] = ""

    _status: int
    _body_started: bool
    _body_done: bool
    _responded: bool

    @property
    def hdfs(self) -> WebHdfsServer:
        """The WebHdfsServer this handler serves."""
        return cast(_HttpServer, self.server).webhdfs

    def handle_one_request(self) -> None:
        """Serve one request; a connection that died while flushing is just closed."""
        try:
            super().handle_one_request()
        except OSError:
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Send http.server's access log to the debug logger."""
        _log.debug("%s %s", self.role, format % args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Remember the status of the response being sent."""
        with contextlib.suppress(ValueError):
            self._status = int(code)
        super().log_request(code, size)

    def do_GET(self) -> None:
        """Handle GET."""
        self._dispatch("GET")

    def do_PUT(self) -> None:
        """Handle PUT."""
        self._dispatch("PUT")

    def do_POST(self) -> None:
        """Handle POST."""
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        """Handle DELETE."""
        self._dispatch("DELETE")

    # -- dispatch ------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        """Parse, route and answer one request, mapping errors to RemoteException JSON."""
        self._status = 0
        self._responded = False
        self._body_started = False
        self._body_done = not self._has_body()
        op = path = ""
        try:
            try:
                self._reject_if_paused(method)
                split = urlsplit(self.path)
                if not (
                    split.path == WEBHDFS_PREFIX or split.path.startswith(WEBHDFS_PREFIX + "/")
                ):
                    self._drain_body()
                    self._send(404, b"Not Found", "text/plain")
                    return
                params: dict[str, str] = {}
                for key, value in parse_qsl(split.query, keep_blank_values=True):
                    params.setdefault(key.lower(), value)
                path = _normalize(unquote(split.path[len(WEBHDFS_PREFIX) :]))
                op = _parse_op(method, params)
                self.handle_op(method, op, path, params, split.query)
            except RemoteException as exc:
                self._send_exception(exc)
            except _DropConnection:
                raise
            except OSError as exc:
                if isinstance(exc, ConnectionError | TimeoutError):
                    raise _DropConnection from exc
                _log.exception("%s: unexpected local error", self.role)
                self._send_exception(RemoteException("IOException", str(exc)))
            except Exception as exc:
                _log.exception("%s: internal error", self.role)
                self._send_exception(
                    RemoteException("RuntimeException", f"{type(exc).__name__}: {exc}")
                )
        except (_DropConnection, OSError):
            self.close_connection = True
        finally:
            self.hdfs._record(RequestRecord(self.role, method, op, path, self._status))

    def _reject_if_paused(self, method: str) -> None:
        """While paused, every request answers 503 StandbyException."""
        if self.hdfs.paused:
            category = "READ" if method == "GET" else "WRITE"
            raise RemoteException(
                "StandbyException", _STANDBY_MESSAGE.format(category=category), 503
            )

    def handle_op(
        self, method: str, op: str, path: str, params: dict[str, str], query: str
    ) -> None:
        """Route an operation to its ``_op_<name>`` method."""
        handler = getattr(self, f"_op_{op.lower()}", None)
        if handler is None:
            raise self._unsupported(op)
        self._drain_body_unless_streaming(op)
        handler(path, params, _user(params, self.hdfs.user))

    def _unsupported(self, op: str) -> RemoteException:
        """The error for an op this role does not implement."""
        return RemoteException("UnsupportedOperationException", f"op={op} is not supported")

    def _drain_body_unless_streaming(self, op: str) -> None:
        """Read and discard the request body unless the op consumes it."""
        if op not in ("CREATE", "APPEND") or self.role != "datanode":
            self._drain_body()

    # -- request body --------------------------------------------------------------

    def _has_body(self) -> bool:
        """Tell whether the request carries a body."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return True
        try:
            return int(self.headers.get("Content-Length") or 0) > 0
        except ValueError:
            return False

    def _read(self, size: int) -> bytes:
        """Read up to ``size`` body bytes; the connection dying is a _DropConnection."""
        try:
            data = self.rfile.read(size)
        except OSError as exc:
            raise _DropConnection from exc
        if not data:
            raise _DropConnection
        return data

    def _readline(self) -> bytes:
        """Read one line of chunked framing."""
        try:
            line = self.rfile.readline(65537)
        except OSError as exc:
            raise _DropConnection from exc
        if not line:
            raise _DropConnection
        return line

    def _iter_body(self) -> Iterator[bytes]:
        """Yield the request body, decoding ``Transfer-Encoding: chunked`` if used."""
        if self._body_done:
            return
        self._body_started = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self._readline()
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise _DropConnection from None
                if size == 0:
                    while self._readline() not in (b"\r\n", b"\n"):
                        pass
                    break
                remaining = size
                while remaining:
                    data = self._read(min(remaining, CHUNK))
                    remaining -= len(data)
                    yield data
                self._readline()
        else:
            try:
                remaining = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                raise _DropConnection from None
            while remaining > 0:
                data = self._read(min(remaining, CHUNK))
                remaining -= len(data)
                yield data
        self._body_done = True

    def _drain_body(self) -> None:
        """Consume whatever is left of the request body (keeps keep-alive usable)."""
        if self._body_started and not self._body_done:
            raise _DropConnection
        for _chunk in self._iter_body():
            pass

    # -- responses -----------------------------------------------------------------

    def _send(
        self,
        status: int,
        body: bytes = b"",
        content_type: str | None = _JSON,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Send a complete response with Hadoop's usual headers."""
        self._responded = True
        try:
            self.send_response(status)
            if content_type:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Pragma", "no-cache")
            self.send_header("X-FRAME-OPTIONS", "SAMEORIGIN")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if body:
                self.wfile.write(body)
        except OSError as exc:
            raise _DropConnection from exc

    def _send_json(self, payload: dict[str, Any], status: int = 200) -> None:
        """Send a JSON document serialized like Jackson (sorted keys, compact)."""
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        body = text.encode("utf-8", "surrogateescape")
        self._send(status, body)

    def _send_exception(self, exc: RemoteException) -> None:
        """Send a RemoteException (after consuming the request body)."""
        if self._responded:
            raise _DropConnection
        self._drain_body()
        self._send_json(exc.to_json(), exc.status)

    def _check_running(self) -> None:
        """Abort a transfer when the server is paused or stopping (fault injection)."""
        hdfs = self.hdfs
        if hdfs.paused or hdfs.stopping:
            raise _DropConnection


def _parse_op(method: str, params: dict[str, str]) -> str:
    """Validate the ``op`` parameter against Hadoop's enum for this HTTP method."""
    enum_name, known = _OPS[method]
    op = (params.get("op") or "NULL").upper()
    if op not in known:
        raise RemoteException(
            "IllegalArgumentException",
            f'Invalid value for webhdfs parameter "op": No enum constant '
            f"org.apache.hadoop.hdfs.web.resources.{enum_name}.Op.{op}",
        )
    return op


def _user(params: dict[str, str], default: str) -> str:
    """The effective user: ``doas`` if given, else ``user.name``, else the server user."""
    return params.get("doas") or params.get("user.name") or default


class _NameNodeHandler(_BaseHandler):
    """The NameNode: metadata operations and redirects of data operations."""

    role = "namenode"
    _query: str = ""

    def handle_op(
        self, method: str, op: str, path: str, params: dict[str, str], query: str
    ) -> None:
        """Answer StandbyException when in standby, then route the operation."""
        if self.hdfs.standby:
            category = "READ" if method == "GET" else "WRITE"
            raise RemoteException("StandbyException", _STANDBY_MESSAGE.format(category=category))
        self._query = query
        super().handle_op(method, op, path, params, query)

    def _redirect(self, params: dict[str, str]) -> None:
        """Send the 307 (or ``noredirect`` JSON) pointing at the DataNode."""
        hdfs = self.hdfs
        raw_path = urlsplit(self.path).path
        query = self._query + ("&" if self._query else "")
        query += f"namenoderpcaddress={hdfs.host}:{hdfs.namenode_port}"
        location = f"http://{hdfs.host}:{hdfs.datanode_port}{raw_path}?{query}"
        if _bool_param(params, "noredirect", False):
            self._send_json({"Location": location})
        else:
            self._send(307, content_type=_OCTETS, headers={"Location": location})

    # GET

    def _op_getfilestatus(self, path: str, params: dict[str, str], user: str) -> None:
        """GETFILESTATUS on the NameNode."""
        self._send_json({"FileStatus": self.hdfs.fs.file_status(path)})

    def _op_liststatus(self, path: str, params: dict[str, str], user: str) -> None:
        """LISTSTATUS on the NameNode."""
        self._send_json({"FileStatuses": {"FileStatus": self.hdfs.fs.list_status(path)}})

    def _op_getcontentsummary(self, path: str, params: dict[str, str], user: str) -> None:
        """GETCONTENTSUMMARY on the NameNode."""
        self._send_json({"ContentSummary": self.hdfs.fs.content_summary(path)})

    def _op_getaclstatus(self, path: str, params: dict[str, str], user: str) -> None:
        """GETACLSTATUS on the NameNode."""
        self._send_json({"AclStatus": self.hdfs.fs.acl_status(path)})

    def _op_gethomedirectory(self, path: str, params: dict[str, str], user: str) -> None:
        """GETHOMEDIRECTORY on the NameNode."""
        self._send_json({"Path": f"/user/{user}"})

    def _op_gettrashroot(self, path: str, params: dict[str, str], user: str) -> None:
        """GETTRASHROOT on the NameNode."""
        self._send_json({"Path": f"/user/{user}/.Trash"})

    def _op_open(self, path: str, params: dict[str, str], user: str) -> None:
        """OPEN on the NameNode."""
        offset = _long_param(params, "offset", 0, minimum=0) or 0
        _long_param(params, "length", None, minimum=0)
        self.hdfs.fs.redirect_status(path, "OPEN", offset)
        self._redirect(params)

    def _op_getfilechecksum(self, path: str, params: dict[str, str], user: str) -> None:
        """GETFILECHECKSUM on the NameNode."""
        self.hdfs.fs.redirect_status(path, "GETFILECHECKSUM")
        self._redirect(params)

    # PUT

    def _op_create(self, path: str, params: dict[str, str], user: str) -> None:
        """CREATE on the NameNode."""
        _check_valid_name(path)
        _bool_param(params, "overwrite", False)
        _bool_param(params, "createparent", True)
        self._redirect(params)

    def _op_mkdirs(self, path: str, params: dict[str, str], user: str) -> None:
        """MKDIRS on the NameNode."""
        self._send_json({"boolean": self.hdfs.fs.mkdirs(path, user)})

    def _op_rename(self, path: str, params: dict[str, str], user: str) -> None:
        """RENAME on the NameNode."""
        destination = params.get("destination")
        if not destination or not destination.startswith("/"):
            raise RemoteException(
                "IllegalArgumentException",
                'Invalid value for webhdfs parameter "destination": Invalid parameter value: '
                f'destination = "{destination}" is not an absolute path.',
            )
        self._send_json({"boolean": self.hdfs.fs.rename(path, _normalize(destination), user)})

    def _op_setpermission(self, path: str, params: dict[str, str], user: str) -> None:
        """SETPERMISSION on the NameNode."""
        permission = params.get("permission")
        if permission and not (permission.isdigit() and set(permission) <= set("01234567")):
            raise RemoteException(
                "IllegalArgumentException",
                f'Invalid value for webhdfs parameter "permission": {permission}',
            )
        self.hdfs.fs.check_attribute_change(path, user)
        self._send(200, content_type=_OCTETS)

    def _op_setowner(self, path: str, params: dict[str, str], user: str) -> None:
        """SETOWNER on the NameNode."""
        if not params.get("owner") and not params.get("group"):
            raise RemoteException("IllegalArgumentException", "Both owner and group are empty.")
        self.hdfs.fs.check_attribute_change(path, user)
        self._send(200, content_type=_OCTETS)

    def _op_settimes(self, path: str, params: dict[str, str], user: str) -> None:
        """SETTIMES on the NameNode."""
        mtime = _long_param(params, "modificationtime", -1, minimum=-1)
        atime = _long_param(params, "accesstime", -1, minimum=-1)
        self.hdfs.fs.set_times(path, user, cast(int, mtime), cast(int, atime))
        self._send(200, content_type=_OCTETS)

    def _op_setreplication(self, path: str, params: dict[str, str], user: str) -> None:
        """SETREPLICATION on the NameNode."""
        _long_param(params, "replication", None, minimum=1)
        self._send_json({"boolean": self.hdfs.fs.set_replication(path, user)})

    # POST

    def _op_append(self, path: str, params: dict[str, str], user: str) -> None:
        """APPEND on the NameNode."""
        self.hdfs.fs.redirect_status(path, "APPEND")
        self._redirect(params)

    # DELETE

    def _op_delete(self, path: str, params: dict[str, str], user: str) -> None:
        """DELETE on the NameNode."""
        recursive = _bool_param(params, "recursive", False)
        self._send_json({"boolean": self.hdfs.fs.delete(path, recursive, user)})


class _DataNodeHandler(_BaseHandler):
    """The DataNode: moves file bytes for CREATE, APPEND, OPEN and GETFILECHECKSUM."""

    role = "datanode"

    def handle_op(
        self, method: str, op: str, path: str, params: dict[str, str], query: str
    ) -> None:
        """Require ``namenoderpcaddress`` (set by the NameNode redirect), then route."""
        if not params.get("namenoderpcaddress"):
            raise RemoteException(
                "IllegalArgumentException",
                'Invalid value for webhdfs parameter "namenoderpcaddress": '
                "namenoderpcaddress is not specified.",
            )
        super().handle_op(method, op, path, params, query)

    def _unsupported(self, op: str) -> RemoteException:
        """The DataNode's answer to an op it does not serve."""
        return RemoteException("IllegalArgumentException", f"Invalid operation {op}")

    def _receive(self, upload: _Upload) -> None:
        """Stream the request body into the upload's temporary file and commit it."""
        fs = self.hdfs.fs
        try:
            with upload.tmp.open("ab") as handle:
                for chunk in self._iter_body():
                    self._check_running()
                    try:
                        handle.write(chunk)
                    except OSError as exc:
                        raise _DropConnection from exc
            self._check_running()
            fs.commit(upload)
        except BaseException:
            fs.abort(upload)
            raise

    def _op_create(self, path: str, params: dict[str, str], user: str) -> None:
        """CREATE on the DataNode."""
        upload = self.hdfs.fs.begin_create(
            path,
            overwrite=_bool_param(params, "overwrite", False),
            create_parent=_bool_param(params, "createparent", True),
            user=user,
            client=self.client_address[0],
        )
        self._receive(upload)
        location = f"hdfs://{params['namenoderpcaddress']}{quote(path)}"
        self._send(201, content_type=None, headers={"Location": location})

    def _op_append(self, path: str, params: dict[str, str], user: str) -> None:
        """APPEND on the DataNode."""
        upload = self.hdfs.fs.begin_append(path, user=user, client=self.client_address[0])
        self._receive(upload)
        self._send(200, content_type=None)

    def _op_getfilechecksum(self, path: str, params: dict[str, str], user: str) -> None:
        """GETFILECHECKSUM on the DataNode."""
        self._send_json({"FileChecksum": self.hdfs.fs.checksum(path)})

    def _op_open(self, path: str, params: dict[str, str], user: str) -> None:
        """OPEN on the DataNode."""
        offset = cast(int, _long_param(params, "offset", 0, minimum=0))
        length = _long_param(params, "length", None, minimum=0)
        handle, size = self.hdfs.fs.open_file(path)
        with handle:
            if offset > size:
                raise RemoteException("EOFException", "Cannot seek after EOF")
            count = size - offset if length is None else min(length, size - offset)
            handle.seek(offset)
            self._responded = True
            try:
                self.send_response(200)
                self.send_header("Content-Type", _OCTETS)
                self.send_header("Content-Length", str(count))
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()
                while count > 0:
                    self._check_running()
                    data = handle.read(min(CHUNK, count))
                    if not data:
                        raise _DropConnection
                    self.wfile.write(data)
                    count -= len(data)
            except OSError as exc:
                raise _DropConnection from exc


# -------------------------------------------------------------------------- server


class WebHdfsServer:
    """A WebHDFS NameNode + DataNode pair serving ``root`` on two local ports.

    ``standby`` makes the NameNode answer StandbyException (HTTP 403) like the standby of
    an HA pair; :meth:`pause` makes both roles answer 503 StandbyException and cut running
    transfers.  Instances on the same root share leases and ``deny_writes`` prefixes.
    """

    def __init__(
        self,
        root: Path,
        user: str = "syncx",
        *,
        host: str = "127.0.0.1",
        namenode_port: int = 0,
        datanode_port: int = 0,
    ) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.user = user
        self.host = host
        self.standby = False
        self.requests: list[RequestRecord] = []
        self._shared = _shared_state(self.root)
        self.fs = _FileSystem(self.root, user, self._shared)
        self._ports = (namenode_port, datanode_port)
        self._paused = threading.Event()
        self._stopping = threading.Event()
        self._servers: list[_HttpServer] = []
        self._threads: list[threading.Thread] = []
        self._records_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Bind both ports (free ones unless given) and serve in background threads.

        After :meth:`stop`, ``start()`` binds the same ports again (a restart).
        """
        if self._servers:
            raise RuntimeError("WebHdfsServer already started")
        self._stopping.clear()
        namenode = _HttpServer((self.host, self._ports[0]), _NameNodeHandler, self)
        try:
            datanode = _HttpServer((self.host, self._ports[1]), _DataNodeHandler, self)
        except BaseException:
            namenode.server_close()
            raise
        self._servers = [namenode, datanode]
        self._ports = (namenode.server_port, datanode.server_port)
        for server in self._servers:
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"webhdfs-{server.server_port}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop serving and cut open connections (idempotent)."""
        if not self._servers:
            return
        self._stopping.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
            server.close_connections()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers = []
        self._threads = []

    def __enter__(self) -> WebHdfsServer:
        if not self._servers:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------------

    def _require_started(self) -> None:
        """Ports are only known once started."""
        if not self._servers:
            raise RuntimeError("WebHdfsServer is not started")

    @property
    def namenode_port(self) -> int:
        """The NameNode HTTP port."""
        self._require_started()
        return self._ports[0]

    @property
    def datanode_port(self) -> int:
        """The DataNode HTTP port (target of the 307 redirects)."""
        self._require_started()
        return self._ports[1]

    @property
    def url(self) -> str:
        """The NameNode URL to give a WebHDFS client."""
        return f"http://{self.host}:{self.namenode_port}"

    # -- fault injection -------------------------------------------------------------

    @property
    def paused(self) -> bool:
        """Whether :meth:`pause` is in effect."""
        return self._paused.is_set()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` is in progress or done."""
        return self._stopping.is_set()

    def pause(self) -> None:
        """Answer every request with 503 StandbyException and cut running transfers."""
        self._paused.set()

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        self._paused.clear()

    def deny_writes(self, path_prefix: str) -> None:
        """Make write ops at or under ``path_prefix`` fail with AccessControlException."""
        prefix = _normalize(path_prefix)
        with self._shared.lock:
            if prefix not in self._shared.denied:
                self._shared.denied.append(prefix)

    def allow_writes(self, path_prefix: str | None = None) -> None:
        """Undo :meth:`deny_writes` for one prefix, or for all when ``None``."""
        with self._shared.lock:
            if path_prefix is None:
                self._shared.denied.clear()
            else:
                prefix = _normalize(path_prefix)
                self._shared.denied[:] = [p for p in self._shared.denied if p != prefix]

    # -- request log -----------------------------------------------------------------

    def _record(self, record: RequestRecord) -> None:
        """Append to :attr:`requests`."""
        with self._records_lock:
            self.requests.append(record)

    def clear_requests(self) -> None:
        """Empty :attr:`requests`."""
        with self._records_lock:
            self.requests.clear()


def main(argv: list[str] | None = None) -> int:
    """Run a server until interrupted; prints the NameNode URL on stdout."""
    parser = argparse.ArgumentParser(description="WebHDFS test server backed by a local folder")
    parser.add_argument("--root", type=Path, required=True, help="folder holding the files")
    parser.add_argument("--port", type=int, default=0, help="NameNode port (0: any free)")
    parser.add_argument("--datanode-port", type=int, default=0, help="DataNode port (0: any)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--user", default="syncx", help="owner shown for every file")
    args = parser.parse_args(argv)
    server = WebHdfsServer(
        args.root,
        user=args.user,
        host=args.host,
        namenode_port=args.port,
        datanode_port=args.datanode_port,
    )
    server.start()
    done = threading.Event()

    def _terminate(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _terminate)
    print(server.url, flush=True)
    print(
        f"datanode http://{server.host}:{server.datanode_port}, root {server.root}",
        file=sys.stderr,
        flush=True,
    )
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
