"""``mem_tree_trees.ask``: the question a "flavoured" tree answers (after Rust 0.1.1).

Nullable TEXT, added only where missing, so a newer Rust core that already
added it is adopted unchanged.

Revision ID: 0003_trees_ask
Revises: 0002_additive_columns
Create Date: 2025-11-26
"""

from __future__ import annotations

from alembic import op

from tinycortex_sa.schema.portable import has_column

revision: str = "0003_trees_ask"
down_revision: str | None = "0002_additive_columns"
branch_labels: str | None = None
depends_on: str | None = None


def _has_ask() -> bool:
    return has_column(op.get_bind(), "mem_tree_trees", "ask")


def upgrade() -> None:
    """Add ``mem_tree_trees.ask TEXT`` unless it is already there."""
    if not _has_ask():
        op.get_bind().exec_driver_sql("ALTER TABLE mem_tree_trees ADD COLUMN ask TEXT")


def downgrade() -> None:
    """Drop ``mem_tree_trees.ask`` (its values are lost)."""
    if _has_ask():
        op.get_bind().exec_driver_sql("ALTER TABLE mem_tree_trees DROP COLUMN ask")
