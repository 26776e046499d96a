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

#: The chunk DB's tables, and the objects the Rust core's shared-connection stores add.
CHUNK_TABLES: frozenset[str] = frozenset(
    {
        "mem_tree_chunks",
        "mem_tree_chunk_embeddings",
        "mem_tree_chunk_reembed_skipped",
        "mem_tree_score",
        "mem_tree_entity_index",
        "mem_tree_entity_edges",
        "mem_tree_trees",
        "mem_tree_summaries",
        "mem_tree_summary_embeddings",
        "mem_tree_summary_reembed_skipped",
        "mem_tree_buffers",
        "mem_tree_entity_hotness",
        "mem_tree_jobs",
        "mem_tree_ingested_sources",
        "mcp_writes",
    }
)
RUST_STORE_TABLES: frozenset[str] = frozenset({"kv_global", "kv_namespace"})
RUST_STORE_INDEXES: frozenset[str] = frozenset(
    {"idx_kv_ns", "idx_entity_index_entity", "idx_entity_index_node"}
)

#: ``PRAGMA user_version`` after both Rust data migrations have run.
USER_VERSION: int = 2
