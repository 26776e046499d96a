"""Scenario 4: fork, while the parent keeps working.

The parent opens the file, then keeps two threads busy on its shared
connection: one commits through Sessions, one reads through
``with_connection`` in autocommit mode (a statement open, no transaction).
Meanwhile the main thread forks, repeatedly:

* ``os.fork()`` children that write and read through the engine they
  inherited and through ``with_connection``, then run ``integrity_check``;
* a ``multiprocessing`` pool (fork start method) whose workers write;
* ``multiprocessing.Process`` children (fork) that write through a URL engine.

Every child must use a connection of its own (never the parent's), commit
every row, and see no "objects created in a thread can only be used in that
same thread" error; the parent's connection object stays the same, its
threads see no error, and every row of every process is there at the end.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

import tinycortex_sa
from tinycortex_sa import db_path_for, models
from tinycortex_sa.connection import registry

from .common import INSERT_CHUNK, TOKEN, Context, Result, chunk_row, forget, prepare_head, scalar

SAME_THREAD = "can only be used in that same thread"


def _write(ws: str, key: str, engine: sa.Engine | None = None) -> int:
    """One row through a Session (``engine``) or with_connection; returns id() of the connection used."""
    if engine is not None:
        with Session(engine) as session:
            session.add(models.Chunk(**chunk_row(key, TOKEN, source=f"pid-{os.getpid()}")))
            session.flush()
            conn_id = id(session.connection().connection.dbapi_connection)
            session.commit()
        return conn_id

    def fn(conn: sqlite3.Connection) -> int:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(INSERT_CHUNK, chunk_row(key, TOKEN, source=f"pid-{os.getpid()}"))
        conn.execute("COMMIT")
        return id(conn)

    return tinycortex_sa.with_connection(ws, fn)


def _child_body(ws: str, engine: sa.Engine, tag: str, rows: int, parent_conn_id: int) -> dict[str, Any]:
    keys, conn_ids = [], set()
    for i in range(rows):
        key = f"{tag}-{i}"
        conn_ids.add(_write(ws, key, engine if i % 2 else None))
        keys.append(key)
    check = tinycortex_sa.with_connection(ws, lambda c: c.execute("PRAGMA integrity_check").fetchone()[0])
    count = tinycortex_sa.with_connection(
        ws, lambda c: c.execute("SELECT count(*) FROM mem_tree_chunks").fetchone()[0]
    )
    return {
        "keys": keys,
        "conn_ids": sorted(conn_ids),
        "uses_parent_conn": parent_conn_id in conn_ids,
        "integrity": check,
        "count": count,
    }


def _fork_child(ws: str, engine: sa.Engine, tag: str, rows: int, parent_conn_id: int) -> dict[str, Any]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(read_fd)
            try:
                report = _child_body(ws, engine, tag, rows, parent_conn_id)
                code = 0
            except BaseException as err:
                report = {
                    "error": f"{type(err).__name__}: {err}",
                    "traceback": traceback.format_exc()[-1500:],
                }
            with os.fdopen(write_fd, "w") as out:
                json.dump(report, out)
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as inp:
        raw = inp.read()
    _, status = os.waitpid(pid, 0)
    report = json.loads(raw) if raw else {"error": "the child reported nothing"}
    report["exitcode"] = os.waitstatus_to_exitcode(status)
    return report


def _pool_task(args: tuple[str, str, int]) -> dict[str, Any]:
    ws, key, parent_conn_id = args
    try:
        conn_id = _write(ws, key)
        return {"key": key, "pid": os.getpid(), "parent_conn": conn_id == parent_conn_id}
    except Exception as err:
        return {"key": key, "error": f"{type(err).__name__}: {err}"}


def _process_task(url: str, ws: str, tag: str, rows: int, queue: Any) -> None:
    try:
        engine = sa.create_engine(url)
        keys = []
        for i in range(rows):
            key = f"{tag}-{i}"
            _write(ws, key, engine)
            keys.append(key)
        queue.put({"keys": keys})
    except Exception as err:
        queue.put({"error": f"{type(err).__name__}: {err}"})


def run(ctx: Context) -> Result:
    result = Result("fork", "4. fork() and multiprocessing (fork) while the parent works")
    forks, rows, pool_tasks, procs = ctx.n(6, 40), ctx.n(6, 10), ctx.n(16, 120), ctx.n(2, 8)
    ws_path = ctx.tmp / "fork"
    prepare_head(ws_path)
    ws = str(ws_path)
    path = db_path_for(ws_path)
    engine = tinycortex_sa.create_engine(ws_path)
    parent_conn = tinycortex_sa.with_connection(ws, lambda c: c)
    handle = registry.existing_handle(path)
    opens_before = handle.opens if handle else -1
    expected: list[str] = []
    parent_errors: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def parent_writer() -> None:
        i = 0
        while not stop.is_set():
            key = f"parent-{i}"
            try:
                conn_id = _write(ws, key, engine)
                with lock:
                    expected.append(key)
                if conn_id != id(parent_conn):
                    parent_errors.append("the parent's writer got a different connection")
            except Exception as err:
                parent_errors.append(f"parent writer: {type(err).__name__}: {err}")
            i += 1
            time.sleep(0.002)

    def parent_reader() -> None:
        def slow_read(conn: sqlite3.Connection) -> int:
            n = 0
            for _ in conn.execute("SELECT id FROM mem_tree_chunks"):  # a statement open, autocommit
                n += 1
                if n % 50 == 0:
                    time.sleep(0.001)
            return n

        while not stop.is_set():
            try:
                tinycortex_sa.with_connection(ws, slow_read)
            except Exception as err:
                parent_errors.append(f"parent reader: {type(err).__name__}: {err}")
            time.sleep(0.001)

    threads = [
        threading.Thread(target=parent_writer, daemon=True),
        threading.Thread(target=parent_reader, daemon=True),
    ]
    for th in threads:
        th.start()
    started = time.monotonic()
    try:
        # os.fork()
        for f in range(forks):
            report = _fork_child(ws, engine, f"fork{f}", rows, id(parent_conn))
            result.trials += 1
            result.faults += 1
            _check_child(result, f"os.fork child {f}", report, expected, lock)
        # multiprocessing pool, fork start method
        mp = multiprocessing.get_context("fork")
        with mp.Pool(ctx.n(3, 4)) as pool:
            answers = pool.map(
                _pool_task, [(ws, f"pool-{i}", id(parent_conn)) for i in range(pool_tasks)], chunksize=2
            )
        result.faults += ctx.n(3, 4)
        for a in answers:
            result.trials += 1
            if "error" in a:
                result.problem(f"pool task {a['key']}: {a['error']}")
            elif a["parent_conn"]:
                result.problem(f"pool task {a['key']} used the parent's connection")
            else:
                with lock:
                    expected.append(a["key"])
        # multiprocessing.Process, fork start method, writing through a URL engine
        queue = mp.Queue()
        url = f"sqlite+tinycortex:///{path}"
        children = [
            mp.Process(target=_process_task, args=(url, ws, f"proc{p}", rows, queue)) for p in range(procs)
        ]
        for c in children:
            c.start()
        reports = [queue.get(timeout=120) for _ in children]
        for c in children:
            c.join(60)
            result.check(c.exitcode == 0, f"multiprocessing.Process exit code {c.exitcode}")
        result.faults += procs
        for rep in reports:
            result.trials += 1
            if "error" in rep:
                result.problem(f"multiprocessing.Process: {rep['error']}")
            else:
                with lock:
                    expected.extend(rep["keys"])
    finally:
        stop.set()
        for th in threads:
            th.join(30)
    elapsed = time.monotonic() - started
    for e in parent_errors[:10]:
        result.problem(e)
    result.check(
        tinycortex_sa.with_connection(ws, lambda c: c) is parent_conn, "the parent's connection was replaced"
    )
    result.check(
        handle is not None and handle.opens == opens_before,
        f"the parent reopened the file ({handle and handle.opens - opens_before} more opens)",
    )
    ids = {r[0] for r in sqlite3.connect(path).execute("SELECT id FROM mem_tree_chunks")}
    missing = [k for k in expected if f"chunk-{k}" not in ids]
    if missing:
        result.lost += len(missing)
        result.problem(f"{len(missing)} committed rows missing, e.g. {missing[:3]}")
    result.check(scalar(path, "PRAGMA integrity_check") == "ok", "integrity_check failed")
    result.notes.append(
        f"{forks} os.fork children, {pool_tasks} pool tasks, {procs} processes in {elapsed:.1f}s "
        "while the parent "
        f"committed {sum(1 for k in expected if k.startswith('parent-'))} rows and read continuously; "
        f"{len(expected)} rows committed in all"
    )
    engine.dispose()
    forget(ws_path)
    return result


def _check_child(
    result: Result, who: str, report: dict[str, Any], expected: list[str], lock: threading.Lock
) -> None:
    text = json.dumps(report)
    if SAME_THREAD in text:
        result.problem(f"{who}: {SAME_THREAD!r}: {report.get('error')}")
    elif "error" in report:
        result.problem(f"{who}: {report['error']} {report.get('traceback', '')[-600:]}")
        return
    if report["exitcode"] != 0:
        result.problem(f"{who}: exit code {report['exitcode']}")
    result.check(not report["uses_parent_conn"], f"{who} used the parent's connection")
    result.check(len(report["conn_ids"]) == 1, f"{who} used {len(report['conn_ids'])} connections, not one")
    result.check(report["integrity"] == "ok", f"{who}: integrity_check {report['integrity']!r}")
    with lock:
        expected.extend(report["keys"])


__all__ = ["Path", "run"]
