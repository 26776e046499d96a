"""Benchmark section: asyncio, against ``sqlite+aiosqlite`` and ``asyncio.to_thread`` around a sync Session.

* One primary-key lookup per checkout (``async with engine.connect()``) and
  one ``AsyncSession.get`` per session, on tinycortex_sa's async engine and on
  ``sqlite+aiosqlite`` with its default ``AsyncAdaptedQueuePool``, the same
  four pragmas (a "connect" listener) and the same ``BEGIN EXCLUSIVE``
  (SQLAlchemy's recipe: the driver in autocommit, a "begin" listener).
* Event-loop lag: a ticker task sleeping 1 ms records how late each wake-up
  is while 100 tasks wait for the connection and one at a time runs a lookup.
* 200 concurrent tasks, each a short Session (9 lookups : 1 single-row write
  transaction), through the async engine and through ``asyncio.to_thread``
  around a sync ``Session`` on a sync engine: time per task.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from tinycortex_sa import api
from tinycortex_sa.models import Chunk

from .core import (
    CHUNK_TABLE,
    LOOKUP_ID,
    LOOKUP_TEXT,
    PRAGMAS,
    Row,
    Settings,
    chunk_dicts,
    measure_runs,
    percentile,
)

S = SECTION = "asyncio: tinycortex_sa's async engine, sqlite+aiosqlite, asyncio.to_thread"
_PARAMS = {"id": LOOKUP_ID}
TASKS = 200
WAITERS = 100


def _aiosqlite_engine(db_path: Path) -> AsyncEngine:
    engine = create_async_engine(f"sqlite+aiosqlite:///{db_path}")

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # the recipe: the driver never emits BEGIN itself
        cursor = dbapi_connection.cursor()
        for pragma in PRAGMAS:
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN EXCLUSIVE")

    return engine


Batch = Callable[[AsyncEngine, int], Awaitable[None]]


async def _connect_execute(engine: AsyncEngine, n: int) -> None:
    for _ in range(n):
        async with engine.connect() as conn:
            (await conn.execute(LOOKUP_TEXT, _PARAMS)).fetchone()


async def _session_get(engine: AsyncEngine, n: int) -> None:
    for _ in range(n):
        async with AsyncSession(engine) as session:
            await session.get(Chunk, LOOKUP_ID)


def _timed(make: Callable[[], AsyncEngine], batch: Batch, n: int) -> Callable[[], float]:
    """A case for :func:`measure_runs`: a fresh loop and engine, one warm-up op, ``n`` ops timed."""

    def case() -> float:
        async def main() -> float:
            engine = make()
            try:
                await batch(engine, 1)
                start = time.perf_counter()
                await batch(engine, n)
                return time.perf_counter() - start
            finally:
                await engine.dispose()

        return asyncio.run(main())

    return case


def _lag(make: Callable[[], AsyncEngine], rounds: int) -> list[float]:
    """Wake-up delays (seconds) of a 1 ms ticker while ``WAITERS`` tasks contend for the connection."""

    async def main() -> list[float]:
        engine = make()
        lags: list[float] = []
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        async def ticker() -> None:
            while not stop.is_set():
                due = loop.time() + 0.001
                await asyncio.sleep(0.001)
                lags.append(loop.time() - due)

        async def waiter() -> None:
            for _ in range(rounds):
                async with engine.connect() as conn:
                    (await conn.execute(LOOKUP_TEXT, _PARAMS)).fetchone()

        try:
            await _connect_execute(engine, 1)
            tick = asyncio.create_task(ticker())
            await asyncio.gather(*(waiter() for _ in range(WAITERS)))
            stop.set()
            await tick
            return lags
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _mixed_async(workspace: Path, tasks: int) -> Callable[[], float]:
    counter = itertools.count()

    def case() -> float:
        async def main() -> float:
            engine = api.create_async_engine(workspace, checkout_timeout=120)

            async def one(i: int) -> None:
                async with AsyncSession(engine) as session:
                    for _ in range(9):
                        await session.execute(LOOKUP_TEXT, _PARAMS)
                    await session.commit()
                async with AsyncSession(engine) as session, session.begin():
                    await session.execute(sa.insert(CHUNK_TABLE), chunk_dicts("aio", 1, next(counter)))

            try:
                await _connect_execute(engine, 1)
                start = time.perf_counter()
                await asyncio.gather(*(one(i) for i in range(tasks)))
                return time.perf_counter() - start
            finally:
                await engine.dispose()

        return asyncio.run(main())

    return case


def _mixed_to_thread(workspace: Path, tasks: int) -> Callable[[], float]:
    counter = itertools.count()

    def case() -> float:
        engine = api.create_engine(workspace, checkout_timeout=120)

        def one(i: int) -> None:
            with Session(engine) as session:
                for _ in range(9):
                    session.execute(LOOKUP_TEXT, _PARAMS)
                session.commit()
            with Session(engine) as session, session.begin():
                session.execute(sa.insert(CHUNK_TABLE), chunk_dicts("thread", 1, next(counter)))

        async def main() -> float:
            start = time.perf_counter()
            await asyncio.gather(*(asyncio.to_thread(one, i) for i in range(tasks)))
            return time.perf_counter() - start

        try:
            return asyncio.run(main())
        finally:
            engine.dispose()

    return case


def run(root: Path, reads_ws: Path, settings: Settings) -> list[Row]:
    db_path = api.db_path_for(reads_ws)
    n = 20 if settings.quick else 2000
    repeats = 1 if settings.quick else max(3, settings.repeats // 2)

    def ours() -> AsyncEngine:
        return api.create_async_engine(reads_ws)

    def theirs() -> AsyncEngine:
        return _aiosqlite_engine(db_path)

    per_op = measure_runs(
        {
            "aio_connect": _timed(ours, _connect_execute, n),
            "aiosqlite_connect": _timed(theirs, _connect_execute, n),
            "aio_session": _timed(ours, _session_get, n),
            "aiosqlite_session": _timed(theirs, _session_get, n),
        },
        repeats,
        warmup=not settings.quick,
    )
    rows = [
        Row("aiosqlite_connect", S, "sqlite+aiosqlite: connect() + lookup + close", 0, "aiosqlite_connect"),
        Row("aio_connect", SECTION, "tinycortex_sa async engine: connect() + lookup + close", 0,
            "aiosqlite_connect"),
        Row("aiosqlite_session", SECTION, "sqlite+aiosqlite: AsyncSession.get", 0, "aiosqlite_session"),
        Row("aio_session", SECTION, "tinycortex_sa async engine: AsyncSession.get", 0, "aiosqlite_session"),
    ]  # fmt: skip
    for row in rows:
        row.us = per_op[row.key] / n * 1e6
    lags = _lag(ours, 2 if settings.quick else 20)
    p99, worst = percentile(lags, 99), max(lags)
    rows += [
        Row("aio_lag_budget_p99", SECTION, "event-loop lag budget, p99 (5 ms)", 5000, "aio_lag_budget_p99"),
        Row("aio_lag_p99", SECTION, f"event-loop lag, p99, {WAITERS} tasks waiting ({len(lags)} ticks)",
            p99 * 1e6, "aio_lag_budget_p99"),
        Row("aio_lag_budget_max", S, "event-loop lag budget, max (50 ms)", 50_000, "aio_lag_budget_max"),
        Row("aio_lag_max", SECTION, f"event-loop lag, max, {WAITERS} tasks waiting", worst * 1e6,
            "aio_lag_budget_max"),
    ]  # fmt: skip
    tasks = 20 if settings.quick else TASKS
    write_ws = root / "aio-mixed"
    api.with_connection(write_ws, lambda c: _copy_chunks(c, db_path))
    mixed = measure_runs(
        {"aio_tasks": _mixed_async(write_ws, tasks), "to_thread_tasks": _mixed_to_thread(write_ws, tasks)},
        repeats,
        warmup=not settings.quick,
    )
    rows += [
        Row("to_thread_tasks", S, f"asyncio.to_thread + sync Session, {tasks} concurrent tasks, per task",
            mixed["to_thread_tasks"] / tasks * 1e6, "to_thread_tasks"),
        Row("aio_tasks", SECTION, f"async engine + AsyncSession, {tasks} concurrent tasks, per task",
            mixed["aio_tasks"] / tasks * 1e6, "to_thread_tasks"),
    ]  # fmt: skip
    return rows


def _copy_chunks(conn: Any, source: Path) -> None:
    """Give the mixed workload's file the read workspace's chunks (the lookup must find its row)."""
    conn.execute("ATTACH DATABASE ? AS src", (str(source),))
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO mem_tree_chunks SELECT * FROM src.mem_tree_chunks")
        conn.execute("COMMIT")
    finally:
        conn.execute("DETACH DATABASE src")
