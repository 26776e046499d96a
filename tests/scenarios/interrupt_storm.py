"""A signal handler raising at random moments while a process writes through Sessions.

Run as ``python interrupt_storm.py WORKSPACE INTERRUPTS SECONDS SEED``: a timer
(``SIGALRM``, every 20 µs to 3 ms) raises KeyboardInterrupt, SystemExit or
RuntimeError from its handler wherever the main thread happens to be: in a
checkout, a statement, a commit, a rollback, a checkin, ``with_connection``.
Then it checks what an application needs afterwards and prints one JSON line:
whether the handle is free, whether another thread and this one get the
connection at once, and which acknowledged commits are missing.
"""

from __future__ import annotations

import gc
import json
import random
import signal
import sqlite3
import sys
import threading
import time
import traceback
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

import tinycortex_sa
from tinycortex_sa.connection import registry
from tinycortex_sa.models import Chunk

KINDS: tuple[type[BaseException], ...] = (KeyboardInterrupt, SystemExit, RuntimeError)


def chunk(key: str) -> Chunk:
    return Chunk(
        id=key,
        source_kind="chat",
        source_id="storm",
        owner="me",
        timestamp_ms=1,
        time_range_start_ms=1,
        time_range_end_ms=1,
        content=key,
        token_count=1,
        seq_in_source=1,
        created_at_ms=1,
    )


def main(workspace: str, interrupts: int, seconds: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    engine = tinycortex_sa.create_engine(workspace, checkout_timeout=5)
    reader = tinycortex_sa.create_engine(workspace, read_only=True, checkout_timeout=5)
    sa.orm.configure_mappers()  # SQLAlchemy's one-time set-up is not what is under test
    with Session(engine) as session:  # the schema, and every statement compiled once, before the storm
        session.add(chunk("c0"))
        session.commit()
        session.get(Chunk, "c0")
    with engine.begin() as conn:
        conn.execute(sa.insert(Chunk.__table__), [_row("c-1")])
    acknowledged: set[str] = set()
    fired = {"n": 0}

    def handler(signum: int, frame: object) -> None:
        fired["n"] += 1
        raise rng.choice(KINDS)("interrupted")

    def one_step(step: int) -> None:
        key = f"c{step}"
        what = step % 4
        if what == 0:
            with Session(engine) as session:
                session.add(chunk(key))
                session.commit()
            acknowledged.add(key)
        elif what == 1:
            with Session(reader) as session:
                session.get(Chunk, f"c{step - 1}")
        elif what == 2:
            with engine.begin() as conn:
                conn.execute(sa.insert(Chunk.__table__), [_row(key)])
            acknowledged.add(key)
        else:
            tinycortex_sa.with_connection(
                workspace, lambda c: c.execute("SELECT count(*) FROM mem_tree_chunks").fetchone()
            )

    signal.signal(signal.SIGALRM, handler)
    step = 0
    errors: dict[str, int] = {}
    first: dict[str, str] = {}
    """The first traceback of every error that is not the interrupt itself (for the report)."""
    slow: list[tuple[int, float]] = []
    deadline = time.monotonic() + seconds
    while fired["n"] < interrupts and time.monotonic() < deadline:
        step += 1
        began = time.monotonic()
        try:  # the timer is one-shot: at most one interrupt per step, wherever it lands
            try:
                signal.setitimer(signal.ITIMER_REAL, rng.uniform(0.00002, 0.003))
                one_step(step)
                signal.setitimer(signal.ITIMER_REAL, 0)
            except BaseException as err:
                signal.setitimer(signal.ITIMER_REAL, 0)
                name = type(err).__name__
                errors[name] = errors.get(name, 0) + 1
                if name not in first and not isinstance(err, KINDS):
                    first[name] = "".join(traceback.format_exception(err))[-3000:]
        except KINDS:  # it fired while the step's own error was being handled
            errors["late interrupt"] = errors.get("late interrupt", 0) + 1
        if time.monotonic() - began > 0.5:
            slow.append((step, round(time.monotonic() - began, 2)))
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    gc.collect()

    handle = registry.existing_handle(tinycortex_sa.db_path_for(workspace))
    report: dict[str, Any] = {"interrupts": fired["n"], "steps": step, "errors": errors}
    report["slow_steps"] = slow[:10]
    report["first_tracebacks"] = first
    report["held_before_checks"] = handle is not None and handle.held  # an orphan waits for a checkout
    started = time.monotonic()
    other: list[object] = []
    thread = threading.Thread(
        target=lambda: other.append(tinycortex_sa.with_connection(workspace, lambda c: 1, checkout_timeout=5))
    )
    thread.start()
    thread.join(10)
    report["other_thread_s"] = round(time.monotonic() - started, 3) if other == [1] else None
    try:
        with Session(engine) as session:
            report["this_thread_ok"] = session.execute(sa.text("SELECT 1")).scalar() == 1
    except tinycortex_sa.NestedCheckoutError:
        report["this_thread_ok"] = False
    report["held_after"] = handle is not None and handle.held
    conn = sqlite3.connect(tinycortex_sa.db_path_for(workspace))
    present = {r[0] for r in conn.execute("SELECT id FROM mem_tree_chunks")}
    report["integrity"] = conn.execute("PRAGMA integrity_check").fetchone()[0]
    conn.close()
    report["acknowledged"] = len(acknowledged)
    report["lost"] = sorted(acknowledged - present)[:20]
    return report


def _row(key: str) -> dict[str, Any]:
    row = chunk(key)
    return {c.name: getattr(row, c.key) for c in Chunk.__table__.columns if getattr(row, c.key) is not None}


if __name__ == "__main__":
    ws, n, secs, seed = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(main(ws, n, secs, seed)))
