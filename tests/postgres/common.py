"""What the PostgreSQL tests share: Rust-pattern writes to a chunk DB, and an independent comparison.

:func:`assert_same` reads both sides with their own drivers and compares
values, not the sync's digests: SQLite's float32 blobs are unpacked with
``struct``, pgvector's vectors cast to ``real[]`` by PostgreSQL.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from tinycortex_sa.models import Base

from .conftest import raw_pg

TABLES = [t for t in Base.metadata.sorted_tables]


@contextmanager
def rust_writer(db_path: Path, foreign_keys: bool = True) -> Iterator[sqlite3.Connection]:
    """A connection as the Rust core opens one: autocommit, busy_timeout, foreign_keys."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
    try:
        yield conn
    finally:
        conn.close()


def chunk_row(i: int, prefix: str = "chunk") -> tuple[Any, ...]:
    """A ``mem_tree_chunks`` row in the Rust core's column order (the 0.1.1 table plus its ALTERs)."""
    return (
        f"{prefix}-{i:06d}",
        "chat",
        f"src-{i // 50}",
        "me",
        1_700_000_000_000 + i,
        1,
        2,
        '["t"]',
        f"chunk {i} " * 5,
        10,
        i % 50,
        1_700_000_000_000,
    )


CHUNK_INSERT = (
    "INSERT INTO mem_tree_chunks (id, source_kind, source_id, owner, timestamp_ms, time_range_start_ms, "
    "time_range_end_ms, tags_json, content, token_count, seq_in_source, created_at_ms) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
EMBEDDING_UPSERT = "INSERT OR REPLACE INTO mem_tree_chunk_embeddings VALUES (?, ?, ?, ?, ?)"


def fill(
    db_path: Path, n: int, dim: int, *, model: str = "test@%d", seed: int = 0, start: int = 0
) -> np.ndarray:
    """``n`` chunks with one embedding each (random, float32) and a score; returns the vectors."""
    vectors = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    sig = model % dim if "%d" in model else model
    with rust_writer(db_path) as conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(CHUNK_INSERT, [chunk_row(start + i) for i in range(n)])
        conn.executemany(
            EMBEDDING_UPSERT,
            [(f"chunk-{start + i:06d}", sig, vectors[i].tobytes(), dim, 1.5) for i in range(n)],
        )
        conn.executemany(
            "INSERT OR REPLACE INTO mem_tree_score (chunk_id, total, token_count_signal, "
            "unique_words_signal, metadata_weight, source_weight, interaction_weight, entity_density, "
            "computed_at_ms) "
            "VALUES (?, ?, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 7)",
            [(f"chunk-{start + i:06d}", i / 7) for i in range(n)],
        )
        conn.execute("COMMIT")
    return vectors


def _sqlite_side(db_path: Path, table: Any) -> set[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        present = {r[1] for r in conn.execute(f"PRAGMA table_info({table.name})")}
        if not present:
            return set()
        names = [c.name for c in table.columns if c.name in present]
        out = set()
        for row in conn.execute(f"SELECT {', '.join(names)} FROM {table.name}"):
            values = list(row)
            for i, name in enumerate(names):
                if name == "vector" and values[i] is not None:
                    values[i] = struct.unpack(f"<{len(values[i]) // 4}f", values[i])
            out.add(tuple(values))
        return out
    finally:
        conn.close()


def _postgres_side(url: str, schema: str, table: Any, names: list[str]) -> set[tuple[Any, ...]]:
    columns = ", ".join(f'"{n}"::real[]' if n == "vector" else f'"{n}"' for n in names)
    with raw_pg(url) as conn:  # type: ignore[attr-defined]
        rows = conn.execute(f"SELECT {columns} FROM {schema}.{table.name}").fetchall()
    out = set()
    for row in rows:
        values = list(row)
        for i, name in enumerate(names):
            if name == "vector" and values[i] is not None:  # float4 as text: back to float32 exactly
                values[i] = tuple(np.array(values[i], dtype=np.float32).tolist())
            elif isinstance(values[i], memoryview):
                values[i] = bytes(values[i])
        out.add(tuple(values))
    return out


def assert_same(db_path: Path, url: str, schema: str) -> dict[str, int]:
    """Every table row for row equal on both sides (the file's own columns); returns the row counts."""
    counts = {}
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        present = {t.name: {r[1] for r in conn.execute(f"PRAGMA table_info({t.name})")} for t in TABLES}
    finally:
        conn.close()
    for table in TABLES:
        left = _sqlite_side(db_path, table)
        names = [c.name for c in table.columns if c.name in present[table.name]]
        right = _postgres_side(url, schema, table, names) if names else set()
        assert left == right, (
            f"{table.name}: {len(left - right)} rows only in SQLite, {len(right - left)} only in PostgreSQL"
        )
        counts[table.name] = len(left)
    return counts


def file_state(db_path: Path) -> dict[str, tuple[str, int]]:
    """The database and its side files: sha256 and mtime (the sync must change neither)."""
    out = {}
    for path in sorted(db_path.parent.glob(db_path.name + "*")):
        st = os.stat(path)
        out[path.name] = (hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mtime_ns)
    return out
