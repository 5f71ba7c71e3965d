"""Opening connections: one engine per plugin, tried over every candidate URL in order."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Engine

from libs.sql.dialects import dialect_of, driver_package
from libs.sql.urls import safe_url, scrub
from sync.errors import JobFileError, RetriableError

__all__ = ["EngineHolder", "SqlConnectionError", "create_engine", "open_engine"]


class SqlConnectionError(RetriableError):
    """A database could not be reached (a restart may help); the message has no password."""


def _missing_driver_message(exc: ModuleNotFoundError, url: URL, plugin: str) -> str:
    module = (exc.name or "").split(".")[0]
    package = driver_package(module) or module or "the database driver"
    return (
        f"{plugin}: the URL {safe_url(url)} needs the Python package '{package}', which is not "
        f"installed: pip install '{package}'"
    )


def create_engine(
    url: URL,
    *,
    query_timeout: float | None = None,
    plugin: str = "sql",
    write: bool = False,
    connect: Callable[..., Any] | None = None,
) -> Engine:
    """An engine for ``url`` with its dialect's settings (:func:`dialect_of`); no connection is
    made yet.

    ``write``: the engine of a writer (on SQLite its transactions take the write lock at once).
    ``connect``: opens the pool's DB-API connections from the driver's keyword arguments, in
    place of the driver's own ``connect``.
    """
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    dialect = dialect_of(url)
    url = dialect.setup_engine(url, kwargs, query_timeout)
    try:
        engine = sa.create_engine(url, **kwargs)
    except ModuleNotFoundError as exc:
        raise JobFileError(_missing_driver_message(exc, url, plugin)) from exc
    except sa_exc.NoSuchModuleError as exc:
        msg = f"{plugin}: no SQLAlchemy dialect for the URL {safe_url(url)}"
        raise JobFileError(msg) from exc
    except sa_exc.ArgumentError as exc:
        msg = f"{plugin}: the URL {safe_url(url)} is not usable: {scrub(str(exc), [url.password])}"
        raise JobFileError(msg) from exc
    dialect.prepare_engine(engine, write=write)
    if connect is not None:

        @event.listens_for(engine, "do_connect")
        def _connect(dialect: Any, record: Any, cargs: list[Any], cparams: dict[str, Any]) -> Any:
            del dialect, record
            return connect(*cargs, **cparams)

    return engine


def open_engine(
    urls: Sequence[URL],
    *,
    path: str,
    plugin: str,
    query_timeout: float | None = None,
    secret: str | None = None,
    write: bool = False,
    connect: Callable[..., Any] | None = None,
) -> Engine:
    """An engine on the first of ``urls`` that accepts a connection (``connect``: see
    :func:`create_engine`).

    Errors name every URL tried (password masked) and the driver's message with the password
    scrubbed out; ``path`` is the parameter the URLs came from.
    """
    failures: list[str] = []
    for url in urls:
        secrets = [secret, None if url.password is None else str(url.password)]
        try:
            engine = create_engine(
                url, query_timeout=query_timeout, plugin=plugin, write=write, connect=connect
            )
        except FileNotFoundError as exc:
            failures.append(f"{safe_url(url)}: {exc}")
            continue
        try:
            with engine.connect():
                pass
        except sa_exc.DBAPIError as exc:
            engine.dispose()
            detail = scrub(str(exc.orig).strip() or type(exc.orig).__name__, secrets)
            failures.append(f"{safe_url(url)}: {detail}")
            continue
        return engine
    if len(failures) == 1:
        msg = f"{path}: cannot connect to {failures[0]}"
    else:
        listed = "\n".join(f"  - {failure}" for failure in failures)
        msg = f"{path}: cannot connect to any of {len(failures)} URLs:\n{listed}"
    raise SqlConnectionError(msg)


class EngineHolder:
    """A plugin's connection pool, opened on first use and disposed by ``close``.

    Shared by the SQL reader and writer (and their dialect subclasses), which give
    ``create_engine``; ``_lock`` guards their shared state too. Put first among the bases: its
    constructor passes its arguments on to the plugin base.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.RLock()
        self._engine: Engine | None = None

    @property
    def lock(self) -> threading.RLock:
        """Guards the plugin's shared state (its parts take it too)."""
        return self._lock

    def create_engine(self) -> Engine:
        """Connect; each plugin knows its URL parameters."""
        raise NotImplementedError

    def dbapi_connect(self) -> Callable[..., Any] | None:
        """How the pool opens a DB-API connection from the driver's keyword arguments (None:
        the driver's own ``connect``)."""
        return None

    def engine(self) -> Engine:
        """The connection pool (opened on first use)."""
        with self._lock:
            if self._engine is None:
                self._engine = self.create_engine()
            return self._engine

    def close(self) -> None:
        """Close the connection pool (the core calls this at the end of every attempt)."""
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None
