"""Refusals that name the file and the fix: read-only files, a full disk at open or under a caller's
write, a lock held past busy_timeout, out-of-range options."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from reliability.common import (
    INSERT_CHUNK,
    TOKEN,
    chunk_row,
    copy_fixture,
    nobody_dir,
    prepare_head,
    run_worker,
)
from sqlalchemy.orm import Session

import tinycortex_sa
from tinycortex_sa import db_path_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def nobody_base(tmp_path: Path) -> Any:
    base = nobody_dir(tmp_path, "fixes")
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _chown(root: Path, uid: int) -> None:
    for p in [root, *root.rglob("*")]:
        os.chown(p, uid, uid)


@pytest.mark.slow
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


@pytest.mark.slow
def test_full_disk_at_open_says_so(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    report = run_worker("badenv", action="open", ws=str(ws), fsize=16384)
    assert report.get("ok") is False, report
    assert "OpenError" in report["mro"]
    message = report["message"]
    assert str(db_path_for(ws)) in message
    assert "disk is full or a file-size limit" in message and "RLIMIT_FSIZE" in message


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


@pytest.mark.slow
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
