"""Files the Rust core or a crash left: the WAL fixture, processes arriving at once, quarantine."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import copy_fixture
from scenario_support import (
    LOGGER,
    WAIT,
    canonical,
    records,
)

import tinycortex_sa
from tinycortex_sa import db_path_for, with_connection

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("init_counter")]


# -- 8. the WAL fixture -------------------------------------------------------------------------


def _snapshot(conn: sqlite3.Connection) -> tuple[dict[str, int], str]:
    """Per-table row counts and one checksum over every row of every table."""
    tables = [
        r[0]
        for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall()
    ]
    counts: dict[str, int] = {}
    digest = hashlib.sha256()
    for table in tables:
        rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()
        counts[table] = len(rows)
        digest.update(table.encode())
        for line in sorted(repr(row) for row in rows):
            digest.update(line.encode())
    return counts, digest.hexdigest()


def _reference_snapshot(tmp_path: Path) -> tuple[dict[str, int], str]:
    """What the WAL fixture holds, read by plain sqlite3 from a copy of its own."""
    reference = copy_fixture("rust-legacy-wal", tmp_path / "reference")
    conn = sqlite3.connect(db_path_for(reference))
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        return _snapshot(conn)
    finally:
        conn.close()


def test_wal_fixture_is_switched_to_truncate_keeping_every_row(tmp_path: Path) -> None:
    counts, checksum = _reference_snapshot(tmp_path)
    assert counts["mem_tree_chunks"] == 40
    assert sum(counts.values()) > 40
    ws = copy_fixture("rust-legacy-wal", tmp_path / "wal")
    path = db_path_for(ws)
    wal = path.with_name("chunks.db-wal")
    assert wal.stat().st_size > path.stat().st_size  # the rows really are in the -wal
    engine = tinycortex_sa.create_engine(ws)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "truncate"
        assert conn.exec_driver_sql("SELECT count(*) FROM mem_tree_chunks").scalar() == 40
    assert with_connection(ws, _snapshot) == (counts, checksum)
    assert not wal.exists()
    assert not path.with_name("chunks.db-shm").exists()
    # the rows are in the main file itself now: a separate reader without the -wal sees them
    plain = sqlite3.connect(path)
    try:
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not WAL any more
        assert _snapshot(plain) == (counts, checksum)
    finally:
        plain.close()
    assert with_connection(ws, lambda c: c.execute("PRAGMA integrity_check").fetchone()[0]) == "ok"


_HOLDER_SCRIPT = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("SELECT count(*) FROM mem_tree_chunks").fetchone()
print("ready", flush=True)
sys.stdin.readline()
conn.close()
"""


@pytest.mark.slow
@pytest.mark.parametrize("other", ["connection", "process"])
def test_wal_fixture_held_open_elsewhere_fails_with_a_retryable_error(
    tmp_path: Path, other: str, caplog: pytest.LogCaptureFixture
) -> None:
    counts, checksum = _reference_snapshot(tmp_path)
    ws = copy_fixture("rust-legacy-wal", tmp_path / "wal")
    path = db_path_for(ws)
    wal = path.with_name("chunks.db-wal")
    wal_bytes = wal.read_bytes()
    close_other: Callable[[], None]
    if other == "connection":
        conn = sqlite3.connect(path)
        assert conn.execute("SELECT count(*) FROM mem_tree_chunks").fetchone()[0] == 40
        close_other = conn.close
    else:
        proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER_SCRIPT, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"

        def close_other() -> None:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.close()
            assert proc.wait(WAIT) == 0

    try:
        caplog.set_level(logging.DEBUG, logger=LOGGER)
        start = time.monotonic()
        with pytest.raises(tinycortex_sa.DatabaseBusyError) as excinfo:
            with_connection(ws, lambda c: None, busy_timeout=300)
        assert time.monotonic() - start < 5.0
        err = excinfo.value
        assert isinstance(err, tinycortex_sa.JournalModeBusyError), f"{type(err).__name__}: {err}"
        assert err.pragma == "journal_mode"
        assert err.asked.lower() == "truncate" and err.got.lower() == "wal"
        assert "journal_mode" in str(err)
        assert str(canonical(ws)) in str(err)
        assert wal.read_bytes() == wal_bytes
        assert tinycortex_sa.breaker_state(ws).state == "closed"
        assert tinycortex_sa.breaker_state(ws).failures == 0
    finally:
        close_other()
    with tinycortex_sa.create_engine(ws).connect() as after:
        assert after.exec_driver_sql("PRAGMA journal_mode").scalar() == "truncate"
    assert with_connection(ws, _snapshot) == (counts, checksum)
    assert tinycortex_sa.breaker_state(ws).state == "closed"
    assert not wal.exists()


_ARRIVING_SCRIPT = """
import sys, time
import tinycortex_sa
from tinycortex_sa.sqlite import driver
from tinycortex_sa.sqlite import files
from tinycortex_sa.connection import handle
from tinycortex_sa.connection import registry
from tinycortex_sa.schema import upgrade
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.0002)
try:
    n = tinycortex_sa.with_connection(
        sys.argv[1], lambda c: c.execute("SELECT count(*) FROM mem_tree_chunks").fetchone()[0]
    )
    print(n)
except Exception as err:
    print(type(err).__name__, err)
"""


def _arrive_at_once(ws: Path, processes: int) -> list[str]:
    """Start ``processes`` processes that open ``ws`` at the same moment; what each printed."""
    start = time.time() + 1.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _ARRIVING_SCRIPT, str(ws), str(start)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(processes)
    ]
    return [proc.communicate(timeout=25)[0].strip() for proc in procs]


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(3))
def test_processes_opening_a_wal_database_at_once_all_get_in(tmp_path: Path, trial: int) -> None:
    """Leaving WAL needs the only connection: openers arriving together refuse each other, then take turns."""
    counts, _ = _reference_snapshot(tmp_path)
    ws = copy_fixture("rust-legacy-wal", tmp_path / "wal")
    answers = _arrive_at_once(ws, 3)
    assert answers == [str(counts["mem_tree_chunks"])] * 3
    assert not db_path_for(ws).with_name("chunks.db-wal").exists()


def _stale_wal_beside_a_truncate_database(path: Path) -> bytes:
    """A rollback-mode database with a -wal from its WAL period put back beside it; the -wal's bytes."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("CREATE TABLE t(x)")
    conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(20)])
    wal = path.with_name(path.name + "-wal").read_bytes()
    conn.execute("PRAGMA journal_mode = TRUNCATE")  # checkpoints and deletes the -wal
    conn.close()
    path.with_name(path.name + "-wal").write_bytes(wal)
    return wal


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["garbage", "stale-wal"])
@pytest.mark.parametrize("trial", range(2))
def test_processes_finding_one_damaged_file_at_once_move_it_once(
    tmp_path: Path, kind: str, trial: int
) -> None:
    """Four processes open a damaged file (or one with a stale -wal) at the same moment: one moves it
    aside, with its bytes and mode; the others wait, see it done, and open the new file."""
    ws = tmp_path / "ws"
    path = db_path_for(ws)
    if kind == "garbage":
        path.parent.mkdir(parents=True)
        path.write_bytes(os.urandom(50_000))
        path.with_name("chunks.db-journal").write_bytes(b"journal" * 50)
        path.chmod(0o640)
        kept_suffix, originals = ".corrupt-", {"": path.read_bytes(), "-journal": b"journal" * 50}
    else:
        copy_fixture("rust-0.1.1-empty", ws)  # a chunk DB: another application's database is refused
        kept_suffix, originals = "-wal.stale-", {"": _stale_wal_beside_a_truncate_database(path)}
    answers = _arrive_at_once(ws, 4)
    assert all(a.isdigit() for a in answers), answers
    kept = sorted(p.name for p in path.parent.iterdir() if kept_suffix in p.name)
    assert len(kept) == len(originals), kept
    main = min(kept, key=len)
    for suffix, data in originals.items():
        assert (path.parent / (main + suffix)).read_bytes() == data
    if kind == "garbage":
        assert stat.S_IMODE((path.parent / main).stat().st_mode) == 0o640


# -- 9. quarantine -----------------------------------------------------------------------------

_STAMP = re.compile(r"^chunks\.db\.corrupt-(\d{8}T\d{6}Z)$")
GARBAGE = b"this is not a SQLite database, it is garbage\n" * 200


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _truncated_fixture(tmp_path: Path, name: str) -> Path:
    ws = copy_fixture("rust-0.1.1-populated", tmp_path / name)
    path = db_path_for(ws)
    with open(path, "r+b") as f:
        f.truncate(3 * 4096)
    return ws


def _garbage_workspace(tmp_path: Path, name: str) -> Path:
    ws = tmp_path / name
    (ws / "memory_tree").mkdir(parents=True)
    path = db_path_for(ws)
    path.write_bytes(GARBAGE)
    path.chmod(0o640)
    return ws


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_corrupt_file_is_quarantined_and_a_fresh_database_built(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    ws = _garbage_workspace(tmp_path, "ws") if kind == "garbage" else _truncated_fixture(tmp_path, "ws")
    path = db_path_for(ws)
    directory = path.parent
    before = _files(directory)
    mode = stat.S_IMODE(path.stat().st_mode)
    caplog.set_level(logging.INFO, logger=LOGGER)
    started = datetime.now(UTC).replace(microsecond=0)

    def use(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.execute("INSERT INTO t (v) VALUES ('fresh')")
        return conn.execute("SELECT v FROM t").fetchall()

    assert with_connection(ws, use) == [("fresh",)]
    moved = [p for p in directory.iterdir() if _STAMP.match(p.name)]
    assert len(moved) == 1, sorted(p.name for p in directory.iterdir())
    corrupt = moved[0]
    match = _STAMP.match(corrupt.name)
    assert match is not None
    stamp = datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert started <= stamp <= datetime.now(UTC)
    assert corrupt.read_bytes() == before["chunks.db"]
    assert stat.S_IMODE(corrupt.stat().st_mode) == mode
    for side, content in before.items():  # side files moved along, bytes intact
        if side != "chunks.db":
            assert (directory / (corrupt.name + side[len("chunks.db") :])).read_bytes() == content
    assert path.read_bytes()[:16] == b"SQLite format 3\x00"
    assert with_connection(ws, lambda c: c.execute("PRAGMA integrity_check").fetchone()[0]) == "ok"
    errors = records(caplog, logging.ERROR)
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert str(canonical(ws)) in message
    assert str(corrupt.resolve()) in message
    assert tinycortex_sa.breaker_state(ws).state == "closed"


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_corrupt_file_with_on_corrupt_raise_is_left_alone(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    ws = _garbage_workspace(tmp_path, "ws") if kind == "garbage" else _truncated_fixture(tmp_path, "ws")
    path = db_path_for(ws)
    before = _files(path.parent)
    mode = stat.S_IMODE(path.stat().st_mode)
    with pytest.raises(tinycortex_sa.CorruptDatabaseError) as excinfo:
        with_connection(ws, lambda c: None, on_corrupt="raise")
    assert str(canonical(ws)) in str(excinfo.value)
    with pytest.raises(tinycortex_sa.CorruptDatabaseError):
        tinycortex_sa.create_engine(ws, on_corrupt="raise").connect()
    assert _files(path.parent) == before
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert not records(caplog, logging.ERROR)
