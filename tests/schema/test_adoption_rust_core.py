"""Adopting the workspaces written by the real Rust chunk-DB code (fixtures/README.md, crate HEAD 108b8e0).

``rust-oldschema-v0`` is an older vault; ``rust-oldschema-v0.expected`` is the
same input after one open by the HEAD Rust core.  A copy of the input opened
through tinycortex_sa must match it: ``sqlite_master``, every table's columns (in
order), indexes and foreign keys, ``user_version``, every row with its SQLite
storage types, and the content folders.  The only allowed differences are the
``alembic_version`` table and the ``created_at`` of the sidecar-embedding rows
the migration wrote (the Rust core stores whole milliseconds / 1000; the
contract only asks for "now as float seconds").

``rust-head-populated`` is a workspace the HEAD Rust core wrote and filled
itself: adopting it must add ``alembic_version`` and change nothing else (rows,
schema objects including the KV and entity-index stores' own, content files),
and a second open must not change the file at all.

Every fixture is copied before it is opened; ``.expected`` and "before" copies
are only read.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    TABLES,
    alembic_revision,
    checksum,
    columns_of,
    db_file,
    file_digest,
    open_workspace,
    raw,
    schema_snapshot,
    table_rows,
    user_version,
)
from reliability.common import copy_fixture

from tinycortex_sa.schema.version import HEAD

OLDSCHEMA = "rust-oldschema-v0"
EXPECTED = "rust-oldschema-v0.expected"
HEAD_POPULATED = "rust-head-populated"

ALEMBIC_TABLE = "alembic_version"
SIGNATURE = "nomic-embed-text@768"
LEGACY_BYTES = 4 * 768
"""A legacy ``embedding`` blob the migration copies: 768 little-endian float32 values."""

#: Sidecar-embedding table -> (its key column, the table whose legacy ``embedding`` feeds it).
SIDECARS: dict[str, tuple[str, str]] = {
    "mem_tree_chunk_embeddings": ("chunk_id", "mem_tree_chunks"),
    "mem_tree_summary_embeddings": ("summary_id", "mem_tree_summaries"),
}

#: Row counts the README gives for the ``.expected`` workspace.
EXPECTED_COUNTS: dict[str, int] = {
    "mem_tree_chunk_embeddings": 94,
    "mem_tree_summary_embeddings": 5,
    "mem_tree_trees": 2,
    "mem_tree_summaries": 4,
    "mem_tree_jobs": 9,
    "mem_tree_entity_index": 185,
}

#: Columns the adoption appends to ``rust-oldschema-v0``: connection.rs's 18 additive columns
#: minus the two legacy ``embedding BLOB`` columns the input already has.
APPENDED_COLUMNS: dict[str, list[str]] = {
    "mem_tree_chunks": [
        "parent_summary_id",
        "lifecycle_status",
        "path_scope",
        "content_path",
        "content_sha256",
        "raw_refs_json",
    ],
    "mem_tree_score": ["llm_importance", "llm_importance_reason"],
    "mem_tree_entity_index": ["is_user"],
    "mem_tree_trees": ["ask"],
    "mem_tree_summaries": ["content_path", "content_sha256", "doc_id", "version_ms"],
    "mem_tree_jobs": ["failure_reason", "failure_class"],
}

#: The HEAD KV and entity-index stores' own schema objects (type, name): kept, never "damage".
SHARED_STORE_OBJECTS: set[tuple[str, str]] = {
    ("table", "kv_global"),
    ("table", "kv_namespace"),
    ("index", "idx_kv_ns"),
    ("index", "idx_entity_index_entity"),
    ("index", "idx_entity_index_node"),
}

PLAUSIBLE_EPOCH_SECONDS = 1.6e9
"""September 2020: a ``created_at`` written "now" must be later than this."""

MasterRow = tuple[str, str, str, str | None]


# -- helpers ----------------------------------------------------------------------------------


def _master(conn: sqlite3.Connection) -> list[MasterRow]:
    """``sqlite_master`` (type, name, tbl_name, sql) in rowid order, without ``alembic_version``."""
    return [
        row
        for row in conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY rowid")
        if row[2] != ALEMBIC_TABLE
    ]


def _all_tables(conn: sqlite3.Connection) -> list[str]:
    """Every table in the file (``sqlite_sequence`` and foreign stores included), not ``alembic_version``."""
    return [name for kind, name, _, _ in _master(conn) if kind == "table"]


def _all_rows(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {table: table_rows(conn, table) for table in _all_tables(conn)}


def _content_tree(workspace: Path) -> dict[str, str]:
    """Every entry under ``memory_tree/content``: relative path -> ``"dir"`` or the file's sha256."""
    root = workspace / "memory_tree" / "content"
    return {
        p.relative_to(root).as_posix(): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


def _sidecar_rows(conn: sqlite3.Connection, table: str) -> dict[tuple[str, str], tuple[Any, ...]]:
    """A sidecar table's rows (all columns with their storage types), keyed by (id, model_signature)."""
    key = SIDECARS[table][0]
    cols = columns_of(conn, table)
    out: dict[tuple[str, str], tuple[Any, ...]] = {}
    for row in table_rows(conn, table):
        values = dict(zip(cols, row[::2], strict=True))
        out[(values[key], values["model_signature"])] = row
    return out


def _without(conn: sqlite3.Connection, table: str, column: str) -> list[str]:
    return [c for c in columns_of(conn, table) if c != column]


@dataclass(frozen=True)
class Adoption:
    """``rust-oldschema-v0`` adopted by tinycortex_sa, next to the Rust core's result and the input."""

    adopted: Path
    expected: Path
    before: Path
    opened_from: float
    opened_until: float
    written: dict[str, set[tuple[str, str]]]
    """Per sidecar table: the (id, signature) keys of the rows the Rust migration wrote, found in the data."""


def _written_by_migration(before: Path, expected: Path) -> dict[str, set[tuple[str, str]]]:
    """Sidecar rows of the Rust result that are not in the input unchanged: what its migration wrote."""
    written: dict[str, set[tuple[str, str]]] = {}
    with raw(before) as b, raw(expected) as e:
        for table in SIDECARS:
            original = _sidecar_rows(b, table)
            written[table] = {k for k, row in _sidecar_rows(e, table).items() if original.get(k) != row}
    return written


@pytest.fixture(scope="module")
def oldschema(tmp_path_factory: pytest.TempPathFactory) -> Adoption:
    root = tmp_path_factory.mktemp("oldschema")
    adopted = copy_fixture(OLDSCHEMA, root / "adopted")
    before = copy_fixture(OLDSCHEMA, root / "before")
    expected = copy_fixture(EXPECTED, root / "expected")
    assert user_version(adopted) == 0
    written = _written_by_migration(before, expected)
    opened_from = time.time()
    open_workspace(adopted)
    opened_until = time.time()
    return Adoption(adopted, expected, before, opened_from, opened_until, written)


# -- rust-oldschema-v0 -> rust-oldschema-v0.expected ----------------------------------------


def test_oldschema_is_brought_to_alembic_head(oldschema: Adoption) -> None:
    assert alembic_revision(oldschema.adopted) == HEAD
    assert alembic_revision(oldschema.expected) is None
    with raw(oldschema.adopted) as conn:
        assert conn.execute(f"SELECT version_num FROM {ALEMBIC_TABLE}").fetchall() == [(HEAD,)]
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


def test_oldschema_sqlite_master_matches_rust(oldschema: Adoption) -> None:
    with raw(oldschema.adopted) as a, raw(oldschema.expected) as e:
        adopted, expected = _master(a), _master(e)
    # the same objects, each on the same table ...
    assert sorted(r[:3] for r in adopted) == sorted(r[:3] for r in expected)
    # ... created in the same order, with the very SQL text SQLite stored for the Rust core
    # (including the ", embedding BLOB, ..." tails its ALTER TABLE ADD COLUMNs appended)
    assert [r[1] for r in adopted] == [r[1] for r in expected]
    assert adopted == expected


def test_oldschema_table_structure_matches_rust(oldschema: Adoption) -> None:
    with raw(oldschema.adopted) as a, raw(oldschema.expected) as e:
        adopted, expected = schema_snapshot(a), schema_snapshot(e)
    adopted["tables"].pop(ALEMBIC_TABLE)
    assert sorted(adopted["tables"]) == sorted(expected["tables"])
    assert len(expected["tables"]) == len(TABLES) and set(TABLES) <= set(expected["tables"])
    for table, want in expected["tables"].items():
        got = adopted["tables"][table]
        # PRAGMA table_info: cid, name, type, notnull, dflt_value, pk -- the cid fixes the column order
        assert got["columns"] == want["columns"], table
        assert got["indexes"] == want["indexes"], table
        assert got["foreign_keys"] == want["foreign_keys"], table
    # the additive columns were appended after the CREATE TABLE ones, in connection.rs order
    with raw(oldschema.before) as b, raw(oldschema.adopted) as a:
        for table in TABLES:
            original = columns_of(b, table)
            assert columns_of(a, table)[: len(original)] == original, table
        appended = {t: columns_of(a, t)[len(columns_of(b, t)) :] for t in TABLES}
    assert {t: cols for t, cols in appended.items() if cols} == APPENDED_COLUMNS


def test_oldschema_user_version_matches_rust(oldschema: Adoption) -> None:
    assert user_version(oldschema.before) == 0
    assert user_version(oldschema.adopted) == user_version(oldschema.expected) == 2


def test_oldschema_rows_match_rust(oldschema: Adoption) -> None:
    with raw(oldschema.adopted) as a, raw(oldschema.expected) as e:
        assert _all_tables(a) == _all_tables(e)
        for table, count in EXPECTED_COUNTS.items():
            assert e.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == count, table
        for table in _all_tables(e):
            if table in SIDECARS:
                continue
            assert table_rows(a, table) == table_rows(e, table), table
        for table in SIDECARS:
            # every value but created_at, for every row ...
            cols = _without(e, table, "created_at")
            assert table_rows(a, table, cols) == table_rows(e, table, cols), table
            # ... and the rows the migration did not write, created_at included
            adopted, expected = _sidecar_rows(a, table), _sidecar_rows(e, table)
            assert adopted.keys() == expected.keys(), table
            kept = expected.keys() - oldschema.written[table]
            assert kept, table
            assert {k: adopted[k] for k in kept} == {k: expected[k] for k in kept}, table


def test_oldschema_migration_wrote_the_expected_sidecar_rows(oldschema: Adoption) -> None:
    """What the data says the Rust migration wrote: the 768-dim legacy blobs of the rows that survive."""
    with raw(oldschema.before) as b, raw(oldschema.expected) as e:
        for table, (_, owner) in SIDECARS.items():
            surviving = {row[0] for row in e.execute(f"SELECT id FROM {owner}")}
            legacy = {
                (row[0], SIGNATURE)
                for row in b.execute(
                    f"SELECT id FROM {owner} WHERE length(CAST(embedding AS BLOB)) = ?", (LEGACY_BYTES,)
                )
                if row[0] in surviving
            }
            assert oldschema.written[table] == legacy, table
    assert len(oldschema.written["mem_tree_chunk_embeddings"]) == 93
    assert len(oldschema.written["mem_tree_summary_embeddings"]) == 3


def test_oldschema_sidecar_created_at_is_now(oldschema: Adoption) -> None:
    """The created_at the migration wrote: REAL seconds since the epoch, taken during the open."""
    with raw(oldschema.adopted) as a, raw(oldschema.expected) as e:
        for table, (key, _) in SIDECARS.items():
            for conn, low, high in (
                (a, oldschema.opened_from - 1.0, oldschema.opened_until + 1.0),
                (e, PLAUSIBLE_EPOCH_SECONDS, float("inf")),
            ):
                stamps = {
                    (row[0], row[1]): (row[2], row[3])
                    for row in conn.execute(
                        f"SELECT {key}, model_signature, created_at, typeof(created_at) FROM {table}"
                    )
                }
                for k in oldschema.written[table]:
                    value, storage = stamps[k]
                    assert storage == "real", (table, k, storage)
                    assert value > PLAUSIBLE_EPOCH_SECONDS and low <= value <= high, (table, k, value)


def test_oldschema_content_folders_match_rust(oldschema: Adoption) -> None:
    adopted, expected = _content_tree(oldschema.adopted), _content_tree(oldschema.expected)
    assert adopted == expected  # the same paths, and the kept files byte for byte
    summaries = sorted(
        p.name for p in (oldschema.adopted / "memory_tree" / "content" / "wiki" / "summaries").iterdir()
    )
    assert summaries == ["source-slack-C000", "topical-notes"]
    assert len(_content_tree(oldschema.before)) > len(adopted)


# -- rust-head-populated ----------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    master: list[MasterRow]
    rows: dict[str, list[tuple[Any, ...]]]
    user_version: int
    content: dict[str, str]


def _snapshot(workspace: Path) -> Snapshot:
    with raw(workspace) as conn:
        master = _master(conn)
        rows = _all_rows(conn)
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    return Snapshot(master, rows, version, _content_tree(workspace))


def test_head_populated_is_adopted_unchanged(tmp_path: Path) -> None:
    ws = copy_fixture(HEAD_POPULATED, tmp_path / "adopted")
    before = _snapshot(copy_fixture(HEAD_POPULATED, tmp_path / "before"))
    assert {(t, n) for t, n, _, _ in before.master} >= SHARED_STORE_OBJECTS
    assert alembic_revision(ws) is None
    assert len(before.rows["mem_tree_chunks"]) == 200
    assert len(before.rows["kv_global"]) + len(before.rows["kv_namespace"]) == 5
    assert sum(1 for path in before.content if path.startswith("chunks/") and path.endswith(".md")) > 0

    open_workspace(ws)

    after = _snapshot(ws)
    with raw(ws) as conn:
        added = [
            (t, n, tbl)
            for t, n, tbl, _ in conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master")
            if tbl == ALEMBIC_TABLE
        ]
        assert conn.execute(f"SELECT version_num FROM {ALEMBIC_TABLE}").fetchall() == [(HEAD,)]
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert sorted(added) == [
        ("index", f"sqlite_autoindex_{ALEMBIC_TABLE}_1", ALEMBIC_TABLE),
        ("table", ALEMBIC_TABLE, ALEMBIC_TABLE),
    ]
    assert alembic_revision(ws) == HEAD
    assert after.master == before.master
    assert {(t, n) for t, n, _, _ in after.master} >= SHARED_STORE_OBJECTS
    assert after.rows.keys() == before.rows.keys()
    assert {"kv_global", "kv_namespace", "sqlite_sequence"} <= after.rows.keys()
    for table, rows in before.rows.items():
        assert after.rows[table] == rows, table
    assert after.user_version == before.user_version == 2
    assert after.content == before.content
    assert not (db_file(ws).parent / "chunks.db-wal").exists()


def test_head_populated_second_open_is_a_noop(tmp_path: Path) -> None:
    ws = copy_fixture(HEAD_POPULATED, tmp_path / "ws")
    open_workspace(ws)
    first = _snapshot(ws)
    first_bytes = file_digest(db_file(ws))

    open_workspace(ws)

    second = _snapshot(ws)
    assert alembic_revision(ws) == HEAD
    assert second.master == first.master
    assert {t: checksum(r) for t, r in second.rows.items()} == {t: checksum(r) for t, r in first.rows.items()}
    assert second.user_version == first.user_version == 2
    assert second.content == first.content
    # nothing was written at all: the same bytes, as when the Rust core reopens it
    assert file_digest(db_file(ws)) == first_bytes
