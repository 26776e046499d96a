"""Scenario 1: crash durability under SIGKILL, including kills during the automatic migration.

Writers: a worker process commits small transactions through a Session (1 to
20 chunks, each with an embedding row, all in one transaction) and prints each
commit as ``commit()`` returns.  It is killed with SIGKILL at a random moment
(while starting, opening, writing or committing).  The parent then opens the
file through tinycortex_sa (which lets SQLite roll back any hot journal) and
checks: every reported commit is there, every transaction present is whole,
``PRAGMA integrity_check`` is ``ok``.  The same file carries on across trials,
so each trial also re-checks every commit of the earlier ones.

Migration: a copy of the legacy fixture is opened by a worker (running the
automatic upgrade) and killed at a random moment of it.  Afterwards the
database is, by schema, rows and ``user_version``, either exactly the original
or exactly the fully migrated reference; then opening it again completes the
upgrade to the reference, content folders included.  Revision 0005 moves the
retired summary folders aside before its commit and removes them after it: a
kill in between leaves them aside, never lost (the database as before, or
migrated), and the next open moves them back or removes them (closed gap 5).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import tinycortex_sa
from tinycortex_sa import db_path_for
from tinycortex_sa.schema import purge

from .common import (
    TOKEN,
    Context,
    LineReader,
    Result,
    check_logs,
    content_dir,
    copy_fixture,
    forget,
    tree_changes,
    tree_state,
    worker_cmd,
)
from .common import db_state as _state


def _verify(ws: Path, committed: dict[int, tuple[int, int]], result: Result, trial: str) -> None:
    """Open through tinycortex_sa; every reported transaction whole and present; integrity ok."""

    def read(conn: sqlite3.Connection) -> tuple[str, dict[str, int], dict[str, int], set[str], int]:
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        groups = dict(
            conn.execute("SELECT source_id, count(*) FROM mem_tree_chunks GROUP BY source_id").fetchall()
        )
        sizes = dict(
            conn.execute("SELECT source_id, max(token_count) FROM mem_tree_chunks GROUP BY source_id")
        )
        ids = {r[0] for r in conn.execute("SELECT id FROM mem_tree_chunks")}
        orphans = conn.execute(
            "SELECT count(*) FROM mem_tree_chunks c LEFT JOIN mem_tree_chunk_embeddings e "
            "ON e.chunk_id = c.id WHERE e.chunk_id IS NULL"
        ).fetchone()[0]
        return str(check), groups, sizes, ids, int(orphans)

    try:
        check, groups, sizes, ids, orphans = tinycortex_sa.with_connection(ws, read)
    except Exception as err:
        result.problem(f"{trial}: reopening after the kill failed: {type(err).__name__}: {err}")
        return
    finally:
        forget(ws)
    result.check(check == "ok", f"{trial}: integrity_check says {check!r}")
    result.check(orphans == 0, f"{trial}: {orphans} chunks without the embedding of their transaction")
    for source, count in groups.items():
        result.check(
            count == sizes[source], f"{trial}: transaction {source} is partial ({count}/{sizes[source]})"
        )
    for txn, (first, last) in committed.items():
        missing = [i for i in range(first, last + 1) if f"chunk-{i}" not in ids]
        if missing:
            result.lost += len(missing)
            result.problem(f"{trial}: reported transaction txn-{txn} lost chunks {missing[:5]}")


def writer_trials(ctx: Context, result: Result, series: int, trials_per_series: int) -> None:
    rng = ctx.rng("crash-writer")
    for s in range(series):
        ws = ctx.tmp / f"crash-{s}"
        ws.mkdir()
        log = ctx.tmp / f"crash-{s}.log"
        committed: dict[int, tuple[int, int]] = {}
        next_txn, next_id = 0, 0
        hot_journals = 0
        for t in range(trials_per_series):
            trial = f"series {s} trial {t}"
            proc = subprocess.Popen(
                worker_cmd(
                    "writer",
                    ws=str(ws),
                    token=TOKEN,
                    seed=rng.randrange(1 << 30),
                    first_txn=next_txn,
                    first_id=next_id,
                    log=str(log),
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            reader = LineReader(proc)
            # kill at a random moment: most trials while committing, some while starting or opening
            if rng.random() < 0.2:
                time.sleep(rng.uniform(0.0, 0.6))
            else:
                reader.wait_for(lambda lines: "S" in lines, 20)
                time.sleep(rng.uniform(0.0, 0.25))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            result.faults += 1
            result.trials += 1
            for line in reader.finish():
                if line.startswith("C "):
                    _, txn, first, last = line.split()
                    committed[int(txn)] = (int(first), int(last))
            # a transaction in flight at the kill may have committed unreported: skip past its ids
            if committed:
                next_txn = max(next_txn, max(committed) + 1)
                next_id = max(next_id, max(last for _, last in committed.values()) + 1)
            next_txn += 1
            next_id += 20
            journal = db_path_for(ws).with_name("chunks.db-journal")
            if journal.exists() and journal.stat().st_size > 0:
                hot_journals += 1  # the kill landed inside a commit: SQLite rolls it back at the next open
            _verify(ws, committed, result, trial)
        result.notes.append(
            f"series {s}: {len(committed)} reported transactions "
            f"({sum(b - a + 1 for a, b in committed.values())} chunks) survived {trials_per_series} kills, "
            f"{hot_journals} of which left a hot journal"
        )
        check_logs(result, log.read_text().splitlines() if log.exists() else [])


def migration_trials(ctx: Context, result: Result, trials: int) -> None:
    rng = ctx.rng("crash-migration")
    original_ws = copy_fixture("rust-legacy-v0", ctx.tmp / "mig-original")
    original = _state(db_path_for(original_ws))
    reference_ws = copy_fixture("rust-legacy-v0", ctx.tmp / "mig-reference")
    tinycortex_sa.with_connection(reference_ws, lambda c: None)
    forget(reference_ws)
    migrated = _state(db_path_for(reference_ws))
    migrated_content = tree_state(content_dir(reference_ws))
    if original == migrated:
        result.problem("the legacy fixture does not change when migrated: the migration trials prove nothing")
        return
    # how long opening takes in a fresh process, from "O" to "D"
    durations = []
    for i in range(2):
        ws = copy_fixture("rust-legacy-v0", ctx.tmp / f"mig-calibrate-{i}")
        proc = subprocess.Popen(
            worker_cmd("migrate", ws=str(ws)), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        reader = LineReader(proc)
        reader.wait_for(lambda lines: "O" in lines, 30)
        start = time.monotonic()
        reader.wait_for(lambda lines: "D" in lines, 30)
        durations.append(time.monotonic() - start)
        proc.wait()
    span = max(durations) * 1.5
    outcomes = {"before": 0, "migrated": 0}
    retired = [p.name for p in purge.retired_folders(content_dir(original_ws))]
    aside_before = aside_after = 0
    log = ctx.tmp / "mig.log"
    for t in range(trials):
        ws = copy_fixture("rust-legacy-v0", ctx.tmp / f"mig-{t}")
        path = db_path_for(ws)
        proc = subprocess.Popen(
            worker_cmd("migrate", ws=str(ws), log=str(log)), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        reader = LineReader(proc)
        reader.wait_for(lambda lines: "O" in lines, 30)
        time.sleep(rng.uniform(0, span))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        result.faults += 1
        result.trials += 1
        finished = "D" in reader.finish()
        state = _state(path)  # plain sqlite3 rolls back a hot journal, as any opener would
        in_place, aside = _retired_where(ws)
        if state == original:
            outcomes["before"] += 1
            aside_before += bool(aside)
            if sorted(in_place + aside) != retired:
                result.problem(
                    f"migration trial {t}: DB as before, but retired summary folders are missing: "
                    f"{sorted(set(retired) - set(in_place + aside))} (in place {in_place}, aside {aside})"
                )
                result.lost += 1
        elif state == migrated:
            outcomes["migrated"] += 1
            aside_after += bool(aside)
            if in_place:
                result.problem(f"migration trial {t}: purge committed, but {in_place} are still in place")
        else:
            diff = [k for k in original if state[k] != original[k] and state[k] != migrated[k]]
            result.problem(f"migration trial {t}: neither original nor migrated (differs in {diff})")
            result.lost += 1
            continue
        if finished and state != migrated:
            result.problem(
                f"migration trial {t}: the worker reported the open done but the DB is not migrated"
            )
        try:
            tinycortex_sa.with_connection(ws, lambda c: None)
        except Exception as err:
            result.problem(f"migration trial {t}: re-opening failed: {type(err).__name__}: {err}")
        finally:
            forget(ws)
        if _state(path) != migrated:
            result.problem(f"migration trial {t}: re-opening did not complete the upgrade")
        content_left = tree_changes(migrated_content, tree_state(content_dir(ws)))
        if content_left:
            result.problem(
                f"migration trial {t}: after re-opening the content folders are not the migrated "
                f"reference's: {content_left[:3]}"
            )
        if sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            result.problem(f"migration trial {t}: integrity_check failed")
    result.notes.append(
        f"migration kills within {span * 1000:.0f} ms of the open: {outcomes['before']} left the DB exactly "
        f"as before, {outcomes['migrated']} fully migrated, 0 in between"
    )
    result.notes.append(
        f"{aside_before} migration kill(s) came after revision 0005 moved the retired summary folders "
        f"aside but before its commit (DB as before, every folder aside) and {aside_after} after its "
        "commit but before their removal; re-opening moved them back and purged again, or removed them"
    )
    check_logs(result, log.read_text().splitlines() if log.exists() else [])


def _retired_where(ws: Path) -> tuple[list[str], list[str]]:
    """The retired summary folders still under ``wiki/summaries``, and those moved aside by 0005."""
    root = content_dir(ws)
    in_place = [p.name for p in purge.retired_folders(root)]
    holding = purge.aside_dir(root)
    aside = [p.name for batch in holding.iterdir() for p in batch.iterdir()] if holding.is_dir() else []
    return in_place, sorted(aside)


def run(ctx: Context) -> Result:
    result = Result("crash", "1. Crash durability (SIGKILL), incl. during auto-migration")
    writer_trials(ctx, result, series=ctx.n(2, 4), trials_per_series=ctx.n(5, 50))
    migration_trials(ctx, result, trials=ctx.n(4, 40))
    return result
