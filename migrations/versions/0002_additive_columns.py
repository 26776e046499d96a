"""Additive columns, in the order the Rust core introduced them.

Each step is the Rust core's own ``ALTER TABLE … ADD COLUMN`` text and is
skipped where the column already exists (databases older than 0.1.1 have some,
all or none of them), so ``sqlite_master`` ends up character for character like
the Rust core's.  The two indexes on the new columns follow their columns.
On PostgreSQL the declarations' types are renamed
(:mod:`tinycortex_sa.schema.portable`).

Revision ID: 0002_additive_columns
Revises: 0001_base_schema
Create Date: 2025-11-26
"""

from __future__ import annotations

from alembic import op

from tinycortex_sa.schema.portable import declaration_for_postgresql, has_column, is_postgresql

revision: str = "0002_additive_columns"
down_revision: str | None = "0001_base_schema"
branch_labels: str | None = None
depends_on: str | None = None

#: (table, column, declaration) adds, or a ``CREATE INDEX`` statement, in contract order.
STEPS: tuple[tuple[str, str, str] | str, ...] = (
    ("mem_tree_chunks", "embedding", "BLOB"),
    ("mem_tree_score", "llm_importance", "REAL"),
    ("mem_tree_score", "llm_importance_reason", "TEXT"),
    ("mem_tree_chunks", "parent_summary_id", "TEXT"),
    ("mem_tree_summaries", "embedding", "BLOB"),
    ("mem_tree_chunks", "lifecycle_status", "TEXT NOT NULL DEFAULT 'admitted'"),
    "CREATE INDEX IF NOT EXISTS idx_mem_tree_chunks_lifecycle ON mem_tree_chunks(lifecycle_status)",
    ("mem_tree_chunks", "path_scope", "TEXT"),
    ("mem_tree_chunks", "content_path", "TEXT"),
    ("mem_tree_chunks", "content_sha256", "TEXT"),
    ("mem_tree_summaries", "content_path", "TEXT"),
    ("mem_tree_summaries", "content_sha256", "TEXT"),
    ("mem_tree_summaries", "doc_id", "TEXT"),
    ("mem_tree_summaries", "version_ms", "INTEGER"),
    "CREATE INDEX IF NOT EXISTS idx_mem_tree_summaries_doc_version "
    "ON mem_tree_summaries(tree_id, doc_id, version_ms)",
    ("mem_tree_chunks", "raw_refs_json", "TEXT"),
    ("mem_tree_entity_index", "is_user", "INTEGER NOT NULL DEFAULT 0"),
    ("mem_tree_jobs", "failure_reason", "TEXT"),
    ("mem_tree_jobs", "failure_class", "TEXT"),
)

#: Columns that revision 0001's CREATE TABLE already has: a downgrade keeps them.
IN_BASE: frozenset[tuple[str, str]] = frozenset(
    {
        ("mem_tree_chunks", "path_scope"),
        ("mem_tree_entity_index", "is_user"),
        ("mem_tree_jobs", "failure_reason"),
        ("mem_tree_jobs", "failure_class"),
    }
)

INDEXES: tuple[str, ...] = ("idx_mem_tree_chunks_lifecycle", "idx_mem_tree_summaries_doc_version")


def upgrade() -> None:
    """Add each missing column and create the two indexes, in contract order."""
    bind = op.get_bind()
    postgresql = is_postgresql(bind)
    for step in STEPS:
        if isinstance(step, str):
            bind.exec_driver_sql(step)
            continue
        table, column, declaration = step
        if postgresql:
            declaration = declaration_for_postgresql(declaration)
        if not has_column(bind, table, column):
            bind.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


def downgrade() -> None:
    """Drop the two indexes and the columns that 0.1.1 added by ALTER TABLE."""
    bind = op.get_bind()
    for index in INDEXES:
        bind.exec_driver_sql(f"DROP INDEX IF EXISTS {index}")
    for step in reversed(STEPS):
        if isinstance(step, str) or (step[0], step[1]) in IN_BASE:
            continue
        table, column, _ = step
        if has_column(bind, table, column):
            bind.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
