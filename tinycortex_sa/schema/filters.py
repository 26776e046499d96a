"""Alembic ``include_object`` filters for a file that holds the chunk DB beside other objects.

An application may keep its own tables in the chunk DB file, with its own
Alembic environment (its own version table), and the current Rust core adds
its key-value and entity-index stores (``kv_global``, ``kv_namespace`` and
three indexes).  Each autogenerate then sees the other's objects as
unknown and proposes to drop them.  Pass these as ``include_object``:

* :func:`include_chunk_db_objects` in the chunk DB's own environment (the
  packaged ``env.py`` does): only the chunk DB's tables and what belongs to
  them; the Rust core's store objects and everything else are left out;
* :func:`exclude_chunk_db_objects` in an application's environment: the
  chunk DB's objects, the Rust core's and the chunk DB's ``alembic_version``
  are left out, so the application's ``alembic check`` and autogenerate see
  its own objects only.
"""

from __future__ import annotations

from typing import Any

from .version import CHUNK_TABLES, RUST_STORE_INDEXES, RUST_STORE_TABLES

#: The chunk DB's own version table (an application's environment uses another name).
CHUNK_DB_VERSION_TABLE = "alembic_version"
#: On PostgreSQL, the per-model HNSW indexes (made for the models found, not by a revision) start so.
VECTOR_INDEX_PREFIX = "tcsa_hnsw_"


def _table_name(obj: Any, name: str | None, type_: str) -> str | None:
    if type_ == "table":
        return name
    table = getattr(obj, "table", None)
    return getattr(table, "name", None)


def _is_rust_store(obj: Any, name: str | None, type_: str) -> bool:
    if (
        type_ == "index"
        and name is not None
        and (name in RUST_STORE_INDEXES or name.startswith(VECTOR_INDEX_PREFIX))
    ):
        return True
    return _table_name(obj, name, type_) in RUST_STORE_TABLES


def include_chunk_db_objects(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """``include_object`` for the chunk DB's environment: its own tables and their parts only."""
    if _is_rust_store(obj, name, type_):
        return False
    return _table_name(obj, name, type_) in CHUNK_TABLES


def exclude_chunk_db_objects(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """``include_object`` for an application's environment: all but the chunk DB's and the Rust core's."""
    if _is_rust_store(obj, name, type_):
        return False
    table = _table_name(obj, name, type_)
    return table not in CHUNK_TABLES and table != CHUNK_DB_VERSION_TABLE
