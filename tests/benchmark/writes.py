"""Benchmark sections: bulk chunk inserts in one transaction, and single-row write transactions.

Every comparator writes to its own workspace (so no connection's page cache is
invalidated by another's writes) and starts from the same application rows:
dicts whose JSON columns are Python lists.  Building the rows is not timed;
turning them into what the driver takes is (raw sqlite3 must JSON-encode and
build tuples, as SQLAlchemy's type processing does).  Rows are deleted again
after each run, untimed.
"""

from __future__ import annotations

import functools
import itertools
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool

from tinycortex_sa import api
from tinycortex_sa.models import Chunk

from .core import (
    CHUNK_TABLE,
    INSERT_SQL,
    Row,
    Run,
    Settings,
    chunk_dicts,
    chunk_tuple,
    measure_runs,
    new_workspace,
    raw_connect,
    sa_engine,
)

BULK = "Writes: chunk inserts in one transaction"
SINGLE = "Writes: single-row write transactions (fsync-bound, synchronous=FULL)"

_runs = itertools.count()


def _batch(n: int) -> list[dict[str, Any]]:
    return chunk_dicts(f"run{next(_runs)}", n)


def _raw_bulk(conn: sqlite3.Connection, n: int, prebuilt: bool) -> Run:
    def run() -> float:
        rows = _batch(n)
        tuples = [chunk_tuple(r) for r in rows] if prebuilt else []
        start = time.perf_counter()
        params = tuples if prebuilt else [chunk_tuple(r) for r in rows]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT_SQL, params)
        conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
        conn.execute("DELETE FROM mem_tree_chunks")
        return elapsed

    return run


def _raw_values(conn: sqlite3.Connection, n: int, page: int = 1000) -> Run:
    """Raw sqlite3 sending pre-built tuples as multi-row ``INSERT ... VALUES`` batches of ``page`` rows.

    The fastest way found to hand these rows to SQLite (batches of 100 to
    1,600 rows were measured: 1,000, SQLAlchemy's page size, was fastest): the
    driver's share of a batched Core insert, without SQLAlchemy.
    """
    head, one_row = INSERT_SQL.split(" VALUES ")

    def run() -> float:
        tuples = [chunk_tuple(r) for r in _batch(n)]
        start = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        for i in range(0, len(tuples), page):
            part = tuples[i : i + page]
            batch_sql = f"{head} VALUES " + ", ".join([one_row] * len(part))
            conn.execute(batch_sql, [v for t in part for v in t])
        conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
        conn.execute("DELETE FROM mem_tree_chunks")
        return elapsed

    return run


def _skip_the_driver(engine: sa.Engine) -> sa.Engine:
    """Make ``engine`` do all of SQLAlchemy's work for an INSERT but not hand it to the driver.

    Through the public ``do_execute``/``do_executemany`` events, which may
    take over the driver call: what is left is SQLAlchemy's own per-row cost.
    """

    def skip(cursor: Any, statement: str, parameters: Any, context: Any) -> bool | None:
        return True if statement.startswith("INSERT") else None

    sa.event.listen(engine, "do_execute", skip)
    sa.event.listen(engine, "do_executemany", skip)
    return engine


def _engine_run(engine: sa.Engine, n: int, work: Callable[[sa.Engine, list[dict[str, Any]]], None]) -> Run:
    def run() -> float:
        rows = _batch(n)
        start = time.perf_counter()
        work(engine, rows)
        elapsed = time.perf_counter() - start
        with engine.begin() as conn:
            conn.execute(sa.delete(CHUNK_TABLE))
        return elapsed

    return run


def _core_many(engine: sa.Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(sa.insert(CHUNK_TABLE), rows)


def _driver_many(engine: sa.Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(INSERT_SQL, [chunk_tuple(r) for r in rows])


def _orm_bulk(engine: sa.Engine, rows: list[dict[str, Any]]) -> None:
    with Session(engine) as session:
        session.execute(sa.insert(Chunk), rows)
        session.commit()


def _orm_unit_of_work(engine: sa.Engine, rows: list[dict[str, Any]]) -> None:
    with Session(engine) as session:
        session.add_all([Chunk(**row) for row in rows])
        session.commit()


def _core_single(engine: sa.Engine, rows: list[dict[str, Any]]) -> None:
    insert = sa.insert(CHUNK_TABLE)
    for row in rows:
        with engine.begin() as conn:
            conn.execute(insert, row)


def _orm_single(engine: sa.Engine, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        with Session(engine) as session:
            session.add(Chunk(**row))
            session.commit()


def run_bulk(root: Path, settings: Settings) -> list[Row]:
    """10,000 chunks in one transaction: raw executemany, Core executemany, ORM."""
    n = settings.bulk_rows
    raw = raw_connect(api.db_path_for(new_workspace(root, "bulk-raw")))
    raw_pre = raw_connect(api.db_path_for(new_workspace(root, "bulk-raw-prebuilt")))
    raw_values = raw_connect(api.db_path_for(new_workspace(root, "bulk-raw-values")))
    tc = {
        name: api.create_engine(new_workspace(root, f"bulk-{name}"))
        for name in ("core", "driver", "orm", "uow", "sa-only")
    }
    qp = {
        name: sa_engine(api.db_path_for(new_workspace(root, f"bulk-qp-{name}")), QueuePool, True)
        for name in ("core", "uow")
    }
    cases: dict[str, Run] = {
        "bulk_raw": _raw_bulk(raw, n, prebuilt=False),
        "bulk_raw_prebuilt": _raw_bulk(raw_pre, n, prebuilt=True),
        "bulk_raw_values": _raw_values(raw_values, n),
        "bulk_sa_only": _engine_run(_skip_the_driver(tc["sa-only"]), n, _core_many),
        "bulk_core": _engine_run(tc["core"], n, _core_many),
        "bulk_driver": _engine_run(tc["driver"], n, _driver_many),
        "bulk_orm": _engine_run(tc["orm"], n, _orm_bulk),
        "bulk_orm_uow": _engine_run(tc["uow"], n, _orm_unit_of_work),
        "bulk_qp_core": _engine_run(qp["core"], n, _core_many),
        "bulk_qp_orm_uow": _engine_run(qp["uow"], n, _orm_unit_of_work),
    }
    try:
        seconds = measure_runs(cases, settings.bulk_repeats)
    finally:
        for engine in [*tc.values(), *qp.values()]:
            engine.dispose()
        raw.close()
        raw_pre.close()
        raw_values.close()
    seconds["bulk_core_floor"] = seconds["bulk_sa_only"] + seconds["bulk_raw_values"]
    recipe = "QueuePool + BEGIN recipe"
    spec = [
        ("bulk_raw", "raw sqlite3 executemany", "the floor: tuples + JSON encoding timed"),
        ("bulk_raw_prebuilt", "raw sqlite3 executemany of pre-built tuples", "encoding not timed"),
        (
            "bulk_raw_values",
            "raw sqlite3 multi-row VALUES batches (1,000 rows) of pre-built tuples",
            "encoding not timed; the fastest driver share found (part of Core's floor)",
        ),
        ("bulk_core", "tinycortex_sa Core insert() executemany", "sent as multi-row VALUES batches"),
        (
            "bulk_sa_only",
            "tinycortex_sa Core insert(), driver call skipped (do_execute events)",
            "SQLAlchemy's own per-row work alone (part of Core's floor)",
        ),
        (
            "bulk_core_floor",
            "SQLAlchemy Core's floor: its per-row work + the fastest driver share",
            "the sum of the two parts: an estimate of the least a Core insert can cost",
        ),
        (
            "bulk_driver",
            "tinycortex_sa engine: exec_driver_sql executemany, same tuples",
            "SQLAlchemy's per-row parameter processing bypassed",
        ),
        ("bulk_orm", "tinycortex_sa ORM bulk: Session.execute(insert(Chunk), dicts)", ""),
        ("bulk_orm_uow", "tinycortex_sa ORM unit of work: add_all(Chunk(...)) + commit", ""),
        ("bulk_qp_core", f"SQLAlchemy {recipe}: Core insert() executemany", "SQLAlchemy's own cost"),
        ("bulk_qp_orm_uow", f"SQLAlchemy {recipe}: ORM unit of work", "SQLAlchemy's own cost"),
    ]
    total = f"{n:,} rows: "
    return [
        Row(key, f"{BULK} ({n:,} chunks, µs per row)", label, seconds[key] / n * 1e6, "bulk_raw",
            f"{total}{seconds[key] * 1e3:,.0f} ms" + (f"; {note}" if note else ""))
        for key, label, note in spec
    ]  # fmt: skip


def _raw_single(conn: sqlite3.Connection, n: int) -> Run:
    def run() -> float:
        params = [chunk_tuple(r) for r in _batch(n)]
        start = time.perf_counter()
        for p in params:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(INSERT_SQL, p)
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
        conn.execute("DELETE FROM mem_tree_chunks")
        return elapsed

    return run


def _write_one(params: tuple[Any, ...], conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(INSERT_SQL, params)
    conn.execute("COMMIT")


def _with_connection_single(workspace: Path, n: int) -> Run:
    def run() -> float:
        params = [chunk_tuple(r) for r in _batch(n)]
        start = time.perf_counter()
        for p in params:
            api.with_connection(workspace, functools.partial(_write_one, p))
        elapsed = time.perf_counter() - start
        api.with_connection(workspace, lambda conn: conn.execute("DELETE FROM mem_tree_chunks"))
        return elapsed

    return run


def run_single(root: Path, settings: Settings) -> list[Row]:
    """Single-row write transactions: each commit is fsync-bound (synchronous=FULL)."""
    n = settings.single_tx
    raw = raw_connect(api.db_path_for(new_workspace(root, "single-raw")))
    wc_workspace = new_workspace(root, "single-wc")
    tc = {name: api.create_engine(new_workspace(root, f"single-{name}")) for name in ("core", "orm")}
    qp = sa_engine(api.db_path_for(new_workspace(root, "single-qp")), QueuePool, True)

    def cases(count: int) -> dict[str, Run]:
        return {
            "tx_raw": _raw_single(raw, count),
            "tx_with_connection": _with_connection_single(wc_workspace, count),
            "tx_core": _engine_run(tc["core"], count, _core_single),
            "tx_orm": _engine_run(tc["orm"], count, _orm_single),
            "tx_qp_core": _engine_run(qp, count, _core_single),
        }

    try:
        for warm_up in cases(max(1, n // 20)).values():  # fsync-bound: a short warm-up is enough
            warm_up()
        seconds = measure_runs(cases(n), settings.single_repeats, warmup=False)
    finally:
        for engine in [*tc.values(), qp]:
            engine.dispose()
        raw.close()
    spec = [
        ("tx_raw", "raw sqlite3: BEGIN IMMEDIATE + INSERT + COMMIT"),
        ("tx_with_connection", "tinycortex_sa with_connection: the same SQL"),
        ("tx_core", "tinycortex_sa engine.begin() + Core insert()"),
        ("tx_orm", "tinycortex_sa Session: add(Chunk(...)) + commit"),
        ("tx_qp_core", "SQLAlchemy QueuePool + BEGIN recipe: engine.begin() + Core insert()"),
    ]
    section = f"{SINGLE} ({n:,} transactions, µs per transaction)"
    return [
        Row(key, section, label, seconds[key] / n * 1e6, "tx_raw", f"{n / seconds[key]:,.0f} tx/s")
        for key, label in spec
    ]
