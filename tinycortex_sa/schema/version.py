"""The Alembic revisions this version of tinycortex_sa knows, as plain constants.

Kept free of imports so the open fast path can compare a database's
``alembic_version`` with :data:`HEAD` without loading Alembic or the revision
files.  ``tests/test_migrations.py`` checks these against the script directory.
"""

from __future__ import annotations

#: Every revision id, oldest first (one linear history, no branches).
REVISIONS: tuple[str, ...] = (
    "0001_base_schema",
    "0002_additive_columns",
    "0003_trees_ask",
    "0004_legacy_embeddings",
    "0005_purge_retired_trees",
)

#: The revision a database is at once it is fully up to date.
HEAD: str = REVISIONS[-1]

#: ``PRAGMA user_version`` after both Rust data migrations have run.
USER_VERSION: int = 2
