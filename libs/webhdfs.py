"""HDFS through WebHDFS (the ``hdfs`` package), and what ``defaultFS`` + ``hadoopConfig`` mean.

ChunJun users copy ``defaultFS`` from ``core-site.xml`` (``hdfs://host:8020``, or
``hdfs://nameservice`` with HA settings in ``hadoopConfig``). That is the NameNode's RPC address;
syncx speaks WebHDFS, the NameNode's HTTP interface, so :func:`resolve_namenodes` maps it:

- ``webhdfs://host:port`` / ``swebhdfs://host:port`` (or ``http(s)://host:port``) name the HTTP
  address directly (port 9870 / 9871 when omitted);
- ``hdfs://host[:rpcport]``: ``dfs.namenode.http-address`` from ``hadoopConfig`` when set (a
  ``0.0.0.0`` bind address takes the host of ``defaultFS``), else the host of ``defaultFS`` with
  port 9870 (``dfs.http.policy: HTTPS_ONLY``: ``dfs.namenode.https-address``, port 9871);
- ``hdfs://ns`` where ``ns`` is in ``dfs.nameservices`` (or has ``dfs.ha.namenodes.ns``): NameNode
  HA, one URL per ``dfs.ha.namenodes.ns`` entry ``nn``, from ``dfs.namenode.http-address.ns.nn``,
  else the host of ``dfs.namenode.rpc-address.ns.nn`` with port 9870. A request answered by a
  standby NameNode (StandbyException) or not at all goes to the next one;
- ``file:///`` (or a plain path) is the local disk: same writer and reader code above the
  filesystem, no cluster needed.

Authentication: ``InsecureClient`` as ``hadoop.user.name`` (else ``$HADOOP_USER_NAME``, else the
login name); with ``hadoop.security.authentication: kerberos``, ``KerberosClient`` from
``hdfs[kerberos]`` (``pip install 'syncx[kerberos]'``), using the ticket cache, or the keytab in
``principalFile`` for ``principal`` (``java.security.krb5.conf`` sets ``KRB5_CONFIG``).

Failures: a request that finds no active NameNode (connection refused, timeouts, StandbyException,
RetriableException, SafeModeException, 5xx) is retried with exponential backoff
(``dfs.client.failover.max.attempts``, default 15; ``dfs.client.failover.sleep.base.millis`` 500,
``.max.millis`` 15000, Hadoop's own client settings); giving up raises
:class:`~sync.errors.RetriableError`, so ``setting.restart`` restarts the job from its last
checkpoint. A cut upload cannot be resumed and raises it at once. Permission errors are
:class:`~sync.errors.JobFileError` naming the parameter: retrying does not help.

HDFS namespace rules the callers rely on: ``rename`` never overwrites (HDFS answers false; here
:class:`FileExistsError`), ``CREATE`` without overwrite is an atomic create-if-absent (the writer's
lock), and closing an upload completes the file on the DataNodes.
"""

from __future__ import annotations

import codecs
import contextlib
import getpass
import io
import logging
import os
import queue
import random
import threading
import time
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from libs.fs import FileInfo, FileSystem, LocalFileSystem
from sync.errors import JobFileError, RetriableError
from sync.model import Params, default_fs_without_path, hadoop_config_without_default_fs_path
from sync.registry import require

__all__ = [
    "HdfsConnectionParams",
    "RetryPolicy",
    "WebHdfsFileSystem",
    "filesystem_path",
    "hadoop_user",
    "is_local",
    "open_filesystem",
    "resolve_namenodes",
    "unescape_delimiter",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

HTTP_PORT = 9870
HTTPS_PORT = 9871
_RETRIABLE_EXCEPTIONS = frozenset(
    {
        "StandbyException",
        "RetriableException",
        "SafeModeException",
        "ObserverRetryOnActiveException",
    }
)
_UPLOAD_QUEUE = 8
_BUFFER = 1 << 20


# -- where the NameNodes are ---------------------------------------------------------------------


def is_local(default_fs: str | None) -> bool:
    """Whether ``defaultFS`` names the local filesystem (``file:///``, or nothing at all)."""
    return not default_fs or urlsplit(default_fs).scheme in ("", "file")


def _config(hadoop_config: Mapping[str, Any], key: str) -> str | None:
    value = hadoop_config.get(key)
    return None if value is None or str(value).strip() == "" else str(value).strip()


def _host_port(address: str, default_port: int) -> tuple[str, int]:
    host, _, port = address.strip().rpartition(":")
    if not host:
        return address.strip(), default_port
    return host, int(port) if port.isdigit() else default_port


def resolve_namenodes(default_fs: str, hadoop_config: Mapping[str, Any] | None = None) -> list[str]:
    """The WebHDFS base URLs (``http://host:port``) that ``defaultFS`` names, HA NameNodes in
    configuration order. Raises :class:`ValueError` saying what is missing or wrong."""
    config = hadoop_config or {}
    parts = urlsplit(default_fs.strip())
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return [f"{scheme}://{parts.netloc}"]
    if scheme in ("webhdfs", "swebhdfs"):
        if not parts.hostname:
            msg = f"'{default_fs}' names no host (expected {scheme}://host:port)"
            raise ValueError(msg)
        secure = scheme == "swebhdfs"
        port = parts.port or (HTTPS_PORT if secure else HTTP_PORT)
        return [f"{'https' if secure else 'http'}://{parts.hostname}:{port}"]
    if scheme != "hdfs":
        msg = f"unsupported scheme '{scheme}://' (use hdfs://, webhdfs://, swebhdfs:// or file://)"
        raise ValueError(msg)
    authority = parts.netloc
    if not authority:
        authority = urlsplit(_config(config, "fs.defaultFS") or "").netloc
    if not authority:
        msg = f"'{default_fs}' names no NameNode or nameservice (expected hdfs://host:port)"
        raise ValueError(msg)
    https = (_config(config, "dfs.http.policy") or "").upper() == "HTTPS_ONLY"
    scheme_out, port_default = ("https", HTTPS_PORT) if https else ("http", HTTP_PORT)
    key = "dfs.namenode.https-address" if https else "dfs.namenode.http-address"
    nameservices = [
        s.strip() for s in (_config(config, "dfs.nameservices") or "").split(",") if s.strip()
    ]
    namenodes = _config(config, f"dfs.ha.namenodes.{authority}")
    if authority in nameservices or namenodes:
        if not namenodes:
            msg = f"nameservice '{authority}' needs dfs.ha.namenodes.{authority} in hadoopConfig"
            raise ValueError(msg)
        urls = []
        for nn in (n.strip() for n in namenodes.split(",") if n.strip()):
            http = _config(config, f"{key}.{authority}.{nn}")
            if http is not None:
                host, port = _host_port(http, port_default)
            else:
                rpc = _config(config, f"dfs.namenode.rpc-address.{authority}.{nn}")
                if rpc is None:
                    msg = (
                        f"NameNode '{nn}' of nameservice '{authority}' needs "
                        f"{key}.{authority}.{nn} or dfs.namenode.rpc-address.{authority}.{nn} "
                        "in hadoopConfig"
                    )
                    raise ValueError(msg)
                host, port = _host_port(rpc, port_default)[0], port_default
            urls.append(f"{scheme_out}://{host}:{port}")
        return urls
    host = parts.hostname or authority
    http = _config(config, key)
    if http is not None:
        bind, port = _host_port(http, port_default)
        if bind not in ("0.0.0.0", "", "*"):
            host = bind
        return [f"{scheme_out}://{host}:{port}"]
    return [f"{scheme_out}://{host}:{port_default}"]


def hadoop_user(hadoop_config: Mapping[str, Any] | None = None) -> str:
    """The HDFS user for simple authentication: ``hadoop.user.name``, ``$HADOOP_USER_NAME``, or
    the login name."""
    config = hadoop_config or {}
    return (
        _config(config, "hadoop.user.name")
        or os.environ.get("HADOOP_USER_NAME")
        or getpass.getuser()
    )


def filesystem_path(default_fs: str | None, path: str, user: str | None = None) -> str:
    """The path inside the filesystem: a fully qualified ``hdfs://ns/a/b`` gives ``/a/b``; a
    relative path is taken under the path of a ``file:///base`` defaultFS, or under
    ``/user/<user>`` on HDFS, as Hadoop resolves it."""
    parts = urlsplit(path)
    if parts.scheme and len(parts.scheme) > 1:  # not a Windows drive letter
        path = parts.path or "/"
    if path.startswith("/"):
        return path
    if is_local(default_fs):
        base = urlsplit(default_fs or "").path
        return os.path.join(base, path) if base and base != "/" else path  # noqa: PTH118
    return f"/user/{user or hadoop_user()}/{path}"


@dataclass(frozen=True)
class RetryPolicy:
    """How long requests are retried while no NameNode answers (Hadoop's failover settings)."""

    attempts: int = 15
    base: float = 0.5
    ceiling: float = 15.0

    @classmethod
    def from_config(cls, hadoop_config: Mapping[str, Any]) -> RetryPolicy:
        """``dfs.client.failover.max.attempts`` and ``.sleep.base.millis`` / ``.max.millis``."""

        def number(key: str, default: float) -> float:
            value = _config(hadoop_config, key)
            try:
                return float(value) if value is not None else default
            except ValueError:
                return default

        return cls(
            attempts=max(1, int(number("dfs.client.failover.max.attempts", cls.attempts))),
            base=number("dfs.client.failover.sleep.base.millis", cls.base * 1000) / 1000,
            ceiling=number("dfs.client.failover.sleep.max.millis", cls.ceiling * 1000) / 1000,
        )

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt`` (1-based): exponential, jittered, capped."""
        return min(self.ceiling, self.base * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)


def open_filesystem(
    default_fs: str | None,
    hadoop_config: Mapping[str, Any] | None,
    *,
    where: str,
    plugin: str,
    stopping: threading.Event | None = None,
) -> FileSystem:
    """The filesystem ``defaultFS`` names: local for ``file://``, else WebHDFS. ``where`` is the
    parameter block's path for messages (``job.content[0].writer.parameter``)."""
    config = dict(hadoop_config or {})
    if is_local(default_fs):
        return LocalFileSystem()
    assert default_fs is not None
    try:
        urls = resolve_namenodes(default_fs, config)
    except ValueError as exc:
        raise JobFileError(f"{where}.defaultFS: {exc}") from exc
    return WebHdfsFileSystem(
        urls,
        user=hadoop_user(config),
        hadoop_config=config,
        where=where,
        plugin=plugin,
        stopping=stopping,
    )


def state_filesystem(url: str) -> tuple[FileSystem, str]:
    """The ``syncx.filesystems`` entry point: ``--state-dir webhdfs://nn:9870/path`` (or
    ``hdfs://``, ``swebhdfs://``) as a filesystem and the path in it, for the state backend."""
    try:
        fs = open_filesystem(url, {}, where="--state-dir", plugin="hdfs")
    except JobFileError as exc:
        msg = f"--state-dir {url}: {exc}".replace(": --state-dir.defaultFS:", ":")
        raise JobFileError(msg) from exc
    return fs, filesystem_path(url, url)


# -- parameters shared by hdfsreader and hdfswriter ---------------------------------------------

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}


def unescape_delimiter(value: str) -> str:
    """A delimiter as users write it: ``\\001``/``\\u0001``/``\\x01`` (Hive's ``\\001``), ``\\t``,
    or the character itself."""
    text = value
    if text.startswith("\\") and len(text) > 1:
        body = text[1:]
        if body.isdigit() and len(body) <= 3:
            return chr(int(body, 8))
        if body[:1] in ("u", "x") and len(body) > 1:
            with contextlib.suppress(ValueError):
                return chr(int(body[1:], 16))
        if body in _ESCAPES:
            return _ESCAPES[body]
    return text


class HdfsConnectionParams(Params):
    """``defaultFS`` and ``hadoopConfig``, as ChunJun's HDFS plugins spell them."""

    default_fs: str | None = Field(
        default=None,
        validation_alias=AliasChoices("defaultFS", "defaultFs", "default_fs"),
        serialization_alias="defaultFS",
        description=(
            "webhdfs://host:9870 (NameNode HTTP), hdfs://host:8020 or hdfs://nameservice (mapped "
            "to the HTTP address through hadoopConfig; port 9870 by default), or file:/// for "
            "the local disk. Default: hadoopConfig fs.defaultFS, else the scheme of path."
        ),
    )
    hadoop_config: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Hadoop settings: dfs.nameservices, dfs.ha.namenodes.<ns>, "
            "dfs.namenode.http-address[.<ns>.<nn>], dfs.namenode.rpc-address.<ns>.<nn>, "
            "hadoop.user.name, hadoop.security.authentication (kerberos: principal, "
            "principalFile), dfs.client.failover.max.attempts / sleep.base.millis / "
            "sleep.max.millis. Other keys are accepted and ignored."
        ),
    )

    @field_validator("default_fs")
    @classmethod
    def _default_fs(cls, value: str | None) -> str | None:
        return default_fs_without_path(value)

    @field_validator("hadoop_config")
    @classmethod
    def _configured_default_fs(cls, value: dict[str, Any]) -> dict[str, Any]:
        return hadoop_config_without_default_fs_path(value)

    def effective_default_fs(self, path: str | list[str] | None = None) -> str | None:
        """``defaultFS``, else ``hadoopConfig`` ``fs.defaultFS``, else the scheme and authority
        of a fully qualified ``path``."""
        if self.default_fs:
            return self.default_fs
        configured = _config(self.hadoop_config, "fs.defaultFS")
        if configured:
            return configured
        first = path[0] if isinstance(path, list) and path else path
        if isinstance(first, str):
            parts = urlsplit(first)
            if parts.scheme and len(parts.scheme) > 1:
                return f"{parts.scheme}://{parts.netloc}/"
        return None

    def _paths(self) -> str | list[str] | None:
        """``path`` of the plugin's parameters (both HDFS plugins have one)."""
        path: str | list[str] | None = getattr(self, "path", None)
        return path

    def filesystem(
        self, *, where: str, plugin: str, stopping: threading.Event | None = None
    ) -> FileSystem:
        """The filesystem ``defaultFS`` (or the scheme of ``path``) names, for either plugin:
        see :func:`open_filesystem`."""
        return open_filesystem(
            self.effective_default_fs(self._paths()),
            self.hadoop_config,
            where=where,
            plugin=plugin,
            stopping=stopping,
        )

    def folder(self, path: str, sub_folder: str | None = None) -> str:
        """``path`` inside the filesystem (see :func:`filesystem_path`: relative paths under
        ``/user/<hadoop.user.name>`` on HDFS), with ``sub_folder`` (``fileName``) appended."""
        user = hadoop_user(self.hadoop_config)
        resolved = filesystem_path(self.effective_default_fs(self._paths()), path, user)
        if sub_folder:
            resolved = resolved.rstrip("/") + "/" + sub_folder.strip("/")
        return resolved

    @model_validator(mode="after")
    def _namenodes_resolve(self) -> HdfsConnectionParams:
        default_fs = self.effective_default_fs(self._paths())
        problem = None
        if default_fs is None:
            problem = (
                "is required (webhdfs://namenode:9870, hdfs://namenode:8020, hdfs://nameservice, "
                "or file:/// for the local disk)"
            )
        elif not is_local(default_fs):
            try:
                resolve_namenodes(default_fs, self.hadoop_config)
            except ValueError as exc:
                problem = str(exc)
        if problem is not None:
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError("namenode", "{reason}", {"reason": problem}),
                        loc=("defaultFS",),
                        input=default_fs,
                    )
                ],
            )
        return self


def encoding_name(value: str) -> str:
    """Check an ``encoding`` parameter."""
    try:
        return codecs.lookup(value).name
    except LookupError as exc:
        msg = f"unknown encoding '{value}' (e.g. utf-8, gbk, latin-1)"
        raise ValueError(msg) from exc


class TextParams(Params):
    """``fieldDelimiter`` and ``encoding`` of Hive text files."""

    field_delimiter: str = Field(
        default="\x01",
        min_length=1,
        description="Text files: the field delimiter, default \\001 (Hive's); \\t, \\001, \\u0001 are understood.",
    )
    encoding: str = Field(default="utf-8", description="Text files: the character set.")

    @field_validator("field_delimiter")
    @classmethod
    def _delimiter(cls, value: str) -> str:
        value = unescape_delimiter(value)
        if "\n" in value or "\r" in value:
            msg = "a line break cannot separate fields"
            raise ValueError(msg)
        return value

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        return encoding_name(value)


# -- the filesystem ------------------------------------------------------------------------------


class WebHdfsFileSystem(FileSystem):
    """:class:`~libs.fs.FileSystem` over WebHDFS; thread-safe (one HTTP session, pooled)."""

    def __init__(
        self,
        urls: list[str],
        *,
        user: str,
        hadoop_config: Mapping[str, Any] | None = None,
        where: str = "parameter",
        plugin: str = "hdfs",
        retry: RetryPolicy | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        config = dict(hadoop_config or {})
        self.urls = list(urls)
        self.user = user
        self.where = where
        self.retry = retry or RetryPolicy.from_config(config)
        self._stopping = stopping or threading.Event()
        hdfs = require("hdfs", "hdfs", plugin)
        import requests  # noqa: PLC0415 - installed with the hdfs extra, imported when used
        from requests.adapters import HTTPAdapter  # noqa: PLC0415

        self._errors = (hdfs.HdfsError,)
        self._transport_errors: tuple[type[BaseException], ...] = (
            requests.RequestException,
            ConnectionError,
            TimeoutError,
        )
        with contextlib.suppress(ImportError):
            from urllib3.exceptions import HTTPError as Urllib3Error  # noqa: PLC0415

            self._transport_errors += (Urllib3Error,)
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=64)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        timeout = (10, 120)
        url = ";".join(self.urls)
        auth = (_config(config, "hadoop.security.authentication") or "simple").lower()
        if auth == "kerberos":
            kerberos = require("hdfs.ext.kerberos", "kerberos", plugin)
            krb5 = _config(config, "java.security.krb5.conf")
            if krb5:
                os.environ["KRB5_CONFIG"] = krb5
            keytab = _config(config, "principalFile") or _config(config, "keytab")
            if keytab:
                os.environ["KRB5_CLIENT_KTNAME"] = keytab
            principal = _config(config, "principal")
            extra = {"principal": principal} if principal else {}
            self.client = kerberos.KerberosClient(url, session=session, timeout=timeout, **extra)
        else:
            self.client = hdfs.InsecureClient(url, user=user, session=session, timeout=timeout)

    def __repr__(self) -> str:
        return f"WebHdfsFileSystem({';'.join(self.urls)}, user={self.user})"

    # -- retries and errors ------------------------------------------------------------------

    def call(self, what: str, path: str, action: Callable[[], T]) -> T:
        """Run one request, retrying while no NameNode answers; map HDFS errors."""
        attempt = 0
        started = time.monotonic()
        while True:
            try:
                return action()
            except self._errors as exc:
                name = getattr(exc, "exception", None)
                if name is not None and name not in _RETRIABLE_EXCEPTIONS:
                    raise self._translate(exc, what, path) from exc
                failure: BaseException = exc
            except self._transport_errors as exc:
                failure = exc
            attempt += 1
            if attempt >= self.retry.attempts or self._stopping.is_set():
                elapsed = time.monotonic() - started
                msg = (
                    f"{self.where}.defaultFS: no active NameNode at {', '.join(self.urls)} "
                    f"answered {what} {path} ({attempt} attempt(s) in {elapsed:.1f}s): "
                    f"{_describe(failure)}"
                )
                raise RetriableError(msg) from failure
            pause = self.retry.delay(attempt)
            log.warning(
                "WebHDFS %s %s failed (%s); retry %d in %.1fs",
                what,
                path,
                _describe(failure),
                attempt,
                pause,
            )
            self._stopping.wait(pause)

    def _translate(self, exc: Exception, what: str, path: str) -> Exception:
        name = getattr(exc, "exception", None) or ""
        message = getattr(exc, "message", None) or str(exc)
        if name == "AccessControlException":
            return JobFileError(
                f"{self.where}.path: permission denied ({what} {path} as user {self.user}): "
                f"{message}"
            )
        if "Authentication failure" in message or name in (
            "SecurityException",
            "AuthenticationException",
        ):
            return JobFileError(f"{self.where}.hadoopConfig: authentication failed: {message}")
        if name == "FileNotFoundException":
            return FileNotFoundError(f"{path}: {message}")
        if name == "FileAlreadyExistsException":
            return FileExistsError(f"{path}: {message}")
        if name == "ParentNotDirectoryException":
            return NotADirectoryError(f"{path}: {message}")
        return OSError(f"WebHDFS {what} {path}: {name}: {message}")

    # -- FileSystem --------------------------------------------------------------------------

    def _status(self, path: str) -> dict[str, Any] | None:
        return self.call("GETFILESTATUS", path, lambda: self.client.status(path, strict=False))

    def exists(self, path: str) -> bool:
        return self._status(path) is not None

    def is_dir(self, path: str) -> bool:
        status = self._status(path)
        return status is not None and status["type"] == "DIRECTORY"

    def size(self, path: str) -> int:
        status = self._status(path)
        if status is None:
            raise FileNotFoundError(path)
        return int(status["length"])

    def listdir(self, path: str) -> list[FileInfo]:
        def listing() -> list[tuple[str, dict[str, Any]]]:
            try:
                return list(self.client.list(path, status=True))
            except self._errors as exc:
                name = getattr(exc, "exception", None)
                if name == "FileNotFoundException" or (
                    name is None and "is not a directory" in str(exc)
                ):
                    return []
                raise

        entries = self.call("LISTSTATUS", path, listing)
        if len(entries) == 1 and entries[0][0] == "":  # the path is a file
            return []
        return [
            FileInfo(
                self.join(path, name),
                int(status.get("length", 0)),
                status.get("type") == "DIRECTORY",
            )
            for name, status in entries
        ]

    def makedirs(self, path: str) -> None:
        self.call("MKDIRS", path, lambda: self.client.makedirs(path))

    def delete(self, path: str, *, recursive: bool = False) -> None:
        self.call("DELETE", path, lambda: self.client.delete(path, recursive=recursive))

    def rename(self, source: str, target: str) -> None:
        def attempt() -> bool:
            response = self.client._rename(source, destination=target)
            return bool(response.json()["boolean"])

        if self.exists(target):
            msg = f"cannot rename {source}: {target} exists (HDFS rename does not overwrite)"
            raise FileExistsError(msg)
        if self.call("RENAME", source, attempt):
            return
        if not self.exists(source):
            if self.exists(target):  # a retried rename that had succeeded
                return
            raise FileNotFoundError(f"cannot rename {source}: it does not exist")
        if self.exists(target):
            raise FileExistsError(f"cannot rename {source}: {target} exists")
        parent = target.rstrip("/").rsplit("/", 1)[0] or "/"
        self.makedirs(parent)
        if not self.call("RENAME", source, attempt):
            msg = f"HDFS refused to rename {source} to {target}"
            raise OSError(msg)

    def open_write(self, path: str) -> BinaryIO:
        return typing.cast(BinaryIO, io.BufferedWriter(_Upload(self, path), _BUFFER))

    def create_exclusive(self, path: str, data: bytes) -> bool:
        try:
            with self.open_write(path) as stream:
                stream.write(data)
        except FileExistsError:
            return False
        except OSError as exc:
            if "AlreadyBeingCreatedException" in str(exc):
                return False
            raise
        return True

    def open_read(self, path: str) -> BinaryIO:
        size = self.size(path)
        return typing.cast(BinaryIO, io.BufferedReader(_Download(self, path, size), _BUFFER))


def _describe(exc: BaseException) -> str:
    name = getattr(exc, "exception", None)
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    text = text if len(text) < 300 else text[:300] + "..."
    return f"{name}: {text}" if name else f"{type(exc).__name__}: {text}"


class _Upload(io.RawIOBase):
    """A file being created: bytes stream to the DataNode in one chunked PUT, from a thread fed
    through a bounded queue (memory stays flat); ``close`` waits for the DataNode's answer."""

    def __init__(self, fs: WebHdfsFileSystem, path: str) -> None:
        super().__init__()
        self._fs = fs
        self._path = path
        self._written = 0
        self._error: BaseException | None = None
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_UPLOAD_QUEUE)
        client = fs.client

        def create() -> str:
            response = client._create(path, overwrite=False)
            return str(response.headers["location"])

        location = fs.call("CREATE", path, create)
        self._thread = threading.Thread(
            target=self._send, args=(location,), name="webhdfs-upload", daemon=True
        )
        self._thread.start()

    def _chunks(self) -> typing.Iterator[bytes]:
        while (chunk := self._queue.get()) is not None:
            yield chunk

    def _send(self, location: str) -> None:
        client = self._fs.client
        try:
            response = client._request(method="PUT", url=location, data=self._chunks())
            if not response:
                from hdfs.client import _to_error  # noqa: PLC0415 - the hdfs extra

                self._error = _to_error(response)
        except BaseException as exc:
            self._error = exc
        finally:
            with contextlib.suppress(queue.Empty):
                while True:
                    self._queue.get_nowait()

    def _raise(self) -> None:
        error = self._error
        if error is None:
            return
        if isinstance(error, self._fs._errors) and getattr(error, "exception", None) not in (
            None,
            *_RETRIABLE_EXCEPTIONS,
        ):
            raise self._fs._translate(error, "CREATE", self._path) from error
        msg = f"{self._fs.where}.defaultFS: the upload of {self._path} was cut: {_describe(error)}"
        raise RetriableError(msg) from error

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._written

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("write to a closed file")
        chunk = bytes(data)
        if not chunk:
            return 0
        while True:
            self._raise()
            if not self._thread.is_alive():
                self._raise()
                msg = f"the upload of {self._path} ended early"
                raise RetriableError(msg)
            try:
                self._queue.put(chunk, timeout=0.5)
                break
            except queue.Full:
                continue
        self._written += len(chunk)
        return len(chunk)

    def close(self) -> None:
        if self.closed:
            return
        try:
            while self._thread.is_alive():
                try:
                    self._queue.put(None, timeout=0.5)
                    break
                except queue.Full:
                    continue
            self._thread.join()
            self._raise()
        finally:
            super().close()


class _Download(io.RawIOBase):
    """A seekable file over ranged OPEN requests; a read cut midway reopens where it stopped."""

    def __init__(self, fs: WebHdfsFileSystem, path: str, size: int) -> None:
        super().__init__()
        self._fs = fs
        self._path = path
        self._size = size
        self._position = 0
        self._response: Any = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        target = max(0, base + offset)
        if target != self._position:
            self._drop()
            self._position = target
        return self._position

    def _drop(self) -> None:
        if self._response is not None:
            with contextlib.suppress(Exception):
                self._response.close()
            self._response = None

    def _open(self) -> Any:
        offset = self._position
        return self._fs.client._open(self._path, offset=offset, length=self._size - offset)

    def readinto(self, buffer: Any) -> int:
        if self._position >= self._size or not len(buffer):
            return 0
        fs = self._fs
        for attempt in range(1, fs.retry.attempts + 1):
            if self._response is None:
                self._response = fs.call("OPEN", self._path, self._open)
            try:
                count = self._response.raw.readinto(buffer)
                if count:
                    self._position += count
                    return int(count)
                failure: BaseException = EOFError(
                    f"{self._path} ended at byte {self._position} of {self._size}"
                )
            except fs._transport_errors as exc:
                failure = exc
            self._drop()
            if attempt < fs.retry.attempts:
                time.sleep(fs.retry.delay(attempt))
        msg = f"{fs.where}.defaultFS: reading {self._path} failed: {_describe(failure)}"
        raise RetriableError(msg)

    def close(self) -> None:
        self._drop()
        super().close()
