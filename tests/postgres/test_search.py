"""``nearest_chunks`` on PostgreSQL: pgvector's HNSW index against the exact answer on SQLite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import tinycortex_sa
from tinycortex_sa import postgres
from tinycortex_sa.errors import QueryDimensionError, ZeroVectorError
from tinycortex_sa.models import Chunk

from .common import fill, rust_writer

N, DIM, QUERIES, K = 4000, 48, 25, 10


@pytest.fixture
def synced(tmp_path: Path, pg_url: str, pg_schema: str) -> tuple[Path, np.ndarray]:
    workspace = tmp_path / "ws"
    tinycortex_sa.upgrade(workspace)
    vectors = fill(workspace / "memory_tree" / "chunks.db", N, DIM)
    postgres.sync(workspace, pg_url, schema=pg_schema)
    return workspace, vectors


def _ids(hits: list[tuple[Chunk, float]]) -> list[str]:
    return [chunk.id for chunk, _ in hits]


def test_hnsw_recall_against_exact_sqlite(
    synced: tuple[Path, np.ndarray], pg_url: str, pg_schema: str
) -> None:
    workspace, _ = synced
    sqlite_engine = tinycortex_sa.create_engine(workspace)
    pg_engine = postgres.create_engine(pg_url, schema=pg_schema)
    queries = np.random.default_rng(99).standard_normal((QUERIES, DIM), dtype=np.float32)
    sig = f"test@{DIM}"
    try:
        with Session(sqlite_engine) as lite, Session(pg_engine) as pg:
            (index,) = postgres.vector_indexes(pg.connection())  # the index sync built for the model
            assert (index.table, index.model_signature, index.dim) == ("mem_tree_chunk_embeddings", sig, DIM)
            found = 0
            for q in queries:
                exact = tinycortex_sa.nearest_chunks(lite, q, k=K, model_signature=sig)
                approx = tinycortex_sa.nearest_chunks(pg, q, k=K, model_signature=sig)
                exact_pg = tinycortex_sa.nearest_chunks(pg, q, k=K, model_signature=sig, exact=True)
                assert _ids(exact_pg) == _ids(exact)  # pgvector's exact scan: the same ranking
                for (_, a), (_, b) in zip(exact_pg, exact, strict=True):
                    assert a == pytest.approx(b, abs=1e-5)
                assert [s for _, s in approx] == sorted((s for _, s in approx), reverse=True)
                found += len(set(_ids(approx)) & set(_ids(exact)))
            recall = found / (QUERIES * K)
            assert recall >= 0.95, recall
    finally:
        sqlite_engine.dispose()
        pg_engine.dispose()


def test_the_query_uses_the_hnsw_index(synced: tuple[Path, np.ndarray], pg_url: str, pg_schema: str) -> None:
    pg_engine = postgres.create_engine(pg_url, schema=pg_schema)
    try:
        with Session(pg_engine) as pg:
            plans: list[str] = []

            @sa.event.listens_for(pg_engine, "before_cursor_execute", retval=True)
            def explain(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
                if "<=>" in statement:
                    cursor.execute("EXPLAIN " + statement, parameters)
                    plans.append("\n".join(r[0] for r in cursor.fetchall()))
                return statement, parameters

            tinycortex_sa.nearest_chunks(pg, np.ones(DIM), k=K, model_signature=f"test@{DIM}")
            tinycortex_sa.nearest_chunks(pg, np.ones(DIM), k=K, model_signature=f"test@{DIM}", exact=True)
            assert "tcsa_hnsw_chunk_" in plans[0]
            assert "tcsa_hnsw_chunk_" not in plans[1]
    finally:
        pg_engine.dispose()


def test_where_and_errors_on_postgresql(synced: tuple[Path, np.ndarray], pg_url: str, pg_schema: str) -> None:
    _, vectors = synced
    pg_engine = postgres.create_engine(pg_url, schema=pg_schema)
    sig = f"test@{DIM}"
    try:
        with Session(pg_engine) as pg:
            hits = tinycortex_sa.nearest_chunks(
                pg, vectors[7], k=5, model_signature=sig, where=Chunk.source_id == "src-3"
            )
            assert len(hits) == 5 and all(c.source_id == "src-3" for c, _ in hits)
            top = tinycortex_sa.nearest_chunks(pg, vectors[7], k=1, model_signature=sig)
            assert top[0][0].id == "chunk-000007" and top[0][1] == pytest.approx(1.0, abs=1e-5)
            with pytest.raises(QueryDimensionError):
                tinycortex_sa.nearest_chunks(pg, [1.0, 2.0], model_signature=sig)
            with pytest.raises(ZeroVectorError):
                tinycortex_sa.nearest_chunks(pg, np.zeros(DIM), model_signature=sig)
            assert tinycortex_sa.nearest_chunks(pg, vectors[7], model_signature="other@48") == []
    finally:
        pg_engine.dispose()


def test_wide_models_use_halfvec_and_the_widest_scan(tmp_path: Path, pg_url: str, pg_schema: str) -> None:
    workspace = tmp_path / "ws"
    tinycortex_sa.upgrade(workspace)
    db = workspace / "memory_tree" / "chunks.db"
    wide = fill(db, 60, 3072, model="wide@%d", seed=1)
    with rust_writer(db) as conn:  # a second model, above pgvector's 4,000-dimension index limit
        huge = np.random.default_rng(2).standard_normal((60, 4100), dtype=np.float32)
        conn.executemany(
            "INSERT INTO mem_tree_chunk_embeddings VALUES (?, 'huge@4100', ?, 4100, 1.0)",
            [(f"chunk-{i:06d}", huge[i].tobytes()) for i in range(60)],
        )
    result = postgres.sync(workspace, pg_url, schema=pg_schema)
    assert any("4100 dimensions" in note for note in result.notes)
    pg_engine = postgres.create_engine(pg_url, schema=pg_schema)
    try:
        with pg_engine.connect() as conn:
            (index,) = postgres.vector_indexes(conn)
            definition = conn.exec_driver_sql(
                "SELECT indexdef FROM pg_indexes WHERE indexname = %(n)s", {"n": index.name}
            ).scalar()
        assert index.dim == 3072 and "halfvec(3072)" in str(definition)
        with Session(pg_engine) as pg:
            assert _ids(tinycortex_sa.nearest_chunks(pg, wide[5], k=1, model_signature="wide@3072")) == [
                "chunk-000005"
            ]
            assert _ids(tinycortex_sa.nearest_chunks(pg, huge[9], k=1, model_signature="huge@4100")) == [
                "chunk-000009"
            ]
    finally:
        pg_engine.dispose()
