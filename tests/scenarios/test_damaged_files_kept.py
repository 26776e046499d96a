"""Damaged and stale files are kept, never replayed or lost: stale ``-wal``, not-a-database files
with their ``-journal``, damage found after the open, a file quarantined by another process."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import chunk_ids
from reliability.common import (
    INSERT_CHUNK,
    TOKEN,
    LineReader,
    chunk_row,
    damage_a_leaf_the_open_does_not_read,
    head_with_a_damaged_leaf,
    prepare_head,
    run_worker,
    sha256,
    worker_cmd,
)

import tinycortex_sa
from tinycortex_sa import db_path_for
from tinycortex_sa.connection import registry

pytestmark = pytest.mark.timeout(60)


def _insert(path: Path, keys: list[str], journal_mode: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode = {journal_mode}")
    for key in keys:
        conn.execute(INSERT_CHUNK, chunk_row(key, TOKEN))
    if journal_mode == "WAL":
        conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.close()


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
    committed = chunk_ids(path)
    shutil.copy2(tmp_path / "old-wal", path.with_name("chunks.db-wal"))  # a restore brings the old -wal back
    wal_digest = sha256(path.with_name("chunks.db-wal"))

    seen = tinycortex_sa.with_connection(
        ws, lambda c: {r[0] for r in c.execute("SELECT id FROM mem_tree_chunks")}
    )

    assert seen == committed, f"{len(committed - seen)} committed rows lost to a stale -wal"
    tinycortex_sa.invalidate(ws)
    assert chunk_ids(path) == committed
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_damage_found_after_open_leads_to_quarantine(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    path = head_with_a_damaged_leaf(ws)
    try:
        with tinycortex_sa.create_engine(ws).connect() as conn:
            conn.exec_driver_sql("SELECT * FROM mem_tree_chunks").fetchall()
    except sa.exc.DatabaseError as err:
        if "malformed" not in str(err):
            raise RuntimeError(f"unexpected error reading the damaged table: {err}") from err
    else:
        raise RuntimeError("the damaged page was not found by reading the table")
    damaged = path.read_bytes()
    tinycortex_sa.with_connection(ws, lambda c: None)  # the next open should confirm and quarantine it
    moved = [p for p in path.parent.iterdir() if ".corrupt-" in p.name and not p.name.endswith("-journal")]
    assert len(moved) == 1 and moved[0].read_bytes() == damaged


@pytest.mark.slow
def test_a_process_with_the_file_open_recovers_after_another_quarantined_it(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    path = prepare_head(ws)
    tinycortex_sa.with_connection(
        ws, lambda c: c.executemany(INSERT_CHUNK, [chunk_row(i, TOKEN) for i in range(1500)])
    )
    tinycortex_sa.invalidate(ws)
    other = subprocess.Popen(
        worker_cmd("stayer", ws=str(ws), name="other", token=TOKEN),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        reader = LineReader(other)
        if not reader.wait_for(lambda lines: "ready" in lines, 30):
            raise RuntimeError("the other process did not open the file")
        damage_a_leaf_the_open_does_not_read(path)
        try:
            with tinycortex_sa.create_engine(ws).connect() as conn:
                conn.exec_driver_sql("SELECT * FROM mem_tree_chunks").fetchall()
        except sa.exc.DatabaseError:
            pass
        else:
            raise RuntimeError("the damaged page was not found by reading the table")
        tinycortex_sa.with_connection(ws, lambda c: None)  # this process quarantines the file
        if not [p for p in path.parent.iterdir() if ".corrupt-" in p.name]:
            raise RuntimeError("the damaged file was not quarantined")
        assert other.stdin is not None
        other.stdin.write(b"write\nwrite\n")
        other.stdin.close()
        other.wait(30)
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
    reports = [json.loads(line) for line in reader.finish() if line.startswith("{")]
    if len(reports) != 2:
        raise RuntimeError(f"the other process answered {reports}")
    # the first write may fail (naming the file); the second must work, into the live file
    assert reports[1]["ok"], reports
    assert all(r["ok"] or str(path) in r["error"] for r in reports), reports
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM mem_tree_chunks WHERE id = ?", (reports[1]["id"],)).fetchone()[
        0
    ]
    conn.close()


def test_with_connection_after_the_file_was_moved_opens_the_new_one(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    path = prepare_head(ws)
    tinycortex_sa.with_connection(ws, lambda c: c.execute("SELECT 1"))  # cached, open
    aside = path.with_name("chunks.db.corrupt-20260101T000000Z")
    path.rename(aside)  # what another process's quarantine does
    prepare_head(tmp_path / "fresh").rename(path)

    def write(c: sqlite3.Connection) -> None:
        c.execute("BEGIN IMMEDIATE")
        c.execute(INSERT_CHUNK, chunk_row("after-move", TOKEN))
        c.execute("COMMIT")

    with pytest.raises(sqlite3.OperationalError) as info:
        tinycortex_sa.with_connection(ws, write)
    assert getattr(info.value, "sqlite_errorcode", None) == 1032  # unchanged: SQLite's own error
    tinycortex_sa.with_connection(ws, write)  # the next call opens the file now at the path
    check = sqlite3.connect(path)
    assert check.execute("SELECT count(*) FROM mem_tree_chunks").fetchone() == (1,)
    check.close()
    moved = sqlite3.connect(aside)
    assert moved.execute("SELECT count(*) FROM mem_tree_chunks").fetchone() == (0,)
    moved.close()
