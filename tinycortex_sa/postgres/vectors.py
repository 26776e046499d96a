"""pgvector on the chunk DB's embedding tables: one HNSW index per model, and the nearest-neighbour query.

Both embedding tables hold every model's vectors in one ``vector`` column of
no fixed dimension, so an index covers one model: a partial HNSW index on
``vector::vector(dim)`` (``halfvec(dim)`` above 2,000 dimensions, pgvector's
limit for ``vector``; no index above 4,000, where searches scan exactly)
``WHERE model_signature = '…' AND dim = …``, with cosine operators.  The
query repeats that cast and predicate (as literals, so that every plan,
generic or not, can use the partial index).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..schema.filters import VECTOR_INDEX_PREFIX
from ..schema.models import Chunk, ChunkEmbedding, Summary, SummaryEmbedding

#: HNSW build parameters (pgvector's defaults).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
#: ``hnsw.ef_search`` for queries: pgvector's default is 40; 100 keeps recall@10 above 0.95 here.
EF_SEARCH = 100
_TABLES = {"mem_tree_chunk_embeddings": "chunk", "mem_tree_summary_embeddings": "summary"}

M = TypeVar("M", Chunk, Summary)


def embedding_model(model: type[Chunk] | type[Summary]) -> Any:
    """The sidecar model holding ``model``'s embeddings."""
    return ChunkEmbedding if model is Chunk else SummaryEmbedding


@dataclass(frozen=True)
class VectorIndex:
    """One HNSW index: its table, model, dimension and name."""

    table: str
    model_signature: str
    dim: int
    name: str


def _kind(dim: int) -> str | None:
    return "vector" if dim <= 2000 else "halfvec" if dim <= 4000 else None


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def index_name(table: str, model_signature: str, dim: int) -> str:
    digest = hashlib.blake2b(model_signature.encode(), digest_size=4).hexdigest()
    return f"{VECTOR_INDEX_PREFIX}{_TABLES[table]}_{digest}_{dim}"


def index_ddl(table: str, model_signature: str, dim: int) -> str | None:
    """The ``CREATE INDEX`` for one model (None: too many dimensions for pgvector's HNSW)."""
    kind = _kind(dim)
    if kind is None:
        return None
    return (
        f"CREATE INDEX IF NOT EXISTS {index_name(table, model_signature, dim)} ON {table} "
        f"USING hnsw ((vector::{kind}({dim})) {kind}_cosine_ops) "
        f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION}) "
        f"WHERE model_signature = {_literal(model_signature)} AND dim = {int(dim)}"
    )


_MODELS = "SELECT DISTINCT model_signature, dim FROM {table}"


def ensure_vector_indexes(raw: Any, say: Callable[[str], None]) -> list[str]:
    """Create the missing index of every (model, dimension) in both tables, on a psycopg connection.

    Returns notes for models pgvector cannot index.  Each index is built in
    a transaction of its own (an interrupted build leaves nothing behind).
    """
    notes = []
    for table in _TABLES:
        models = raw.execute(_MODELS.format(table=table)).fetchall()
        raw.rollback()
        for model_signature, dim in models:
            ddl = index_ddl(table, model_signature, dim)
            if ddl is None:
                notes.append(
                    f"{table}: {model_signature} has {dim} dimensions, more than pgvector's HNSW indexes "
                    "take (4,000): its searches scan every vector of the model"
                )
                continue
            name = index_name(table, model_signature, dim)
            if raw.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is None:
                say(f"{table}: building the HNSW index of {model_signature} ({dim} dimensions)")
                raw.execute("SET LOCAL maintenance_work_mem = '512MB'")
                raw.execute(ddl)
            raw.commit()
    return notes


def ensure_vector_index(connection: sa.Connection, table: str, model_signature: str, dim: int) -> str | None:
    """Create the HNSW index of one model if missing (in the connection's transaction); its name.

    ``table`` is ``mem_tree_chunk_embeddings`` or ``mem_tree_summary_embeddings``.
    :func:`tinycortex_sa.postgres.sync` does this for every model it sends;
    call it for a model written to PostgreSQL by other means.  None when the
    dimension is above pgvector's limit (searches then scan).
    """
    if table not in _TABLES:
        raise ValueError(f"{table!r}: not an embedding table ({', '.join(_TABLES)})")
    ddl = index_ddl(table, model_signature, dim)
    if ddl is None:
        return None
    connection.exec_driver_sql(ddl)
    return index_name(table, model_signature, dim)


def vector_indexes(connection: sa.Connection) -> list[VectorIndex]:
    """The per-model HNSW indexes present in the connection's schema."""
    found = []
    for table in _TABLES:
        for model_signature, dim in connection.exec_driver_sql(_MODELS.format(table=table)):
            name = index_name(table, model_signature, dim)
            if connection.exec_driver_sql("SELECT to_regclass(%(n)s)", {"n": name}).scalar() is not None:
                found.append(VectorIndex(table, model_signature, dim, name))
    return found


def nearest(
    session: Session,
    model: type[M],
    query: Sequence[float],
    k: int,
    model_signature: str,
    where: sa.ColumnElement[bool] | None,
    exact: bool,
) -> list[tuple[M, float]]:
    """:func:`tinycortex_sa.nearest_chunks` on PostgreSQL: pgvector's cosine distance (HNSW unless exact)."""
    from pgvector.sqlalchemy import HALFVEC, VECTOR

    embedding = embedding_model(model)
    owner = embedding.chunk_id if model is Chunk else embedding.summary_id
    dim = len(query)
    kind = _kind(dim) or "vector"
    vtype: Any = HALFVEC(dim) if kind == "halfvec" else VECTOR(dim)
    stored = sa.cast(embedding.vector, vtype)
    distance: sa.ColumnElement[float] = stored.op("<=>", return_type=sa.Float)(
        sa.cast(sa.literal(list(query), VECTOR()), vtype)
    )
    if exact:
        distance = distance + 0.0  # an expression the index does not provide: an exact scan
    literal: sa.BindParameter[str] = sa.bindparam("m", model_signature, literal_execute=True)
    statement = (
        sa.select(model, (1.0 - distance).label("similarity"))
        .join(embedding, owner == model.id)
        .where(embedding.model_signature == literal, embedding.dim == sa.literal(dim, literal_execute=True))
        .order_by(distance)
        .limit(k)
    )
    if where is not None:
        statement = statement.where(where)
    session.execute(sa.text("SELECT set_config('hnsw.ef_search', :v, true)"), {"v": str(max(EF_SEARCH, k))})
    if where is not None:  # pgvector 0.8: keep scanning the index until k rows pass the filter
        session.execute(sa.text("SELECT set_config('hnsw.iterative_scan', 'strict_order', true)"))
    return [(obj, min(1.0, max(-1.0, float(sim)))) for obj, sim in session.execute(statement)]
