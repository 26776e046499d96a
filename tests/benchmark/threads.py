"""Benchmark section: 1, 2, 4 and 8 threads doing mixed reads and writes on one file.

Nine operations in ten are a primary-key lookup, one is a single-row write
transaction (fsync-bound).  The work is shared out between the threads, so
every thread count does the same total work.  "Wait" is the time a caller
spends getting the connection: the lock for raw sqlite3, checkout for
tinycortex_sa (``with_connection`` until ``fn`` runs, ``engine.connect()``
until it returns).
"""

from __future__ import annotations

import itertools
import sqlite3
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tinycortex_sa import api

from .core import (
    CHUNK_TABLE,
    INSERT_SQL,
    LOOKUP_ID,
    LOOKUP_SQL,
    LOOKUP_TEXT,
    Row,
    Settings,
    chunk_dicts,
    chunk_tuple,
    new_workspace,
    percentile,
    raw_connect,
)

SECTION = "Threads: mixed reads and writes on one file (9 lookups : 1 write transaction)"
WRITE_EVERY = 10

Worker = Callable[[int, list[float]], None]
"""Does operation number ``i`` (a write when ``i % WRITE_EVERY == 0``) and appends its wait."""


def _new_row(prefix: str, counter: itertools.count[int]) -> dict[str, Any]:
    return chunk_dicts(prefix, 1, next(counter))[0]  # next() on a count is atomic: unique ids


def _raw_worker(workspace: Path) -> tuple[Worker, Callable[[], None]]:
    conn = raw_connect(api.db_path_for(workspace))
    lock = threading.Lock()
    counter = itertools.count()

    def work(i: int, waits: list[float]) -> None:
        start = time.perf_counter()
        with lock:
            waits.append(time.perf_counter() - start)
            if i % WRITE_EVERY:
                conn.execute(LOOKUP_SQL, (LOOKUP_ID,)).fetchone()
            else:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(INSERT_SQL, chunk_tuple(_new_row("raw", counter)))
                conn.execute("COMMIT")

    return work, conn.close


def _with_connection_worker(workspace: Path) -> tuple[Worker, Callable[[], None]]:
    counter = itertools.count()

    def work(i: int, waits: list[float]) -> None:
        row = chunk_tuple(_new_row("wc", counter)) if i % WRITE_EVERY == 0 else None
        start = time.perf_counter()

        def fn(conn: sqlite3.Connection) -> None:
            waits.append(time.perf_counter() - start)
            if row is None:
                conn.execute(LOOKUP_SQL, (LOOKUP_ID,)).fetchone()
            else:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(INSERT_SQL, row)
                conn.execute("COMMIT")

        api.with_connection(workspace, fn)

    return work, lambda: None


def _engine_worker(workspace: Path) -> tuple[Worker, Callable[[], None]]:
    engine = api.create_engine(workspace)
    insert = sa.insert(CHUNK_TABLE)
    params = {"id": LOOKUP_ID}
    counter = itertools.count()

    def work(i: int, waits: list[float]) -> None:
        row = _new_row("engine", counter) if i % WRITE_EVERY == 0 else None
        start = time.perf_counter()
        conn = engine.connect()
        waits.append(time.perf_counter() - start)
        with conn:
            if row is None:
                conn.execute(LOOKUP_TEXT, params).fetchone()
            else:
                with conn.begin():
                    conn.execute(insert, row)

    return work, engine.dispose


def _run_threads(work: Worker, threads: int, ops: int) -> tuple[float, float]:
    """Run ``ops`` operations shared between ``threads`` threads; (seconds, p99 wait in seconds)."""
    per_thread = ops // threads
    barrier = threading.Barrier(threads + 1)
    waits: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def body(waits_here: list[float]) -> None:
        barrier.wait()
        try:
            for i in range(per_thread):
                work(i, waits_here)
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    pool = [threading.Thread(target=body, args=(w,)) for w in waits]
    for t in pool:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed, percentile([w for ws in waits for w in ws], 99)


def run(root: Path, settings: Settings) -> list[Row]:
    """Throughput and p99 wait of each comparator at each thread count, each on its own file."""
    makers = {
        "raw": ("raw sqlite3, one held connection behind a threading.Lock", _raw_worker),
        "with_connection": ("tinycortex_sa with_connection", _with_connection_worker),
        "engine": ("tinycortex_sa engine.connect() / .begin() (Core)", _engine_worker),
    }
    workers = {
        key: maker(new_workspace(root, f"threads-{key}", 1000)) for key, (_label, maker) in makers.items()
    }
    rows: list[Row] = []
    try:
        for threads in settings.thread_counts:
            ops = settings.thread_ops // threads * threads
            samples: dict[str, list[tuple[float, float]]] = {key: [] for key in workers}
            for work, _close in workers.values():
                _run_threads(work, threads, max(threads, ops // 5))  # warm-up
            for _ in range(settings.thread_repeats):
                for key, (work, _close) in workers.items():
                    samples[key].append(_run_threads(work, threads, ops))
            for key, (label, _maker) in makers.items():
                seconds = statistics.median(s for s, _p99 in samples[key])
                p99 = statistics.median(p for _s, p in samples[key])
                rows.append(
                    Row(
                        f"threads{threads}_{key}",
                        SECTION,
                        f"{threads} thread{'s' if threads > 1 else ''}: {label}",
                        seconds / ops * 1e6,
                        f"threads{threads}_raw",
                        f"{ops / seconds:,.0f} ops/s, p99 wait {p99 * 1e3:,.2f} ms",
                    )
                )
    finally:
        for _work, close in workers.values():
            close()
    return rows
