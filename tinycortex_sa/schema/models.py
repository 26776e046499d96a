"""Typed ORM models of the chunk DB: one per table, every column under its own name.

They describe the schema that the Alembic revisions build (``alembic check``
and ``tests/test_pytest_alembic.py`` keep the two from drifting).  Vectors are
tuples of floats stored as little-endian float32 BLOBs; ``*_json`` columns are
lists or dicts stored as compact JSON; both are what the Rust core reads.  The
tree models live in :mod:`tinycortex_sa.schema.tree_models` and are re-exported here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ForeignKey, Index, event, text
from sqlalchemy.orm import Mapped, foreign, mapped_column, relationship

from .base import CASCADE, DICT, LIST, Base, check_vector_dim
from .base import default as _default
from .tree_models import Buffer, Summary, SummaryEmbedding, SummaryReembedSkipped, Tree
from .types import Vector

__all__ = [
    "Base",
    "Buffer",
    "Chunk",
    "ChunkEmbedding",
    "ChunkReembedSkipped",
    "EntityEdge",
    "EntityHotness",
    "EntityIndex",
    "IngestedSource",
    "Job",
    "McpWrite",
    "Score",
    "Summary",
    "SummaryEmbedding",
    "SummaryReembedSkipped",
    "Tree",
]


class Chunk(Base):
    """``mem_tree_chunks``: one chunk of ingested source text."""

    __tablename__ = "mem_tree_chunks"
    __table_args__ = (
        Index("idx_mem_tree_chunks_source", "source_kind", "source_id"),
        Index("idx_mem_tree_chunks_timestamp", "timestamp_ms"),
        Index("idx_mem_tree_chunks_owner", "owner"),
        Index("idx_mem_tree_chunks_source_seq", "source_kind", "source_id", "seq_in_source"),
        Index("idx_mem_tree_chunks_lifecycle", "lifecycle_status"),
    )

    id: Mapped[str] = mapped_column(primary_key=True, nullable=True)
    source_kind: Mapped[str]
    source_id: Mapped[str]
    path_scope: Mapped[str | None]
    source_ref: Mapped[str | None]
    owner: Mapped[str]
    timestamp_ms: Mapped[int]
    time_range_start_ms: Mapped[int]
    time_range_end_ms: Mapped[int]
    tags_json: Mapped[list[Any]] = mapped_column(LIST, default=list, server_default=_default("'[]'"))
    content: Mapped[str]
    token_count: Mapped[int]
    seq_in_source: Mapped[int]
    created_at_ms: Mapped[int]
    embedding: Mapped[bytes | None] = mapped_column(deferred=True)
    """Legacy raw vector (pre-sidecar); kept as bytes and loaded only on access."""
    parent_summary_id: Mapped[str | None]
    lifecycle_status: Mapped[str] = mapped_column(default="admitted", server_default=_default("'admitted'"))
    content_path: Mapped[str | None]
    content_sha256: Mapped[str | None]
    raw_refs_json: Mapped[list[Any] | None] = mapped_column(LIST)

    embeddings: Mapped[list[ChunkEmbedding]] = relationship(
        back_populates="chunk", cascade=CASCADE, passive_deletes=True
    )
    reembed_skipped: Mapped[list[ChunkReembedSkipped]] = relationship(
        back_populates="chunk", cascade=CASCADE, passive_deletes=True
    )
    score: Mapped[Score | None] = relationship(
        primaryjoin=lambda: Chunk.id == foreign(Score.chunk_id), viewonly=True, uselist=False
    )
    """The chunk's score row (no foreign key in the schema, so read-only)."""


class ChunkEmbedding(Base):
    """``mem_tree_chunk_embeddings``: a chunk's vector under one model signature."""

    __tablename__ = "mem_tree_chunk_embeddings"
    __table_args__ = (Index("idx_mem_tree_chunk_embeddings_model", "model_signature"),)

    chunk_id: Mapped[str] = mapped_column(
        ForeignKey("mem_tree_chunks.id", ondelete="CASCADE"), primary_key=True
    )
    model_signature: Mapped[str] = mapped_column(primary_key=True)
    vector: Mapped[Sequence[float]] = mapped_column(Vector())
    dim: Mapped[int]
    created_at: Mapped[float] = mapped_column(default=time.time)

    chunk: Mapped[Chunk] = relationship(back_populates="embeddings")


class ChunkReembedSkipped(Base):
    """``mem_tree_chunk_reembed_skipped``: a chunk that could not be embedded under a signature."""

    __tablename__ = "mem_tree_chunk_reembed_skipped"
    __table_args__ = (Index("idx_mem_tree_chunk_reembed_skipped_model", "model_signature"),)

    chunk_id: Mapped[str] = mapped_column(
        ForeignKey("mem_tree_chunks.id", ondelete="CASCADE"), primary_key=True
    )
    model_signature: Mapped[str] = mapped_column(primary_key=True)
    reason: Mapped[str]
    skipped_at_ms: Mapped[int]

    chunk: Mapped[Chunk] = relationship(back_populates="reembed_skipped")


class Score(Base):
    """``mem_tree_score``: the admission score of a chunk and its signals."""

    __tablename__ = "mem_tree_score"
    __table_args__ = (
        Index("idx_mem_tree_score_total", "total"),
        Index("idx_mem_tree_score_dropped", "dropped"),
    )

    chunk_id: Mapped[str] = mapped_column(primary_key=True, nullable=True)
    total: Mapped[float]
    token_count_signal: Mapped[float]
    unique_words_signal: Mapped[float]
    metadata_weight: Mapped[float]
    source_weight: Mapped[float]
    interaction_weight: Mapped[float]
    entity_density: Mapped[float]
    dropped: Mapped[int] = mapped_column(default=0, server_default=_default("0"))
    reason: Mapped[str | None]
    computed_at_ms: Mapped[int]
    llm_importance: Mapped[float | None]
    llm_importance_reason: Mapped[str | None]


class EntityIndex(Base):
    """``mem_tree_entity_index``: an entity mentioned by a chunk or summary node."""

    __tablename__ = "mem_tree_entity_index"
    __table_args__ = (
        Index("idx_mem_tree_entity_index_entity", "entity_id"),
        Index("idx_mem_tree_entity_index_node", "node_id"),
        Index("idx_mem_tree_entity_index_timestamp", "timestamp_ms"),
    )

    entity_id: Mapped[str] = mapped_column(primary_key=True)
    node_id: Mapped[str] = mapped_column(primary_key=True)
    node_kind: Mapped[str]
    entity_kind: Mapped[str]
    surface: Mapped[str]
    score: Mapped[float]
    timestamp_ms: Mapped[int]
    tree_id: Mapped[str | None]
    is_user: Mapped[int] = mapped_column(default=0, server_default=_default("0"))


class EntityEdge(Base):
    """``mem_tree_entity_edges``: co-occurrence weight of two entities."""

    __tablename__ = "mem_tree_entity_edges"
    __table_args__ = (
        Index("idx_mem_tree_entity_edges_a", "entity_a"),
        Index("idx_mem_tree_entity_edges_b", "entity_b"),
    )

    entity_a: Mapped[str] = mapped_column(primary_key=True)
    entity_b: Mapped[str] = mapped_column(primary_key=True)
    weight: Mapped[int] = mapped_column(default=1, server_default=_default("1"))
    updated_ms: Mapped[int]


class EntityHotness(Base):
    """``mem_tree_entity_hotness``: how often and how recently an entity comes up."""

    __tablename__ = "mem_tree_entity_hotness"
    __table_args__ = (Index("idx_mem_tree_entity_hotness_score", "last_hotness"),)

    entity_id: Mapped[str] = mapped_column(primary_key=True, nullable=True)
    mention_count_30d: Mapped[int] = mapped_column(default=0, server_default=_default("0"))
    distinct_sources: Mapped[int] = mapped_column(default=0, server_default=_default("0"))
    last_seen_ms: Mapped[int | None]
    query_hits_30d: Mapped[int] = mapped_column(default=0, server_default=_default("0"))
    graph_centrality: Mapped[float | None]
    ingests_since_check: Mapped[int] = mapped_column(default=0, server_default=_default("0"))
    last_hotness: Mapped[float | None]
    last_updated_ms: Mapped[int]


class Job(Base):
    """``mem_tree_jobs``: the background job queue (at most one active job per dedupe key)."""

    __tablename__ = "mem_tree_jobs"
    __table_args__ = (
        Index("idx_mem_tree_jobs_ready", "status", "available_at_ms"),
        Index("idx_mem_tree_jobs_kind", "kind"),
        Index(
            "idx_mem_tree_jobs_dedupe_active",
            "dedupe_key",
            unique=True,
            sqlite_where=text("dedupe_key IS NOT NULL AND status IN ('ready', 'running')"),
            postgresql_where=text("dedupe_key IS NOT NULL AND status IN ('ready', 'running')"),
        ),
    )

    id: Mapped[str] = mapped_column(primary_key=True, nullable=True)
    kind: Mapped[str]
    payload_json: Mapped[dict[str, Any]] = mapped_column(DICT)
    dedupe_key: Mapped[str | None]
    status: Mapped[str] = mapped_column(default="ready", server_default=_default("'ready'"))
    attempts: Mapped[int] = mapped_column(default=0, server_default=_default("0"))
    max_attempts: Mapped[int] = mapped_column(default=5, server_default=_default("5"))
    available_at_ms: Mapped[int]
    locked_until_ms: Mapped[int | None]
    last_error: Mapped[str | None]
    created_at_ms: Mapped[int]
    started_at_ms: Mapped[int | None]
    completed_at_ms: Mapped[int | None]
    failure_reason: Mapped[str | None]
    failure_class: Mapped[str | None]


class IngestedSource(Base):
    """``mem_tree_ingested_sources``: sources already ingested, by kind and id."""

    __tablename__ = "mem_tree_ingested_sources"

    source_kind: Mapped[str] = mapped_column(primary_key=True)
    source_id: Mapped[str] = mapped_column(primary_key=True)
    ingested_at_ms: Mapped[int]


class McpWrite(Base):
    """``mcp_writes``: audit log of writes made through the MCP server."""

    __tablename__ = "mcp_writes"
    __table_args__ = (
        Index("idx_mcp_writes_client", "client_info"),
        Index("idx_mcp_writes_tool", "tool_name"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True, nullable=True)
    timestamp_ms: Mapped[int]
    client_info: Mapped[str]
    tool_name: Mapped[str]
    args_summary: Mapped[str | None]
    resulting_chunk_id: Mapped[str | None]
    success: Mapped[int]
    error_message: Mapped[str | None]


Index("idx_mcp_writes_timestamp", McpWrite.timestamp_ms.desc())


event.listen(ChunkEmbedding, "before_insert", check_vector_dim)
event.listen(ChunkEmbedding, "before_update", check_vector_dim)
