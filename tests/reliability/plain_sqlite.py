"""Plain ``sqlite3`` processes of the reliability scenarios: ``python plain_sqlite.py ROLE JSON-ARGS``.

Only the standard library: these processes stand for programs that share the
chunk DB without tinycortex_sa (the Rust core), so they never import it.  Each
opens the file with the chunk DB's pragmas (``busy_timeout``, ``foreign_keys``,
``synchronous = FULL``, ``journal_mode = TRUNCATE``), prints ``ready``, waits
for a line on stdin (``go``), works until the next line on stdin (``stop``),
end of input, its time limit or its transaction limit, whichever comes first,
and prints one JSON line with what it did.

Roles:

``ingest``
    The Rust core's ingest pattern: ``BEGIN`` (deferred), a ``SELECT`` on
    ``mem_tree_chunks``, ``INSERT OR REPLACE`` of a chunk and of its
    ``mem_tree_score`` row, ``COMMIT``; no retry.  A failed statement rolls
    the transaction back and counts a failure (by the step that failed).
``writer``
    Small write transactions at a fixed rate: ``BEGIN IMMEDIATE``, insert one
    chunk, ``COMMIT`` (what a Python writer through tinycortex_sa does, without
    it).
"""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
import time
from typing import Any

SQLITE_BUSY = 5

INSERT_CHUNK = (
    "{verb} INTO mem_tree_chunks (id, source_kind, source_id, owner, timestamp_ms, time_range_start_ms, "
    "time_range_end_ms, content, token_count, seq_in_source, created_at_ms) "
    "VALUES (?, 'chat', ?, 'user', ?, ?, ?, ?, 1, ?, ?)"
)
INSERT_SCORE = (
    "INSERT OR REPLACE INTO mem_tree_score (chunk_id, total, token_count_signal, unique_words_signal, "
    "metadata_weight, source_weight, interaction_weight, entity_density, dropped, reason, computed_at_ms) "
    "VALUES (?, 0.5, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0, 'ingest', ?)"
)


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def content(token: str, n: object) -> str:
    return f"private note {token} #{n}: met Alice at the clinic about the results"


def connect(path: str, busy_timeout: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=busy_timeout / 1000, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout)}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")
    mode = conn.execute("PRAGMA journal_mode = TRUNCATE").fetchone()[0]
    if mode != "truncate":
        raise RuntimeError(f"journal_mode is {mode}, not truncate")
    return conn


class Run:
    """``ready``, then ``go`` on stdin; over at ``stop`` (or end of input), after ``seconds`` or ``n``."""

    def __init__(self, a: dict[str, Any]) -> None:
        self.n = int(a["n"])
        self.seconds = float(a["seconds"])
        self.stop = threading.Event()
        out("ready")
        if sys.stdin.readline().strip() != "go":
            raise SystemExit("no go on stdin")
        self.deadline = time.monotonic() + self.seconds
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        sys.stdin.readline()  # "stop", or end of input
        self.stop.set()

    def going(self, done: int) -> bool:
        return done < self.n and not self.stop.is_set() and time.monotonic() < self.deadline

    def pace(self, next_at: float, period: float) -> float:
        """Sleep until ``next_at`` (or a stop); return the next slot, never more than one period behind."""
        delay = next_at - time.monotonic()
        if delay > 0:
            self.stop.wait(delay)
        return max(next_at + period, time.monotonic())


def busy(err: sqlite3.Error) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == SQLITE_BUSY


def ingest(a: dict[str, Any]) -> None:
    conn = connect(a["path"], a["busy_timeout"])
    name, token, pause = a["name"], a["token"], a.get("pause_ms", 0) / 1000
    committed: list[str] = []
    failed: list[str] = []
    failed_at: dict[str, int] = {}
    errors: list[str] = []
    other = 0
    longest = 0.0
    run = Run(a)
    started = time.monotonic()
    i = 0
    while run.going(i):
        key = f"{name}-{i}"
        i += 1
        step = "begin"
        start = time.monotonic()
        try:
            conn.execute("BEGIN")
            step = "select"
            seq = conn.execute(
                "SELECT count(*) FROM mem_tree_chunks WHERE source_kind = 'chat' AND source_id = ?", (name,)
            ).fetchone()[0]
            step = "insert chunk"
            now = int(time.time() * 1000)
            conn.execute(
                INSERT_CHUNK.format(verb="INSERT OR REPLACE"),
                (f"chunk-{key}", name, now, now, now, content(token, key), seq, now),
            )
            step = "insert score"
            conn.execute(INSERT_SCORE, (f"chunk-{key}", now))
            step = "commit"
            conn.execute("COMMIT")
            committed.append(f"chunk-{key}")
        except sqlite3.Error as err:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failed.append(f"chunk-{key}")
            failed_at[step] = failed_at.get(step, 0) + 1
            other += not busy(err)
            if len(errors) < 5:
                errors.append(f"{step}: {type(err).__name__}: {err}"[:300])
        longest = max(longest, time.monotonic() - start)
        if pause:
            run.stop.wait(pause)
    elapsed = time.monotonic() - started
    conn.close()
    out(
        json.dumps(
            {
                "attempted": i,
                "committed": committed,
                "failed": failed,
                "failed_at": failed_at,
                "not_busy": other,
                "errors": errors,
                "longest": longest,
                "elapsed": elapsed,
            }
        )
    )


def writer(a: dict[str, Any]) -> None:
    conn = connect(a["path"], a["busy_timeout"])
    name, token, period = a["name"], a["token"], a["period_ms"] / 1000
    committed: list[str] = []
    errors: list[str] = []
    run = Run(a)
    i = 0
    next_at = time.monotonic()
    while run.going(i):
        next_at = run.pace(next_at, period)
        if not run.going(i):
            break
        key = f"{name}-{i}"
        now = int(time.time() * 1000)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                INSERT_CHUNK.format(verb="INSERT"),
                (f"chunk-{key}", name, now, now, now, content(token, key), i, now),
            )
            conn.execute("COMMIT")
            committed.append(f"chunk-{key}")
        except sqlite3.Error as err:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if len(errors) < 5:
                errors.append(f"{type(err).__name__}: {err}"[:300])
        i += 1
    conn.close()
    out(json.dumps({"attempted": i, "committed": committed, "errors": errors}))


ROLES = {"ingest": ingest, "writer": writer}


def main() -> None:
    role, args = sys.argv[1], json.loads(sys.argv[2])
    try:
        ROLES[role](args)
    except Exception as err:
        out(json.dumps({"fatal": f"{type(err).__name__}: {err}"}))
        sys.exit(2)


if __name__ == "__main__":
    main()
