"""Scenario tests of os.fork() and multiprocessing's fork start method (issue 2, behaviour 5).

The child never uses or closes the parent's connection: its first use opens its own.
The parent carries on with the very same connection object and sees what the
children committed.  Results come back from children through a pipe (JSON) and
their exit code; a child always leaves through ``os._exit``."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import chunk_ids
from reliability.common import (
    INSERT_CHUNK,
    TOKEN,
    chunk_row,
    prepare_head,
)
from sqlalchemy.orm import Session

import tinycortex_sa
from tinycortex_sa import db_path_for, with_connection
from tinycortex_sa.connection import handle, registry

pytestmark = pytest.mark.timeout(60)  # a child or parent deadlock fails the test instead of stalling


WAIT = 10.0


def dbapi(conn: sa.Connection) -> Any:
    return conn.connection.dbapi_connection


def _setup(workspace: Path, **options: Any) -> sqlite3.Connection:
    with_connection(
        workspace,
        lambda c: c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, pid INTEGER)"),
        **options,
    )
    return with_connection(workspace, lambda c: c)


def _handle(workspace: Path | str) -> handle.FileHandle:
    handle = registry.existing_handle(db_path_for(workspace))
    assert handle is not None
    return handle


def _insert(workspace: Path | str, value: str) -> int:
    """Insert one row in its own transaction; return id() of the connection used."""

    def fn(conn: sqlite3.Connection) -> int:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (v, pid) VALUES (?, ?)", (value, os.getpid()))
        conn.execute("COMMIT")
        return id(conn)

    return with_connection(workspace, fn)


def _values(workspace: Path | str) -> list[str]:
    return [
        r[0]
        for r in with_connection(workspace, lambda c: c.execute("SELECT v FROM t ORDER BY id").fetchall())
    ]


def run_in_child(body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Fork; run ``body`` in the child and return what it reported (the child exits 0 on success)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, reported through the pipe
        code = 1
        try:
            os.close(read_fd)
            try:
                sent = body()
                code = 0
            except BaseException as err:
                sent = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
            with os.fdopen(write_fd, "w") as out:
                json.dump(sent, out)
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as inp:
        raw = inp.read()
    _, status = os.waitpid(pid, 0)
    report: dict[str, Any] = json.loads(raw) if raw else {"error": "child reported nothing"}
    assert os.waitstatus_to_exitcode(status) == 0, report
    return report


def _pool_write(args: tuple[str, int, int]) -> tuple[int, int, bool]:
    """Write one row; return (pid, id of the connection used, whether it is the parent's)."""
    workspace, i, parent_conn_id = args
    conn_id = _insert(workspace, f"pool {i}")
    return os.getpid(), conn_id, conn_id == parent_conn_id


def _process_write(workspace: str, n: int, url: str) -> None:
    engine = sa.create_engine(url)
    for i in range(n):
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t (v, pid) VALUES (?, ?)", (f"process {i}", os.getpid()))
    _insert(workspace, "process with_connection")
    ok = with_connection(workspace, lambda c: c.execute("PRAGMA integrity_check").fetchone()[0])
    if ok != "ok":
        raise SystemExit(3)


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


def test_child_opens_its_own_connection_and_parent_carries_on(workspace: Path) -> None:
    parent_conn = _setup(workspace)
    engine = tinycortex_sa.create_engine(workspace)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t (v, pid) VALUES ('parent before', 0)")
        assert dbapi(conn) is parent_conn
    handle = _handle(workspace)
    opens_before = handle.opens

    def child() -> dict[str, Any]:
        with engine.begin() as conn:  # the engine made in the parent
            conn.exec_driver_sql("INSERT INTO t (v, pid) VALUES ('child engine', 1)")
            engine_conn_id = id(dbapi(conn))
        wc_id = _insert(workspace, "child with_connection")
        return {
            "engine_conn_id": engine_conn_id,
            "wc_conn_id": wc_id,
            "is_parent_conn": with_connection(workspace, lambda c: c is parent_conn),
            "opens": _handle(workspace).opens - opens_before,
            "values": _values(workspace),
            "integrity": with_connection(
                workspace, lambda c: c.execute("PRAGMA integrity_check").fetchone()[0]
            ),
        }

    report = run_in_child(child)
    assert report["is_parent_conn"] is False
    assert report["engine_conn_id"] != id(parent_conn)
    assert report["engine_conn_id"] == report["wc_conn_id"]  # one connection in the child, too
    assert report["opens"] == 1
    assert report["values"] == ["parent before", "child engine", "child with_connection"]
    assert report["integrity"] == "ok"
    # the parent: same connection object, never reopened, sees the child's rows
    assert with_connection(workspace, lambda c: c) is parent_conn
    assert handle.opens == opens_before
    with engine.connect() as conn:
        assert dbapi(conn) is parent_conn
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 3
    _insert(workspace, "parent after")
    assert _values(workspace)[-1] == "parent after"
    assert with_connection(workspace, lambda c: c.execute("PRAGMA integrity_check").fetchone()[0]) == "ok"


def test_fork_while_another_thread_holds_the_connection(workspace: Path) -> None:
    """The child must not inherit the parent's per-file lock as held (that would deadlock it)."""
    parent_conn = _setup(workspace)
    held, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        held.set()
        assert release.wait(WAIT)

    holder = threading.Thread(target=with_connection, args=(workspace, hold), daemon=True)
    holder.start()
    assert held.wait(WAIT)
    try:

        def child() -> dict[str, Any]:
            start = time.monotonic()
            conn_id = with_connection(workspace, lambda c: id(c), checkout_timeout=2)
            _insert(workspace, "child")
            return {"conn_id": conn_id, "waited": time.monotonic() - start}

        report = run_in_child(child)
    finally:
        release.set()
        holder.join(WAIT)
    assert report["conn_id"] != id(parent_conn)
    assert report["waited"] < 1.0
    assert with_connection(workspace, lambda c: c) is parent_conn
    assert _values(workspace) == ["child"]


def test_fork_while_another_thread_is_inside_a_write_transaction(workspace: Path) -> None:
    """A thread of the parent is mid-transaction when another thread forks.

    The child's own connection must be able to write once the parent has committed:
    it must not be blocked forever by lock state inherited from the parent's connection.
    """
    parent_conn = _setup(workspace, busy_timeout=2000)
    in_txn = threading.Event()

    def write_slowly(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (v, pid) VALUES ('parent', 0)")
        in_txn.set()
        time.sleep(0.3)  # still in the transaction while the other thread forks
        conn.execute("COMMIT")

    writer = threading.Thread(target=with_connection, args=(workspace, write_slowly), daemon=True)
    writer.start()
    assert in_txn.wait(WAIT)

    def child() -> dict[str, Any]:
        start = time.monotonic()
        try:
            _insert(workspace, "child")
        except Exception as err:
            return {"ok": False, "error": f"{type(err).__name__}: {err}", "after": time.monotonic() - start}
        return {"ok": True, "values": _values(workspace), "after": time.monotonic() - start}

    report = run_in_child(child)
    writer.join(WAIT)
    assert report["ok"], f"the child could not write after the parent committed: {report}"
    assert report["values"] == ["parent", "child"]
    assert with_connection(workspace, lambda c: c) is parent_conn
    assert _values(workspace) == ["parent", "child"]
    assert with_connection(workspace, lambda c: c.execute("PRAGMA integrity_check").fetchone()[0]) == "ok"


def test_fork_inside_own_transaction_child_fails_fast_or_writes(workspace: Path) -> None:
    """Forking from inside with_connection's own transaction.

    The parent's transaction must be untouched (it commits after the fork).  The child
    either writes once the parent committed, or is told at once, by a TinyCortexError,
    that it cannot use the file; never SQLite's "database is locked" after busy_timeout.
    """
    parent_conn = _setup(workspace, busy_timeout=1000)

    def fn(conn: sqlite3.Connection) -> dict[str, Any]:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (v, pid) VALUES ('parent', 0)")
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 1
            try:
                os.close(read_fd)
                start = time.monotonic()
                try:
                    _insert(workspace, "child")
                    report: dict[str, Any] = {"ok": True, "values": _values(workspace)}
                except Exception as err:
                    report = {
                        "ok": False,
                        "library_error": isinstance(err, tinycortex_sa.TinyCortexError),
                        "error": f"{type(err).__name__}: {err}",
                    }
                report["after"] = time.monotonic() - start
                with os.fdopen(write_fd, "w") as out:
                    json.dump(report, out)
                code = 0
            finally:
                os._exit(code)
        os.close(write_fd)
        time.sleep(0.1)
        assert conn.in_transaction
        conn.execute("COMMIT")
        with os.fdopen(read_fd) as inp:
            raw = inp.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        return dict(json.loads(raw))

    report = with_connection(workspace, fn)
    assert with_connection(workspace, lambda c: c) is parent_conn
    assert _values(workspace)[0] == "parent"
    if report["ok"]:
        assert report["values"] == ["parent", "child"]
    else:
        assert report["library_error"] and report["after"] < 0.5, report
    assert with_connection(workspace, lambda c: c.execute("PRAGMA integrity_check").fetchone()[0]) == "ok"


@pytest.mark.slow
def test_multiprocessing_fork_pool_workers_write_through_their_own_connections(workspace: Path) -> None:
    parent_conn = _setup(workspace)
    handle = _handle(workspace)
    opens_before = handle.opens
    ctx = multiprocessing.get_context("fork")
    n = 24
    with ctx.Pool(4) as pool:
        results = pool.map(_pool_write, [(str(workspace), i, id(parent_conn)) for i in range(n)], chunksize=2)
    assert len(results) == n
    assert not any(is_parent for _, _, is_parent in results)
    per_worker: dict[int, set[int]] = {}
    for pid, conn_id, _ in results:
        per_worker.setdefault(pid, set()).add(conn_id)
        assert pid != os.getpid()
    assert all(len(ids) == 1 for ids in per_worker.values())  # each worker reused its one connection
    assert sorted(_values(workspace)) == sorted(f"pool {i}" for i in range(n))
    assert with_connection(workspace, lambda c: c) is parent_conn
    assert handle.opens == opens_before
    assert with_connection(workspace, lambda c: c.execute("PRAGMA integrity_check").fetchone()[0]) == "ok"


@pytest.mark.slow
def test_multiprocessing_fork_processes_write_concurrently_with_the_parent(workspace: Path) -> None:
    parent_conn = _setup(workspace)
    engine = tinycortex_sa.create_engine(workspace)
    url = f"sqlite+tinycortex:///{db_path_for(workspace)}"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_process_write, args=(str(workspace), 5, url)) for _ in range(3)]
    for p in procs:
        p.start()
    for i in range(5):  # the parent writes meanwhile, through its own connection
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t (v, pid) VALUES (?, ?)", (f"parent {i}", os.getpid()))
            assert dbapi(conn) is parent_conn
    for p in procs:
        p.join(WAIT * 3)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    with engine.connect() as conn:
        assert dbapi(conn) is parent_conn
        counts: dict[int, int] = dict(
            conn.exec_driver_sql("SELECT pid = ?, count(*) FROM t GROUP BY pid = ?", (os.getpid(),) * 2).all()
        )
    assert counts == {1: 5, 0: 3 * 6}
    assert with_connection(workspace, lambda c: c.execute("PRAGMA integrity_check").fetchone()[0]) == "ok"


def test_a_transaction_open_across_fork_cannot_commit_in_the_child(workspace: Path) -> None:
    """The child's copy of an open Session must not COMMIT over the parent's later work."""
    engine = tinycortex_sa.create_engine(workspace)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (v TEXT)")
    go_read, go_write = os.pipe()
    done_read, done_write = os.pipe()
    conn = engine.connect()
    conn.begin()
    conn.exec_driver_sql("INSERT INTO t VALUES ('A')")
    pid = os.fork()
    if pid == 0:  # child: wait until the parent has committed B, then leave the transaction
        code = 1
        try:
            os.read(go_read, 1)
            try:
                conn.commit()
            except sa.exc.DatabaseError as err:
                code = 0 if "not authorized" in str(err) else 2
            os.write(done_write, b"x")
        finally:
            os._exit(code)
    conn.commit()
    conn.close()
    with_connection(
        workspace,
        lambda c: (
            c.execute("BEGIN IMMEDIATE"),
            c.execute("INSERT INTO t VALUES ('B')"),
            c.execute("COMMIT"),
        ),
    )
    os.write(go_write, b"x")
    os.read(done_read, 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # the child's COMMIT was refused
    values = with_connection(workspace, lambda c: [r[0] for r in c.execute("SELECT v FROM t ORDER BY rowid")])
    assert values == ["A", "B"]


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
    assert "chunk-from-child" in chunk_ids(path)


@pytest.mark.slow
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


def test_fork_inside_a_session_transaction_child_gets_forked_in_use(workspace: Path) -> None:
    """An application forks while its thread is inside a Session transaction: the child's own new
    Session is told the file cannot be used from it (ForkedInUseError, as documented), not that
    it nests a checkout; the parent's transaction commits as if nothing happened."""
    _setup(workspace)
    engine = tinycortex_sa.create_engine(workspace)
    try:
        with Session(engine) as session, session.begin():
            session.execute(sa.text("INSERT INTO t (v, pid) VALUES ('parent', 0)"))

            def child() -> dict[str, Any]:
                try:
                    with Session(engine) as own:
                        own.execute(sa.text("SELECT count(*) FROM t")).scalar()
                except Exception as err:
                    return {"error": type(err).__name__, "message": str(err)}
                return {"error": None}

            report = run_in_child(child)
        assert report["error"] == "ForkedInUseError", report
        assert "forked while its parent was using the database" in report["message"]
        assert _values(workspace) == ["parent"]
    finally:
        engine.dispose()
