"""The chunk rows the framework apps and the thread recipes write and read, as an application would."""

from __future__ import annotations

import time
import uuid
from typing import Any

import sqlalchemy as sa

from tinycortex_sa.models import Chunk


def new_chunk(source_id: str, content: str) -> Chunk:
    """A chunk of ``content`` from ``source_id``, with a fresh id, stamped now."""
    now_ms = int(time.time() * 1000)
    return Chunk(
        id=f"chunk-{uuid.uuid4().hex}",
        source_kind="api",
        source_id=source_id,
        owner="api",
        timestamp_ms=now_ms,
        time_range_start_ms=now_ms,
        time_range_end_ms=now_ms,
        tags_json=[],
        content=content,
        token_count=len(content.split()),
        seq_in_source=0,
        created_at_ms=now_ms,
    )


def newest(source_id: str | None, limit: int) -> sa.Select[Any]:
    """The newest ``limit`` chunks, of ``source_id`` if given."""
    query = sa.select(Chunk).order_by(Chunk.created_at_ms.desc(), Chunk.id).limit(limit)
    return query if source_id is None else query.where(Chunk.source_id == source_id)


def as_dict(chunk: Chunk) -> dict[str, Any]:
    """What the API returns for a chunk."""
    return {
        "id": chunk.id,
        "source_id": chunk.source_id,
        "content": chunk.content,
        "created_at_ms": chunk.created_at_ms,
    }
