"""Regression tests for the library bugs the reliability scenarios exposed (issue 4).

Each fails on the code before its fix:

* a stale ``-wal`` beside a TRUNCATE database was replayed over it (rows
  committed since were lost), and one beside an empty file was deleted;
* a file that is not a database lost the ``-journal`` beside it (SQLite
  deleted it) before it was quarantined;
* a read-only database file or directory opened "successfully" and failed
  at the first write with SQLite's bare "attempt to write a readonly database";
* a full disk / file-size limit at open said "disk I/O error ... writable directory";
* a fork while another thread was stepping an autocommit statement left the
  child's copy of SQLite's lock table locked: the child failed after
  busy_timeout, holding the write lock (and so blocking the parent) meanwhile.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from reliability.common import (
    INSERT_CHUNK,
    TOKEN,
    chunk_row,
    head_with_a_damaged_leaf,
    nobody_dir,
    prepare_head,
    run_worker,
    sha256,
)

import tinycortex_sa
from tinycortex_sa import db_path_for
from tinycortex_sa.connection import registry

pytestmark = pytest.mark.timeout(60)


def _ids(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT id FROM mem_tree_chunks")}
    finally:
        conn.close()


def _insert(path: Path, keys: list[str], journal_mode: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode = {journal_mode}")
    for key in keys:
        conn.execute(INSERT_CHUNK, chunk_row(key, TOKEN))
    if journal_mode == "WAL":
        conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.close()


# -- stale -wal --------------------------------------------------------------------------------


def test_stale_wal_beside_a_truncate_database_is_kept_aside_not_replayed(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    path = prepare_head(ws)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    for i in range(20):
        conn.execute(INSERT_CHUNK, chunk_row(f"wal-era-{i}", TOKEN))
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    shutil.copy2(path.with_name("chunks.db-wal"), tmp_path / "old-wal")
    conn.close()
    _insert(path, [f"since-{i}" for i in range(20)], "TRUNCATE")  # committed after the WAL period
    committed = _ids(path)
    shutil.copy2(tmp_path / "old-wal", path.with_name("chunks.db-wal"))  # a restore brings the old -wal back
    wal_digest = sha256(path.with_name("chunks.db-wal"))

    seen = tinycortex_sa.with_connection(
        ws, lambda c: {r[0] for r in c.execute("SELECT id FROM mem_tree_chunks")}
    )

    assert seen == committed, f"{len(committed - seen)} committed rows lost to a stale -wal"
    tinycortex_sa.invalidate(ws)
    assert _ids(path) == committed
    kept = [p for p in path.parent.iterdir() if p.name.startswith("chunks.db-wal.stale-")]
    assert len(kept) == 1 and sha256(kept[0]) == wal_digest
    assert not path.with_name("chunks.db-wal").exists()


def test_wal_beside_an_empty_database_file_is_kept_not_deleted(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    path = prepare_head(ws)
    run_worker("walcrash", path=str(path), rows=5, tag=2, token=TOKEN)  # dies before any checkpoint
    wal = path.with_name("chunks.db-wal")
    assert wal.stat().st_size > 0
    path.write_bytes(b"")  # the main file emptied beside its -wal (a sync tool, a failed restore)
    digest = sha256(wal)

    tinycortex_sa.with_connection(ws, lambda c: None)

    kept = [p for p in path.parent.iterdir() if p.name.startswith("chunks.db-wal.stale-")]
    assert len(kept) == 1, f"SQLite deleted the -wal: {sorted(p.name for p in path.parent.iterdir())}"
    assert sha256(kept[0]) == digest


def test_a_wal_database_is_still_folded_in(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    path = prepare_head(ws)
    report = run_worker("walcrash", path=str(path), rows=7, tag=1, token=TOKEN)
    assert report.get("returncode", 0) == 0 or "crashed" in report
    expected = {f"wal-1-{i}" for i in range(7)}
    seen = tinycortex_sa.with_connection(
        ws, lambda c: {r[0] for r in c.execute("SELECT id FROM mem_tree_chunks")}
    )
    assert expected <= seen
    assert not path.with_name("chunks.db-wal").exists()
    assert not [p for p in path.parent.iterdir() if ".stale-" in p.name]


# -- a file that is not a database keeps its -journal -----------------------------------------


def test_not_a_database_is_quarantined_with_its_journal_bytes_intact(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    directory = db_path_for(ws).parent
    directory.mkdir(parents=True)
    db_path_for(ws).write_bytes(b"not a database at all\n" * 300)
    journal = os.urandom(5000)
    db_path_for(ws).with_name("chunks.db-journal").write_bytes(journal)

    tinycortex_sa.with_connection(ws, lambda c: None)

    moved = sorted(p.name for p in directory.iterdir() if ".corrupt-" in p.name)
    assert len(moved) == 2, moved
    assert (directory / moved[1]).name.endswith("-journal")
    assert (directory / moved[1]).read_bytes() == journal, "SQLite deleted or changed the -journal first"
    assert (directory / moved[0]).read_bytes() == b"not a database at all\n" * 300


# -- read-only files and directories (as uid 65534: root may write anything) ------------------


@pytest.fixture
def nobody_base(tmp_path: Path) -> Any:
    base = nobody_dir(tmp_path, "fixes")
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _chown(root: Path, uid: int) -> None:
    for p in [root, *root.rglob("*")]:
        os.chown(p, uid, uid)


@pytest.mark.skipif(os.geteuid() != 0, reason="drops privileges to uid 65534, which needs root")
@pytest.mark.parametrize("what", ["file", "directory"])
def test_read_only_database_is_refused_at_open_with_the_path(nobody_base: Path, what: str) -> None:
    ws = nobody_base / "ws"
    path = prepare_head(ws)
    path.with_name("chunks.db-journal").unlink()
    _chown(ws, 65534)
    (path if what == "file" else path.parent).chmod(0o400 if what == "file" else 0o500)
    report = run_worker("badenv", action="open", ws=str(ws), uid=65534)
    assert report.get("ok") is False, f"opening a read-only {what} succeeded: {report}"
    assert "OpenError" in report["mro"], report
    named = str(path) if what == "file" else str(path.parent)
    assert named in report["message"]
    assert "owner and mode" in report["message"]
    path.parent.chmod(0o700)


# -- full disk ----------------------------------------------------------------------------------


def test_full_disk_at_open_says_so(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    report = run_worker("badenv", action="open", ws=str(ws), fsize=16384)
    assert report.get("ok") is False, report
    assert "OpenError" in report["mro"]
    message = report["message"]
    assert str(db_path_for(ws)) in message
    assert "disk is full or a file-size limit" in message and "RLIMIT_FSIZE" in message


# -- fork while another thread steps an autocommit statement ------------------------------------


def _fork_and_write(ws: Path) -> dict[str, Any]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(read_fd)
            start = time.monotonic()
            try:

                def write(c: sqlite3.Connection) -> None:
                    c.execute("BEGIN IMMEDIATE")
                    c.execute(INSERT_CHUNK, chunk_row("from-child", TOKEN))
                    c.execute("COMMIT")

                tinycortex_sa.with_connection(ws, write)
                report: dict[str, Any] = {"ok": True}
            except Exception as err:
                report = {"ok": False, "error": f"{type(err).__name__}: {err}"}
            report["seconds"] = time.monotonic() - start
            with os.fdopen(write_fd, "w") as out:
                json.dump(report, out)
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as inp:
        raw = inp.read()
    os.waitpid(pid, 0)
    return dict(json.loads(raw))


def _stepping_reader(ws: Path, stepping: threading.Event, hold: float) -> threading.Thread:
    def read(conn: sqlite3.Connection) -> None:
        cursor = conn.execute("SELECT id FROM mem_tree_chunks")
        cursor.fetchone()  # the statement is being stepped: SQLite holds a SHARED lock, no transaction
        assert not conn.in_transaction
        stepping.set()
        time.sleep(hold)
        cursor.fetchall()

    thread = threading.Thread(target=tinycortex_sa.with_connection, args=(ws, read), daemon=True)
    thread.start()
    return thread


def test_fork_waits_for_a_statement_another_thread_is_stepping(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    path = prepare_head(ws, busy_timeout=1500)
    tinycortex_sa.with_connection(
        ws, lambda c: c.executemany(INSERT_CHUNK, [chunk_row(i, TOKEN) for i in range(5)]), busy_timeout=1500
    )
    stepping = threading.Event()
    reader = _stepping_reader(ws, stepping, hold=0.3)
    assert stepping.wait(10)
    report = _fork_and_write(ws)
    reader.join(10)
    assert report["ok"], f"the child could not write: {report}"
    assert report["seconds"] < 1.0
    assert "chunk-from-child" in _ids(path)


def test_fork_refuses_at_once_when_the_statement_outlasts_checkout_timeout(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    prepare_head(ws, busy_timeout=1500)
    tinycortex_sa.with_connection(
        ws, lambda c: c.executemany(INSERT_CHUNK, [chunk_row(i, TOKEN) for i in range(5)]), busy_timeout=1500
    )
    handle = registry.existing_handle(db_path_for(ws))
    assert handle is not None
    import dataclasses

    handle.options = dataclasses.replace(handle.options, checkout_timeout=0.3)
    stepping = threading.Event()
    reader = _stepping_reader(ws, stepping, hold=1.5)
    assert stepping.wait(10)
    report = _fork_and_write(ws)
    reader.join(10)
    assert not report["ok"]
    assert report["error"].startswith("ForkedInUseError"), report
    assert report["seconds"] < 0.5


# -- damage found after the open -------------------------------------------------------------------


def test_a_file_suspected_of_corruption_is_checked_and_quarantined_at_the_next_open(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    path = head_with_a_damaged_leaf(ws)
    damaged = sha256(path)

    def read_all(c: sqlite3.Connection) -> None:
        c.execute("SELECT * FROM mem_tree_chunks").fetchall()

    with pytest.raises(sqlite3.DatabaseError, match="malformed"):
        tinycortex_sa.with_connection(ws, read_all)  # the open itself does not read that page
    handle = registry.existing_handle(path)
    assert handle is not None and handle.conn is None  # with_connection marked it suspect and closed it

    assert (
        tinycortex_sa.with_connection(
            ws, lambda c: c.execute("SELECT count(*) FROM mem_tree_chunks").fetchone()[0]
        )
        == 0
    )
    moved = [p for p in path.parent.iterdir() if ".corrupt-" in p.name and not p.name.endswith("-journal")]
    assert len(moved) == 1 and sha256(moved[0]) == damaged
    tinycortex_sa.invalidate(ws)
    tinycortex_sa.with_connection(ws, lambda c: None)  # healthy now: the next open does not check again
    assert (
        len([p for p in path.parent.iterdir() if ".corrupt-" in p.name]) == len(moved) + 1
    )  # + its -journal
