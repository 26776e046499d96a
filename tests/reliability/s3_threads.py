"""Scenario 3: many threads share one engine (and ``with_connection``) with mixed work.

Each thread runs a random mix of: ORM writes through a Session, ORM reads,
reads under a deferred BEGIN, raw writes through ``with_connection``, a write
that rolls back, and nested use (a Session opened inside another Session on
the same file, which must fail fast with NestedCheckoutError while the outer
one carries on and commits).  Threads are joined with a deadline (a deadlock
is a failure).  Afterwards every committed row is there, no rolled-back row
is, and no error other than the expected NestedCheckoutError was seen.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

import tinycortex_sa
from tinycortex_sa import models

from .common import INSERT_CHUNK, TOKEN, Context, Result, chunk_row, content, forget, prepare_head, scalar


def _chunk(i: str) -> models.Chunk:
    row = chunk_row(i, TOKEN, source="threads")
    return models.Chunk(**row)


def run(ctx: Context) -> Result:
    result = Result("threads", "3. Threads sharing one engine")
    rounds, n_threads, ops = ctx.n(2, 6), ctx.n(8, 32), ctx.n(40, 150)
    for r in range(rounds):
        _round(ctx, result, r, n_threads, ops)
    return result


def _round(ctx: Context, result: Result, r: int, n_threads: int, ops: int) -> None:
    if True:
        ws = ctx.tmp / f"threads-{r}"
        path = prepare_head(ws)
        engine = tinycortex_sa.create_engine(ws, checkout_timeout=60)
        reader = engine.execution_options(tinycortex_begin="deferred")
        committed: list[str] = []
        rolled_back: list[str] = []
        errors: list[str] = []
        nested_seen = 0
        longest_nested = 0.0
        lock = threading.Lock()
        barrier = threading.Barrier(n_threads)

        def work(t: int) -> None:
            nonlocal nested_seen, longest_nested
            rng = ctx.rng(f"threads-{r}-{t}")
            barrier.wait(30)
            for k in range(ops):
                key = f"{r}-{t}-{k}"
                op = rng.choice(
                    ("orm-write", "orm-write", "orm-read", "deferred-read", "raw-write", "rollback", "nested")
                )
                try:
                    if op == "orm-write":
                        with Session(engine) as session:
                            session.add(_chunk(key))
                            session.commit()
                        with lock:
                            committed.append(key)
                    elif op == "orm-read":
                        with Session(engine) as session:
                            session.get(models.Chunk, f"chunk-{key}")
                            session.execute(sa.select(sa.func.count()).select_from(models.Chunk)).scalar()
                    elif op == "deferred-read":
                        with Session(reader) as session:
                            session.execute(sa.text("SELECT count(*) FROM mem_tree_chunks")).scalar()
                    elif op == "raw-write":

                        def write(conn: sqlite3.Connection, key: str = key) -> None:
                            conn.execute("BEGIN IMMEDIATE")
                            conn.execute(INSERT_CHUNK, chunk_row(key, TOKEN, source="threads"))
                            conn.execute("COMMIT")

                        tinycortex_sa.with_connection(ws, write)
                        with lock:
                            committed.append(key)
                    elif op == "rollback":
                        with Session(engine) as session:
                            session.add(_chunk(key))
                            session.flush()
                            session.rollback()
                        with lock:
                            rolled_back.append(key)
                    else:  # nested use on the same file must fail fast; the outer work goes on
                        with Session(engine) as outer:
                            outer.add(_chunk(key))
                            outer.flush()
                            start = time.monotonic()
                            try:
                                with Session(engine) as inner:
                                    inner.execute(sa.text("SELECT 1"))
                                with lock:
                                    errors.append(f"{key}: nested Session did not fail")
                            except tinycortex_sa.NestedCheckoutError:
                                with lock:
                                    nested_seen += 1
                                    longest_nested = max(longest_nested, time.monotonic() - start)
                            outer.commit()
                        with lock:
                            committed.append(key)
                except Exception as err:
                    with lock:
                        errors.append(f"{key} {op}: {type(err).__name__}: {str(err)[:200]}")

        threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(n_threads)]
        start = time.monotonic()
        for th in threads:
            th.start()
        deadline = start + 240
        for th in threads:
            th.join(max(deadline - time.monotonic(), 0))
        stuck = [th for th in threads if th.is_alive()]
        elapsed = time.monotonic() - start
        if stuck:
            result.problem(f"round {r}: {len(stuck)} threads still running after {elapsed:.0f}s: a deadlock")
            return
        result.trials += n_threads * ops
        result.faults += nested_seen
        for e in errors[:10]:
            result.problem(f"round {r}: {e}")
        ids = {row[0] for row in _ids(path)}
        missing = [k for k in committed if f"chunk-{k}" not in ids]
        if missing:
            result.lost += len(missing)
            result.problem(f"round {r}: {len(missing)} committed rows missing, e.g. {missing[:3]}")
        present = [k for k in rolled_back if f"chunk-{k}" in ids]
        result.check(not present, f"round {r}: rolled-back rows are present: {present[:3]}")
        result.check(len(ids) == len(committed), f"round {r}: {len(ids)} rows for {len(committed)} commits")
        result.check(longest_nested < 1.0, f"round {r}: nested use took {longest_nested:.2f}s to fail")
        result.check(scalar(path, "PRAGMA integrity_check") == "ok", f"round {r}: integrity_check failed")
        result.notes.append(
            f"round {r}: {n_threads} threads x {ops} operations in {elapsed:.1f}s, {len(committed)} commits, "
            f"{len(rolled_back)} rollbacks, {nested_seen} nested uses refused "
            f"(slowest {longest_nested * 1000:.1f} ms)"
        )
        engine.dispose()
        forget(ws)


def _ids(path: Any) -> list[tuple[str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT id FROM mem_tree_chunks").fetchall()
    finally:
        conn.close()


__all__ = ["content", "run"]
