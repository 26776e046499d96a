"""Gaps the reliability scenarios found in the caller-facing paths, and that are now closed (issue 4).

A caller's own statement that waits out busy_timeout or hits a full disk gets
an error naming the file and the fix; out-of-range options are refused by
name; damage found by a caller's query leads to quarantine at the next open.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from reliability.common import INSERT_CHUNK, TOKEN, chunk_row, copy_fixture, prepare_head, run_worker
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
        assert isinstance(caught, tinycortex_sa.DatabaseBusyError), f"{type(caught).__name__}: {caught}"
        assert str(path) in str(caught) and "busy_timeout" in str(caught)
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
    assert "TinyCortexError" in report["mro"] and str(path) in report["message"], report


def test_infinite_checkout_timeout_is_refused_by_name(tmp_path: Path) -> None:
    try:
        tinycortex_sa.create_engine(tmp_path / "ws", checkout_timeout=float("inf"))
    except tinycortex_sa.OptionError as err:
        assert "checkout_timeout" in str(err)
    else:
        raise AssertionError("checkout_timeout=inf was accepted")


def test_busy_timeout_beyond_sqlite_int_is_refused_by_name(tmp_path: Path) -> None:
    try:
        tinycortex_sa.create_engine(tmp_path / "ws", busy_timeout=2**31)
    except tinycortex_sa.OptionError as err:
        assert "busy_timeout" in str(err)
    else:
        raise AssertionError("busy_timeout=2**31 was accepted")


def test_damage_found_after_open_leads_to_quarantine(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    path = prepare_head(ws)
    tinycortex_sa.with_connection(
        ws, lambda c: c.executemany(INSERT_CHUNK, [chunk_row(i, TOKEN) for i in range(1500)])
    )
    tinycortex_sa.invalidate(ws)
    conn = sqlite3.connect(path)
    leaves = [
        r[0]
        for r in conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'mem_tree_chunks' AND pagetype = 'leaf'"
        )
    ]
    conn.close()
    data = bytearray(path.read_bytes())
    page = leaves[len(leaves) // 2] - 1  # a leaf in the middle of mem_tree_chunks: the open never reads it
    data[page * 4096 : page * 4096 + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    try:
        with tinycortex_sa.create_engine(ws).connect() as conn:
            conn.exec_driver_sql("SELECT * FROM mem_tree_chunks").fetchall()
    except sa.exc.DatabaseError as err:
        if "malformed" not in str(err):
            raise RuntimeError(f"unexpected error reading the damaged table: {err}") from err
    else:
        raise RuntimeError("the damaged page was not found by reading the table")
    tinycortex_sa.with_connection(ws, lambda c: None)  # the next open should confirm and quarantine it
    assert [p for p in path.parent.iterdir() if ".corrupt-" in p.name]
