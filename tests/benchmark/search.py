"""Benchmark section: similarity search, ``tinycortex_sa.search.nearest_chunks``, k = 10.

* The floor: numpy alone on a matrix already in memory (normalised float32),
  one matrix-vector product and ``argpartition``.
* ``nearest_chunks`` warm (its freshness check, the same product, loading the
  ten ``Chunk`` objects through a Session), with a ``where`` clause, and its
  first query after: a cold start (every row decoded), another process
  appending 1% more embeddings, another process committing an unrelated change.
* The approach of projects that keep vectors in SQLite without an extension
  (Letta's, for one): a Python cosine function registered on the connection,
  in ``ORDER BY ... LIMIT k``, which decodes every row at every query.

The full run uses 100,000 x 768-dim vectors (300 MB as float32) and 10,000 for
the smaller comparison; ``--quick`` 2,000 x 64 and 200.  Run it alone with
``python -m tests.benchmark.search [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from tinycortex_sa import api, search
from tinycortex_sa.models import Chunk

from .core import (
    FULL,
    INSERT_SQL,
    QUICK,
    Row,
    Settings,
    chunk_dicts,
    chunk_tuple,
    fill_ratios,
    measure_ops,
    measure_runs,
    new_workspace,
    raw_connect,
)

SECTION = "Similarity search: the 10 nearest chunks by cosine"
K = 10
SIG = "bench-model@768"
_BLOCK = 10_000
_EMBEDDING_SQL = "INSERT OR REPLACE INTO mem_tree_chunk_embeddings VALUES (?, ?, ?, ?, ?)"

#: Another process adding embeddings as the Rust core does (plain sqlite3, one transaction).
_APPEND = f"""
import json, sqlite3, sys, time
import numpy as np
path, sig, dim, start, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
vectors = np.random.default_rng(start).standard_normal((n, dim), dtype=np.float32)
conn = sqlite3.connect(path, isolation_level=None)
conn.execute("PRAGMA busy_timeout = 15000")
conn.execute("PRAGMA foreign_keys = ON")
conn.execute("BEGIN IMMEDIATE")
conn.executemany({INSERT_SQL!r}, [tuple(row) for row in json.loads(sys.stdin.read())])
rows = ((f"chunk-{{start + i:06d}}", sig, vectors[i].tobytes(), dim, time.time()) for i in range(n))
conn.executemany({_EMBEDDING_SQL!r}, rows)
conn.execute("COMMIT")
"""
_TOUCH = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA busy_timeout = 15000")
conn.execute("UPDATE mem_tree_chunks SET token_count = token_count + 1 WHERE id = 'chunk-000000'")
"""


def sizes(settings: Settings) -> tuple[int, int, int]:
    """(rows, rows of the smaller comparison, dimension)."""
    return (2_000, 200, 64) if settings.quick else (100_000, 10_000, 768)


Vectors = Callable[[np.random.Generator, int, int], np.ndarray]


def _gaussian(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    return rng.standard_normal((count, dim), dtype=np.float32)


def _fill(workspace: Path, start: int, n: int, dim: int, make: Vectors = _gaussian) -> None:
    """``n`` chunks from ``chunk-{start}``, each with a vector from ``make``, in one transaction."""
    rng = np.random.default_rng(start)

    def write(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        for first in range(start, start + n, _BLOCK):
            count = min(_BLOCK, start + n - first)
            conn.executemany(INSERT_SQL, [chunk_tuple(r) for r in chunk_dicts("chunk", count, first)])
            vectors = make(rng, count, dim)
            conn.executemany(
                _EMBEDDING_SQL,
                ((f"chunk-{first + i:06d}", SIG, vectors[i].tobytes(), dim, 1.0) for i in range(count)),
            )
        conn.execute("COMMIT")

    api.with_connection(workspace, write)


def _other_process(script: str, *args: object, stdin: str = "") -> None:
    subprocess.run(
        [sys.executable, "-c", script, *map(str, args)], input=stdin, text=True, check=True, timeout=600
    )


def _append_elsewhere(workspace: Path, start: int, n: int, dim: int) -> None:
    rows = json.dumps([chunk_tuple(r) for r in chunk_dicts("chunk", n, start)])
    _other_process(_APPEND, api.db_path_for(workspace), SIG, dim, start, n, stdin=rows)


def _floor_matrix(workspace: Path) -> np.ndarray:
    """The workspace's vectors, normalised float32, read once (what the floor starts from)."""
    conn = raw_connect(api.db_path_for(workspace))
    try:
        blobs = [b for (b,) in conn.execute("SELECT vector FROM mem_tree_chunk_embeddings ORDER BY rowid")]
    finally:
        conn.close()
    matrix = np.frombuffer(b"".join(blobs), "<f4").reshape(len(blobs), -1).copy()
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix


def _floor(matrix: np.ndarray, q: np.ndarray) -> Callable[[], object]:
    def op() -> object:
        scores = matrix @ q
        top = np.argpartition(-scores, K)[:K]
        return top[np.argsort(-scores[top])]

    return op


def _letta(workspace: Path, query: np.ndarray) -> Callable[[], float]:
    """A cosine UDF in ORDER BY on a raw connection (no ORM cost counted against it)."""
    conn = raw_connect(api.db_path_for(workspace))

    def cosine_distance(a: bytes, b: bytes) -> float:
        v1, v2 = np.frombuffer(a, dtype=np.float32), np.frombuffer(b, dtype=np.float32)
        return float(1.0 - np.dot(v1, v2) / (np.linalg.norm(v1) * np.linalg.norm(v2)))

    conn.create_function("cosine_distance", 2, cosine_distance, deterministic=True)
    sql = (
        "SELECT chunk_id, cosine_distance(vector, ?) AS d FROM mem_tree_chunk_embeddings "
        "WHERE model_signature = ? ORDER BY d LIMIT ?"
    )
    blob = query.astype(np.float32).tobytes()

    def run() -> float:
        start = time.perf_counter()
        conn.execute(sql, (blob, SIG, K)).fetchall()
        return time.perf_counter() - start

    return run


def run(root: Path, settings: Settings) -> list[Row]:
    """Every search row; the workspaces are built in ``root``."""
    n, small, dim = sizes(settings)
    big_ws, small_ws = new_workspace(root, "search"), new_workspace(root, "search-small")
    _fill(big_ws, 0, n, dim)
    _fill(small_ws, 0, small, dim)
    query = np.random.default_rng(12345).standard_normal(dim)
    q32 = (query / np.linalg.norm(query)).astype(np.float32)
    engine = api.create_engine(big_ws)
    where = sa.and_(Chunk.source_kind == "chat", Chunk.source_id == "source-7")  # 100 chunks, indexed

    def nearest(**kw: object) -> object:
        with Session(engine) as session:
            return search.nearest_chunks(session, query, k=K, model_signature=SIG, **kw)

    added = 0

    def cold() -> float:
        search.clear_cache()
        start = time.perf_counter()
        nearest()
        return time.perf_counter() - start

    def after_append() -> float:
        nonlocal added
        _append_elsewhere(big_ws, n + added, n // 100, dim)
        added += n // 100
        start = time.perf_counter()
        nearest()
        return time.perf_counter() - start

    def after_commit() -> float:
        _other_process(_TOUCH, api.db_path_for(big_ws))
        start = time.perf_counter()
        nearest()
        return time.perf_counter() - start

    try:
        floors = {"search_floor": _floor(_floor_matrix(big_ws), q32)}
        floors["search_floor_small"] = _floor(_floor_matrix(small_ws), q32)
        nearest()
        nearest()  # the second look settles the first (which ran in a transaction)
        per_op = measure_ops(
            {**floors, "search_warm": nearest, "search_where": lambda: nearest(where=where)}, settings
        )
        repeats = 1 if settings.quick else 3
        firsts = measure_runs(
            {"search_cold": cold, "search_after_commit": after_commit, "search_after_append": after_append},
            repeats,
            warmup=False,
        )
        (info,) = [i for i in search.cache_info() if i.model_signature == SIG]
        letta = measure_runs({"search_udf_small": _letta(small_ws, query)}, repeats, warmup=False)
        letta |= measure_runs({"search_udf": _letta(big_ws, query)}, 1, warmup=False)
    finally:
        engine.dispose()
        search.clear_cache()
    size, small_size = f"{n:,} x {dim}", f"{small:,} x {dim}"
    grown = f"{n:,} + {n // 100:,} per run"
    rows = [
        Row("search_floor", SECTION, f"numpy alone, matrix in memory: matvec + argpartition, {size}", 0,
            "search_floor"),
        Row("search_warm", SECTION, f"nearest_chunks, warm (check, matvec, 10 Chunk objects), {size}", 0,
            "search_floor", f"cache {info.nbytes / 1e6:.0f} MB"),
        Row("search_where", SECTION, f"nearest_chunks, warm, where= picking 100 chunks (indexed), {size}", 0,
            "search_floor"),
        Row("search_after_commit", SECTION, "nearest_chunks, first query after another process committed "
            f"elsewhere in the file (rows checked), {size}", 0, "search_floor"),
        Row("search_after_append", SECTION, "nearest_chunks, first query after another process added 1% "
            f"more embeddings (checked, new rows decoded), {grown}", 0, "search_floor"),
        Row("search_cold", SECTION, f"nearest_chunks, first query of the process (every row decoded), {size}",
            0, "search_floor"),
        Row("search_udf", SECTION, f"Python cosine UDF in ORDER BY, raw sqlite3, {size}", 0, "search_floor",
            "run once"),
        Row("search_floor_small", SECTION, f"numpy alone, matrix in memory, {small_size}", 0,
            "search_floor_small"),
        Row("search_udf_small", SECTION, f"Python cosine UDF in ORDER BY, raw sqlite3, {small_size}", 0,
            "search_floor_small"),
    ]  # fmt: skip
    for row in rows:
        row.us = per_op[row.key] if row.key in per_op else {**firsts, **letta}[row.key] * 1e6
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmark.search", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="tiny counts: checks that it runs")
    parser.add_argument("--dir", metavar="DIR", type=Path, help="where to create the databases (a temp dir)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tinycortex-bench-search-", dir=args.dir) as tmp:
        rows = run(Path(tmp), QUICK if args.quick else FULL)
    fill_ratios(rows)
    print(f"{SECTION} ({time.perf_counter() - started:.0f} s)")
    for row in rows:
        print(
            f"  {row.key:22s} {row.us / 1000:11.2f} ms  x{row.ratio:8.1f}  {row.label}  {row.note}".rstrip()
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
