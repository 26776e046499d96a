"""``tinycortex_sa.postgres.sync``: full copies of every fixture, incremental syncs, what is held back."""

from __future__ import annotations

import math
import os
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import copy_fixture, db_file
from sqlalchemy.orm import Session

import tinycortex_sa
from tinycortex_sa import postgres
from tinycortex_sa.errors import DatabaseNotFoundError, NotAFileError, OptionError, SyncError
from tinycortex_sa.models import Chunk, ChunkEmbedding

from .common import CHUNK_INSERT, assert_same, chunk_row, file_state, fill, rust_writer
from .conftest import raw_pg

FIXTURES = [
    "rust-0.1.1-empty",
    "rust-0.1.1-populated",
    "rust-head-populated",
    "rust-legacy-v0",
    "rust-oldschema-v0",
    "rust-oldschema-v0.expected",
]


_db = db_file


def _by_table(result: postgres.SyncResult) -> dict[str, postgres.TableSync]:
    return {t.table: t for t in result.tables}


@pytest.mark.parametrize("fixture", FIXTURES)
def test_full_sync_of_a_fixture_is_row_for_row_equal_and_leaves_the_file_alone(
    fixture: str, tmp_path: Path, pg_url: str, pg_schema: str
) -> None:
    workspace = copy_fixture(fixture, tmp_path / "ws")
    before = file_state(_db(workspace))
    result = postgres.sync(workspace, pg_url, schema=pg_schema)
    assert file_state(_db(workspace)) == before  # read only: not a byte, not an mtime changed
    counts = assert_same(_db(workspace), pg_url, pg_schema)
    assert result.sent == sum(counts.values()) and result.deleted == 0 and result.held_back == 0
    assert result.settled
    assert postgres.check(workspace, pg_url, schema=pg_schema).equal
    again = postgres.sync(workspace, pg_url, schema=pg_schema)
    assert (again.sent, again.deleted) == (0, 0)


def test_a_wal_mode_file_is_refused_untouched_then_synced_once_the_library_opened_it(
    tmp_path: Path, pg_url: str, pg_schema: str
) -> None:
    workspace = copy_fixture("rust-legacy-wal", tmp_path / "ws")
    before = file_state(_db(workspace))  # chunks.db, -wal and -shm
    with pytest.raises(SyncError, match=r"WAL mode .*\(tinycortex-sa upgrade "):
        postgres.sync(workspace, pg_url, schema=pg_schema)
    assert file_state(_db(workspace)) == before  # a reader would have rewritten the -shm
    tinycortex_sa.upgrade(workspace)  # checkpoints the -wal and switches to TRUNCATE, as any open does
    postgres.sync(workspace, pg_url, schema=pg_schema)
    assert assert_same(_db(workspace), pg_url, pg_schema)["mem_tree_chunks"] == 40


def test_incremental_sync_after_rust_pattern_writes(tmp_path: Path, pg_url: str, pg_schema: str) -> None:
    workspace = copy_fixture("rust-head-populated", tmp_path / "ws")
    db = _db(workspace)
    postgres.sync(workspace, pg_url, schema=pg_schema)
    with rust_writer(db) as conn:
        ids = [r[0] for r in conn.execute("SELECT chunk_id FROM mem_tree_chunk_embeddings ORDER BY rowid")]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(CHUNK_INSERT, [chunk_row(i, "new") for i in range(3)])  # 3 inserts
        conn.execute(  # an UPDATE that keeps every length: only the digest can tell
            "UPDATE mem_tree_chunks SET lifecycle_status = 'buffered' WHERE id = ? ", (ids[0],)
        )
        conn.execute(  # the Rust core's re-embed: INSERT OR REPLACE, the row gets a new rowid
            "INSERT OR REPLACE INTO mem_tree_chunk_embeddings "
            "VALUES (?, 'nomic-embed-text@768', ?, 768, 2.5)",
            (ids[1], struct.pack("<768f", *([0.25] * 768))),
        )
        conn.execute("DELETE FROM mem_tree_chunks WHERE id = ?", (ids[2],))  # cascades to its sidecars
        conn.execute("UPDATE mem_tree_entity_edges SET weight = weight + 1")
        conn.execute("COMMIT")
    before = file_state(db)
    result = postgres.sync(workspace, pg_url, schema=pg_schema)
    assert file_state(db) == before
    tables = _by_table(result)
    assert (tables["mem_tree_chunks"].sent, tables["mem_tree_chunks"].deleted) == (4, 1)
    assert (tables["mem_tree_chunk_embeddings"].sent, tables["mem_tree_chunk_embeddings"].deleted) == (1, 1)
    edges = tables["mem_tree_entity_edges"]
    assert edges.sent == edges.rows > 0
    assert sum(t.sent for t in result.tables) == 5 + edges.sent  # nothing else was sent
    assert_same(db, pg_url, pg_schema)
    assert postgres.check(workspace, pg_url, schema=pg_schema).equal


def test_incremental_sync_after_orm_writes(tmp_path: Path, pg_url: str, pg_schema: str) -> None:
    workspace = copy_fixture("rust-0.1.1-populated", tmp_path / "ws")
    postgres.sync(workspace, pg_url, schema=pg_schema)
    engine = tinycortex_sa.create_engine(workspace)
    try:
        with Session(engine) as session:
            first, second = session.scalars(sa.select(Chunk).order_by(Chunk.id).limit(2)).all()
            first.content = first.content + " (edited)"
            first.tags_json.append("edited")
            session.delete(second)
            session.add(
                Chunk(
                    id="orm-new", source_kind="chat", source_id="s", owner="me", timestamp_ms=1,
                    time_range_start_ms=1, time_range_end_ms=1, content="new", token_count=1,
                    seq_in_source=0, created_at_ms=1,
                    embeddings=[ChunkEmbedding(model_signature="m@2", vector=(1.0, 2.0), dim=2)],
                )
            )  # fmt: skip
            session.commit()
    finally:
        engine.dispose()
    result = postgres.sync(workspace, pg_url, schema=pg_schema)
    chunks = _by_table(result)["mem_tree_chunks"]
    assert (chunks.sent, chunks.deleted) == (2, 1)
    assert _by_table(result)["mem_tree_chunk_embeddings"].sent == 1
    assert_same(_db(workspace), pg_url, pg_schema)


def test_a_file_not_written_since_a_settled_sync_is_not_scanned(
    tmp_path: Path, pg_url: str, pg_schema: str
) -> None:
    workspace = copy_fixture("rust-head-populated", tmp_path / "ws")
    postgres.sync(workspace, pg_url, schema=pg_schema)
    unchanged = postgres.sync(workspace, pg_url, schema=pg_schema)
    assert all(t.changed_blocks == 0 for t in unchanged.tables)
    with raw_pg(pg_url) as conn:  # type: ignore[attr-defined]
        assert conn.execute(f"SELECT fingerprint IS NOT NULL FROM {pg_schema}.tcsa_sync_source").fetchone()[0]
    # one byte of one value, same length, same size of file: the change counter moves
    with rust_writer(_db(workspace)) as conn:
        conn.execute(
            "UPDATE mem_tree_score SET reason = 'x' WHERE rowid = (SELECT min(rowid) FROM mem_tree_score)"
        )
    result = postgres.sync(workspace, pg_url, schema=pg_schema)
    assert _by_table(result)["mem_tree_score"].sent == 1
    assert_same(_db(workspace), pg_url, pg_schema)


def test_an_orphan_waits_for_its_parent(tmp_path: Path, pg_url: str, pg_schema: str) -> None:
    workspace = tmp_path / "ws"
    tinycortex_sa.upgrade(workspace)
    db = _db(workspace)
    with rust_writer(db, foreign_keys=False) as conn:  # a writer without foreign_keys leaves an orphan
        conn.execute(
            "INSERT INTO mem_tree_chunk_embeddings VALUES ('later', 'm@1', ?, 1, 1.0)", (b"\0\0\x80?",)
        )
    first = postgres.sync(workspace, pg_url, schema=pg_schema)
    assert _by_table(first)["mem_tree_chunk_embeddings"].held_back == 1
    checked = postgres.check(workspace, pg_url, schema=pg_schema)
    embeddings = {t.table: t for t in checked.tables}["mem_tree_chunk_embeddings"]
    assert not checked.equal and embeddings.counts == (1, 0, 0) and "later" in embeddings.missing[0]
    with rust_writer(db) as conn:
        conn.execute(CHUNK_INSERT, ("later", *chunk_row(1)[1:]))
    second = postgres.sync(workspace, pg_url, schema=pg_schema)
    assert _by_table(second)["mem_tree_chunk_embeddings"].sent == 1 and second.held_back == 0
    assert_same(db, pg_url, pg_schema)


def test_values_postgresql_cannot_store_are_held_back_and_said(
    tmp_path: Path, pg_url: str, pg_schema: str
) -> None:
    workspace = tmp_path / "ws"
    tinycortex_sa.upgrade(workspace)
    fill(_db(workspace), 3, 4)
    with rust_writer(_db(workspace)) as conn:
        conn.execute(
            "UPDATE mem_tree_chunk_embeddings SET vector = ? WHERE chunk_id = 'chunk-000000'",
            (struct.pack("<4f", 1.0, math.nan, 0.0, 0.0),),  # pgvector refuses NaN
        )
        conn.execute("UPDATE mem_tree_chunks SET content = ? WHERE id = 'chunk-000001'", ("a\0b",))  # a NUL
    result = postgres.sync(workspace, pg_url, schema=pg_schema)
    tables = _by_table(result)
    assert tables["mem_tree_chunks"].held_back == 1  # the NUL
    # the NaN vector, and chunk-000001's embedding, which waits for its chunk; chunk-000002's goes
    assert (
        tables["mem_tree_chunk_embeddings"].held_back == 2 and tables["mem_tree_chunk_embeddings"].sent == 1
    )
    assert postgres.sync(workspace, pg_url, schema=pg_schema).sent == 0  # stable: not retried in vain
    with rust_writer(_db(workspace)) as conn:  # the writer fixes both rows: they go
        conn.execute("UPDATE mem_tree_chunks SET content = 'ab' WHERE id = 'chunk-000001'")
        conn.execute(
            "UPDATE mem_tree_chunk_embeddings SET vector = ? WHERE chunk_id = 'chunk-000000'",
            (struct.pack("<4f", 1.0, 0.0, 0.0, 0.0),),
        )
    fixed = postgres.sync(workspace, pg_url, schema=pg_schema)
    assert fixed.held_back == 0
    assert_same(_db(workspace), pg_url, pg_schema)


def test_a_schema_holding_another_workspace_is_refused(tmp_path: Path, pg_url: str, pg_schema: str) -> None:
    a, b = (copy_fixture("rust-0.1.1-populated", tmp_path / name) for name in ("a", "b"))
    postgres.sync(a, pg_url, schema=pg_schema)
    with pytest.raises(SyncError, match=r"holds the copy of .*a/memory_tree/chunks.db.*--schema"):
        postgres.sync(b, pg_url, schema=pg_schema)
    moved = tmp_path / "moved"
    a.rename(moved)
    result = postgres.sync(moved, pg_url, schema=pg_schema, adopt=True)  # the same content, moved
    assert (result.sent, result.deleted) == (0, 0)


def test_default_schemas_keep_workspaces_apart(tmp_path: Path, pg_url: str) -> None:
    a = copy_fixture("rust-0.1.1-populated", tmp_path / "x" / "notes")
    b = copy_fixture("rust-head-populated", tmp_path / "y" / "notes")
    results = [postgres.sync(ws, pg_url) for ws in (a, b)]
    try:
        assert results[0].schema != results[1].schema
        for ws, result in zip((a, b), results, strict=True):
            assert result.schema == postgres.schema_for(ws)
            assert_same(_db(ws), pg_url, result.schema)
    finally:
        with raw_pg(pg_url) as conn:  # type: ignore[attr-defined]
            for result in results:
                conn.execute(f"DROP SCHEMA {result.schema} CASCADE")


def test_missing_and_non_regular_files_are_refused_before_anything_opens(
    tmp_path: Path, pg_url: str, pg_schema: str
) -> None:
    with pytest.raises(DatabaseNotFoundError, match="nothing to sync"):
        postgres.sync(tmp_path / "nowhere", pg_url, schema=pg_schema)
    workspace = tmp_path / "fifo"
    (workspace / "memory_tree").mkdir(parents=True)
    os.mkfifo(_db(workspace))  # opening it would block: it must never be opened
    with pytest.raises(NotAFileError, match="not a database file"):
        postgres.sync(workspace, pg_url, schema=pg_schema)
    not_ours = tmp_path / "other"
    (not_ours / "memory_tree").mkdir(parents=True)
    sqlite3.connect(_db(not_ours)).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(SyncError, match="not a TinyCortex chunk DB"):
        postgres.sync(not_ours, pg_url, schema=pg_schema)


def test_command_line_sync_and_check(tmp_path: Path, pg_url: str, pg_schema: str) -> None:
    workspace = copy_fixture("rust-head-populated", tmp_path / "ws")
    cli = [sys.executable, "-m", "tinycortex_sa", "sync", str(workspace), pg_url, "--schema", pg_schema]

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *extra], capture_output=True, text=True, timeout=300)

    done = run()
    assert done.returncode == 0, done.stderr
    assert f"into schema {pg_schema}" in done.stdout and "rows sent" in done.stdout
    check = run("--check")
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip().endswith("equal")
    with rust_writer(_db(workspace)) as conn:
        conn.execute("DELETE FROM mem_tree_jobs WHERE rowid = (SELECT min(rowid) FROM mem_tree_jobs)")
    differs = run("--check")
    assert differs.returncode == 1
    assert "mem_tree_jobs" in differs.stdout and "1 only in PostgreSQL" in differs.stdout
    assert "differ" in differs.stderr
    again = run("--no-progress")
    assert again.returncode == 0 and "1 deleted" in again.stdout
    assert run("--check").returncode == 0


def test_one_sync_per_schema_at_a_time(tmp_path: Path, pg_url: str, pg_schema: str) -> None:
    workspace = copy_fixture("rust-0.1.1-populated", tmp_path / "ws")
    postgres.sync(workspace, pg_url, schema=pg_schema)
    with raw_pg(pg_url) as holder:  # type: ignore[attr-defined]
        holder.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"tcsa_sync:{pg_schema}",))
        started = time.monotonic()
        with pytest.raises(SyncError, match=r"another sync .* is running \(waited 0.5 s\)"):
            postgres.sync(workspace, pg_url, schema=pg_schema, lock_wait=0.5)
        assert 0.4 < time.monotonic() - started < 10
        with pytest.raises(SyncError, match="another sync"):
            postgres.sync(workspace, pg_url, schema=pg_schema, lock_wait=0)  # no wait at all
    assert postgres.sync(workspace, pg_url, schema=pg_schema).sent == 0  # free again


def test_an_engine_is_synced_into_its_own_schema(tmp_path: Path, pg_url: str, pg_schema: str) -> None:
    workspace = copy_fixture("rust-0.1.1-populated", tmp_path / "ws")
    engine = postgres.create_engine(pg_url, schema=pg_schema)
    try:
        assert postgres.sync(workspace, engine).schema == pg_schema
        with pytest.raises(OptionError, match="the engine works in"):
            postgres.sync(workspace, engine, schema="another_one")
    finally:
        engine.dispose()
    assert_same(_db(workspace), pg_url, pg_schema)
