"""Callers take turns: a second thread waits or times out, nesting fails fast, checkin rolls back."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from scenario_support import (
    WAIT,
    Thread,
    canonical,
    dbapi,
    holder,
    make_table,
    rows_outside,
    the_connection,
    url_for,
)
from sqlalchemy.orm import Session

import tinycortex_sa
from tinycortex_sa import db_path_for, with_connection

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("init_counter")]


# -- 2. a second thread waits, then proceeds; or times out -----------------------------------


def test_second_thread_waits_for_the_connection_then_proceeds(workspace: Path) -> None:
    engine = tinycortex_sa.create_engine(workspace)
    held, release = threading.Event(), threading.Event()
    released_at: list[float] = []
    got: list[tuple[float, sqlite3.Connection]] = []
    got_it = threading.Event()

    def hold() -> Any:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
            held.set()
            assert release.wait(WAIT)
            released_at.append(time.monotonic())
            return dbapi(conn)

    def wait_for_it(conn: sqlite3.Connection) -> None:
        got.append((time.monotonic(), conn))
        got_it.set()

    first = Thread(hold)
    first.start()
    assert held.wait(WAIT)
    second = Thread(lambda: with_connection(workspace, wait_for_it))
    second.start()
    assert not got_it.wait(0.2), "the second thread got the connection while the first held it"
    assert second.is_alive()
    release.set()
    first.join(WAIT)
    second.join(WAIT)
    assert first.error is None and second.error is None
    assert len(got) == 1
    assert got[0][0] >= released_at[0]
    assert got[0][1] is first.result


def test_waiting_thread_gets_checkout_timeout_naming_the_path(workspace: Path) -> None:
    the_connection(workspace)
    path = canonical(workspace)
    held, release = threading.Event(), threading.Event()
    first = holder(workspace, held, release)
    first.start()
    try:
        assert held.wait(WAIT)
        start = time.monotonic()
        with pytest.raises(tinycortex_sa.CheckoutTimeoutError) as excinfo:
            with_connection(workspace, lambda c: None, checkout_timeout=0.2)
        waited = time.monotonic() - start
        assert 0.15 <= waited < 2.0
        assert str(path) in str(excinfo.value)
        assert isinstance(excinfo.value, tinycortex_sa.TinyCortexError)
        # the same through an engine whose checkout_timeout is 0.2 s
        engine = tinycortex_sa.create_engine(workspace, checkout_timeout=0.2)
        with pytest.raises(tinycortex_sa.CheckoutTimeoutError, match=re.escape(str(path))):
            engine.connect()
    finally:
        release.set()
        first.join(WAIT)
    assert first.error is None
    with engine.connect() as conn:  # once released, the impatient engine gets it
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1


# -- 3. nested use fails fast -------------------------------------------------------------


def test_session_inside_session_on_the_same_file_fails_fast(workspace: Path) -> None:
    make_table(workspace)
    outer_engine = tinycortex_sa.create_engine(workspace)
    inner_engine = sa.create_engine(url_for(db_path_for(workspace)))
    with Session(outer_engine) as outer:
        outer.execute(sa.text("INSERT INTO t (v) VALUES ('outer')"))
        start = time.monotonic()
        with Session(inner_engine) as inner, pytest.raises(tinycortex_sa.NestedCheckoutError) as excinfo:
            inner.execute(sa.text("SELECT count(*) FROM t"))
        assert time.monotonic() - start < 1.0
        assert str(canonical(workspace)) in str(excinfo.value)
        # the outer session is untouched: its transaction is still open and commits
        assert outer.execute(sa.text("SELECT count(*) FROM t")).scalar() == 1
        outer.commit()
    assert rows_outside(workspace) == ["outer"]
    with Session(inner_engine) as later:
        assert later.execute(sa.text("SELECT v FROM t")).scalar_one() == "outer"


def test_engine_connect_inside_with_connection_fails_fast(workspace: Path) -> None:
    make_table(workspace)
    engine = tinycortex_sa.create_engine(workspace)

    def fn(conn: sqlite3.Connection) -> float:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (v) VALUES ('in fn')")
        start = time.monotonic()
        with pytest.raises(tinycortex_sa.NestedCheckoutError):
            engine.connect()
        with pytest.raises(tinycortex_sa.NestedCheckoutError), Session(engine) as session:
            session.execute(sa.text("SELECT 1"))
        elapsed = time.monotonic() - start
        assert conn.in_transaction
        conn.execute("INSERT INTO t (v) VALUES ('still working')")
        conn.execute("COMMIT")
        return elapsed

    assert with_connection(workspace, fn) < 1.0
    assert rows_outside(workspace) == ["in fn", "still working"]
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 2


def test_with_connection_inside_with_connection_fails_fast(workspace: Path, tmp_path: Path) -> None:
    make_table(workspace)
    (tmp_path / "alias").symlink_to(workspace, target_is_directory=True)

    def fn(conn: sqlite3.Connection) -> str:
        start = time.monotonic()
        with pytest.raises(tinycortex_sa.NestedCheckoutError):
            with_connection(workspace, lambda c: None)
        with pytest.raises(tinycortex_sa.NestedCheckoutError):  # another spelling of the same file
            with_connection(tmp_path / "alias", lambda c: None)
        assert time.monotonic() - start < 1.0
        conn.execute("INSERT INTO t (v) VALUES ('outer ok')")
        return str(conn.execute("SELECT v FROM t").fetchone()[0])

    assert with_connection(workspace, fn) == "outer ok"
    assert rows_outside(workspace) == ["outer ok"]
    assert the_connection(workspace) is the_connection(tmp_path / "alias")


# -- 4. checkin rolls back ----------------------------------------------------------------


def test_connection_closed_without_commit_leaves_nothing(workspace: Path) -> None:
    make_table(workspace)
    writer = tinycortex_sa.create_engine(workspace)
    reader = tinycortex_sa.create_engine(workspace)
    conn = writer.connect()
    conn.exec_driver_sql("INSERT INTO t (v) VALUES ('never committed')")
    assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 1
    conn.close()
    with reader.connect() as other:
        assert other.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0
    assert with_connection(workspace, lambda c: c.in_transaction) is False
    assert rows_outside(workspace) == []


def test_with_connection_returning_inside_a_transaction_is_rolled_back(workspace: Path) -> None:
    make_table(workspace)

    def fn(conn: sqlite3.Connection) -> int:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t (v) VALUES ('left open')")
        return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])

    assert with_connection(workspace, fn) == 1
    state = with_connection(
        workspace, lambda c: (c.in_transaction, c.execute("SELECT count(*) FROM t").fetchone())
    )
    assert state == (False, (0,))
    with tinycortex_sa.create_engine(workspace).connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0
    assert rows_outside(workspace) == []


def test_with_connection_raising_propagates_the_same_exception_and_rolls_back(workspace: Path) -> None:
    make_table(workspace)

    class Boom(Exception):
        pass

    boom = Boom("from fn")

    def fn(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (v) VALUES ('raised')")
        raise boom

    with pytest.raises(Boom) as excinfo:
        with_connection(workspace, fn)
    assert excinfo.value is boom
    assert type(excinfo.value) is Boom
    with tinycortex_sa.create_engine(workspace).connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0
    assert rows_outside(workspace) == []
    # and the connection is free and writable again
    with_connection(workspace, lambda c: c.execute("INSERT INTO t (v) VALUES ('after')"))
    assert rows_outside(workspace) == ["after"]
