"""Gaps the reliability scenarios found in the caller-facing paths, and that are now closed (issue 4).

A caller's own statement that waits out busy_timeout or hits a full disk gets
an error naming the file and the fix; out-of-range options are refused by
name; damage found by a caller's query leads to quarantine at the next open.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from reliability.common import (
    INSERT_CHUNK,
    TOKEN,
    LineReader,
    chunk_row,
    copy_fixture,
    damage_a_leaf_the_open_does_not_read,
    head_with_a_damaged_leaf,
    prepare_head,
    run_worker,
    worker_cmd,
)
from sqlalchemy.orm import Session

import tinycortex_sa

pytestmark = pytest.mark.timeout(60)


def test_busy_begin_names_the_path_and_busy_timeout(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    path = prepare_head(ws)
    engine = tinycortex_sa.create_engine(ws, busy_timeout=200)
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        try:
            with Session(engine) as session:
                session.execute(sa.text(INSERT_CHUNK), chunk_row("x", TOKEN))
        except Exception as err:
            caught: Exception = err
        else:
            raise RuntimeError("the write did not wait for the other process's lock")
        assert isinstance(caught, tinycortex_sa.StatementBusyError), f"{type(caught).__name__}: {caught}"
        assert isinstance(caught, (tinycortex_sa.DatabaseBusyError, sa.exc.OperationalError))
        assert str(path) in str(caught) and "busy_timeout=200ms" in str(caught)
        assert tinycortex_sa.breaker_state(ws).failures == 0
    finally:
        other.close()
        engine.dispose()


def test_full_disk_under_a_callers_write_names_the_path(tmp_path: Path) -> None:
    ws = copy_fixture("rust-0.1.1-populated", tmp_path / "ws")
    path = prepare_head(ws)
    report = run_worker(
        "badenv", action="write", ws=str(ws), token=TOKEN, fsize=path.stat().st_size + 8192, rows=3
    )
    if report.get("ok") is not False:
        raise RuntimeError(f"the write did not fail: {report}")
    assert {"StatementDiskFullError", "DiskFullError", "OperationalError"} <= set(report["mro"]), report
    assert str(path) in report["message"], report


def test_infinite_checkout_timeout_is_refused_by_name(tmp_path: Path) -> None:
    try:
        tinycortex_sa.create_engine(tmp_path / "ws", checkout_timeout=float("inf"))
    except tinycortex_sa.OptionError as err:
        assert "checkout_timeout" in str(err)
    else:
        raise AssertionError("checkout_timeout=inf was accepted")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("breaker_cooldown", float("inf")),
        ("checkout_timeout", 1e10),  # beyond threading.TIMEOUT_MAX
        ("embedding_dim", 2**24 + 1),
        ("busy_timeout", "2147483648"),
    ],
)
def test_out_of_range_options_are_refused_by_name(tmp_path: Path, name: str, value: object) -> None:
    with pytest.raises(tinycortex_sa.OptionError, match=repr(name)):
        tinycortex_sa.create_engine(tmp_path / "ws", **{name: value})
    assert not (tmp_path / "ws").exists()


def test_busy_timeout_beyond_sqlite_int_is_refused_by_name(tmp_path: Path) -> None:
    try:
        tinycortex_sa.create_engine(tmp_path / "ws", busy_timeout=2**31)
    except tinycortex_sa.OptionError as err:
        assert "busy_timeout" in str(err)
    else:
        raise AssertionError("busy_timeout=2**31 was accepted")


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
