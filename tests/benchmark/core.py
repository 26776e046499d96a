"""Shared pieces of :mod:`tests.benchmark`: settings, rows, the timing harness, fixtures.

Timing rules, for every section: each case is warmed up first, then timed in
several repeats that are *interleaved* (round 1 runs every case once, then
round 2, ...) so that a slow moment of the machine hits all comparators alike,
and the figure kept is the median of the repeats.
"""

from __future__ import annotations

import contextlib
import gc
import math
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.pool import Pool

from tinycortex_sa import api
from tinycortex_sa.models import Chunk
from tinycortex_sa.schema.types import dump_json

#: The four pragmas every connection gets, tinycortex_sa's and the comparators' alike.
PRAGMAS = ("busy_timeout = 15000", "foreign_keys = ON", "synchronous = FULL", "journal_mode = TRUNCATE")
#: The primary-key lookup every read comparator runs (``text()`` spelling for engines).
LOOKUP_SQL = "SELECT * FROM mem_tree_chunks WHERE id = ?"
LOOKUP_TEXT = sa.text("SELECT * FROM mem_tree_chunks WHERE id = :id")
LOOKUP_ID = "chunk-000500"
CHUNK_COLUMNS: tuple[str, ...] = tuple(c.name for c in Chunk.__table__.columns)
INSERT_SQL = (
    f"INSERT INTO mem_tree_chunks ({', '.join(CHUNK_COLUMNS)}) VALUES ({', '.join('?' * len(CHUNK_COLUMNS))})"
)
CHUNK_TABLE: sa.Table = Chunk.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class Settings:
    """How much work each section does (``--quick`` shrinks everything)."""

    quick: bool
    batch_s: float
    """Target duration of one timed batch of a per-operation case."""
    repeats: int
    bulk_rows: int
    bulk_repeats: int
    single_tx: int
    single_repeats: int
    thread_ops: int
    """Operations per thread-count run, shared out between the threads."""
    thread_repeats: int
    cold_runs: int
    scale_workspaces: int
    scale_runs: int
    thread_counts: tuple[int, ...] = (1, 2, 4, 8)


FULL = Settings(
    quick=False,
    batch_s=0.1,
    repeats=7,
    bulk_rows=10_000,
    bulk_repeats=5,
    single_tx=1_000,
    single_repeats=3,
    thread_ops=2_000,
    thread_repeats=3,
    cold_runs=7,
    scale_workspaces=1_000,
    scale_runs=3,
)
QUICK = Settings(
    quick=True,
    batch_s=0.002,
    repeats=1,
    bulk_rows=100,
    bulk_repeats=1,
    single_tx=10,
    single_repeats=1,
    thread_ops=40,
    thread_repeats=1,
    cold_runs=1,
    scale_workspaces=10,
    scale_runs=1,
)


@dataclass
class Row:
    """One line of the table: microseconds per operation and the ratio to its floor."""

    key: str
    section: str
    label: str
    us: float
    floor_key: str
    """The row this one is divided by (itself for a floor)."""
    note: str = ""
    ratio: float = math.nan


def fill_ratios(rows: list[Row]) -> None:
    """Set every row's ratio to its floor row's figure."""
    by_key = {row.key: row for row in rows}
    for row in rows:
        floor = by_key.get(row.floor_key)
        if floor is not None and floor.us > 0:
            row.ratio = row.us / floor.us


# -- timing ----------------------------------------------------------------------------

Op = Callable[[], object]
Run = Callable[[], float]
"""A case that times itself: does its untimed set-up, then returns the seconds of the timed part."""


def _loop(op: Op, n: int) -> float:
    gc.collect()
    start = time.perf_counter()
    for _ in range(n):
        op()
    return time.perf_counter() - start


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """Move what exists now out of the collector's sight, so ``gc.collect()`` before a batch is cheap."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def measure_ops(cases: Mapping[str, Op], settings: Settings) -> dict[str, float]:
    """Median microseconds per call of each case: warm-up, calibration, interleaved repeats."""
    with _frozen_heap():
        return _measure_ops(cases, settings)


def _measure_ops(cases: Mapping[str, Op], settings: Settings) -> dict[str, float]:
    sizes: dict[str, int] = {}
    for name, op in cases.items():
        n, elapsed = 1, 0.0
        while elapsed < settings.batch_s / 2:  # warm-up doubling also calibrates the batch size
            elapsed = _loop(op, n)
            if elapsed < settings.batch_s / 2:
                n *= 2
        sizes[name] = max(1, math.ceil(n * settings.batch_s / max(elapsed, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(settings.repeats):
        for name, op in cases.items():
            samples[name].append(_loop(op, sizes[name]) / sizes[name] * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def measure_runs(cases: Mapping[str, Run], repeats: int, warmup: bool = True) -> dict[str, float]:
    """Median seconds of the timed part of each case, after one warm-up run, interleaved."""
    with _frozen_heap():
        return _measure_runs(cases, repeats, warmup)


def _measure_runs(cases: Mapping[str, Run], repeats: int, warmup: bool) -> dict[str, float]:
    if warmup:
        for run in cases.values():
            run()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, run in cases.items():
            gc.collect()
            samples[name].append(run())
    return {name: statistics.median(values) for name, values in samples.items()}


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


# -- fixtures --------------------------------------------------------------------------


def chunk_dicts(prefix: str, n: int, start: int = 0) -> list[dict[str, Any]]:
    """``n`` chunk rows as the application would hold them (JSON columns as Python lists)."""
    return [
        {
            "id": f"{prefix}-{i:06d}",
            "source_kind": "chat",
            "source_id": f"source-{i // 100}",
            "path_scope": None,
            "source_ref": None,
            "owner": "bench",
            "timestamp_ms": 1_700_000_000_000 + i,
            "time_range_start_ms": 1_700_000_000_000 + i,
            "time_range_end_ms": 1_700_000_000_000 + i,
            "tags_json": ["bench", "chunk"],
            "content": f"Chunk {i}: the quick brown fox jumps over the lazy dog. " * 3,
            "token_count": 36,
            "seq_in_source": i % 100,
            "created_at_ms": 1_700_000_000_000 + i,
            "embedding": None,
            "parent_summary_id": None,
            "lifecycle_status": "admitted",
            "content_path": None,
            "content_sha256": None,
            "raw_refs_json": None,
        }
        for i in range(start, start + n)
    ]


_get_all = itemgetter(*CHUNK_COLUMNS)
_TAGS = CHUNK_COLUMNS.index("tags_json")
_REFS = CHUNK_COLUMNS.index("raw_refs_json")


def chunk_tuple(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """What raw sqlite3 code must do with an application row: a tuple, JSON columns encoded."""
    values = list(_get_all(row))
    values[_TAGS] = dump_json(values[_TAGS])
    if values[_REFS] is not None:
        values[_REFS] = dump_json(values[_REFS])
    return tuple(values)


def new_workspace(root: Path, name: str, chunks: int = 0) -> Path:
    """A workspace brought to Alembic head by tinycortex_sa, holding ``chunks`` chunks."""
    workspace = root / name
    rows = [chunk_tuple(r) for r in chunk_dicts("chunk", chunks)]

    def fill(conn: sqlite3.Connection) -> None:
        if rows:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(INSERT_SQL, rows)
            conn.execute("COMMIT")

    api.with_connection(workspace, fill)
    return workspace


def raw_connect(db_path: Path) -> sqlite3.Connection:
    """A raw sqlite3 connection with the same four pragmas, driver transactions off."""
    conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    for pragma in PRAGMAS:
        conn.execute(f"PRAGMA {pragma}").fetchall()
    return conn


def _pragmas_listener(dbapi_connection: Any, record: Any) -> None:
    for pragma in PRAGMAS:
        dbapi_connection.execute(f"PRAGMA {pragma}").fetchall()


def _driver_autocommit(dbapi_connection: Any, record: Any) -> None:
    dbapi_connection.isolation_level = None  # the recipe: the driver never emits BEGIN itself


def _begin_exclusive(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN EXCLUSIVE")


def sa_engine(db_path: Path, poolclass: type[Pool], begin_recipe: bool) -> sa.Engine:
    """A plain ``sqlite://`` engine on ``poolclass`` with the same pragmas (a "connect" listener).

    ``begin_recipe`` adds SQLAlchemy's documented pysqlite recipe (driver in
    ``isolation_level=None``, a "begin" listener emitting ``BEGIN EXCLUSIVE``),
    so that it really begins a transaction as tinycortex_sa does.
    """
    engine = sa.create_engine(f"sqlite:///{db_path}", poolclass=poolclass)
    event.listen(engine, "connect", _pragmas_listener)
    if begin_recipe:
        event.listen(engine, "connect", _driver_autocommit)
        event.listen(engine, "begin", _begin_exclusive)
    return engine
