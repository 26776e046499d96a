"""Scenario 11 (numbered after the security items 8-10): coexistence with the Rust core's ingest.

The Rust core's ingest runs a deferred transaction that reads, then writes,
and does not retry.  SQLite answers the upgrade of that transaction's SHARED
lock to RESERVED with an immediate SQLITE_BUSY ("database is locked", no busy
wait) whenever another connection holds RESERVED or more: waiting there could
deadlock, so ``busy_timeout`` does not apply.  A plain ``sqlite3`` process
(``plain_sqlite.py ingest``, not tinycortex_sa) stands in for it: the chunk
DB's pragmas, ``busy_timeout`` 15 s, ``BEGIN``, a ``SELECT`` on
``mem_tree_chunks``, ``INSERT OR REPLACE`` of a chunk and of its
``mem_tree_score`` row, ``COMMIT``; a failure is rolled back and counted.

Beside it, one setup at a time, each on its own file, another process:

* ``read-only reader``: a Python process reading in a loop (``Session.get``
  and a SELECT, one transaction each) through ``create_engine(ws,
  read_only=True)``.  It never takes RESERVED, so the stand-in must not fail
  once;
* ``default reader``: the same loop through the default engine, whose
  transactions, reads included, begin EXCLUSIVE: the stand-in waits at its
  read (under busy_timeout) while the reader holds the lock, and fails when
  the reader's BEGIN comes between its read and its write (a figure, no
  promise);
* ``immediate reader`` (the baseline): the same loop with
  ``execution_options(tinycortex_begin="immediate")``; its reads hold
  RESERVED, so the stand-in's upgrade fails whenever it overlaps one;
* ``Session writer``: a Python process committing one chunk per transaction
  through Sessions on the default engine (BEGIN EXCLUSIVE), every
  ``WRITER_PERIOD_MS``;
* ``Session writer, immediate``: the same with
  ``execution_options(tinycortex_begin="immediate")``, the former default (a
  figure, no promise);
* ``sqlite3 writer``: a plain sqlite3 process doing the same writes with
  ``BEGIN IMMEDIATE`` at the same rate, the floor such a writer sets: SQLite
  itself fails the stand-in whenever it upgrades while a writer holds the lock.

The figures are failed stand-in transactions per 1,000.  Promises: 0 beside
the read-only reader; beside the Session writer (default engine) at most 1.5
times the rate beside the sqlite3 writer, give or take the counts' noise (see
``_compare``; judged by the full run only: the small run sees a handful of
failures); and every acknowledged write of every process is in the file
afterwards (and no row of a failed stand-in transaction).  The setups run in rounds (the order
reversed every other round), so that a change in the machine's load affects
all of them alike.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .common import (
    TOKEN,
    Context,
    LineReader,
    Result,
    check_logs,
    content,
    last_report,
    prepare_head,
    worker_cmd,
)

PLAIN = Path(__file__).resolve().parent / "plain_sqlite.py"
BUSY_TIMEOUT_MS = 15000
PREFILL = 200
"""Chunks (with score rows) in each file before the run, for the readers to read."""
WRITER_PERIOD_MS = 20
"""One write transaction every 20 ms (50 a second) for both writers."""
INGEST_PAUSE_MS = 2
"""Between the stand-in's transactions (the ingest's other work); gives the other process its turns."""
RATIO = 1.5
"""Target: failures beside the Session writer at most 1.5 times those beside the sqlite3 writer."""
SIGMAS = 3.0
"""The slack on that target, in standard deviations of the counts' Poisson noise."""
READY_TIMEOUT = 120.0


@dataclass(frozen=True)
class Setup:
    key: str
    label: str
    role: str
    """``coreader``/``cowriter`` (worker.py, through tinycortex_sa) or ``writer`` (plain_sqlite.py)."""
    plain: bool = False
    read_only: bool = False
    begin: str = ""
    """The Python process's ``tinycortex_begin`` ("": the engine's default, EXCLUSIVE; read-only DEFERRED)."""


SETUPS = (
    Setup("read-only", "Python reader, `read_only=True` engine (BEGIN DEFERRED)", "coreader", read_only=True),
    Setup("default-reader", "Python reader, default engine (BEGIN EXCLUSIVE reads)", "coreader"),
    Setup(
        "immediate-reader",
        'Python reader, the same with `tinycortex_begin="immediate"` (baseline)',
        "coreader",
        begin="immediate",
    ),
    Setup("session-writer", "Python writer, Sessions on the default engine (BEGIN EXCLUSIVE)", "cowriter"),
    Setup(
        "session-immediate",
        'Python writer, the same with `tinycortex_begin="immediate"` (the former default)',
        "cowriter",
        begin="immediate",
    ),
    Setup("sqlite3-writer", "plain sqlite3 writer, BEGIN IMMEDIATE, the same writes", "writer", plain=True),
)


@dataclass
class Tally:
    """One setup's figures, summed over the rounds."""

    attempted: int = 0
    failed: int = 0
    failed_at: dict[str, int] = field(default_factory=dict)
    companion: int = 0
    """The other process's transactions (reads or writes) while the stand-in ran."""
    seconds: float = 0.0
    longest: float = 0.0

    @property
    def per_1000(self) -> float:
        return 1000 * self.failed / self.attempted if self.attempted else 0.0


class Child:
    """A child process speaking the ready/go/stop protocol of ``plain_sqlite.py`` and ``worker.py``."""

    def __init__(self, cmd: list[str], stderr: Path) -> None:
        self.stderr_path = stderr
        self._stderr: IO[bytes] = stderr.open("wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr)
        self.reader = LineReader(self.proc)

    def ready(self, timeout: float) -> bool:
        return self.reader.wait_for(lambda lines: "ready" in lines, timeout)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ValueError):  # it has exited: its report says why
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()

    def report(self, timeout: float) -> dict[str, Any] | None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        return last_report("\n".join(self.reader.finish()))

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-800:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        if self.proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        self._stderr.close()


def _prefill(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        now = int(time.time() * 1000)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO mem_tree_chunks (id, source_kind, source_id, owner, timestamp_ms, "
            "time_range_start_ms, time_range_end_ms, content, token_count, seq_in_source, created_at_ms) "
            "VALUES (?, 'chat', 'prefill', 'user', ?, ?, ?, ?, 1, ?, ?)",
            [(f"chunk-pre-{k}", now, now, now, content(TOKEN, f"pre-{k}"), k, now) for k in range(PREFILL)],
        )
        conn.executemany(
            "INSERT INTO mem_tree_score (chunk_id, total, token_count_signal, unique_words_signal, "
            "metadata_weight, source_weight, interaction_weight, entity_density, computed_at_ms) "
            "VALUES (?, 0.5, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, ?)",
            [(f"chunk-pre-{k}", now) for k in range(PREFILL)],
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def _plain_cmd(role: str, **args: Any) -> list[str]:
    return [sys.executable, str(PLAIN), role, json.dumps(args)]


def _ids(path: Path, table: str, column: str) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute(f"SELECT {column} FROM {table}")}
    finally:
        conn.close()


def _round(
    ctx: Context, result: Result, tallies: dict[str, Tally], r: int, seconds: float, logs: list[Path]
) -> None:
    order = SETUPS if r % 2 == 0 else tuple(reversed(SETUPS))
    limit = int(seconds * 2000) + 100  # transactions; the time limit ends a run long before
    paths: dict[str, Path] = {}
    children: dict[str, tuple[Child, Child]] = {}
    try:
        for s in order:
            ws = ctx.tmp / f"coexist-{r}-{s.key}"
            paths[s.key] = path = prepare_head(ws)
            _prefill(path)
            log = ctx.tmp / f"coexist-{r}-{s.key}.log"
            logs.append(log)
            # the other process runs until told to stop; its own limit only bounds a lost stop
            common: dict[str, Any] = dict(n=limit * 10, seconds=seconds + 60, token=TOKEN)
            if s.plain:
                cmd = _plain_cmd(
                    s.role,
                    path=str(path),
                    name=s.key,
                    busy_timeout=BUSY_TIMEOUT_MS,
                    period_ms=WRITER_PERIOD_MS,
                    **common,
                )
            elif s.role == "coreader":
                cmd = worker_cmd(
                    s.role,
                    ws=str(ws),
                    read_only=s.read_only,
                    begin=s.begin,
                    prefix="pre",
                    rows=PREFILL,
                    seed=ctx.seed * 100 + r,
                    log=str(log),
                    **common,
                )
            else:
                cmd = worker_cmd(
                    s.role,
                    ws=str(ws),
                    name=s.key,
                    period_ms=WRITER_PERIOD_MS,
                    begin=s.begin,
                    log=str(log),
                    **common,
                )
            companion = Child(cmd, ctx.tmp / f"coexist-{r}-{s.key}.companion.err")
            ingest = Child(
                _plain_cmd(
                    "ingest",
                    path=str(path),
                    name=f"ingest-{s.key}",
                    token=TOKEN,
                    busy_timeout=BUSY_TIMEOUT_MS,
                    pause_ms=INGEST_PAUSE_MS,
                    n=limit,
                    seconds=seconds,
                ),
                ctx.tmp / f"coexist-{r}-{s.key}.ingest.err",
            )
            children[s.key] = (companion, ingest)
        for key, (companion, ingest) in children.items():
            for what, child in (("the other process", companion), ("the stand-in", ingest)):
                if not child.ready(READY_TIMEOUT):
                    raise RuntimeError(f"round {r}, {key}: {what} did not start: {child.stderr()}")
        for s in order:
            companion, ingest = children[s.key]
            companion.send("go")
            time.sleep(0.05)  # the other process is in its loop when the stand-in starts
            ingest.send("go")
            ingest_rep = ingest.report(seconds + 120)
            companion.send("stop")
            companion_rep = companion.report(60)
            _tally(result, tallies[s.key], s, r, paths[s.key], ingest_rep, companion_rep, companion, ingest)
    finally:
        for companion, ingest in children.values():
            companion.kill()
            ingest.kill()


def _tally(
    result: Result,
    tally: Tally,
    s: Setup,
    r: int,
    path: Path,
    ingest: dict[str, Any] | None,
    companion: dict[str, Any] | None,
    companion_child: Child,
    ingest_child: Child,
) -> None:
    where = f"round {r}, {s.key}"
    if ingest is None or "fatal" in ingest:
        result.problem(f"{where}: the stand-in died: {ingest or ingest_child.stderr()}")
        return
    if companion is None or "fatal" in companion:
        result.problem(f"{where}: the other process died: {companion or companion_child.stderr()}")
        return
    tally.attempted += ingest["attempted"]
    tally.failed += len(ingest["failed"])
    for step, count in ingest["failed_at"].items():
        tally.failed_at[step] = tally.failed_at.get(step, 0) + count
    tally.seconds += ingest["elapsed"]
    tally.longest = max(tally.longest, ingest["longest"])
    result.trials += ingest["attempted"]
    if ingest["not_busy"]:
        result.problem(f"{where}: the stand-in failed other than busy: {ingest['errors'][:3]}")
    if companion["errors"]:
        result.problem(f"{where}: the other process's own transactions failed: {companion['errors'][:3]}")
    if s.role == "coreader":
        tally.companion += companion["reads"]
        result.faults += companion["reads"]
        result.check(
            companion["missing"] == 0, f"{where}: {companion['missing']} reads missed a prefilled chunk"
        )
    else:
        tally.companion += companion["attempted"]
        result.faults += companion["attempted"]
    # every acknowledged write of both sides is in the file; no row of a failed stand-in transaction
    chunks = _ids(path, "mem_tree_chunks", "id")
    scores = _ids(path, "mem_tree_score", "chunk_id")
    acked = set(ingest["committed"])
    lost = len(acked - chunks) + len(acked - scores)
    if s.role != "coreader":
        lost += len(set(companion["committed"]) - chunks)
    if lost:
        result.lost += lost
        result.problem(f"{where}: {lost} acknowledged rows are missing")
    leaked = set(ingest["failed"]) & (chunks | scores)
    result.check(not leaked, f"{where}: rows of {len(leaked)} failed stand-in transactions are present")
    conn = sqlite3.connect(path)
    try:
        result.check(
            conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok", f"{where}: integrity_check failed"
        )
    finally:
        conn.close()


def _compare(python: Tally, plain: Tally) -> tuple[float, float]:
    """The failures per 1,000 beside the Session writer may be, and the slack in it (per 1,000).

    Failures are rare, independent events: each count is Poisson, so its
    standard deviation is its square root.  The allowance is ``RATIO`` times
    the sqlite3 writer's rate plus ``SIGMAS`` standard deviations of the
    difference ``f_python - RATIO * f_plain * n_python / n_plain`` (counts
    ``f``, stand-in transactions ``n``): one-sided, a false alarm in about
    one run of 700 when the target is just met.
    """
    if not python.attempted or not plain.attempted:
        return math.inf, math.inf
    scale = RATIO * python.attempted / plain.attempted
    sigma = math.sqrt(python.failed + scale * scale * plain.failed)
    slack = 1000 * SIGMAS * sigma / python.attempted
    return RATIO * plain.per_1000 + slack, slack


def run(ctx: Context) -> Result:
    result = Result("coexistence", "11. Coexistence with the Rust core's ingest (sqlite3 stand-in)")
    rounds, seconds = ctx.n(1, 3), 10.0 if ctx.full else 0.6
    tallies = {s.key: Tally() for s in SETUPS}
    logs: list[Path] = []
    for r in range(rounds):
        _round(ctx, result, tallies, r, seconds, logs)
    for log in logs:
        check_logs(result, log.read_text().splitlines() if log.exists() else [])
    ro, reader, base = tallies["read-only"], tallies["default-reader"], tallies["immediate-reader"]
    py, plain = tallies["session-writer"], tallies["sqlite3-writer"]
    for s in SETUPS:
        t = tallies[s.key]
        steps = ", ".join(f"{k} {v}" for k, v in sorted(t.failed_at.items())) or "none"
        result.notes.append(
            f"{s.key}: {t.attempted} stand-in transactions in {t.seconds:.1f} s, {t.failed} failed "
            f"({t.per_1000:.1f} per 1,000; at: {steps}), longest {t.longest * 1000:.0f} ms; "
            f"{t.companion} transactions of the other process"
        )
    result.notes += [
        f"| {s.label} | {tallies[s.key].attempted:,} | {tallies[s.key].failed:,} | "
        f"{tallies[s.key].per_1000:.1f} |"
        for s in SETUPS
    ]
    result.check(
        ro.failed == 0,
        f"{ro.failed} of {ro.attempted} stand-in transactions failed beside a read_only=True reader",
    )
    result.check(
        base.failed + plain.failed > 0,
        "the stand-in never failed beside a BEGIN IMMEDIATE reader or writer: it does not reproduce "
        "the upgrade failure, so its 0 beside the read_only reader shows nothing",
    )
    result.notes.append(
        f"readers: read_only {ro.per_1000:.1f}, default (EXCLUSIVE) {reader.per_1000:.1f}, "
        f"tinycortex_begin='immediate' {base.per_1000:.1f} failures per 1,000 (no promise on the default's)"
    )
    allowed, slack = _compare(py, plain)
    ratio = f"{py.per_1000 / plain.per_1000:.2f}" if plain.per_1000 else "inf"
    imm = tallies["session-immediate"]
    result.notes.append(
        f"Session writer {py.per_1000:.1f} vs sqlite3 writer {plain.per_1000:.1f} failures per 1,000 "
        f"(ratio {ratio}; with tinycortex_begin='immediate' {imm.per_1000:.1f}); allowed {allowed:.1f} = "
        f"{RATIO} x {plain.per_1000:.1f} + {slack:.1f} ({SIGMAS:g} sigma of the counts)"
        + ("" if ctx.full else "; no verdict at this scale (a handful of failures): the full run judges")
    )
    if ctx.full:
        result.check(
            py.per_1000 <= allowed,
            f"beside the Session writer {py.per_1000:.1f} stand-in failures per 1,000, more than {RATIO} x "
            f"{plain.per_1000:.1f} beside a plain sqlite3 writer + {slack:.1f} of noise",
        )
    return result
