"""Scenario 6: damaged files, and callers arriving while the file is being recovered.

Each trial damages a copy of a populated chunk DB at head (the Rust fixture
plus rows of our own), one way:

* ``garbage``: not a SQLite file at all (mode 0640, with a garbage ``-journal``);
* ``truncated``: cut at a random page;
* ``damaged-pages``: 1-3 random pages overwritten with random bytes;
* ``hot-journal``: a writer killed (SIGKILL) inside a big transaction whose
  pages already spilled into the file: a hot ``-journal``;
* ``wal``: a writer switched the file to WAL mode, committed rows, and died
  before any checkpoint: those rows are only in the ``-wal``;
* ``stale-wal``: a ``-wal`` left beside the TRUNCATE database from an earlier
  WAL period (as a restore or a sync tool leaves it); rows committed since
  are only in the main file;
* ``empty-with-wal``: a ``-wal`` beside an empty database file.

Then 6 threads of this process and 2 other processes arrive at once and
write.  Afterwards: every committed row (before the damage, and every write
a caller was told had committed) is in the live file; a corrupt file is kept
under ``<name>.corrupt-<UTC ts>`` with its bytes and mode intact (and its side
files beside it); a stale ``-wal`` is kept aside with its bytes intact;
nothing was written into a renamed file; the fresh file is 0600.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

import tinycortex_sa
from tinycortex_sa import db_path_for, models

from .common import (
    INSERT_CHUNK,
    TOKEN,
    Context,
    LineReader,
    Result,
    check_logs,
    chunk_row,
    copy_fixture,
    forget,
    sha256,
    worker_cmd,
)

KINDS = ("garbage", "truncated", "damaged-pages", "hot-journal", "wal", "stale-wal", "empty-with-wal")
CORRUPT = ("garbage", "truncated", "damaged-pages")


def _ids(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT id FROM mem_tree_chunks")}
    finally:
        conn.close()


def _base(ctx: Context) -> tuple[Path, set[str]]:
    """A populated chunk DB at head with 50 rows of our own; returns its workspace and its chunk ids."""
    ws = copy_fixture("rust-0.1.1-populated", ctx.tmp / "damaged-base")

    def fill(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        for i in range(50):
            conn.execute(INSERT_CHUNK, chunk_row(f"base-{i}", TOKEN, source="base"))
        conn.execute("COMMIT")

    tinycortex_sa.with_connection(ws, fill)
    forget(ws)
    return ws, _ids(db_path_for(ws))


def _copy_base(base: Path, dest: Path) -> Path:
    shutil.copytree(base, dest, copy_function=shutil.copy2)
    return dest


def _damage(ctx: Context, kind: str, ws: Path, rng: Any, result: Result) -> dict[str, Any]:
    """Damage the copy at ``ws``; return what the check needs to know."""
    path = db_path_for(ws)
    info: dict[str, Any] = {"kind": kind, "committed": _ids(path)}
    if kind == "garbage":
        data = rng.choice((os.urandom, lambda n: (b"not a database, just text\n" * n)[:n]))(
            rng.randrange(1, 300_000)
        )
        path.write_bytes(data)
        path.chmod(0o640)
        path.with_name("chunks.db-journal").write_bytes(os.urandom(rng.randrange(0, 5000)))
        info["committed"] = set()
    elif kind == "truncated":
        pages = path.stat().st_size // 4096
        with open(path, "r+b") as f:
            f.truncate(rng.randrange(1, pages) * 4096 + rng.choice((0, 0, rng.randrange(1, 4096))))
        info["committed"] = set()  # what was cut off is gone: the check is that the rest is kept aside
    elif kind == "damaged-pages":
        data = bytearray(path.read_bytes())
        pages = len(data) // 4096
        hit = sorted({rng.randrange(0, pages) for _ in range(rng.randint(1, 3))})
        for page in hit:
            start = page * 4096 + (100 if page == 0 and rng.random() < 0.5 else 0)
            length = rng.choice((16, 256, 4096 - (start % 4096)))
            data[start : start + length] = os.urandom(length)
        path.write_bytes(bytes(data))
        info["pages"] = hit
        info["committed"] = set()
    elif kind == "hot-journal":
        before = sha256(path)
        proc = subprocess.Popen(
            worker_cmd("hotjournal", path=str(path), rows=400, token=TOKEN),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        reader = LineReader(proc)
        reader.wait_for(lambda lines: "dirty" in lines, 60)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        journal = path.with_name("chunks.db-journal")
        hot = journal.exists() and journal.stat().st_size > 0 and sha256(path) != before
        result.check(hot, "hot-journal: the killed writer did not leave a hot journal with the file changed")
    elif kind == "wal":
        proc = subprocess.run(
            worker_cmd(
                "walcrash", path=str(path), rows=rng.randint(5, 60), tag=rng.randrange(1 << 30), token=TOKEN
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
        result.check("committed" in proc.stdout, f"wal: the WAL writer failed: {proc.stderr[-300:]}")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        info["committed"] = {r[0] for r in conn.execute("SELECT id FROM mem_tree_chunks")}
        conn.close()
        result.check(path.with_name("chunks.db-wal").stat().st_size > 0, "wal: no -wal was left")
    elif kind == "stale-wal":
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        for i in range(rng.randint(5, 30)):
            conn.execute(INSERT_CHUNK, chunk_row(f"wal-era-{i}", TOKEN, source="wal-era"))
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        stale = path.with_name("stale-copy")
        shutil.copy2(path.with_name("chunks.db-wal"), stale)
        conn.close()  # checkpoints and deletes the -wal
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode = TRUNCATE")
        for i in range(rng.randint(5, 30)):
            conn.execute(INSERT_CHUNK, chunk_row(f"after-wal-{i}", TOKEN, source="after"))
        conn.close()
        info["committed"] = _ids(path)
        os.rename(stale, path.with_name("chunks.db-wal"))
        info["wal_sha"] = sha256(path.with_name("chunks.db-wal"))
    elif kind == "empty-with-wal":
        proc = subprocess.run(
            worker_cmd("walcrash", path=str(path), rows=10, tag=rng.randrange(1 << 30), token=TOKEN),
            capture_output=True,
            text=True,
            timeout=60,
        )
        path.write_bytes(b"")  # the main file emptied (a sync tool, a failed restore)
        info["wal_sha"] = sha256(path.with_name("chunks.db-wal"))
        info["committed"] = set()
    return info


def _arrive(ctx: Context, ws: Path, tag: str, log: Path) -> tuple[list[str], list[str]]:
    """6 threads here and 2 other processes open the file at once and write.

    Returns the ids of the writes that were acknowledged, and the errors seen.
    """
    start_at = time.time() + 0.6
    procs = [
        subprocess.Popen(
            worker_cmd(
                "opener", ws=str(ws), n=3, name=f"{tag}-p{p}", token=TOKEN, start_at=start_at, log=str(log)
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(2)
    ]
    committed: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()

    def thread(t: int) -> None:
        while time.time() < start_at:
            time.sleep(0.0005)
        for i in range(3):
            key = f"{tag}-t{t}-{i}"
            try:
                if t % 2:
                    tinycortex_sa.with_connection(
                        ws,
                        lambda c, key=key: (
                            c.execute("BEGIN IMMEDIATE"),
                            c.execute(INSERT_CHUNK, chunk_row(key, TOKEN, source="arrivals")),
                            c.execute("COMMIT"),
                        ),
                    )
                else:
                    with Session(tinycortex_sa.create_engine(ws)) as session:
                        session.add(models.Chunk(**chunk_row(key, TOKEN, source="arrivals")))
                        session.commit()
                with lock:
                    committed.append(f"chunk-{key}")
            except Exception as err:
                with lock:
                    errors.append(f"thread {t}: {type(err).__name__}: {str(err)[:200]}")

    threads = [threading.Thread(target=thread, args=(t,), daemon=True) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if not lines:
            errors.append(f"an arriving process reported nothing: {err[-300:]}")
            continue
        rep = json.loads(lines[-1])
        committed += rep.get("committed", [])
        errors += [f"process: {e}" for e in rep.get("errors", [])] + (
            [rep["fatal"]] if "fatal" in rep else []
        )
    return committed, errors


def run(ctx: Context) -> Result:
    result = Result("damaged-files", "6. Damaged files + callers arriving during recovery")
    rng = ctx.rng("damaged")
    base, _ = _base(ctx)
    per_kind = ctx.n(1, 8)
    outcomes: dict[str, dict[str, int]] = {k: {} for k in KINDS}
    log = ctx.tmp / "damaged.log"
    for kind in KINDS:
        for t in range(per_kind):
            ws = _copy_base(base, ctx.tmp / f"{kind}-{t}")
            path = db_path_for(ws)
            directory = path.parent
            info = _damage(ctx, kind, ws, rng, result)
            before = {
                p.name: (sha256(p), stat.S_IMODE(p.stat().st_mode))
                for p in directory.iterdir()
                if p.is_file()
            }
            result.trials += 1
            result.faults += 1
            committed, errors = _arrive(ctx, ws, f"{kind}{t}", log)
            after = sorted(p.name for p in directory.iterdir())
            moved = [n for n in after if ".corrupt-" in n and not n.endswith(("-journal", "-wal", "-shm"))]
            stale = [n for n in after if n.startswith("chunks.db-wal.stale-")]
            outcome = "quarantined" if moved else "stale -wal kept aside" if stale else "opened in place"
            where = f"{kind} #{t}"
            # every write a caller was told had committed is in the live file
            live = _ids(path) if path.exists() else set()
            missing_writes = [c for c in committed if c not in live]
            if missing_writes:
                result.lost += len(missing_writes)
                result.problem(f"{where}: {len(missing_writes)} acknowledged writes are not in the live file")
            # every row committed before the damage is still there (where the damage left it readable)
            gone = info["committed"] - live
            if gone:
                result.lost += len(gone)
                result.problem(
                    f"{where}: {len(gone)} rows committed before the damage are gone, e.g. {sorted(gone)[:3]}"
                )
            if kind in CORRUPT:
                if not moved:
                    # the open did not read the damaged pages: does anything?
                    damaged_found_later = any("malformed" in e or "corrupt" in e.lower() for e in errors)
                    read_error = _read_everything(path)
                    latent = _count(path, "PRAGMA quick_check")
                    if damaged_found_later or read_error:
                        outcome = "found only when a caller read it (not quarantined)"
                        result.gaps.append(
                            f"{where}: damage in pages {info.get('pages')} reached a caller as "
                            f"{(read_error or 'malformed')[:80]!r} and the file was not quarantined -- "
                            "dialect.py / api.py: call FileHandle.suspect_corruption() when a caller's "
                            "statement fails with SQLITE_CORRUPT/NOTADB, so the next open quick_checks and "
                            "quarantines it "
                            "(see docs/reliability.md)"
                        )
                        errors = [e for e in errors if not ("malformed" in e or "corrupt" in e.lower())]
                    elif latent != "ok":
                        outcome = "latent: quick_check finds it, no read hit it (not quarantined)"
                    else:
                        outcome = "harmless: no read and no quick_check finds it"
                else:
                    result.check(len(moved) == 1, f"{where}: quarantined {len(moved)} times: {moved}")
                    q = directory / moved[0]
                    result.check(
                        sha256(q) == before["chunks.db"][0], f"{where}: the quarantined file's bytes changed"
                    )
                    result.check(
                        stat.S_IMODE(q.stat().st_mode) == before["chunks.db"][1],
                        f"{where}: the quarantined copy lost its mode",
                    )
                    for side, (digest, _) in before.items():
                        if side.startswith("chunks.db-"):
                            kept = directory / (moved[0] + side[len("chunks.db") :])
                            result.check(
                                kept.exists() and sha256(kept) == digest,
                                f"{where}: side file {side} not kept intact",
                            )
                    result.check(
                        stat.S_IMODE(path.stat().st_mode) == 0o600, f"{where}: the fresh file is not 0600"
                    )
                    for e in errors:
                        result.problem(f"{where}: a caller failed during recovery: {e}")
                if not moved:
                    for e in errors:
                        result.problem(f"{where}: {e}")
            else:
                for e in errors:
                    result.problem(f"{where}: a caller failed: {e}")
                result.check(not moved, f"{where}: a healthy file was quarantined: {moved}")
                if kind == "hot-journal":
                    uncommitted = [i for i in live if i.startswith("uncommitted-")]
                    result.check(
                        not uncommitted, f"{where}: {len(uncommitted)} uncommitted rows survived the kill"
                    )
                    overwritten = _count(
                        path, "SELECT count(*) FROM mem_tree_chunks WHERE content LIKE 'overwritten%'"
                    )
                    result.check(overwritten == 0, f"{where}: the killed transaction's update is visible")
                if kind == "wal":
                    result.check(
                        not path.with_name("chunks.db-wal").exists(), f"{where}: the -wal was not folded in"
                    )
                if kind in ("stale-wal", "empty-with-wal"):
                    result.check(len(stale) == 1, f"{where}: the stale -wal was not kept aside ({after})")
                    if stale:
                        result.check(
                            sha256(directory / stale[0]) == info["wal_sha"],
                            f"{where}: the stale -wal's bytes changed",
                        )
            if path.exists():
                check = _count(path, "PRAGMA integrity_check")
                if check != "ok" and not (kind in CORRUPT and not moved):
                    result.problem(f"{where}: integrity_check of the live file: {check!r}")
            outcomes[kind][outcome] = outcomes[kind].get(outcome, 0) + 1
            forget(ws)
    for kind, counts in outcomes.items():
        result.notes.append(f"{kind}: " + ", ".join(f"{n} {o}" for o, n in sorted(counts.items())))
    check_logs(result, log.read_text().splitlines() if log.exists() else [])
    return result


def _read_everything(path: Path) -> str | None:
    """Read every row of every table, as an application eventually does; the error, if any."""
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            conn.execute(f'SELECT * FROM "{table}"').fetchall()
        return None
    except (sqlite3.DatabaseError, UnicodeDecodeError) as err:
        return f"{type(err).__name__}: {err}"
    finally:
        conn.close()


def _count(path: Path, sql: str) -> Any:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchone()[0]
    except sqlite3.DatabaseError as err:
        return f"error: {err}"
    finally:
        conn.close()


__all__ = ["run", "sa"]
