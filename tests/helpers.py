"""What the tests share: fixture copies, schema snapshots, table checksums, a fake clock.

The fixture copier lives in :mod:`reliability.common` (the reliability scenarios run without
pytest too) and is re-exported here.

Everything reads through plain ``sqlite3`` connections so that what is
compared is what SQLite itself reports, independent of SQLAlchemy.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reliability.common import copy_fixture, fixtures_root  # noqa: F401  (re-exported)

import tinycortex_sa
from tinycortex_sa.connection import registry
from tinycortex_sa.options import Options
from tinycortex_sa.schema import upgrade

FIXTURES = ("rust-0.1.1-empty", "rust-0.1.1-populated", "rust-legacy-v0", "rust-legacy-wal")

TABLES = (
    "mem_tree_chunks",
    "mem_tree_chunk_embeddings",
    "mem_tree_chunk_reembed_skipped",
    "mem_tree_score",
    "mem_tree_entity_index",
    "mem_tree_entity_edges",
    "mem_tree_trees",
    "mem_tree_summaries",
    "mem_tree_summary_embeddings",
    "mem_tree_summary_reembed_skipped",
    "mem_tree_buffers",
    "mem_tree_entity_hotness",
    "mem_tree_jobs",
    "mem_tree_ingested_sources",
    "mcp_writes",
)


def db_file(workspace: Path) -> Path:
    return workspace / "memory_tree" / "chunks.db"


@contextlib.contextmanager
def raw(workspace: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection on the workspace's chunk DB, closed afterwards."""
    conn = sqlite3.connect(db_file(workspace), isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def open_workspace(workspace: Path, **options: Any) -> None:
    """Open the workspace once through tinycortex_sa (runs the automatic upgrade), then close it."""
    engine = tinycortex_sa.create_engine(workspace, **options)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()
        tinycortex_sa.invalidate(workspace)


def upgrade_to(workspace: Path, revision: str) -> None:
    """Run ``alembic upgrade revision`` on the workspace without the automatic upgrade."""
    from alembic import command

    engine = tinycortex_sa.create_engine(workspace)
    try:
        with registry.external_migration(), engine.begin() as connection:
            command.upgrade(upgrade.alembic_config(connection=connection), revision)
    finally:
        engine.dispose()
        tinycortex_sa.invalidate(workspace)


def schema_snapshot(conn: sqlite3.Connection) -> dict[str, Any]:
    """Tables, columns, indexes (with sort order and WHERE) and foreign keys, as SQLite reports them."""
    master = sorted(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))
    tables = [name for kind, name, _, _ in master if kind == "table" and not name.startswith("sqlite_")]
    snapshot: dict[str, Any] = {"master": master, "tables": {}}
    for table in tables:
        indexes = {}
        for _, name, unique, origin, partial in conn.execute(f"PRAGMA index_list({table})"):
            info = conn.execute(f"PRAGMA index_info({name})").fetchall()
            xinfo = conn.execute(f"PRAGMA index_xinfo({name})").fetchall()
            indexes[name] = (unique, origin, partial, info, xinfo)
        snapshot["tables"][table] = {
            "columns": conn.execute(f"PRAGMA table_info({table})").fetchall(),
            "indexes": indexes,
            "foreign_keys": sorted(conn.execute(f"PRAGMA foreign_key_list({table})").fetchall()),
        }
    return snapshot


def columns_of(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def table_rows(
    conn: sqlite3.Connection, table: str, columns: list[str] | None = None
) -> list[tuple[Any, ...]]:
    """Every row of ``table`` (the given columns, default all), sorted, values as SQLite stores them."""
    cols = columns or columns_of(conn, table)
    select = ", ".join(f"{c}, typeof({c})" for c in cols)
    return sorted(conn.execute(f"SELECT {select} FROM {table}").fetchall(), key=repr)


def checksum(rows: list[tuple[Any, ...]]) -> str:
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def table_checksums(conn: sqlite3.Connection, columns: dict[str, list[str]] | None = None) -> dict[str, str]:
    """sha256 of each chunk-DB table's rows (optionally restricted to given columns)."""
    return {t: checksum(table_rows(conn, t, (columns or {}).get(t))) for t in TABLES}


def chunk_ids(path: Path) -> set[str]:
    """The ids in ``mem_tree_chunks`` of the database at ``path``, read by plain sqlite3."""
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT id FROM mem_tree_chunks")}
    finally:
        conn.close()


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def alembic_revision(workspace: Path) -> str | None:
    with raw(workspace) as conn:
        found = upgrade.read_revisions(conn)
    return found[0] if found else None


def user_version(workspace: Path) -> int:
    with raw(workspace) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


class FakeClock:
    """A monotonic clock that moves only when a test sets :attr:`now` (breaker cooldowns, retries)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class InitCounter:
    """Records every schema initialisation the core runs."""

    calls: list[tuple[int, Path]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, conn: sqlite3.Connection, path: Path, options: Options) -> None:
        with self.lock:
            self.calls.append((threading.get_ident(), path))
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()


_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute(sys.argv[2])
print("held", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def lock_held_elsewhere(path: Path, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
    """Another process holds a transaction on ``path`` (SQLite's locks are per process: one in
    this process would be dropped by any ``close()`` of the file here, as POSIX locks are)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path), begin],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield
    finally:
        proc.communicate("", timeout=30)
