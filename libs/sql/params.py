"""Where a relational plugin connects and which table it uses (reader and writer alike)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from sqlalchemy.engine import URL

from libs.sql.urls import entry_without_password, parse_url, url_without_password
from sync.model import Params

__all__ = ["SqlConnectionEntry", "SqlConnectionParams", "split_table_name"]


class SqlConnectionEntry(Params):
    """One entry of ChunJun's ``connection`` list."""

    jdbc_url: list[str] | str = Field(
        description="JDBC URL, or a list tried in order (failover); a SQLAlchemy URL works too."
    )
    table: list[str] = Field(default_factory=list, description="The table (exactly one).")
    db_schema: str | None = Field(
        default=None,
        alias="schema",
        description="Schema (PostgreSQL) or database the table is in.",
    )

    @field_validator("table", mode="before")
    @classmethod
    def _one_table_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @property
    def urls(self) -> list[str]:
        """Candidate URLs, in order."""
        return [self.jdbc_url] if isinstance(self.jdbc_url, str) else list(self.jdbc_url)


def _empty_to_none(value: Any) -> Any:
    """ChunJun job files write ``""`` for an unset string (``"splitPk": ""``)."""
    return None if isinstance(value, str) and not value.strip() else value


class SqlConnectionParams(Params):
    """Where a relational plugin connects and which table it uses (reader and writer alike)."""

    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL (sqlite:///path.db, postgresql+psycopg://user@host/db) "
        "or a jdbc: URL. Alternative to `connection`.",
    )
    connection: list[SqlConnectionEntry] = Field(
        default_factory=list, description="ChunJun's connection list: [{jdbcUrl, table, schema}]."
    )
    username: str | None = Field(default=None, description="Overrides the URL's user.")
    password: SecretStr | None = Field(
        default=None, description="Secret; a password written into a URL is moved here."
    )
    table: str | None = Field(
        default=None, description="Table name; `schema.table` when `schema` is not given."
    )
    db_schema: str | None = Field(
        default=None,
        alias="schema",
        description="Schema the table is in (default: the connection's default schema).",
    )

    @model_validator(mode="before")
    @classmethod
    def _move_password_out_of_urls(cls, data: Any) -> Any:
        """A password inside ``url`` / ``jdbcUrl`` becomes the ``password`` secret."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        found: list[str] = []
        if isinstance(data.get("url"), str):
            data["url"] = url_without_password(data["url"], found)
        entries = data.get("connection")
        if isinstance(entries, list):
            data["connection"] = [entry_without_password(entry, found) for entry in entries]
        if found:
            given = data.get("password")
            given_text = given.get_secret_value() if isinstance(given, SecretStr) else given
            if given_text in (None, ""):
                data["password"] = found[0]
            elif any(secret != given_text for secret in found):
                msg = "a URL carries a password different from `password`; give it once"
                raise ValueError(msg)
        return data

    @field_validator("url", "table", "db_schema", "username", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return _empty_to_none(value)

    @field_validator("url")
    @classmethod
    def _url_parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_url(value)
        return value

    @field_validator("connection")
    @classmethod
    def _connection_parses(cls, value: list[SqlConnectionEntry]) -> list[SqlConnectionEntry]:
        if len(value) > 1:
            msg = "one connection entry per job (sharded reads over several are not supported)"
            raise ValueError(msg)
        for entry in value:
            if not entry.urls:
                msg = "jdbcUrl needs at least one URL"
                raise ValueError(msg)
            for text in entry.urls:
                parse_url(text)
            if len(entry.table) > 1:
                msg = "one table per job (several tables in one job are not supported)"
                raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _where_is_given(self) -> SqlConnectionParams:
        if self.url is None and not self.connection:
            msg = "give `url` or `connection: [{jdbcUrl, table}]`"
            raise ValueError(msg)
        if self.url is not None and self.connection:
            msg = "give either `url` or `connection`, not both"
            raise ValueError(msg)
        return self

    # -- resolved values ---------------------------------------------------------------------

    def url_texts(self) -> list[str]:
        """The URLs as given (``url``, or ``connection[0].jdbcUrl``'s), in order."""
        return [self.url] if self.url is not None else self.connection[0].urls

    def candidate_urls(self) -> list[URL]:
        """Every URL to try, in order, with ``username`` / ``password`` applied."""
        urls = []
        for text in self.url_texts():
            url = parse_url(text)
            if url.get_backend_name() == "sqlite":  # a file: no credentials
                urls.append(url)
                continue
            if self.username is not None:
                url = url.set(username=self.username)
            if self.password is not None and self.password.get_secret_value():
                url = url.set(password=self.password.get_secret_value())
            urls.append(url)
        return urls

    def secret(self) -> str | None:
        """The password, to scrub from driver messages."""
        return self.password.get_secret_value() if self.password is not None else None

    def table_name(self) -> str | None:
        """The table, from ``table`` or ``connection[0].table[0]``."""
        if self.table is not None:
            return self.table
        if self.connection and self.connection[0].table:
            return _empty_to_none(self.connection[0].table[0])
        return None

    def table_param(self) -> str:
        """Where the table was given, as a path under ``parameter``."""
        if self.table is None and self.connection and self.connection[0].table:
            return "connection[0].table[0]"
        return "table"

    def schema_name(self) -> str | None:
        """The schema, from ``schema`` or ``connection[0].schema``."""
        if self.db_schema is not None:
            return self.db_schema
        if self.connection:
            return _empty_to_none(self.connection[0].db_schema)
        return None


def split_table_name(table: str, schema: str | None) -> tuple[str | None, str]:
    """``(schema, table)``: a dotted ``schema.table`` splits when no schema is given apart."""
    if schema is None and "." in table and not (table.startswith('"') and table.endswith('"')):
        head, _, tail = table.partition(".")
        return head.strip('"`'), tail.strip('"`')
    return schema, table.strip('"`') if schema is None else table
