"""The chunk DB's DDL on PostgreSQL: the Rust core's SQLite text, its storage classes renamed.

The revisions keep one source of truth, the Rust core's ``CREATE TABLE`` and
``ALTER TABLE … ADD COLUMN`` text; on PostgreSQL each statement goes through
:func:`for_postgresql`, which renames only the declared types of columns:

- ``INTEGER`` (SQLite's 64-bit integer) becomes ``BIGINT``;
- ``REAL`` (an 8-byte float) becomes ``DOUBLE PRECISION``;
- ``BLOB`` becomes ``BYTEA``, except the embedding tables' ``vector`` column,
  which becomes pgvector's ``vector`` (float32, any dimension);
- ``mcp_writes.id INTEGER PRIMARY KEY AUTOINCREMENT`` becomes ``BIGSERIAL PRIMARY KEY``
  (what SQLAlchemy makes of the model's autoincrementing key there).

``TEXT`` stays ``TEXT``, so the ``*_json`` columns keep the Rust core's exact
text (``docs/scaling.md`` says why not JSONB).  Foreign keys, cascades, partial
and descending indexes, ``IF NOT EXISTS`` and the defaults read the same in both.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

_TYPES = {"INTEGER": "BIGINT", "REAL": "DOUBLE PRECISION", "BLOB": "BYTEA"}
_AUTOINCREMENT = re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b")
# a column line of a CREATE TABLE: indentation, a name, then its declared type
_COLUMN = re.compile(r"^(\s+\w+\s+)(INTEGER|REAL|BLOB)\b", re.MULTILINE)
_VECTOR = re.compile(r"^(\s+vector\s+)BLOB\b", re.MULTILINE)


#: Run after the base DDL on PostgreSQL: float32 vectors do not compress, so they are stored
#: out of line uncompressed (``EXTERNAL``) rather than put through pglz at every write.
POSTGRES_AFTER_BASE: tuple[str, ...] = tuple(
    f"ALTER TABLE {table} ALTER COLUMN vector SET STORAGE EXTERNAL"
    for table in ("mem_tree_chunk_embeddings", "mem_tree_summary_embeddings")
)


def is_postgresql(bind: Connection) -> bool:
    """Whether ``bind`` is a PostgreSQL connection (the revisions' other backend)."""
    return bind.dialect.name == "postgresql"


def for_postgresql(statement: str) -> str:
    """A ``CREATE TABLE`` / ``CREATE INDEX`` statement of the Rust core, in PostgreSQL's types."""
    statement = _AUTOINCREMENT.sub("BIGSERIAL PRIMARY KEY", statement)
    statement = _VECTOR.sub(r"\1vector", statement)
    return _COLUMN.sub(lambda m: m[1] + _TYPES[m[2]], statement)


def declaration_for_postgresql(declaration: str) -> str:
    """A column declaration of an ``ALTER TABLE … ADD COLUMN`` (``REAL``, ``TEXT NOT NULL DEFAULT …``)."""
    name, _, rest = declaration.partition(" ")
    return " ".join(part for part in (_TYPES.get(name, name), rest) if part)


def primary_key_nullability(context: Any, revision: Any, directives: list[Any]) -> None:
    """``process_revision_directives`` for PostgreSQL: drop "make this primary key nullable" diffs.

    The models declare ``id TEXT PRIMARY KEY`` nullable because SQLite lets it
    be NULL; PostgreSQL makes every primary-key column NOT NULL, so the
    difference is the backend's, not a missing migration.
    """
    from alembic.operations import ops

    if context.dialect.name != "postgresql" or not directives:
        return
    for upgrade_ops in directives[0].upgrade_ops_list:
        kept = []
        for op in upgrade_ops.ops:
            if isinstance(op, ops.ModifyTableOps):
                op.ops = [
                    o
                    for o in op.ops
                    if not (
                        isinstance(o, ops.AlterColumnOp)
                        and o.modify_nullable is True
                        and o.modify_type is None
                        and o.modify_server_default is False
                        and _is_primary_key(context, op.table_name, o.column_name)
                    )
                ]
                if not op.ops:
                    continue
            kept.append(op)
        upgrade_ops.ops = kept


def _is_primary_key(context: Any, table: str, column: str) -> bool:
    metadata = context.opts["target_metadata"]
    return table in metadata.tables and column in metadata.tables[table].primary_key.columns


def has_column(bind: Connection, table: str, column: str) -> bool:
    """Whether ``table`` has ``column``, on either backend (names come from the revisions' lists)."""
    if is_postgresql(bind):
        return any(c["name"] == column for c in sa.inspect(bind).get_columns(table))
    rows = bind.exec_driver_sql(f"PRAGMA table_info({table})").fetchall()
    return any(row[1] == column for row in rows)
