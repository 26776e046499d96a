"""Similarity search (tinycortex_sa.search): exact against numpy, fresh after every kind of change.

The reference is always computed from the file itself, read by a plain sqlite3
connection, in float64.  Changes by another process are made by a subprocess
with plain sqlite3, as the Rust core makes them.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from helpers import copy_fixture, db_file
from sqlalchemy.orm import Session

import tinycortex_sa
from tinycortex_sa import search
from tinycortex_sa.errors import (
    NonFiniteVectorError,
    OptionError,
    QueryDimensionError,
    QueryVectorError,
    SearchUnavailableError,
    TinyCortexError,
    VectorDimensionError,
    ZeroVectorError,
)
from tinycortex_sa.models import Chunk, ChunkEmbedding, Summary
from tinycortex_sa.search import nearest_chunks, nearest_summaries

SIG = "test-model@16"
DIM = 16
CHUNK_COLUMNS = (
    "id, source_kind, source_id, owner, timestamp_ms, time_range_start_ms, time_range_end_ms, "
    "content, token_count, seq_in_source, created_at_ms"
)


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    search.clear_cache()
    yield
    search.clear_cache()


def chunk_row(chunk_id: str, source: str) -> tuple[object, ...]:
    return (chunk_id, "chat", source, "me", 1, 1, 2, f"text of {chunk_id}", 3, 0, 1)


def fill(workspace: Path, n: int, dim: int = DIM, sig: str = SIG, seed: int = 0) -> np.ndarray:
    """``n`` chunks ``c0000``... in sources ``s0``..``s4``, each with a random vector under ``sig``."""
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)

    def write(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            f"INSERT OR IGNORE INTO mem_tree_chunks ({CHUNK_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [chunk_row(f"c{i:04d}", f"s{i % 5}") for i in range(n)],
        )
        conn.executemany(
            "INSERT INTO mem_tree_chunk_embeddings VALUES (?, ?, ?, ?, 1.0)",
            [(f"c{i:04d}", sig, vectors[i].tobytes(), dim) for i in range(n)],
        )
        conn.execute("COMMIT")

    tinycortex_sa.with_connection(workspace, write)
    return vectors


def reference(
    path: Path, query: np.ndarray, sig: str = SIG, table: str = "chunk", where: str = ""
) -> list[tuple[str, float]]:
    """Every row's cosine similarity to ``query`` in float64, best first, read by plain sqlite3."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            f"SELECT e.{table}_id, e.vector FROM mem_tree_{table}_embeddings e "
            f"WHERE e.model_signature = ? {where} ORDER BY e.rowid",
            (sig,),
        ).fetchall()
    finally:
        conn.close()
    q = np.asarray(query, np.float64)
    scored = []
    for row_id, blob in rows:
        v = np.frombuffer(blob, "<f4").astype(np.float64)
        norm = np.linalg.norm(v)
        if np.isfinite(norm) and norm > 0:
            scored.append((row_id, float(v @ q / (norm * np.linalg.norm(q)))))
    return sorted(scored, key=lambda item: -item[1])


def search_ids(engine: sa.Engine, query: object, k: int = 10, **kw: object) -> list[tuple[str, float]]:
    with Session(engine) as session:
        return [(c.id, s) for c, s in nearest_chunks(session, query, k=k, model_signature=SIG, **kw)]


def assert_matches(got: list[tuple[str, float]], want: list[tuple[str, float]], k: int) -> None:
    assert [i for i, _ in got] == [i for i, _ in want[:k]]
    assert np.allclose([s for _, s in got], [s for _, s in want[:k]], atol=1e-5)


@pytest.fixture
def engine(workspace: Path) -> Iterator[sa.Engine]:
    engine = tinycortex_sa.create_engine(workspace)
    yield engine
    engine.dispose()


WRITER = """
import json, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA busy_timeout = 15000")
conn.execute("PRAGMA foreign_keys = " + sys.argv[2])
conn.execute("BEGIN IMMEDIATE")
for sql, params in json.load(sys.stdin):
    conn.execute(sql, [bytes.fromhex(p[1:]) if str(p).startswith("#") else p for p in params])
conn.execute("COMMIT")
"""
Statement = tuple[str, tuple[object, ...]]


def other_process(workspace: Path, statements: list[Statement], foreign_keys: bool = True) -> None:
    """Run ``statements`` in one transaction of a plain sqlite3 connection in another process."""
    encoded = [
        (sql, [f"#{p.hex()}" if isinstance(p, bytes) else p for p in params]) for sql, params in statements
    ]
    subprocess.run(
        [sys.executable, "-c", WRITER, str(db_file(workspace)), "ON" if foreign_keys else "OFF"],
        input=json.dumps(encoded),
        text=True,
        check=True,
        timeout=60,
    )


def random_blob(rng: np.random.Generator, dim: int = DIM) -> bytes:
    return rng.standard_normal(dim).astype(np.float32).tobytes()


INSERT_CHUNK = f"INSERT INTO mem_tree_chunks ({CHUNK_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
INSERT_EMBEDDING = "INSERT INTO mem_tree_chunk_embeddings VALUES (?, ?, ?, ?, ?)"


# -- exactness ----------------------------------------------------------------------------------------


def test_exact_against_numpy(workspace: Path, engine: sa.Engine) -> None:
    fill(workspace, 500)
    rng = np.random.default_rng(1)
    for _ in range(5):
        query = rng.standard_normal(DIM)
        assert_matches(search_ids(engine, query, k=10), reference(db_file(workspace), query), 10)
    query = rng.standard_normal(DIM)
    assert_matches(search_ids(engine, list(query), k=500), reference(db_file(workspace), query), 500)
    assert len(search_ids(engine, query, k=1000)) == 500  # k beyond the rows: every row, ranked


def test_a_stored_vector_finds_itself_first(workspace: Path, engine: sa.Engine) -> None:
    vectors = fill(workspace, 200)
    (first, score), *_ = search_ids(engine, vectors[42] * 3.5, k=3)
    assert first == "c0042" and score == pytest.approx(1.0, abs=1e-6)
    assert all(-1.0 <= s <= 1.0 for _, s in search_ids(engine, -vectors[7], k=200))


def test_where_ranks_only_the_selected_chunks(workspace: Path, engine: sa.Engine) -> None:
    fill(workspace, 500)
    query = np.random.default_rng(2).standard_normal(DIM)
    where = "AND e.chunk_id IN (SELECT id FROM mem_tree_chunks WHERE source_id = 's3')"
    want = reference(db_file(workspace), query, where=where)
    assert len(want) == 100
    assert_matches(search_ids(engine, query, k=7, where=Chunk.source_id == "s3"), want, 7)
    # a large candidate set takes the other path (all scores, then the subset)
    many = Chunk.source_id != "s3"
    want = reference(db_file(workspace), query, where=where.replace("= 's3'", "!= 's3'"))
    assert_matches(search_ids(engine, query, k=20, where=many), want, 20)
    assert search_ids(engine, query, where=Chunk.source_id == "nowhere") == []


def test_models_have_their_own_matrices(workspace: Path, engine: sa.Engine) -> None:
    fill(workspace, 100)
    fill(workspace, 80, dim=8, sig="small@8", seed=5)
    query = np.random.default_rng(3).standard_normal(8)
    with Session(engine) as session:
        got = [(c.id, s) for c, s in nearest_chunks(session, query, k=5, model_signature="small@8")]
        assert nearest_chunks(session, query, model_signature="no-such-model@8") == []
        with pytest.raises(QueryDimensionError, match="has 8 values, the model's vectors have 16"):
            nearest_chunks(session, query, model_signature=SIG)
    assert_matches(got, reference(db_file(workspace), query, sig="small@8"), 5)
    assert {(i.model_signature, i.rows, i.dim) for i in search.cache_info()} == {
        (SIG, 100, DIM),
        ("small@8", 80, 8),
        ("no-such-model@8", 0, None),
    }


def test_summaries(workspace: Path, engine: sa.Engine) -> None:
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((30, DIM)).astype(np.float32)

    def write(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO mem_tree_trees (id, kind, scope, created_at_ms) VALUES ('t', 'source', 's', 1)"
        )
        for i in range(30):
            conn.execute(
                "INSERT INTO mem_tree_summaries (id, tree_id, tree_kind, level, content, token_count, "
                "time_range_start_ms, time_range_end_ms, sealed_at_ms, deleted) VALUES (?, 't', 'source', ?, "
                "'x', 1, 1, 2, 3, ?)",
                (f"sum{i:02d}", i % 3, int(i % 10 == 0)),
            )
            conn.execute(
                "INSERT INTO mem_tree_summary_embeddings VALUES (?, ?, ?, ?, 1.0)",
                (f"sum{i:02d}", SIG, vectors[i].tobytes(), DIM),
            )
        conn.execute("COMMIT")

    tinycortex_sa.with_connection(workspace, write)
    query = rng.standard_normal(DIM)
    path = db_file(workspace)
    with Session(engine) as session:
        got = [(s.id, x) for s, x in nearest_summaries(session, query, k=8, model_signature=SIG)]
        assert all(isinstance(s, Summary) for s, _ in nearest_summaries(session, query, model_signature=SIG))
        live = nearest_summaries(session, query, k=30, model_signature=SIG, where=Summary.deleted == 0)
    assert_matches(got, reference(path, query, table="summary"), 8)
    where = "AND e.summary_id IN (SELECT id FROM mem_tree_summaries WHERE deleted = 0)"
    assert_matches([(s.id, x) for s, x in live], reference(path, query, table="summary", where=where), 30)
    assert len(live) == 27


def test_the_rust_core_fixture(tmp_path: Path) -> None:
    workspace = copy_fixture("rust-head-populated", tmp_path / "ws")
    path = db_file(workspace)
    conn = sqlite3.connect(path)
    try:
        own = conn.execute(
            "SELECT chunk_id, vector FROM mem_tree_chunk_embeddings ORDER BY chunk_id LIMIT 1"
        ).fetchone()
        summary = conn.execute(
            "SELECT summary_id, vector FROM mem_tree_summary_embeddings LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    engine = tinycortex_sa.create_engine(workspace)
    sig = search.DEFAULT_MODEL_SIGNATURE
    try:
        with Session(engine) as session:
            query = np.frombuffer(own[1], "<f4")
            chunks = nearest_chunks(session, query, k=100)
            summaries = nearest_summaries(session, np.frombuffer(summary[1], "<f4"), k=100)
            slack = nearest_chunks(session, query, k=100, where=Chunk.source_id.like("slack:%"))
            with pytest.raises(QueryDimensionError):
                nearest_chunks(session, query[:384])
    finally:
        engine.dispose()
    assert len(chunks) == 67 and chunks[0][0].id == own[0] and chunks[0][1] == pytest.approx(1.0, abs=1e-6)
    assert_matches([(c.id, s) for c, s in chunks], reference(path, query, sig=sig), 67)
    assert len(summaries) == 6 and summaries[0][0].id == summary[0]
    where = "AND e.chunk_id IN (SELECT id FROM mem_tree_chunks WHERE source_id LIKE 'slack:%')"
    assert_matches([(c.id, s) for c, s in slack], reference(path, query, sig=sig, where=where), 100)
    assert all(c.source_id.startswith("slack:") for c, _ in slack)


# -- freshness --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_change_by_another_process_is_seen_by_the_next_query(
    workspace: Path, engine: sa.Engine
) -> None:
    vectors = fill(workspace, 300)
    path = db_file(workspace)
    rng = np.random.default_rng(6)
    query = vectors[10] + 0.1 * rng.standard_normal(DIM).astype(np.float32)

    def check(k: int = 300) -> None:
        assert_matches(search_ids(engine, query, k=k), reference(path, query), k)

    check()
    check()  # settled
    conn = sqlite3.connect(path)
    last_rowid, last_vector = conn.execute(
        "SELECT rowid, vector FROM mem_tree_chunk_embeddings ORDER BY rowid DESC LIMIT 1"
    ).fetchone()
    conn.close()
    changes: list[list[Statement]] = [
        # appended: a new chunk and its vector
        [
            (INSERT_CHUNK, chunk_row("new", "s1")),
            (INSERT_EMBEDDING, ("new", SIG, random_blob(rng), DIM, 2.0)),
        ],
        # INSERT OR REPLACE of an existing chunk's vector: deleted and re-inserted under a new rowid
        [
            (
                INSERT_EMBEDDING.replace("INSERT", "INSERT OR REPLACE"),
                ("c0010", SIG, random_blob(rng), DIM, 3.0),
            )
        ],
        # an UPDATE of a blob in place (same rowid, same length)
        [("UPDATE mem_tree_chunk_embeddings SET vector = ? WHERE chunk_id = 'c0020'", (random_blob(rng),))],
        # a DELETE
        [("DELETE FROM mem_tree_chunk_embeddings WHERE chunk_id = 'c0030'", ())],
        # a row replaced by another chunk's under the same rowid with the very same vector bytes:
        # count, rowids and vectors unchanged, only the id differs
        [
            (INSERT_CHUNK, chunk_row("moved", "s2")),
            ("DELETE FROM mem_tree_chunk_embeddings WHERE rowid = ?", (last_rowid,)),
            (
                "INSERT INTO mem_tree_chunk_embeddings (rowid, chunk_id, model_signature, vector, dim, "
                "created_at) VALUES (?, 'moved', ?, ?, ?, 4.0)",
                (last_rowid, SIG, last_vector, DIM),
            ),
        ],
        # a commit elsewhere in the file: nothing to do but check
        [("UPDATE mem_tree_chunks SET content = 'edited' WHERE id = 'c0001'", ())],
    ]
    for statements in changes:
        other_process(workspace, statements)
        check()
    info = next(i for i in search.cache_info() if i.model_signature == SIG)
    assert info.rows == 300 and info.checks >= len(changes) and info.appends == 1


@pytest.mark.slow
def test_appending_one_percent_decodes_only_the_new_rows(workspace: Path, engine: sa.Engine) -> None:
    fill(workspace, 1000)
    query = np.random.default_rng(7).standard_normal(DIM)
    search_ids(engine, query)
    search_ids(engine, query)
    (before,) = search.cache_info()
    assert (before.builds, before.appends, before.rows_decoded) == (1, 0, 1000)
    rng = np.random.default_rng(8)
    other_process(
        workspace,
        [(INSERT_CHUNK, chunk_row(f"more{i}", "s9")) for i in range(10)]
        + [(INSERT_EMBEDDING, (f"more{i}", SIG, random_blob(rng), DIM, 1.0)) for i in range(10)],
    )
    got = search_ids(engine, query, k=1010)
    (after,) = search.cache_info()
    assert (after.builds, after.appends, after.rows_decoded, after.rows) == (1, 1, 1010, 1010)
    assert after.checks == before.checks + 1
    assert_matches(got, reference(db_file(workspace), query), 1010)


def test_this_process_writes_and_rollbacks(workspace: Path, engine: sa.Engine) -> None:
    vectors = fill(workspace, 50)
    path = db_file(workspace)
    query = vectors[3]
    target = (-vectors[3]).tolist()  # the worst match, until it is moved to the query's direction
    assert search_ids(engine, query, k=1)[0][0] == "c0003"
    with Session(engine) as session:  # a new row, committed through the ORM
        session.add(ChunkEmbedding(chunk_id="c0004", model_signature="other@16", vector=target, dim=DIM))
        emb = session.get(ChunkEmbedding, ("c0005", SIG))
        assert emb is not None
        emb.vector = (vectors[3] * 2).tolist()  # an UPDATE in place, seen within the transaction
        assert [c.id for c, _ in nearest_chunks(session, query, k=2, model_signature=SIG)] in (
            ["c0003", "c0005"],
            ["c0005", "c0003"],
        )
        session.rollback()
    assert_matches(search_ids(engine, query, k=50), reference(path, query), 50)  # rolled back
    without_5 = [r for r in reference(path, query) if r[0] != "c0005"]
    with Session(engine) as session:
        emb = session.get(ChunkEmbedding, ("c0005", SIG))
        assert emb is not None
        session.delete(emb)
        session.flush()
        assert "c0005" not in [c.id for c, _ in nearest_chunks(session, query, k=50, model_signature=SIG)]
        with session.begin_nested() as savepoint:
            emb6 = session.get(ChunkEmbedding, ("c0006", SIG))
            assert emb6 is not None
            emb6.vector = (vectors[3] * 2).tolist()
            session.flush()
            top = nearest_chunks(session, query, k=1, model_signature=SIG)
            assert top[0][0].id in ("c0003", "c0006") and top[0][1] == pytest.approx(1.0, abs=1e-6)
            savepoint.rollback()
        ids = [c.id for c, _ in nearest_chunks(session, query, k=50, model_signature=SIG)]
        assert "c0005" not in ids and len(ids) == 49
        got = [(c.id, s) for c, s in nearest_chunks(session, query, k=49, model_signature=SIG)]
        assert_matches(got, without_5, 49)
        session.commit()
    assert_matches(search_ids(engine, query, k=50), reference(path, query), 50)
    assert len(search_ids(engine, query, k=50)) == 49


def test_a_reopened_connection_is_checked_not_rebuilt(workspace: Path, engine: sa.Engine) -> None:
    fill(workspace, 100)
    query = np.random.default_rng(9).standard_normal(DIM)
    search_ids(engine, query)
    tinycortex_sa.invalidate(workspace)
    got = search_ids(engine, query, k=100)
    assert_matches(got, reference(db_file(workspace), query), 100)
    (info,) = search.cache_info()
    assert info.builds == 1 and info.checks == 1


def test_a_read_only_engine(workspace: Path) -> None:
    fill(workspace, 100)
    query = np.random.default_rng(10).standard_normal(DIM)
    engine = tinycortex_sa.create_engine(workspace, read_only=True)
    try:
        search_ids(engine, query)
        assert_matches(search_ids(engine, query, k=100), reference(db_file(workspace), query), 100)
    finally:
        engine.dispose()


# -- stored rows that cannot be ranked ---------------------------------------------------------------


def test_zero_and_non_finite_stored_vectors_are_left_out(workspace: Path, engine: sa.Engine) -> None:
    fill(workspace, 20)
    big = np.full(DIM, 1e30, np.float32)  # finite, but its squares overflow float32
    odd = {"c0001": np.zeros(DIM, np.float32), "c0002": np.full(DIM, np.nan, np.float32), "c0003": big}

    def write(conn: sqlite3.Connection) -> None:
        for chunk_id, v in odd.items():
            conn.execute(
                "UPDATE mem_tree_chunk_embeddings SET vector = ? WHERE chunk_id = ?", (v.tobytes(), chunk_id)
            )

    tinycortex_sa.with_connection(workspace, write)
    got = search_ids(engine, np.ones(DIM), k=100)
    assert len(got) == 18 and got[0] == ("c0003", pytest.approx(1.0, abs=1e-6))
    assert {"c0001", "c0002"}.isdisjoint(i for i, _ in got)


def test_a_stored_vector_of_another_length_is_an_error_naming_it(workspace: Path, engine: sa.Engine) -> None:
    fill(workspace, 20)
    query = np.ones(DIM)
    assert len(search_ids(engine, query, k=100)) == 20

    def add_bad(conn: sqlite3.Connection) -> None:  # appended after the matrix was built
        conn.execute(INSERT_CHUNK, chunk_row("bad", "s0"))
        conn.execute(INSERT_EMBEDDING, ("bad", SIG, b"\0\0\x80\x3f", 1, 1.0))

    def remove_bad(conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM mem_tree_chunk_embeddings WHERE chunk_id = 'bad'")

    tinycortex_sa.with_connection(workspace, add_bad)
    for _ in range(2):  # refused every time, never passed over
        with pytest.raises(
            VectorDimensionError, match=r"chunk_id='bad': vector is 4 bytes; need 16 float32s"
        ):
            search_ids(engine, query)
    tinycortex_sa.with_connection(workspace, remove_bad)
    assert_matches(search_ids(engine, query, k=100), reference(db_file(workspace), query), 100)
    assert len(search_ids(engine, query, k=100)) == 20


@pytest.mark.slow
def test_an_embedding_without_its_chunk_is_passed_over(workspace: Path, engine: sa.Engine) -> None:
    vectors = fill(workspace, 20)
    statements: list[Statement] = [
        ("DELETE FROM mem_tree_chunks WHERE id = 'c0000'", ()),  # foreign keys off: its vector stays
        ("UPDATE mem_tree_chunk_embeddings SET vector = ? WHERE chunk_id = 'c0000'", (vectors[5].tobytes(),)),
    ]
    other_process(workspace, statements, foreign_keys=False)
    got = search_ids(engine, vectors[5], k=3)
    assert [i for i, _ in got][:1] == ["c0005"] and len(got) == 3 and "c0000" not in [i for i, _ in got]


# -- errors ------------------------------------------------------------------------------------------


def test_query_vector_errors(workspace: Path, engine: sa.Engine) -> None:
    fill(workspace, 10)
    good = np.ones(DIM)
    with Session(engine) as session:

        def run(vector: object, **kw: object) -> object:
            return nearest_chunks(session, vector, model_signature=SIG, **kw)

        with pytest.raises(QueryDimensionError, match="has 15 values, the model's vectors have 16") as dim:
            run(good[:15])
        assert isinstance(dim.value, VectorDimensionError)
        with pytest.raises(NonFiniteVectorError, match="nan at index 3"):
            run(np.where(np.arange(DIM) == 3, np.nan, 1.0))
        with pytest.raises(NonFiniteVectorError, match="inf at index 0"):
            run([float("inf")] + [1.0] * 15)
        with pytest.raises(ZeroVectorError, match="all zeros"):
            run(np.zeros(DIM))
        with pytest.raises(QueryVectorError, match="one vector"):
            run(np.ones((2, DIM)))
        with pytest.raises(QueryVectorError, match="sequence of numbers"):
            run(["a"] * DIM)
        for k in (0, -1, 2.5, True):
            with pytest.raises(OptionError, match="k must be a positive integer"):
                run(good, k=k)
        # without stored rows, the dimension in the signature is the check
        with pytest.raises(QueryDimensionError, match="have 768"):
            nearest_chunks(session, good)
        assert nearest_chunks(session, good, model_signature="nothing") == []
    for error in (QueryDimensionError, NonFiniteVectorError, ZeroVectorError, SearchUnavailableError):
        assert issubclass(error, TinyCortexError)
    assert issubclass(ZeroVectorError, ValueError) and issubclass(OptionError, ValueError)


def test_without_numpy_the_error_says_what_to_install(
    workspace: Path, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(workspace, 10)
    monkeypatch.setitem(sys.modules, "numpy", None)  # `import numpy` now raises ImportError
    with Session(engine) as session:
        with pytest.raises(SearchUnavailableError, match=r"pip install tinycortex_sa\[vectors\]") as err:
            nearest_chunks(session, [1.0] * DIM, model_signature=SIG)
        with pytest.raises(ImportError):
            nearest_summaries(session, [1.0] * DIM)
    assert str(err.value) == (
        "similarity search needs numpy, which is not installed: pip install tinycortex_sa[vectors]"
    )


def test_through_an_async_session(workspace: Path) -> None:
    import asyncio

    from sqlalchemy.ext.asyncio import AsyncSession

    fill(workspace, 100)
    query = np.random.default_rng(11).standard_normal(DIM)

    async def main() -> list[tuple[str, float]]:
        engine = tinycortex_sa.create_async_engine(workspace)
        try:
            async with AsyncSession(engine) as session:
                found = await session.run_sync(lambda s: nearest_chunks(s, query, k=100, model_signature=SIG))
                return [(c.id, score) for c, score in found]
        finally:
            await engine.dispose()

    assert_matches(asyncio.run(main()), reference(db_file(workspace), query), 100)
