"""Reflection fix: the ``ON DELETE`` / ``ON UPDATE`` of inline ``REFERENCES`` clauses.

SQLAlchemy's SQLite dialect reads foreign-key actions only from table-level
``FOREIGN KEY (…)`` clauses; the chunk DB declares its cascades inline
(``chunk_id TEXT NOT NULL REFERENCES mem_tree_chunks(id) ON DELETE CASCADE``),
so reflection (and Alembic's autogenerate) would miss them.  ``PRAGMA
foreign_key_list`` reports them; :func:`get_foreign_keys` adds them back.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects.sqlite.base import SQLiteDialect


def _action(value: object) -> str | None:
    text = str(value or "").upper()
    return None if text in ("", "NO ACTION") else text


def get_foreign_keys(
    dialect: SQLiteDialect, connection: Any, table_name: str, schema: str | None = None, **kw: Any
) -> list[Any]:
    """``SQLiteDialect.get_foreign_keys`` with ``ondelete``/``onupdate`` taken from the pragma."""
    fks: list[Any] = SQLiteDialect.get_foreign_keys(  # type: ignore[no-untyped-call]
        dialect, connection, table_name, schema=schema, **kw
    )
    rows = dialect._get_table_pragma(  # type: ignore[no-untyped-call]
        connection, "foreign_key_list", table_name, schema=schema
    )
    actions: dict[tuple[str, tuple[str, ...]], tuple[str | None, str | None]] = {}
    columns: dict[int, list[str]] = {}
    for row in rows:
        columns.setdefault(row[0], []).append(row[3])
        actions[(row[2], tuple(columns[row[0]]))] = (_action(row[5]), _action(row[6]))
    for fk in fks:
        onupdate, ondelete = actions.get(
            (fk["referred_table"], tuple(fk["constrained_columns"])), (None, None)
        )
        options = fk.setdefault("options", {})
        if ondelete and "ondelete" not in options:
            options["ondelete"] = ondelete
        if onupdate and "onupdate" not in options:
            options["onupdate"] = onupdate
    return fks
