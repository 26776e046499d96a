"""Rust data migration 2: purge the retired ``global`` and ``topic`` trees.

Runs only while ``PRAGMA user_version < 2`` and sets it to 2 in the same
transaction.  Deletes, in the contract's order, the summary embeddings and
reembed-skip rows of global/topic summaries, entity-index rows of those trees,
the summaries, the trees' buffers, the trees and the ``topic_route`` /
``digest_daily`` jobs; then, before the marker commits, removes every folder
under ``<content root>/wiki/summaries`` named ``global*`` or ``topic-*``.  Any
failure rolls the rows and the marker back, so the next open retries (folders already
removed stay removed; the retry reaches the same end state).  Cannot be downgraded.

Revision ID: 0005_purge_retired_trees
Revises: 0004_legacy_embeddings
Create Date: 2025-11-26
"""

from __future__ import annotations

import shutil
from pathlib import Path

from alembic import op

from tinycortex_sa.errors import IrreversibleMigrationError
from tinycortex_sa.schema.progress import report
from tinycortex_sa.schema.upgrade import current_data_settings

revision: str = "0005_purge_retired_trees"
down_revision: str | None = "0004_legacy_embeddings"
branch_labels: str | None = None
depends_on: str | None = None


_TREES = "SELECT id FROM mem_tree_trees WHERE kind IN ('global', 'topic')"
_SUMMARIES = "SELECT id FROM mem_tree_summaries WHERE tree_kind IN ('global', 'topic')"

#: The deletes, in the contract's order.
DELETES: tuple[str, ...] = (
    f"DELETE FROM mem_tree_summary_embeddings WHERE summary_id IN ({_SUMMARIES})",
    f"DELETE FROM mem_tree_summary_reembed_skipped WHERE summary_id IN ({_SUMMARIES})",
    f"DELETE FROM mem_tree_entity_index WHERE tree_id IN ({_TREES})",
    "DELETE FROM mem_tree_summaries WHERE tree_kind IN ('global', 'topic')",
    f"DELETE FROM mem_tree_buffers WHERE tree_id IN ({_TREES})",
    "DELETE FROM mem_tree_trees WHERE kind IN ('global', 'topic')",
    "DELETE FROM mem_tree_jobs WHERE kind IN ('topic_route', 'digest_daily')",
)


def retired_folders(content_root: Path) -> list[Path]:
    """Folders directly under ``wiki/summaries`` named ``global*`` or ``topic-*`` (not symlinks)."""
    summaries = content_root / "wiki" / "summaries"
    if not summaries.is_dir():
        return []
    return sorted(
        entry
        for entry in summaries.iterdir()
        if entry.is_dir()
        and not entry.is_symlink()
        and (entry.name.startswith("global") or entry.name.startswith("topic-"))
    )


def upgrade() -> None:
    """Delete the retired rows and folders, then set user_version 2."""
    bind = op.get_bind()
    if int(bind.exec_driver_sql("PRAGMA user_version").scalar() or 0) >= 2:
        report("retired trees: user_version >= 2, already purged; nothing to do")
        return
    deleted = sum(bind.exec_driver_sql(statement).rowcount for statement in DELETES)
    folders = retired_folders(current_data_settings().content_root)
    for folder in folders:
        shutil.rmtree(folder)
    report("retired trees: deleted %d rows and %d summary folders", deleted, len(folders))
    bind.exec_driver_sql("PRAGMA user_version = 2")


def downgrade() -> None:
    """Refuse: the purged trees and folders are gone."""
    raise IrreversibleMigrationError(
        "revision 0005_purge_retired_trees (Rust data migration 2) cannot be downgraded: the "
        "global/topic trees and their folders it removed are gone. Restore a backup taken "
        "before the upgrade instead."
    )
