"""Rust data migration 1: legacy ``embedding`` blobs into the sidecar tables.

Runs only while ``PRAGMA user_version < 1`` (a database the Rust core already
migrated is left alone) and sets it to 1 in the same transaction.  Every
non-NULL legacy blob of ``len == 4 * embedding_dim`` bytes is upserted into
``mem_tree_chunk_embeddings`` / ``mem_tree_summary_embeddings`` under
``"{embedding_model}@{embedding_dim}"``; the others are skipped and counted in
a log line.  The legacy columns are kept.  Cannot be downgraded.

Revision ID: 0004_legacy_embeddings
Revises: 0003_trees_ask
Create Date: 2025-11-26
"""

from __future__ import annotations

import time

from alembic import op

from tinycortex_sa.errors import IrreversibleMigrationError
from tinycortex_sa.schema.portable import is_postgresql
from tinycortex_sa.schema.progress import report
from tinycortex_sa.schema.upgrade import current_data_settings

revision: str = "0004_legacy_embeddings"
down_revision: str | None = "0003_trees_ask"
branch_labels: str | None = None
depends_on: str | None = None


#: (legacy table, sidecar table, sidecar key column)
SOURCES: tuple[tuple[str, str, str], ...] = (
    ("mem_tree_chunks", "mem_tree_chunk_embeddings", "chunk_id"),
    ("mem_tree_summaries", "mem_tree_summary_embeddings", "summary_id"),
)

_FITS = "length(CAST(embedding AS BLOB)) = ?"


def upgrade() -> None:
    """Copy the legacy blobs that match the configured dimension, then set user_version 1."""
    bind = op.get_bind()
    if is_postgresql(bind):
        return  # a data migration of the Rust core's files: PostgreSQL receives data already migrated
    if int(bind.exec_driver_sql("PRAGMA user_version").scalar() or 0) >= 1:
        report("legacy embeddings: user_version >= 1, already migrated; nothing to do")
        return
    settings = current_data_settings()
    size = 4 * settings.embedding_dim
    now = time.time()
    for legacy, sidecar, key in SOURCES:
        skipped = bind.exec_driver_sql(
            f"SELECT count(*) FROM {legacy} WHERE embedding IS NOT NULL AND NOT ({_FITS})", (size,)
        ).scalar()
        copied = bind.exec_driver_sql(
            f"INSERT INTO {sidecar} ({key}, model_signature, vector, dim, created_at) "
            f"SELECT id, ?, CAST(embedding AS BLOB), ?, ? FROM {legacy} "
            f"WHERE embedding IS NOT NULL AND {_FITS} "
            f"ON CONFLICT ({key}, model_signature) DO UPDATE SET "
            "vector = excluded.vector, dim = excluded.dim, created_at = excluded.created_at",
            (settings.signature, settings.embedding_dim, now, size),
        ).rowcount
        report(
            "legacy embeddings: %s: copied %d into %s as %s; skipped %d whose size is not "
            "%d float32 values (dimension mismatch)",
            legacy,
            copied,
            sidecar,
            settings.signature,
            skipped,
            settings.embedding_dim,
        )
    bind.exec_driver_sql("PRAGMA user_version = 1")


def downgrade() -> None:
    """Refuse: the sidecar rows cannot be told apart from ones written later."""
    raise IrreversibleMigrationError(
        "revision 0004_legacy_embeddings (Rust data migration 1) cannot be downgraded: the "
        "sidecar embeddings it copied are indistinguishable from later ones. Restore a backup "
        "taken before the upgrade instead."
    )
