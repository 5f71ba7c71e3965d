"""URLs: ChunJun ``jdbcUrl`` s and SQLAlchemy URLs, and keeping passwords out of them."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

from libs.sql.dialects import jdbc_driver, jdbc_schemes

__all__ = [
    "entry_without_password",
    "jdbc_property",
    "jdbc_to_url",
    "parse_url",
    "safe_url",
    "scrub",
    "strip_password",
    "url_without_password",
]


def jdbc_to_url(jdbc: str) -> URL:
    """A ChunJun ``jdbcUrl`` as a SQLAlchemy URL.

    ``jdbc:sqlite:/abs/path.db``, ``jdbc:sqlite:relative.db`` and ``jdbc:sqlite::memory:`` name a
    SQLite file; ``jdbc:<sub>://host:port/db?user=..&password=..`` any server whose dialect
    declares ``<sub>`` (:data:`libs.sql.dialects.DIALECTS`: postgresql, mysql, mariadb). JDBC driver properties (``useSSL``, ``characterEncoding``, ...) mean
    nothing to a Python driver and are dropped, except ``user`` and ``password``.
    """
    text = jdbc.strip()
    if not text.lower().startswith("jdbc:"):
        msg = "a jdbcUrl starts with 'jdbc:'"
        raise ValueError(msg)
    rest = text[5:]
    sub, _, tail = rest.partition(":")
    sub = sub.lower()
    if sub == "sqlite":
        path = tail.split("?", 1)[0]
        path = path.removeprefix("file:")
        if path.startswith("///"):
            path = path[2:]
        return URL.create("sqlite", database=path or None)
    driver = jdbc_driver(sub)
    if driver is None:
        known = ", ".join(jdbc_schemes())
        msg = f"unsupported jdbc url type 'jdbc:{sub}' (known: {known}); or give a SQLAlchemy `url`"
        raise ValueError(msg)
    parts = urlsplit(f"{sub}:{tail}")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    try:
        port = parts.port
    except ValueError as exc:
        msg = "the jdbcUrl's port is not a number"
        raise ValueError(msg) from exc
    username = unquote(parts.username) if parts.username else query.get("user")
    password = unquote(parts.password) if parts.password else query.get("password")
    database = parts.path.lstrip("/") or None
    return URL.create(
        driver,
        username=username or None,
        password=password or None,
        host=parts.hostname,
        port=port,
        database=database,
    )


def jdbc_property(text: str, name: str) -> str | None:
    """The driver property ``name`` of a ``jdbc:`` URL (``?socketTimeout=60000&...``), or None
    (also for any other URL)."""
    stripped = text.strip()
    if not stripped.lower().startswith("jdbc:"):
        return None
    query = urlsplit(stripped[5:]).query
    return dict(parse_qsl(query, keep_blank_values=True)).get(name)


def parse_url(text: str) -> URL:
    """A SQLAlchemy URL or a ChunJun ``jdbc:`` URL as a :class:`URL`; ``ValueError`` if neither."""
    stripped = text.strip()
    if stripped.lower().startswith("jdbc:"):
        return jdbc_to_url(stripped)
    try:
        return make_url(stripped)
    except sa_exc.ArgumentError as exc:
        msg = "not a SQLAlchemy URL (dialect+driver://user@host:port/database) or a jdbc: URL"
        raise ValueError(msg) from exc


def safe_url(url: URL) -> str:
    """The URL as text with the password masked: the only way a URL appears in messages."""
    return url.render_as_string(hide_password=True)


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret replaced by ``***`` (for driver messages we do not control)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def strip_password(text: str) -> tuple[str, str | None]:
    """``text`` (a URL) without its password, and the password; unparsable text stays as is."""
    try:
        url = parse_url(text)
    except ValueError:
        return text, None
    if url.password is None:
        return text, None
    password = str(url.password)
    if text.strip().lower().startswith("jdbc:"):
        cleaned = re.sub(r"([?&;])password=[^&;]*&?", r"\1", text)
        cleaned = re.sub(r"(//[^/@:]*):[^/@]*@", r"\1@", cleaned).rstrip("?&;")
        return cleaned, password
    bare = URL.create(
        url.drivername,
        username=url.username,
        host=url.host,
        port=url.port,
        database=url.database,
        query=url.query,
    )
    return bare.render_as_string(hide_password=False), password


def url_without_password(text: str, found: list[str]) -> str:
    cleaned, secret = strip_password(text)
    if secret:
        found.append(secret)
    return cleaned


def entry_without_password(entry: Any, found: list[str]) -> Any:
    """A raw ``connection[]`` entry whose ``jdbcUrl`` (text or list) carries no password."""
    if not isinstance(entry, dict):
        return entry
    cleaned = dict(entry)
    for key in ("jdbcUrl", "jdbc_url"):
        raw = cleaned.get(key)
        if isinstance(raw, str):
            cleaned[key] = url_without_password(raw, found)
        elif isinstance(raw, list):
            cleaned[key] = [
                url_without_password(item, found) if isinstance(item, str) else item for item in raw
            ]
    return cleaned
