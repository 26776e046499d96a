"""A database created by tinycortex_sa is indistinguishable from the Rust core's (issue 3, item 6).

Compared through ``sqlite_master`` (character for character), ``PRAGMA
table_info``, ``index_list``, ``index_info``/``index_xinfo`` and
``foreign_key_list`` against a copy of ``fixtures/rust-0.1.1-empty``: the only
differences allowed are ``mem_tree_trees.ask`` and the ``alembic_version`` table.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from helpers import TABLES, copy_fixture, open_workspace, raw, schema_snapshot

from tinycortex_sa.models import Base

ASK_COLUMN = (8, "ask", "TEXT", 0, None, 0)
ALEMBIC_OBJECTS = {
    (
        "table",
        "alembic_version",
        "alembic_version",
        "CREATE TABLE alembic_version (\n\tversion_num VARCHAR(32) NOT NULL, \n\t"
        "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)\n)",
    ),
    ("index", "sqlite_autoindex_alembic_version_1", "alembic_version", None),
}


@pytest.fixture
def reference(tmp_path: Path) -> dict[str, Any]:
    """The Rust core's schema, plus what tinycortex_sa is expected to add on top."""
    ws = copy_fixture("rust-0.1.1-empty", tmp_path / "reference")
    with raw(ws) as conn:
        snapshot = schema_snapshot(conn)
    trees = snapshot["tables"]["mem_tree_trees"]
    trees["columns"] = [*trees["columns"], ASK_COLUMN]
    master = []
    for kind, name, table, sql in snapshot["master"]:
        if name == "mem_tree_trees":
            assert sql.endswith("\n)")
            sql = sql[: -len(")")] + ", ask TEXT)"
        master.append((kind, name, table, sql))
    snapshot["master"] = sorted(master + list(ALEMBIC_OBJECTS), key=repr)
    snapshot["tables"]["alembic_version"] = "ignored"
    return snapshot


def _comparable(snapshot: dict[str, Any]) -> dict[str, Any]:
    result = dict(snapshot)
    result["master"] = sorted(snapshot["master"], key=repr)
    result["tables"] = {**snapshot["tables"], "alembic_version": "ignored"}
    return result


def test_reference_has_the_contract_tables(reference: dict[str, Any]) -> None:
    assert set(reference["tables"]) == {*TABLES, "alembic_version"}
    jobs = reference["tables"]["mem_tree_jobs"]["indexes"]
    assert jobs["idx_mem_tree_jobs_dedupe_active"][:3] == (1, "c", 1)  # unique and partial


def test_new_workspace_matches_the_rust_core(workspace: Path, reference: dict[str, Any]) -> None:
    open_workspace(workspace)
    with raw(workspace) as conn:
        ours = _comparable(schema_snapshot(conn))
    for table in TABLES:
        assert ours["tables"][table] == reference["tables"][table], table
    assert ours["master"] == reference["master"]


def test_adopted_rust_database_matches_a_new_one(tmp_path: Path, reference: dict[str, Any]) -> None:
    ws = copy_fixture("rust-0.1.1-empty", tmp_path / "adopted")
    open_workspace(ws)
    with raw(ws) as conn:
        assert _comparable(schema_snapshot(conn)) == reference


def test_models_create_the_same_tables(tmp_path: Path, reference: dict[str, Any]) -> None:
    """``Base.metadata.create_all`` agrees with the revisions on columns, indexes and foreign keys."""
    import sqlalchemy as sa

    path = tmp_path / "models.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    engine.dispose()
    conn = sqlite3.connect(path)
    try:
        built = schema_snapshot(conn)
    finally:
        conn.close()
    for table in TABLES:
        expected = reference["tables"][table]
        got = built["tables"][table]
        assert got["columns"] == expected["columns"], table
        assert got["foreign_keys"] == expected["foreign_keys"], table
        # index names, columns, sort order, uniqueness and partiality (origin differs: pk autoindexes)
        assert {n: (i[0], i[2], i[4]) for n, i in got["indexes"].items()} == {
            n: (i[0], i[2], i[4]) for n, i in expected["indexes"].items()
        }, table
