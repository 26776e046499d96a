"""Models of the summary trees: trees, their summaries, summary sidecars and buffers.

Re-exported by :mod:`tinycortex_sa.models`; import them from there.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ForeignKey, Index, event
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import CASCADE, LIST, Base, check_vector_dim
from .base import default as _default
from .types import Vector


class Tree(Base):
    """``mem_tree_trees``: a summary tree (``source`` kind today; ``ask`` set when flavoured)."""

    __tablename__ = "mem_tree_trees"
    __table_args__ = (
        Index("idx_mem_tree_trees_kind_scope", "kind", "scope", unique=True),
        Index("idx_mem_tree_trees_status", "status"),
    )

    id: Mapped[str] = mapped_column(primary_key=True, nullable=True)
    kind: Mapped[str]
    scope: Mapped[str]
    root_id: Mapped[str | None]
    max_level: Mapped[int] = mapped_column(default=0, server_default=_default("0"))
    status: Mapped[str] = mapped_column(default="active", server_default=_default("'active'"))
    created_at_ms: Mapped[int]
    last_sealed_at_ms: Mapped[int | None]
    ask: Mapped[str | None]

    summaries: Mapped[list[Summary]] = relationship(back_populates="tree", passive_deletes="all")
    """No ON DELETE in the schema: deleting a tree that still has summaries is refused by SQLite."""
    buffers: Mapped[list[Buffer]] = relationship(back_populates="tree", passive_deletes="all")


class Summary(Base):
    """``mem_tree_summaries``: a sealed summary node of a tree."""

    __tablename__ = "mem_tree_summaries"
    __table_args__ = (
        Index("idx_mem_tree_summaries_tree_level", "tree_id", "level"),
        Index("idx_mem_tree_summaries_parent", "parent_id"),
        Index("idx_mem_tree_summaries_sealed_at", "sealed_at_ms"),
        Index("idx_mem_tree_summaries_deleted", "deleted"),
        Index("idx_mem_tree_summaries_doc_version", "tree_id", "doc_id", "version_ms"),
    )

    id: Mapped[str] = mapped_column(primary_key=True, nullable=True)
    tree_id: Mapped[str] = mapped_column(ForeignKey("mem_tree_trees.id"))
    tree_kind: Mapped[str]
    level: Mapped[int]
    parent_id: Mapped[str | None]
    child_ids_json: Mapped[list[Any]] = mapped_column(LIST, default=list, server_default=_default("'[]'"))
    content: Mapped[str]
    token_count: Mapped[int]
    entities_json: Mapped[list[Any]] = mapped_column(LIST, default=list, server_default=_default("'[]'"))
    topics_json: Mapped[list[Any]] = mapped_column(LIST, default=list, server_default=_default("'[]'"))
    time_range_start_ms: Mapped[int]
    time_range_end_ms: Mapped[int]
    score: Mapped[float] = mapped_column(default=0.0, server_default=_default("0.0"))
    sealed_at_ms: Mapped[int]
    deleted: Mapped[int] = mapped_column(default=0, server_default=_default("0"))
    embedding: Mapped[bytes | None] = mapped_column(deferred=True)
    """Legacy raw vector (pre-sidecar); kept as bytes and loaded only on access."""
    content_path: Mapped[str | None]
    content_sha256: Mapped[str | None]
    doc_id: Mapped[str | None]
    version_ms: Mapped[int | None]

    tree: Mapped[Tree] = relationship(back_populates="summaries")
    embeddings: Mapped[list[SummaryEmbedding]] = relationship(
        back_populates="summary", cascade=CASCADE, passive_deletes=True
    )
    reembed_skipped: Mapped[list[SummaryReembedSkipped]] = relationship(
        back_populates="summary", cascade=CASCADE, passive_deletes=True
    )


class SummaryEmbedding(Base):
    """``mem_tree_summary_embeddings``: a summary's vector under one model signature."""

    __tablename__ = "mem_tree_summary_embeddings"
    __table_args__ = (Index("idx_mem_tree_summary_embeddings_model", "model_signature"),)

    summary_id: Mapped[str] = mapped_column(
        ForeignKey("mem_tree_summaries.id", ondelete="CASCADE"), primary_key=True
    )
    model_signature: Mapped[str] = mapped_column(primary_key=True)
    vector: Mapped[Sequence[float]] = mapped_column(Vector())
    dim: Mapped[int]
    created_at: Mapped[float] = mapped_column(default=time.time)

    summary: Mapped[Summary] = relationship(back_populates="embeddings")


class SummaryReembedSkipped(Base):
    """``mem_tree_summary_reembed_skipped``: a summary that could not be embedded under a signature."""

    __tablename__ = "mem_tree_summary_reembed_skipped"
    __table_args__ = (Index("idx_mem_tree_summary_reembed_skipped_model", "model_signature"),)

    summary_id: Mapped[str] = mapped_column(
        ForeignKey("mem_tree_summaries.id", ondelete="CASCADE"), primary_key=True
    )
    model_signature: Mapped[str] = mapped_column(primary_key=True)
    reason: Mapped[str]
    skipped_at_ms: Mapped[int]

    summary: Mapped[Summary] = relationship(back_populates="reembed_skipped")


class Buffer(Base):
    """``mem_tree_buffers``: items waiting to be sealed at one level of a tree."""

    __tablename__ = "mem_tree_buffers"
    __table_args__ = (Index("idx_mem_tree_buffers_oldest", "oldest_at_ms"),)

    tree_id: Mapped[str] = mapped_column(ForeignKey("mem_tree_trees.id"), primary_key=True)
    level: Mapped[int] = mapped_column(primary_key=True)
    item_ids_json: Mapped[list[Any]] = mapped_column(LIST, default=list, server_default=_default("'[]'"))
    token_sum: Mapped[int] = mapped_column(default=0, server_default=_default("0"))
    oldest_at_ms: Mapped[int | None]
    updated_at_ms: Mapped[int]

    tree: Mapped[Tree] = relationship(back_populates="buffers")


event.listen(SummaryEmbedding, "before_insert", check_vector_dim)
event.listen(SummaryEmbedding, "before_update", check_vector_dim)
