"""Adopting the databases the Rust core wrote (issue 3, item 7; fixtures/README.md).

Each fixture is copied twice: one copy is opened through tinycortex_sa, the
other is read with plain ``sqlite3`` as the "before" picture.  Every table the
README does not expect to change must be unchanged value for value (same
checksum over the original columns); the tables the data migrations touch
must hold exactly the expected rows.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from helpers import (
    TABLES,
    alembic_revision,
    checksum,
    columns_of,
    copy_fixture,
    db_file,
    open_workspace,
    raw,
    table_checksums,
    user_version,
)

from tinycortex_sa.schema.version import HEAD

SIGNATURE = "nomic-embed-text@768"
RETIRED_TREES = "SELECT id FROM mem_tree_trees WHERE kind IN ('global', 'topic')"
RETIRED_SUMMARIES = "SELECT id FROM mem_tree_summaries WHERE tree_kind IN ('global', 'topic')"

#: What migration 2 keeps of each table it touches, as a WHERE clause on the "before" copy.
KEPT_BY_PURGE = {
    "mem_tree_summary_embeddings": f"summary_id NOT IN ({RETIRED_SUMMARIES})",
    "mem_tree_summary_reembed_skipped": f"summary_id NOT IN ({RETIRED_SUMMARIES})",
    "mem_tree_entity_index": f"tree_id IS NULL OR tree_id NOT IN ({RETIRED_TREES})",
    "mem_tree_summaries": "tree_kind NOT IN ('global', 'topic')",
    "mem_tree_buffers": f"tree_id NOT IN ({RETIRED_TREES})",
    "mem_tree_trees": "kind NOT IN ('global', 'topic')",
    "mem_tree_jobs": "kind NOT IN ('topic_route', 'digest_daily')",
}


def _original_columns(conn: sqlite3.Connection) -> dict[str, list[str]]:
    return {table: columns_of(conn, table) for table in TABLES}


def _two_copies(name: str, tmp_path: Path) -> tuple[Path, Path]:
    return copy_fixture(name, tmp_path / "adopted"), copy_fixture(name, tmp_path / "before")


def _assert_adopted(ws: Path) -> None:
    assert alembic_revision(ws) == HEAD
    assert user_version(ws) == 2
    assert not (db_file(ws).parent / "chunks.db-wal").exists()
    with raw(ws) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal"
        assert "ask" in columns_of(conn, "mem_tree_trees")
        assert conn.execute("SELECT count(*) FROM mem_tree_trees WHERE ask IS NOT NULL").fetchone()[0] == 0
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.parametrize("name", ["rust-0.1.1-empty", "rust-0.1.1-populated", "rust-legacy-wal"])
def test_rust_database_is_adopted_without_touching_data(name: str, tmp_path: Path) -> None:
    ws, before = _two_copies(name, tmp_path)
    with raw(before) as conn:
        columns = _original_columns(conn)
        expected = table_checksums(conn, columns)
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    wal = db_file(ws).parent / "chunks.db-wal"
    assert wal.exists() == (name == "rust-legacy-wal")

    open_workspace(ws)

    _assert_adopted(ws)
    with raw(ws) as conn:
        assert table_checksums(conn, columns) == expected
    if name == "rust-0.1.1-empty":
        assert set(counts.values()) == {0}
    else:
        assert all(counts[t] > 0 for t in ("mem_tree_chunks", "mem_tree_chunk_embeddings", "mcp_writes"))
    if name == "rust-legacy-wal":  # every committed row was in the -wal: it was folded in, not dropped
        assert counts["mem_tree_chunks"] == 40
        with raw(ws) as conn:
            assert conn.execute("SELECT count(*) FROM mem_tree_chunks").fetchone()[0] == 40


def test_legacy_database_runs_both_data_migrations(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ws, before = _two_copies("rust-legacy-v0", tmp_path)
    with raw(before) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
        columns = _original_columns(conn)
        expected = table_checksums(conn, columns)
        kept: dict[str, str] = {}
        for table, where in KEPT_BY_PURGE.items():
            cols = ", ".join(f"{c}, typeof({c})" for c in columns[table])
            rows = conn.execute(f"SELECT {cols} FROM {table} WHERE {where}").fetchall()
            kept[table] = checksum(sorted(rows, key=repr))
        legacy = {
            table: dict(
                conn.execute(f"SELECT id, embedding FROM {table} WHERE length(embedding) = 3072").fetchall()
            )
            for table in ("mem_tree_chunks", "mem_tree_summaries")
        }
        mismatched = conn.execute(
            "SELECT count(*) FROM mem_tree_chunks WHERE embedding IS NOT NULL AND length(embedding) != 3072"
        ).fetchone()[0]
        surviving_summaries = {
            row[0]
            for row in conn.execute(
                "SELECT id FROM mem_tree_summaries WHERE tree_kind NOT IN ('global', 'topic')"
            )
        }
        old_sidecar = set(conn.execute("SELECT summary_id, model_signature FROM mem_tree_summary_embeddings"))
    assert mismatched > 0 and legacy["mem_tree_chunks"] and legacy["mem_tree_summaries"]

    with caplog.at_level(logging.INFO, logger="tinycortex_sa"):
        open_workspace(ws)

    _assert_adopted(ws)
    with raw(ws) as conn:
        after = table_checksums(conn, columns)
        for table in set(TABLES) - set(KEPT_BY_PURGE) - {"mem_tree_chunk_embeddings"}:
            assert after[table] == expected[table], table  # untouched, value for value
        for table in set(KEPT_BY_PURGE) - {"mem_tree_summary_embeddings"}:
            assert after[table] == kept[table], table  # exactly the purged rows are gone
        chunk_vectors = dict(
            conn.execute(
                "SELECT chunk_id, vector FROM mem_tree_chunk_embeddings "
                "WHERE model_signature = ? AND dim = 768",
                (SIGNATURE,),
            ).fetchall()
        )
        summary_vectors = dict(
            conn.execute(
                "SELECT summary_id, vector FROM mem_tree_summary_embeddings WHERE model_signature = ?",
                (SIGNATURE,),
            ).fetchall()
        )
        other_sidecar = set(
            conn.execute(
                "SELECT summary_id, model_signature FROM mem_tree_summary_embeddings "
                "WHERE model_signature != ?",
                (SIGNATURE,),
            )
        )
        assert {k[0] for k in conn.execute("SELECT DISTINCT kind FROM mem_tree_trees")} == {"source"}
    assert chunk_vectors == legacy["mem_tree_chunks"]  # 768-dim blobs copied byte for byte, no others
    assert summary_vectors == {
        sid: blob for sid, blob in legacy["mem_tree_summaries"].items() if sid in surviving_summaries
    }
    assert other_sidecar == {(s, m) for s, m in old_sidecar if s in surviving_summaries and m != SIGNATURE}

    folders = sorted(p.name for p in (ws / "memory_tree" / "content" / "wiki" / "summaries").iterdir())
    assert folders == ["source-slack-C000", "topical-notes"]
    assert (ws / "memory_tree/content/wiki/summaries/topical-notes/index.md").is_file()
    assert any(f"skipped {mismatched} " in r.getMessage() for r in caplog.records)
