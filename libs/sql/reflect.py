"""Identifiers, user SQL and reflection: what the plugins need to know about a table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql import quoted_name
from sqlalchemy.types import TypeEngine

from libs.sql.params import SqlConnectionParams, split_table_name
from sync.errors import ConfigIssue, JobFileError

__all__ = [
    "ColumnInfo",
    "TableInfo",
    "ident",
    "reflect_named",
    "reflect_table",
    "run_statement",
    "sql_text",
]


def ident(name: str) -> quoted_name:
    """A table or column name that SQLAlchemy always quotes with the dialect's quoting."""
    return quoted_name(name, quote=True)


def sql_text(fragment: str) -> sa.TextClause:
    """User SQL (``where``, ``customSql``) as a clause, taken literally: a ``:name`` in it is
    not a bind parameter and ``%`` needs no escaping, whatever the driver's paramstyle."""
    return sa.text(fragment.replace(":", "\\:"))


def run_statement(conn: Connection, statement: str) -> None:
    """Run one user statement (``preSql``/``postSql``) exactly as written, without parameters."""
    cursor = conn.connection.cursor()
    try:
        cursor.execute(statement)
    finally:
        cursor.close()


@dataclass(frozen=True)
class ColumnInfo:
    """One reflected column."""

    name: str
    type: TypeEngine[Any]
    nullable: bool = True


@dataclass(frozen=True)
class TableInfo:
    """A reflected table: what the plugins need to know about it."""

    schema: str | None
    name: str
    columns: list[ColumnInfo]
    primary_key: list[str] = field(default_factory=list)
    unique_keys: list[tuple[str, ...]] = field(default_factory=list)
    """Primary key first, then unique constraints and unique indexes (column tuples)."""
    is_view: bool = False

    @property
    def qualified(self) -> str:
        """``schema.table`` (or ``table``) for messages."""
        return f"{self.schema}.{self.name}" if self.schema else self.name

    def column(self, name: str) -> ColumnInfo | None:
        """The column called ``name``: exactly, else the one whose name differs only in case."""
        exact = [c for c in self.columns if c.name == name]
        if exact:
            return exact[0]
        folded = [c for c in self.columns if c.name.lower() == name.lower()]
        return folded[0] if len(folded) == 1 else None

    def missing(self, name: str, what: str = "column") -> str:
        """The message for a ``what`` called ``name`` that this table lacks (its columns listed)."""
        listed = ", ".join(c.name for c in self.columns)
        return f"{what} '{name}' not found in table '{self.qualified}' (its columns: {listed})"

    def is_unique(self, columns: Sequence[str]) -> bool:
        """Whether ``columns`` are (a superset of) a unique key."""
        wanted = set(columns)
        return any(set(key) <= wanted for key in self.unique_keys)

    def sa_table(self, names: Sequence[str] | None = None) -> sa.Table:
        """A Core table of these columns (or of ``names``) whose identifiers are always quoted."""
        chosen = self.columns if names is None else [self.column(n) for n in names]
        columns = [sa.Column(ident(c.name), c.type) for c in chosen if c is not None]
        return sa.Table(
            ident(self.name),
            sa.MetaData(),
            *columns,
            schema=ident(self.schema) if self.schema else None,
        )


def _resolve_name(candidates: Sequence[str], name: str) -> str | None:
    if name in candidates:
        return name
    folded = [c for c in candidates if c.lower() == name.lower()]
    return folded[0] if len(folded) == 1 else None


def reflect_table(
    conn: Connection, schema: str | None, table: str, *, path: str, where: str
) -> TableInfo:
    """Reflect ``schema.table`` (names matched exactly, else case-insensitively).

    ``path`` is the parameter that named the table and ``where`` the URL without password, both
    for the error when the table does not exist.
    """
    inspector = sa.inspect(conn)
    if schema is not None:
        schemas = inspector.get_schema_names()
        resolved_schema = _resolve_name(schemas, schema)
        if resolved_schema is None:
            msg = f"schema '{schema}' not found in {where}"
            raise JobFileError([ConfigIssue(path, msg)])
        schema = resolved_schema
    tables = list(inspector.get_table_names(schema=schema))
    views = list(inspector.get_view_names(schema=schema))
    resolved = _resolve_name(tables + views, table)
    if resolved is None:
        shown = f"{schema}.{table}" if schema else table
        msg = f"table '{shown}' not found in {where}"
        raise JobFileError([ConfigIssue(path, msg)])
    # SQLAlchemy's MySQL reflection leaves a backtick in a column name doubled (``a``b``)
    backticks = conn.dialect.name in ("mysql", "mariadb")

    def column_name(raw: Any) -> str:
        return str(raw).replace("``", "`") if backticks else str(raw)

    columns = [
        ColumnInfo(column_name(c["name"]), c["type"], bool(c.get("nullable", True)))
        for c in inspector.get_columns(resolved, schema=schema)
    ]
    primary: list[str] = []
    unique: list[tuple[str, ...]] = []
    try:
        pk = inspector.get_pk_constraint(resolved, schema=schema)
        primary = [column_name(c) for c in pk.get("constrained_columns") or []]
        for constraint in inspector.get_unique_constraints(resolved, schema=schema):
            unique.append(tuple(column_name(c) for c in constraint["column_names"]))
        extra = {"include_auto_indexes": True} if conn.dialect.name == "sqlite" else {}
        for index in inspector.get_indexes(resolved, schema=schema, **extra):
            names_in = [c for c in index.get("column_names") or [] if c is not None]
            if index.get("unique") and names_in and len(names_in) == len(index["column_names"]):
                unique.append(tuple(column_name(c) for c in names_in))
    except NotImplementedError:  # views on some dialects
        pass
    keys = ([tuple(primary)] if primary else []) + [u for u in unique if u != tuple(primary)]
    deduped = list(dict.fromkeys(keys))
    return TableInfo(schema, resolved, columns, primary, deduped, resolved not in tables)


def reflect_named(
    conn: Connection, params: SqlConnectionParams, table: str, *, param_path: str, where: str
) -> TableInfo:
    """Reflect ``table`` as a job names it (``schema.table``, or a name in ``params``' schema);
    a missing one is reported at the parameter that named the job's table."""
    schema, name = split_table_name(table, params.schema_name())
    return reflect_table(
        conn, schema, name, path=f"{param_path}.{params.table_param()}", where=where
    )
