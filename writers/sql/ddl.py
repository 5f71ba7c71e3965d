"""Captured schema changes applied to their target tables (``ddl: apply``), idempotently."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from libs import cdc
from libs.sql import run_statement
from sync.errors import JobFailedError
from writers.sql.tables import table_exists

if TYPE_CHECKING:
    from writers.sql.writer import SqlWriter

__all__ = ["apply_ddl"]

log = logging.getLogger(__name__)


def apply_ddl(writer: SqlWriter, change: cdc.DdlChange) -> None:
    """Apply a captured schema change to its target table, idempotently (``ddl: apply``):
    CREATE/DROP/TRUNCATE TABLE and ADD/DROP/MODIFY/CHANGE/RENAME COLUMN; index changes are
    left to the target's owner; RENAME TABLE is refused."""
    statement = cdc.parse_ddl(change.statement, change.db)
    source = f"{change.db}.{change.table}"
    name = writer.changes.target_name(source)
    schema = writer.params.schema_name()
    qualified = writer.dialect.qualified(schema, name)
    where = f"{change.source.get('file')}:{change.source.get('pos')}"
    engine = writer.engine()
    with engine.connect() as conn:
        exists = table_exists(conn, name, schema)
    commands: list[str] = []
    if statement.kind == "create":
        if not exists:
            commands.append(_create_for(change.statement, qualified))
    elif statement.kind == "drop":
        writer.changes.purge(name)
        commands.append(f"DROP TABLE IF EXISTS {qualified}")
    elif statement.kind == "truncate":
        writer.changes.purge(name)
        if exists:
            commands.append(writer.dialect.truncate(qualified))
    elif statement.kind == "alter":
        if not exists:
            log.warning("ddl: target table %s is missing; skipped %s", name, change.statement)
        else:
            with engine.connect() as conn:
                columns = {
                    c["name"].lower() for c in sa.inspect(conn).get_columns(name, schema=schema)
                }
            for kind, column, clause in statement.actions:
                present = column is not None and column.lower() in columns
                if kind == "add" and present:
                    continue
                if kind in ("drop", "change", "rename") and not present:
                    continue
                if kind in ("index", "other"):
                    log.warning("ddl: left to the target's owner: ALTER TABLE %s %s", name, clause)
                    continue
                commands.append(f"ALTER TABLE {qualified} {clause}")
    elif statement.kind == "rename":
        msg = (
            f"DDL at {where} renames a captured table ({change.statement!r}); ddl: apply does "
            "not rename targets: rename the target by hand and resume"
        )
        raise JobFailedError(msg)
    for command in commands:
        try:
            with engine.begin() as conn:
                run_statement(conn, command)
        except sa_exc.DBAPIError as exc:
            msg = (
                f"applying DDL from {where} ({change.statement!r}) to '{name}' failed: "
                f"{writer.db_message(exc)} (statement: {command})"
            )
            raise JobFailedError(msg) from exc
        log.info("ddl: applied to %s: %s", name, command)
    writer.changes.forget(name)


_CREATE_NAME = re.compile(
    r"^(\s*CREATE\s+(?:OR\s+REPLACE\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?)"
    r"((?:`(?:[^`]|``)+`|[\w$]+)(?:\s*\.\s*(?:`(?:[^`]|``)+`|[\w$]+))?)",
    re.IGNORECASE,
)


def _create_for(statement: str, qualified: str) -> str:
    """A captured ``CREATE TABLE`` naming the target table instead."""
    match = _CREATE_NAME.match(statement)
    if match is None:
        msg = f"cannot read the table name of {statement!r}"
        raise JobFailedError(msg)
    return f"{match.group(1)}{qualified}{statement[match.end() :]}"
