"""Rust data migration 2: purge the retired ``global`` and ``topic`` trees.

Runs only while ``PRAGMA user_version < 2`` and sets it to 2 in the same
transaction.  Deletes, in the contract's order, the summary embeddings and
reembed-skip rows of global/topic summaries, entity-index rows of those trees,
the summaries, the trees' buffers, the trees and the ``topic_route`` /
``digest_daily`` jobs; then, before the marker is set, moves every folder
directly under ``<content root>/wiki/summaries`` named ``global*`` or
``topic-*`` (real directories only, never a symbolic link) aside, into a new
batch folder ``<content root>/wiki/.retired-summaries/0005-<UTC time>-<pid>/``,
and makes the renames durable (:func:`tinycortex_sa.schema.purge.move_aside`).
Nothing is deleted before the commit: once the transaction has committed, the
batch is removed; if it fails, the folders are moved back before the error
propagates, and an open after a crash does whichever of the two the marker
calls for (:func:`tinycortex_sa.schema.purge.settle`).  The end state is the
contract's: rows, folders and marker all purged, or none of them.  Cannot be
downgraded.

Revision ID: 0005_purge_retired_trees
Revises: 0004_legacy_embeddings
Create Date: 2025-11-26
"""

from __future__ import annotations

from alembic import context, op

from tinycortex_sa.errors import IrreversibleMigrationError
from tinycortex_sa.schema import purge
from tinycortex_sa.schema.portable import is_postgresql
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


def upgrade() -> None:
    """Delete the retired rows, move the retired folders aside, then set user_version 2.

    Whoever commits the transaction removes the moved-aside folders after the
    commit (:func:`tinycortex_sa.schema.upgrade.initialise`, ``env.py`` for a
    transaction of its own); otherwise the next open through the library does.
    """
    bind = op.get_bind()
    if is_postgresql(bind):
        return  # a data migration of the Rust core's files: PostgreSQL receives data already migrated
    if int(bind.exec_driver_sql("PRAGMA user_version").scalar() or 0) >= purge.PURGED:
        report("retired trees: user_version >= 2, already purged; nothing to do")
        return
    deleted = sum(bind.exec_driver_sql(statement).rowcount for statement in DELETES)
    content_root = current_data_settings().content_root
    folders = purge.retired_folders(content_root)
    batch = purge.move_aside(content_root, folders)
    if batch is not None:
        context.config.attributes[purge.MOVED_KEY] = batch
    report("retired trees: deleted %d rows and %d summary folders", deleted, len(folders))
    bind.exec_driver_sql("PRAGMA user_version = 2")


def downgrade() -> None:
    """Refuse: the purged trees and folders are gone."""
    raise IrreversibleMigrationError(
        "revision 0005_purge_retired_trees (Rust data migration 2) cannot be downgraded: the "
        "global/topic trees and their folders it removed are gone. Restore a backup taken "
        "before the upgrade instead."
    )
