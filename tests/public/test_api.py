from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

import tinycortex_sa
from tinycortex_sa.connection import registry


def test_db_path_for() -> None:
    assert tinycortex_sa.db_path_for("/w") == Path("/w/memory_tree/chunks.db")
    assert tinycortex_sa.db_path_for(Path("rel")) == Path("rel/memory_tree/chunks.db")


def test_with_connection_hands_over_the_cached_autocommit_connection(workspace: Path) -> None:
    first = tinycortex_sa.with_connection(workspace, lambda c: c)
    second = tinycortex_sa.with_connection(str(workspace), lambda c: c)
    assert isinstance(first, sqlite3.Connection) and first is second
    assert tinycortex_sa.with_connection(workspace, lambda c: (c.isolation_level, c.in_transaction)) == (
        None,
        False,
    )


def test_with_connection_rolls_back_and_reraises_unchanged(workspace: Path) -> None:
    tinycortex_sa.with_connection(workspace, lambda c: c.execute("CREATE TABLE t(x)"))
    boom = ValueError("boom")

    def write_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (1)")
        raise boom

    with pytest.raises(ValueError) as info:
        tinycortex_sa.with_connection(workspace, write_then_fail)
    assert info.value is boom

    def write_and_forget(conn: sqlite3.Connection) -> int:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (2)")
        return 7

    assert tinycortex_sa.with_connection(workspace, write_and_forget) == 7
    assert tinycortex_sa.with_connection(
        workspace, lambda c: c.execute("SELECT count(*) FROM t").fetchone()
    ) == (0,)


def test_a_connection_closed_by_the_caller_is_replaced(workspace: Path) -> None:
    first = tinycortex_sa.with_connection(workspace, lambda c: c)
    tinycortex_sa.with_connection(workspace, lambda c: c.close())
    second = tinycortex_sa.with_connection(workspace, lambda c: c)
    assert second is not first
    assert tinycortex_sa.with_connection(workspace, lambda c: c.execute("SELECT 1").fetchone()) == (1,)


def test_invalidate_reopens_and_resets(workspace: Path) -> None:
    first = tinycortex_sa.with_connection(workspace, lambda c: c, busy_timeout=1000)
    handle = registry.existing_handle(tinycortex_sa.db_path_for(workspace))
    assert handle is not None and handle.opens == 1
    with pytest.raises(tinycortex_sa.OptionConflictError, match="busy_timeout"):
        tinycortex_sa.with_connection(workspace, lambda c: c, busy_timeout=2000)
    tinycortex_sa.invalidate(workspace)
    with pytest.raises(sqlite3.ProgrammingError):
        first.execute("SELECT 1")  # closed
    assert tinycortex_sa.with_connection(
        workspace, lambda c: c.execute("PRAGMA busy_timeout").fetchone(), busy_timeout=2000
    ) == (2000,)
    assert handle.opens == 2
    tinycortex_sa.invalidate(workspace / "elsewhere")  # nothing cached there: a no-op


def test_breaker_state_is_readable(workspace: Path) -> None:
    assert tinycortex_sa.breaker_state(workspace).state == "closed"
    blocked = workspace / "file"
    blocked.write_text("a file where the workspace should be a directory")
    for _ in range(3):
        with pytest.raises(tinycortex_sa.OpenError, match="directory"):
            tinycortex_sa.with_connection(blocked, lambda c: None)
    state = tinycortex_sa.breaker_state(blocked)
    assert (state.state, state.failures) == ("open", 3)
    with pytest.raises(tinycortex_sa.CircuitOpenError):
        tinycortex_sa.with_connection(blocked, lambda c: None)
    assert blocked.read_text().startswith("a file")


def test_every_library_error_is_a_tinycortex_error() -> None:
    for name in tinycortex_sa.__all__:
        obj = getattr(tinycortex_sa, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, tinycortex_sa.TinyCortexError), name


#: The public names of ``tinycortex_sa``: a change here is a change of the public API.
PUBLIC = {
    "BackupError", "BackupResult", "backup",
    "NonFiniteVectorError", "QueryDimensionError", "QueryVectorError", "SearchUnavailableError",
    "VectorDimensionError", "ZeroVectorError", "nearest_chunks", "nearest_summaries",
    "BreakerState", "CheckoutError", "CheckoutTimeoutError", "CircuitOpenError", "CorruptDatabaseError",
    "DatabaseBusyError", "DatabaseMovedError", "DatabaseNotFoundError", "DiskFullError",
    "ForeignDatabaseError",
    "ForkedInUseError",
    "IrreversibleMigrationError", "JournalModeBusyError", "NestedCheckoutError", "NotAFileError", "OpenError",
    "OptionConflictError", "OptionError", "Options", "PragmaError", "ReadOnlyError", "SchemaBehindError",
    "SchemaDamagedError", "SchemaError",
    "StatementBusyError", "StatementDiskFullError", "StatementMovedError", "TinyCortexError",
    "UnknownRevisionError", "UpgradeResult", "upgrade", "breaker_state", "create_async_engine",
    "create_engine", "db_path_for",
    "exclude_chunk_db_objects", "include_chunk_db_objects",
    "invalidate", "with_connection",
    "PostgresUnavailableError", "SyncError", "sync",
}  # fmt: skip


def test_the_public_names_are_pinned() -> None:
    assert set(tinycortex_sa.__all__) == PUBLIC
    assert all(hasattr(tinycortex_sa, name) for name in PUBLIC)


def test_the_documented_import_paths_keep_working() -> None:
    from tinycortex_sa.models import Base, Chunk  # the models' public path (docs/schema.md)

    assert Chunk.__table__ is Base.metadata.tables["mem_tree_chunks"]
    assert sa.create_engine("sqlite+tinycortex:///x/chunks.db").dialect.driver == "tinycortex"
