"""Scenario 2: contention between processes.

Part A: several worker processes, each with its own connection through
tinycortex_sa, run read-then-write transactions on one file at the same time
(some also read under a deferred BEGIN), beside a plain sqlite3 process that
stands in for the Rust core (its pragmas, BEGIN IMMEDIATE, busy timeout).  Each
holds its write lock for a random few milliseconds.  No "database is locked"
may reach any caller while the waits stay under ``busy_timeout``; every row
must arrive.

Part B: another process holds the file longer than ``busy_timeout``
(RESERVED through BEGIN IMMEDIATE, and EXCLUSIVE): a first open, a Session
write, a deferred Session read and a ``with_connection`` write each get an
error after ``busy_timeout``, the breaker does not trip (threshold 1), and the
next call works once the lock is gone.  The error is typed: the first open
raises ``DatabaseBusyError``, a statement through an engine raises
``StatementBusyError`` (a SQLAlchemy ``OperationalError`` and a
``DatabaseBusyError``), each naming the file and ``busy_timeout`` and saying
to retry; in ``with_connection`` the caller's own statement on the raw
``sqlite3`` connection raises SQLite's ``OperationalError`` (SQLITE_BUSY)
unchanged, as ``with_connection`` documents.
"""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

import tinycortex_sa
from tinycortex_sa import db_path_for

from .common import (
    INSERT_CHUNK,
    TOKEN,
    Context,
    LineReader,
    Result,
    check_logs,
    chunk_row,
    forget,
    last_report,
    prepare_head,
    scalar,
    worker_cmd,
)

BUSY_TIMEOUT_MS = 15000


def _contention(ctx: Context, result: Result, rounds: int, workers: int, n: int) -> None:
    for r in range(rounds):
        ws = ctx.tmp / f"contention-{r}"
        path = prepare_head(ws)
        log = ctx.tmp / f"contention-{r}.log"
        start_in = 1.5  # every worker has imported and opened by then: they start writing together
        procs = []
        for w in range(workers):
            args: dict[str, Any] = dict(
                ws=str(ws),
                n=n,
                name=f"py{w}",
                token=TOKEN,
                busy_timeout=BUSY_TIMEOUT_MS,
                hold_ms=4,
                seed=ctx.seed * 100 + r * 10 + w,
                start_in=start_in,
                log=str(log),
            )
            procs.append(
                (
                    "python",
                    f"py{w}",
                    subprocess.Popen(
                        worker_cmd("contender", **args),
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    ),
                )
            )
        rust = subprocess.Popen(
            worker_cmd(
                "rustlike",
                path=str(path),
                n=n * 2,
                name="rust",
                token=TOKEN,
                busy_timeout=BUSY_TIMEOUT_MS,
                hold_ms=4,
                seed=ctx.seed * 100 + r,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(("rust stand-in", "rust", rust))
        expected = {f"py{w}": n for w in range(workers)} | {"rust": n * 2}
        max_wait = 0.0
        for kind, name, proc in procs:
            stdout, stderr = proc.communicate(timeout=300)
            rep = last_report(stdout)
            if rep is None:
                result.problem(f"round {r}: {kind} {name} reported nothing: {stderr[-500:]}")
                continue
            if "fatal" in rep:
                result.problem(f"round {r}: {kind} {name} died: {rep['fatal']}")
                continue
            result.trials += rep["done"] + rep.get("reads", 0)
            max_wait = max(max_wait, rep["max_wait"])
            if rep["locked"]:
                result.problem(
                    f"round {r}: {rep['locked']} 'database is locked' reached {kind} {name}: "
                    f"{rep['errors'][:2]}"
                )
            elif rep["errors"]:
                result.problem(f"round {r}: {kind} {name} got errors: {rep['errors'][:3]}")
        got = dict(
            (source, count)
            for source, count in _query(
                path, "SELECT source_id, count(*) FROM mem_tree_chunks GROUP BY source_id"
            )
        )
        for source, want in expected.items():
            if got.get(source, 0) != want:
                result.lost += max(want - got.get(source, 0), 0)
                result.problem(f"round {r}: {source} committed {want} rows, {got.get(source, 0)} arrived")
        # read-then-write: each writer's seq_in_source numbers 0..n-1 exactly once
        dup = scalar(
            path, "SELECT count(*) - count(DISTINCT source_id || ':' || seq_in_source) FROM mem_tree_chunks"
        )
        result.check(dup == 0, f"round {r}: {dup} read-then-write transactions saw a stale count")
        result.check(scalar(path, "PRAGMA integrity_check") == "ok", f"round {r}: integrity_check failed")
        result.check(
            max_wait * 1000 < BUSY_TIMEOUT_MS, f"round {r}: a wait of {max_wait:.2f}s reached busy_timeout"
        )
        result.notes.append(
            f"round {r}: {workers} Python processes + 1 sqlite3 process, {sum(expected.values())} write "
            f"transactions, longest transaction including its wait {max_wait * 1000:.0f} ms "
            f"(busy_timeout {BUSY_TIMEOUT_MS} ms), 0 'database is locked'"
        )
        check_logs(result, log.read_text().splitlines() if log.exists() else [])


def _query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


class Holder:
    """Another process holding the file with BEGIN IMMEDIATE (RESERVED) or BEGIN EXCLUSIVE."""

    def __init__(self, path: Path, mode: str) -> None:
        self.proc = subprocess.Popen(
            worker_cmd("holder", path=str(path), mode=mode), stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.reader = LineReader(self.proc)
        if not self.reader.wait_for(lambda lines: "held" in lines, 30):
            raise RuntimeError("the holder process did not take its lock")

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.close()
        self.proc.wait(30)


#: action -> the error type it must raise once another process held the file past busy_timeout
EXPECTED_BUSY: dict[str, type[BaseException]] = {
    "first open": tinycortex_sa.DatabaseBusyError,
    "session write": tinycortex_sa.StatementBusyError,
    "with_connection write": sqlite3.OperationalError,
    "session read": tinycortex_sa.StatementBusyError,
}


def _clear(err: BaseException, path: Path, busy: int, action: str) -> str | None:
    """Why ``err`` is not the clear busy error ``action`` promises, or None."""
    text = str(err)
    want = EXPECTED_BUSY[action]
    if not isinstance(err, want):
        return f"{action}: {type(err).__name__} is not a {want.__name__}: {text[:300]}"
    if want is sqlite3.OperationalError:
        # with_connection: the caller's own statement on the raw connection, propagated unchanged
        code = getattr(err, "sqlite_errorcode", None)
        if code is None or code & 0xFF != 5:
            return f"{action}: not SQLITE_BUSY ({code}): {text[:200]}"
        return None
    if want is tinycortex_sa.StatementBusyError and not isinstance(err, sa.exc.OperationalError):
        return f"{action}: StatementBusyError is not a SQLAlchemy OperationalError"
    missing = [
        what
        for what, ok in (
            ("the path", str(path) in text and getattr(err, "path", None) == path),
            ("busy_timeout", f"busy_timeout={busy}ms" in text),
            ("advice", "retry" in text),
        )
        if not ok
    ]
    return f"{action}: {type(err).__name__} without {', '.join(missing)}: {text[:300]}" if missing else None


def _long_holder(ctx: Context, result: Result, trials: int) -> None:
    busy = 300
    seen: dict[str, set[str]] = {}
    clear = breaker_closed = next_ok = 0
    for t in range(trials):
        ws = ctx.tmp / f"holder-{t}"
        path = prepare_head(ws)
        for mode, action in (
            ("EXCLUSIVE", "first open"),
            ("IMMEDIATE", "session write"),
            ("IMMEDIATE", "with_connection write"),
            ("EXCLUSIVE", "session read"),
        ):
            engine = tinycortex_sa.create_engine(ws, busy_timeout=busy, breaker_threshold=1)
            if action != "first open":
                with engine.connect() as conn:  # the connection is open before the other process locks
                    conn.exec_driver_sql("SELECT 1")
            holder = Holder(path, mode)
            result.faults += 1
            result.trials += 1
            start = time.monotonic()
            err: BaseException | None = None
            try:
                _act(engine, ws, action)
            except Exception as e:
                err = e
            waited = time.monotonic() - start
            if err is None:
                result.problem(f"{action} under another process's {mode} lock succeeded?")
            else:
                seen.setdefault(action, set()).add(type(err).__name__)
                why = _clear(err, db_path_for(ws).resolve(), busy, action)
                if why:
                    result.problem(why)
                else:
                    clear += 1
            result.check(
                busy / 1000 * 0.8 <= waited < busy / 1000 + 5,
                f"{action}: failed after {waited:.2f}s, not after busy_timeout={busy}ms",
            )
            state = tinycortex_sa.breaker_state(ws)
            breaker_closed += result.check(
                (state.state, state.failures) == ("closed", 0),
                f"{action}: the breaker counted lock contention: {state}",
            )
            holder.release()
            try:
                _act(engine, ws, action)
                next_ok += 1
            except Exception as e:
                result.problem(
                    f"{action}: the next call after the lock was released failed: {type(e).__name__}: {e}"
                )
            engine.dispose()
            forget(ws)
    total = trials * len(EXPECTED_BUSY)
    result.notes.append(
        f"{total} calls under another process's lock held past busy_timeout={busy}ms ({trials} of each): "
        + "; ".join(f"{action}: {', '.join(sorted(types))}" for action, types in seen.items())
        + f"; {clear}/{total} the promised error, breaker closed with 0 failures {breaker_closed}/{total}, "
        f"the next call worked {next_ok}/{total}"
    )


def _act(engine: sa.Engine, ws: Path, action: str) -> None:
    if action == "first open":
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    elif action == "session write":
        with Session(engine) as session:
            session.execute(sa.text(INSERT_CHUNK), chunk_row(f"holder-{time.monotonic_ns()}", TOKEN))
            session.commit()
    elif action == "with_connection write":

        def write(conn: Any) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(INSERT_CHUNK, chunk_row(f"holder-wc-{time.monotonic_ns()}", TOKEN))
            conn.execute("COMMIT")

        tinycortex_sa.with_connection(ws, write)
    elif action == "session read":
        reader = engine.execution_options(tinycortex_begin="deferred")
        with Session(reader) as session:
            session.execute(sa.text("SELECT count(*) FROM mem_tree_chunks")).scalar()


def run(ctx: Context) -> Result:
    result = Result("contention", "2. Contention between processes (+ sqlite3 'Rust core')")
    _contention(ctx, result, rounds=ctx.n(1, 4), workers=ctx.n(3, 4), n=ctx.n(25, 120))
    _long_holder(ctx, result, trials=ctx.n(1, 5))
    return result
