"""One connection per file: every spelling and engine shares it, disposal, one initialisation, pragmas."""

from __future__ import annotations

import functools
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import InitCounter
from scenario_support import (
    WAIT,
    Thread,
    canonical,
    dbapi,
    handle_of,
    make_table,
    rows_outside,
    the_connection,
    url_for,
)
from sqlalchemy.orm import Session

import tinycortex_sa
from tinycortex_sa import db_path_for, with_connection
from tinycortex_sa.connection import registry

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("init_counter")]


# -- 1. aliases share one connection ---------------------------------------------------------


def test_spellings_of_one_file_share_one_connection(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    (tmp_path / "ws-link").symlink_to(workspace, target_is_directory=True)
    monkeypatch.chdir(sub)
    spellings: list[Path | str] = [
        workspace,
        str(workspace),
        Path("../ws"),
        workspace / ".." / "ws",
        tmp_path / "ws-link",
        "../ws-link",
    ]
    engines = [tinycortex_sa.create_engine(s) for s in spellings]
    engines += [
        sa.create_engine(url_for(db_path_for(workspace))),
        sa.create_engine("sqlite+tinycortex:///../ws/memory_tree/chunks.db"),
        sa.create_engine(url_for(tmp_path / "ws-link" / "memory_tree" / "chunks.db")),
    ]
    seen: list[Any] = []
    for engine in engines:
        raw = engine.raw_connection()
        seen.append(raw.dbapi_connection)
        raw.close()
    seen += [the_connection(s) for s in spellings]
    first = seen[0]
    assert isinstance(first, sqlite3.Connection)
    assert all(conn is first for conn in seen)
    assert len(registry._handles) == 1
    assert handle_of(workspace).opens == 1
    # a write through one spelling is read through every other
    with engines[2].begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.exec_driver_sql("INSERT INTO t (v) VALUES ('via ../ws')")
    with engines[-1].connect() as conn:
        assert conn.exec_driver_sql("SELECT v FROM t").scalar_one() == "via ../ws"


def test_symlinked_database_file_shares_the_connection(workspace: Path, tmp_path: Path) -> None:
    real = the_connection(workspace)
    other_ws = tmp_path / "other"
    (other_ws / "memory_tree").mkdir(parents=True)
    (other_ws / "memory_tree" / "chunks.db").symlink_to(db_path_for(workspace))
    engine = tinycortex_sa.create_engine(other_ws)
    raw = engine.raw_connection()
    try:
        via_engine: Any = raw.dbapi_connection
        assert via_engine is real
    finally:
        raw.close()
    assert the_connection(other_ws) is real
    url_engine = sa.create_engine(url_for(db_path_for(other_ws)))
    with url_engine.connect() as conn:
        assert dbapi(conn) is real
    assert handle_of(workspace).opens == 1
    assert registry.existing_handle(db_path_for(other_ws)) is handle_of(workspace)


# -- 5. dispose -------------------------------------------------------------------------------


def test_dispose_of_one_engine_leaves_the_other_working(workspace: Path) -> None:
    make_table(workspace)
    first = tinycortex_sa.create_engine(workspace)
    second = sa.create_engine(url_for(db_path_for(workspace)))
    shared = the_connection(workspace)
    with first.connect() as conn:
        assert dbapi(conn) is shared
    with second.connect() as conn:
        assert dbapi(conn) is shared
    first.dispose()
    with second.begin() as conn:
        assert dbapi(conn) is shared
        conn.exec_driver_sql("INSERT INTO t (v) VALUES ('after dispose')")
    assert shared.execute("SELECT count(*) FROM t").fetchone()[0] == 1  # still open
    assert handle_of(workspace).opens == 1
    assert rows_outside(workspace) == ["after dispose"]


def test_disposing_the_last_engine_closes_the_connection(workspace: Path) -> None:
    first = tinycortex_sa.create_engine(workspace)
    second = tinycortex_sa.create_engine(workspace)
    for engine in (first, second):
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    handle = handle_of(workspace)
    shared = handle.conn
    assert shared is not None and handle.opens == 1
    first.dispose()
    assert handle.conn is shared
    second.dispose()
    # the last engine on the file is gone: the connection is closed ...
    assert handle.conn is None, "disposing the last engine left the shared connection open"
    with pytest.raises(sqlite3.ProgrammingError):
        shared.execute("SELECT 1")
    # ... and the next checkout opens a new one
    fresh = the_connection(workspace)
    assert fresh is not shared
    assert handle.opens == 2


# -- 6. initialisation runs once -----------------------------------------------------------


def test_sixteen_threads_first_call_initialises_once(
    workspace: Path, tmp_path: Path, init_counter: InitCounter
) -> None:
    (tmp_path / "ws-link").symlink_to(workspace, target_is_directory=True)
    n = 16
    barrier = threading.Barrier(n)

    def first_call(i: int) -> Any:
        ws = workspace if i % 2 else tmp_path / "ws-link"
        barrier.wait(WAIT)
        if i % 4 == 0:
            with tinycortex_sa.create_engine(ws).connect() as conn:
                conn.exec_driver_sql("SELECT 1")
                return dbapi(conn)
        if i % 4 == 1:
            with Session(sa.create_engine(url_for(db_path_for(ws)))) as session:
                session.execute(sa.text("SELECT 1"))
                return dbapi(session.connection())
        return with_connection(ws, lambda c: c)

    threads = [Thread(functools.partial(first_call, i)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 2)
    assert [t.error for t in threads] == [None] * n
    assert len({id(t.result) for t in threads}) == 1
    assert len(init_counter.calls) == 1
    assert init_counter.calls[0][1] == canonical(workspace)
    assert handle_of(workspace).opens == 1
    assert len(registry._handles) == 1


# -- 7. pragmas -----------------------------------------------------------------------------


def _pragmas(conn: sqlite3.Connection) -> dict[str, Any]:
    return {
        name: conn.execute(f"PRAGMA {name}").fetchone()[0]
        for name in ("busy_timeout", "foreign_keys", "synchronous", "journal_mode")
    }


def test_pragmas_read_back_with_defaults(workspace: Path) -> None:
    expected = {"busy_timeout": 15000, "foreign_keys": 1, "synchronous": 2, "journal_mode": "truncate"}
    assert with_connection(workspace, _pragmas) == expected
    with Session(tinycortex_sa.create_engine(workspace)) as session:
        got = {
            name: session.execute(sa.text(f"PRAGMA {name}")).scalar()
            for name in ("busy_timeout", "foreign_keys", "synchronous", "journal_mode")
        }
    assert got == expected


def test_pragmas_read_back_with_busy_timeout_option(workspace: Path, tmp_path: Path) -> None:
    engine = sa.create_engine(url_for(db_path_for(workspace), "busy_timeout=4321"))
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 4321
    assert with_connection(workspace, _pragmas) == {
        "busy_timeout": 4321,
        "foreign_keys": 1,
        "synchronous": 2,
        "journal_mode": "truncate",
    }
    other = tmp_path / "other"
    assert with_connection(other, _pragmas, busy_timeout=250)["busy_timeout"] == 250
