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

Damaged pages the first open does not read are found by a statement that
reads them: an arriving caller's, or else a read of every table made
afterwards through tinycortex_sa (an engine or ``with_connection``,
alternately).  That caller gets SQLite's "malformed" error and the next open
confirms the damage with ``quick_check`` and quarantines the file, bytes
intact as the last write left them; writes acknowledged before the damage was
found are in the quarantined file (looked up by id), never lost and never in
both files.  Another process that had the file open (and wrote) while this
one found the damage then writes twice: the first may fail with
``StatementMovedError`` naming the file (SQLite refuses a write into a file
renamed under the connection, SQLITE_READONLY_DBMOVED), the second must land
in the live file, and neither may go into the quarantined one (closed gap 7).
An arriving process that meets the same refusal must get the same error, and
its next write (made without ``invalidate()``) must work.
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
import urllib.parse
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
    last_report,
    sha256,
    worker_cmd,
)

KINDS = ("garbage", "truncated", "damaged-pages", "hot-journal", "wal", "stale-wal", "empty-with-wal")
CORRUPT = ("garbage", "truncated", "damaged-pages")
ARRIVING_WRITES = 3  # per arriving process


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
        info["since"] = {i for i in info["committed"] if i.startswith("chunk-after-wal-")}
        info["plain_sqlite"] = _replayed_by_plain_sqlite(path, stale, info["since"])
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


def _replayed_by_plain_sqlite(path: Path, stale_wal: Path, since: set[str]) -> dict[str, Any]:
    """What SQLite alone does with the stale ``-wal``: open a copy of the files with sqlite3 and read.

    Returns how many of the rows committed ``since`` the WAL period it lost (or
    the error if it found the mixture malformed), and whether that was made
    permanent: on close SQLite checkpointed the stale pages into the file and
    deleted the ``-wal``, so the file alone no longer holds the rows either.
    """
    probe = path.parent / "plain-sqlite-probe"
    probe.mkdir()
    copy = probe / path.name
    try:
        shutil.copy2(path, copy)
        shutil.copy2(stale_wal, probe / (path.name + "-wal"))
        found: dict[str, Any] = {"since": len(since), "lost": None, "malformed": None, "permanent": False}
        try:
            found["lost"] = len(since - _ids(copy))
        except sqlite3.DatabaseError as err:
            found["malformed"] = str(err)
        if not (probe / (path.name + "-wal")).exists():
            try:
                found["permanent"] = bool(since - _ids(copy))
            except sqlite3.DatabaseError:
                found["permanent"] = True
        return found
    finally:
        shutil.rmtree(probe)


def _arrive(ctx: Context, ws: Path, tag: str, log: Path) -> tuple[list[str], list[str]]:
    """6 threads here and 2 other processes open the file at once and write.

    Returns the ids of the writes that were acknowledged, and the errors seen.
    """
    start_at = time.time() + 0.6
    procs = [
        subprocess.Popen(
            worker_cmd(
                "opener",
                ws=str(ws),
                n=ARRIVING_WRITES,
                name=f"{tag}-p{p}",
                token=TOKEN,
                start_at=start_at,
                log=str(log),
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
        rep = last_report(out)
        if rep is None:
            errors.append(f"an arriving process reported nothing: {err[-300:]}")
            continue
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
    stale_wal_measure: list[dict[str, Any]] = []
    kept_writes: dict[str, list[int]] = {k: [] for k in CORRUPT}
    moved_stats: dict[str, int] = {}
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
            stale = [
                n for n in sorted(p.name for p in directory.iterdir()) if n.startswith("chunks.db-wal.stale-")
            ]
            where = f"{kind} #{t}"
            kept: set[str] = set()
            if kind in CORRUPT:
                outcome, moved, kept, errors = _corrupt_outcome(
                    result,
                    where,
                    ws,
                    before,
                    committed,
                    errors,
                    via=("engine", "with_connection")[t % 2],
                    stats=moved_stats,
                )
                if kept:
                    kept_writes[kind].append(len(kept))
            else:
                moved = _moved(directory)
                outcome = "stale -wal kept aside" if stale else "opened in place"
            # every write a caller was told had committed is in the live file (or, written before the damage
            # was found, kept with the quarantined file, checked by _corrupt_outcome)
            live = _ids(path) if path.exists() else set()
            missing_writes = [c for c in committed if c not in live and c not in kept]
            if missing_writes:
                result.lost += len(missing_writes)
                result.problem(
                    f"{where}: {len(missing_writes)} acknowledged writes are neither in the live file nor in "
                    f"the quarantined one, e.g. {missing_writes[:3]}"
                )
            doubled = sorted(kept & live)
            result.check(not doubled, f"{where}: acknowledged writes in both files: {doubled[:3]}")
            # every row committed before the damage is still there (where the damage left it readable)
            gone = info["committed"] - live
            if gone:
                result.lost += len(gone)
                result.problem(
                    f"{where}: {len(gone)} rows committed before the damage are gone, e.g. {sorted(gone)[:3]}"
                )
            if kind not in CORRUPT:
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
                    result.check(len(stale) == 1, f"{where}: the stale -wal was not kept aside ({stale})")
                    if stale:
                        result.check(
                            sha256(directory / stale[0]) == info["wal_sha"],
                            f"{where}: the stale -wal's bytes changed",
                        )
                if kind == "stale-wal":
                    stale_wal_measure.append(info["plain_sqlite"])
            if path.exists():
                check = _count(path, "PRAGMA integrity_check")
                if check != "ok" and not (kind in CORRUPT and not moved):
                    result.problem(f"{where}: integrity_check of the live file: {check!r}")
            outcomes[kind][outcome] = outcomes[kind].get(outcome, 0) + 1
            forget(ws)
    for kind, counts in outcomes.items():
        result.notes.append(f"{kind}: " + ", ".join(f"{n} {o}" for o, n in sorted(counts.items())))
    for kind, kept_counts in kept_writes.items():
        if kept_counts:
            result.notes.append(
                f"{kind}: in {len(kept_counts)} trial(s), {sum(kept_counts)} acknowledged writes made before "
                "the damage was found went into the damaged file and were kept with it in quarantine "
                "(found there by their id)"
            )
    if moved_stats.get("other"):
        result.notes.append(
            "another process with the file open (it had written through an engine) when this one "
            f"quarantined it, {moved_stats['other']} trial(s), wrote twice: the first write failed with "
            f"StatementMovedError naming the file {moved_stats.get('first moved', 0)} time(s) and worked "
            f"{moved_stats.get('first ok', 0)} time(s); the second worked, into the live file, "
            f"{moved_stats.get('second ok', 0)} time(s); none went into the quarantined file"
        )
    if moved_stats.get("arriving"):
        result.notes.append(
            "arriving processes had a write into the quarantined file refused "
            f"{moved_stats['arriving']} time(s), each with StatementMovedError naming the file; "
            "the write after it worked "
            f"{moved_stats.get('arriving next ok', 0)} time(s) (the others were a process's last write)"
        )
    if stale_wal_measure:
        silent = [m for m in stale_wal_measure if m["lost"]]
        malformed = [m for m in stale_wal_measure if m["malformed"]]
        result.notes.append(
            "stale-wal, what plain SQLite does with the same files (a copy opened and read by sqlite3 "
            f"beside the stale -wal), {len(stale_wal_measure)} trials: {len(silent)} silently lost "
            f"{sum(m['lost'] for m in silent)} of the {sum(m['since'] for m in silent)} rows committed after "
            f"the WAL period, {len(malformed)} found the result malformed, "
            f"{len(stale_wal_measure) - len(silent) - len(malformed)} lost nothing; in "
            f"{sum(1 for m in stale_wal_measure if m['permanent'])} the close checkpointed the stale pages "
            "into the file and deleted the -wal, so the loss was permanent"
        )
    check_logs(result, log.read_text().splitlines() if log.exists() else [])
    return result


def _moved(directory: Path) -> list[str]:
    """The quarantined database files in ``directory`` (not their side files)."""
    return sorted(
        p.name
        for p in directory.iterdir()
        if ".corrupt-" in p.name and not p.name.endswith(("-journal", "-wal", "-shm"))
    )


def _files(directory: Path) -> dict[str, tuple[str, int]]:
    return {p.name: (sha256(p), stat.S_IMODE(p.stat().st_mode)) for p in directory.iterdir() if p.is_file()}


CORRUPT_TEXT = ("malformed", "file is not a database", "corrupt")


def _corrupt_outcome(
    result: Result,
    where: str,
    ws: Path,
    before: dict[str, tuple[str, int]],
    committed: list[str],
    errors: list[str],
    via: str,
    stats: dict[str, int],
) -> tuple[str, list[str], set[str], list[str]]:
    """Classify a damaged file's fate after the arrivals, checking every promise on the way.

    Damage the first open reads is quarantined at once.  Damage elsewhere is found
    when a statement reads it (an arriving caller's, or the full read made here
    afterwards through ``via``); that statement's caller gets SQLite's "malformed"
    error, and the next open in that process confirms with ``quick_check`` and
    quarantines the file.  Returns the outcome, the quarantined files, the
    acknowledged writes kept with the quarantined file (written before the damage
    was found), and the errors that are not the documented ones.
    """
    path = db_path_for(ws)
    directory = path.parent
    found_by_caller = [e for e in errors if any(c in e.lower() for c in CORRUPT_TEXT)]
    # an arriving process whose connection was open when another one quarantined the file (closed gap 7)
    moved_under = [e for e in errors if _is_moved_error(e) and _moved(directory)]
    for e in moved_under:
        _arriving_after_quarantine(result, where, path, e, committed, stats)
    others = [e for e in errors if e not in found_by_caller and e not in moved_under]
    moved = _moved(directory)
    reference = before  # what the quarantined file must hold, byte for byte
    if moved:
        outcome = (
            "found by an arriving caller's statement, quarantined at the next open"
            if found_by_caller
            else "quarantined at open"
        )
    else:
        # another application process has the file open (and wrote) while this one finds the damage
        other = Stayer(ws, f"stayer-{where.replace(' #', '-')}")
        if other.ready:
            committed.append(other.opened)
        reference = _files(directory)  # no caller writes from here on, until the quarantine
        read_error = _read_through_library(ws, via)
        if read_error is not None and any(c in read_error.lower() for c in CORRUPT_TEXT):
            try:
                tinycortex_sa.with_connection(ws, lambda c: None)  # the next open
            except Exception as err:
                result.problem(
                    f"{where}: the open after a read found damage failed: {type(err).__name__}: {err}"
                )
            finally:
                forget(ws)
            moved = _moved(directory)
            outcome = f"found by a read ({via}), quarantined at the next open"
            result.check(
                moved, f"{where}: a read ({via}) found damage, the next open did not quarantine the file"
            )
            if moved and other.ready:
                _other_process_after_quarantine(
                    result, where, path, directory / moved[0], other, committed, stats
                )
        elif found_by_caller:
            outcome = "found by an arriving caller's statement, not quarantined"
            result.problem(f"{where}: a caller's statement found the damage, no open quarantined the file")
        elif read_error is not None:
            outcome = f"a read failed without SQLITE_CORRUPT ({read_error[:60]}), not quarantined"
        elif _count(path, "PRAGMA quick_check") != "ok":
            outcome = "latent: quick_check finds it, no read hits it (not quarantined)"
        else:
            outcome = "harmless: no read and no quick_check finds it"
        other.close()
    for e in others:
        result.problem(f"{where}: a caller failed: {e}")
    kept: set[str] = set()
    if not moved:
        return outcome, moved, kept, others
    result.check(len(moved) == 1, f"{where}: quarantined {len(moved)} times: {moved}")
    q = directory / moved[0]
    live = _ids(path) if path.exists() else set()
    for key in committed:
        if key not in live and _holds(q, key):
            kept.add(key)
    if reference is not before or not kept:
        # its bytes and side files are exactly those of the damaged file as the last write left them
        # (the snapshot after the arrivals, or before them if no write reached it): nothing wrote into it
        result.check(sha256(q) == reference["chunks.db"][0], f"{where}: the quarantined file's bytes changed")
        for side, (digest, _) in reference.items():
            if side.startswith("chunks.db-"):
                side_kept = directory / (moved[0] + side[len("chunks.db") :])
                result.check(
                    side_kept.exists() and sha256(side_kept) == digest,
                    f"{where}: side file {side} not kept intact",
                )
    result.check(
        stat.S_IMODE(q.stat().st_mode) == before["chunks.db"][1],
        f"{where}: the quarantined copy lost its mode",
    )
    result.check(stat.S_IMODE(path.stat().st_mode) == 0o600, f"{where}: the fresh file is not 0600")
    return outcome, moved, kept, others


class Stayer:
    """Another process with the file open: it wrote once through an engine and keeps its connection."""

    def __init__(self, ws: Path, name: str) -> None:
        self.proc = subprocess.Popen(
            worker_cmd("stayer", ws=str(ws), name=name, token=TOKEN),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.reader = LineReader(self.proc)
        self.ready = self.reader.wait_for(lambda lines: "ready" in lines, 30)
        self.opened = f"chunk-{name}-open"

    def _reports(self) -> list[str]:
        return [line for line in self.reader.lines if line.startswith("{")]

    def write(self) -> dict[str, Any]:
        """One more write through its open engine; its report."""
        assert self.proc.stdin is not None
        seen = len(self._reports())
        self.proc.stdin.write(b"write\n")
        self.proc.stdin.flush()
        if not self.reader.wait_for(lambda lines: len(self._reports()) > seen, 30):
            return {"ok": False, "error": "no answer", "id": None}
        rep: dict[str, Any] = json.loads(self._reports()[seen])
        return rep

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


MOVED_TEXT = ("attempt to write a readonly database", "StatementMovedError", "DatabaseMovedError")


def _is_moved_error(error: str) -> bool:
    return any(t in error for t in MOVED_TEXT)


def _names_moved(error: str, path: Path) -> bool:
    """Whether ``error`` is the promised one for a write into a moved file: StatementMovedError naming it."""
    return "StatementMovedError" in error and str(path) in error


def _arriving_after_quarantine(
    result: Result, where: str, path: Path, error: str, committed: list[str], stats: dict[str, int]
) -> None:
    """An arriving process's write found the file quarantined under its open connection.

    Promised: ``StatementMovedError`` naming the file, and the process's next
    write (the worker does not call ``invalidate()`` after it) works.
    """
    stats["arriving"] = stats.get("arriving", 0) + 1
    result.check(
        _names_moved(error, path),
        f"{where}: an arriving process's write into the quarantined file failed without "
        f"StatementMovedError naming the file: {error[:200]}",
    )
    key = error.removeprefix("process: ").split(": ", 1)[0]  # "<name>-<i>", see worker.opener
    name, _, i = key.rpartition("-")
    if i.isdigit() and int(i) + 1 < ARRIVING_WRITES:
        following = f"chunk-{name}-{int(i) + 1}"
        result.check(
            following in committed,
            f"{where}: the write after an arriving process's refused write did not work ({following})",
        )
        if following in committed:
            stats["arriving next ok"] = stats.get("arriving next ok", 0) + 1


def _other_process_after_quarantine(
    result: Result,
    where: str,
    path: Path,
    quarantined: Path,
    other: Stayer,
    committed: list[str],
    stats: dict[str, int],
) -> None:
    """The promise for a process that had the file open when this one quarantined it (closed gap 7).

    Its writes never go into the quarantined file (SQLite refuses: the file
    moved); the first may fail, with ``StatementMovedError`` naming the file,
    and the next works and lands in the live file.
    """
    reports = [other.write(), other.write()]
    first, second = reports
    stats["other"] = stats.get("other", 0) + 1
    live = _ids(path)
    for n, rep in enumerate(reports):
        if rep.get("ok"):
            committed.append(rep["id"])  # also checked against the live file by the caller
            result.check(
                rep["id"] in live, f"{where}: the other process's write {n + 1} is not in the live file"
            )
        if rep.get("id"):
            result.check(
                not _holds(quarantined, rep["id"]),
                f"{where}: the other process's write {n + 1} went into the quarantined file",
            )
    if first.get("ok"):
        stats["first ok"] = stats.get("first ok", 0) + 1
    else:
        error = str(first.get("error", ""))
        promised = _names_moved(error, path) and first.get("code") == 1032
        result.check(
            promised,
            f"{where}: the other process's first write after the quarantine failed without "
            f"StatementMovedError (SQLITE_READONLY_DBMOVED) naming the file: {error[:200]}",
        )
        if promised:
            stats["first moved"] = stats.get("first moved", 0) + 1
    if second.get("ok"):
        stats["second ok"] = stats.get("second ok", 0) + 1
    else:
        result.problem(
            f"{where}: the other process's second write after the quarantine failed: "
            f"{str(second.get('error'))[:200]}"
        )


def _read_through_library(ws: Path, via: str) -> str | None:
    """Read every row of every table through tinycortex_sa, as an application eventually does."""

    def read(conn: sqlite3.Connection) -> None:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            conn.execute(f'SELECT * FROM "{table}"').fetchall()

    try:
        if via == "with_connection":
            tinycortex_sa.with_connection(ws, read)
        else:
            engine = tinycortex_sa.create_engine(ws)
            try:
                with engine.connect() as conn:
                    names = conn.exec_driver_sql(
                        "SELECT name FROM sqlite_master WHERE type = 'table'"
                    ).scalars()
                    for table in list(names):
                        conn.exec_driver_sql(f'SELECT * FROM "{table}"').fetchall()
            finally:
                engine.dispose()
        return None
    except (sqlite3.DatabaseError, sa.exc.DBAPIError, UnicodeDecodeError) as err:
        return f"{type(err).__name__}: {err}"


def _holds(path: Path, key: str) -> bool:
    """Whether the (damaged, quarantined) database at ``path`` holds chunk ``key``; read from a copy."""
    copy = path.with_name(path.name + ".probe")
    shutil.copyfile(path, copy)
    try:
        conn = sqlite3.connect(f"file:{urllib.parse.quote(str(copy))}?immutable=1", uri=True)
        try:
            row = conn.execute("SELECT count(*) FROM mem_tree_chunks WHERE id = ?", (key,)).fetchone()
            return bool(row[0] == 1)
        except sqlite3.DatabaseError:
            return False
        finally:
            conn.close()
    finally:
        copy.unlink()


def _count(path: Path, sql: str) -> Any:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchone()[0]
    except sqlite3.DatabaseError as err:
        return f"error: {err}"
    finally:
        conn.close()


__all__ = ["run", "sa"]
