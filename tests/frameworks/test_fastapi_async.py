"""FastAPI with ``async def`` endpoints and an ``AsyncSession`` per request, served by a real uvicorn.

The load test starts ``fastapi_async_app.py`` as a uvicorn server (one worker, 127.0.0.1, a free
port) on a fresh workspace, as ``test_fastapi_sync.py`` does with the sync app, sends a fixed
number of requests from the bounded concurrent client of ``load_client.py`` (90 % ``GET``, 10 %
``POST``), stops the server with SIGTERM and reads the database file with plain ``sqlite3``.
Every response must be a 200/201, every chunk a ``POST`` was acknowledged for must be in the
file, and the server must have given back every checkout and closed the connection at shutdown.

The other tests serve the app with uvicorn in a thread of the test process: on a copy of the Rust
fixture (the endpoints read its chunks), and with an endpoint added for the test
(:class:`HeldRequest`) that stops in the middle of its transaction, to see what the event loop
does while a request holds the connection, and what a request leaves behind when its task is
cancelled and when its client disconnects.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from chunk_rows import new_chunk
from fastapi import FastAPI
from fastapi_app import ChunkIn, Created
from fastapi_async_app import DbSession, create_app, serve
from helpers import copy_fixture
from load_client import run_load, stored_ids, warm_up

from tinycortex_sa import db_path_for
from tinycortex_sa.connection import registry
from tinycortex_sa.connection.handle import FileHandle

REQUESTS = 600
CONCURRENCY = 16
TIME_LIMIT = 60.0
"""Seconds the whole load may take (2 to 3 s on two shared cores)."""


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` on uvicorn in a thread, on 127.0.0.1 and a free port; shut down (and joined) on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()
    assert not thread.is_alive(), "the server did not shut down within 20 s"


class HeldRequest:
    """``POST /held-chunks`` on ``app``: inserts a chunk, flushes, then waits in its transaction.

    It commits once :meth:`release` is called (or fails after 30 s); :meth:`cancel` cancels the
    request's task, the call uvicorn makes on the requests still running after its
    graceful-shutdown timeout.  Its only difference from ``POST /chunks`` is that wait.
    """

    def __init__(self, app: FastAPI) -> None:
        self.in_transaction = threading.Event()
        self.ids: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[object] | None = None
        self._release: asyncio.Event | None = None

        @app.post("/held-chunks", status_code=201)
        async def add_held_chunk(payload: ChunkIn, session: DbSession) -> Created:
            chunk = new_chunk(payload.source_id, payload.content)
            chunk_id = chunk.id
            self.ids.append(chunk_id)
            session.add(chunk)
            await session.flush()  # the INSERT has run: this request's transaction holds the connection
            self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
            self._release = asyncio.Event()
            self.in_transaction.set()
            await asyncio.wait_for(self._release.wait(), 30)
            await session.commit()
            return Created(id=chunk_id)

    def wait_in_transaction(self) -> None:
        assert self.in_transaction.wait(10), "the held request did not start its transaction"

    def release(self) -> None:
        assert self._loop is not None and self._release is not None
        self._loop.call_soon_threadsafe(self._release.set)

    def cancel(self) -> None:
        assert self._loop is not None and self._task is not None
        self._loop.call_soon_threadsafe(self._task.cancel)


def handle_of(workspace: Path) -> FileHandle:
    handle = registry.existing_handle(db_path_for(workspace))
    assert handle is not None
    return handle


def wait_for_waiters(handle: FileHandle, n: int) -> None:
    """Until ``n`` callers wait in the file's queue for the connection (at most 10 s)."""
    deadline = time.monotonic() + 10
    while len(handle._queue) < n:
        assert time.monotonic() < deadline, f"{n} requests did not ask for the connection"
        time.sleep(0.01)


def outcome(future: Future[httpx.Response]) -> int | str:
    """The status code a request got, or the name of the error it ended with."""
    try:
        return future.result(timeout=30).status_code
    except httpx.HTTPError as err:
        return type(err).__name__


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_fastapi_async_sessions_serve_concurrent_requests(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    with serve(workspace) as server:
        warm_up(server.base_url)
        result = run_load(server.base_url, requests=REQUESTS, concurrency=CONCURRENCY, time_limit=TIME_LIMIT)
        counts = server.stop()  # SIGTERM; raises unless the process exits 0 within 20 s
    print(
        f"async requests={result.requests} concurrency={result.concurrency} posts={result.posts} "
        f"errors={len(result.errors)} seconds={result.seconds:.2f} rps={result.rps:.0f} counts={counts}"
    )
    failed = len(result.errors)
    assert not result.errors, f"{failed} of {result.requests} requests failed: {result.errors[:5]}"
    assert len(result.acknowledged) == result.posts == REQUESTS // 10
    stored = stored_ids(db_path_for(workspace))
    missing = set(result.acknowledged) - stored
    assert not missing, f"{len(missing)} acknowledged inserts are not in the file, e.g. {sorted(missing)[:3]}"
    assert len(stored) == result.posts
    # one checkout per request, and a few at startup (the open, the schema check, the warm-up)
    assert REQUESTS < counts["checkouts"] <= REQUESTS + 5, counts
    assert counts["checkins"] == counts["checkouts"], counts
    # the lifespan's dispose() found the connection idle and closed it
    assert counts["held_at_exit"] == 0 and counts["open_at_exit"] == 0, counts


@pytest.mark.timeout(60)
def test_fastapi_async_endpoints_on_a_copy_of_the_rust_fixture(tmp_path: Path) -> None:
    workspace = copy_fixture("rust-0.1.1-populated", tmp_path / "ws")
    db = db_path_for(workspace)
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT id, source_id, content, created_at_ms FROM mem_tree_chunks").fetchall()
    finally:
        conn.close()
    assert len(rows) >= 100
    fields = ("id", "source_id", "content", "created_at_ms")
    by_id = {row[0]: dict(zip(fields, row, strict=True)) for row in rows}
    newest_five = [r[0] for r in sorted(rows, key=lambda r: (-r[3], r[0]))[:5]]
    source = rows[0][1]

    with serving(create_app(workspace)) as base_url, httpx.Client(base_url=base_url, timeout=10.0) as client:
        listed = client.get("/chunks", params={"limit": 1000})
        assert listed.status_code == 200
        assert {c["id"]: c for c in listed.json()} == by_id
        assert [c["id"] for c in client.get("/chunks", params={"limit": 5}).json()] == newest_five
        of_source = client.get("/chunks", params={"source_id": source, "limit": 1000}).json()
        assert {c["id"] for c in of_source} == {i for i, c in by_id.items() if c["source_id"] == source}
        first = rows[0][0]
        one = client.get(f"/chunks/{first}")
        assert one.status_code == 200 and one.json() == by_id[first]
        assert client.get("/chunks/no-such-chunk").status_code == 404
        created = client.post("/chunks", json={"source_id": "api-test", "content": "added over HTTP"})
        assert created.status_code == 201
        new_id = created.json()["id"]
        got = client.get(f"/chunks/{new_id}")
        assert got.status_code == 200 and got.json()["content"] == "added over HTTP"

    assert stored_ids(db) == set(by_id) | {new_id}
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()


@pytest.mark.timeout(60)
def test_waiting_requests_leave_the_loop_serving_and_a_cancelled_request_is_rolled_back(
    tmp_path: Path,
) -> None:
    """A request holds the connection in its transaction and another waits for it: the server still
    answers a request that does not use the database at once.  Cancelling the holder's task rolls
    its transaction back and hands the connection to the waiting request."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    app = create_app(workspace)
    held = HeldRequest(app)
    with ThreadPoolExecutor(max_workers=2) as pool, serving(app) as base_url:
        handle = handle_of(workspace)
        body = {"source_id": "cancelled", "content": "never committed"}
        holder = pool.submit(httpx.post, f"{base_url}/held-chunks", json=body, timeout=20.0)
        held.wait_in_transaction()
        waiter = pool.submit(httpx.get, f"{base_url}/chunks?limit=5", timeout=20.0)
        wait_for_waiters(handle, 1)
        start = time.monotonic()
        assert httpx.get(f"{base_url}/openapi.json", timeout=10.0).status_code == 200
        answered = time.monotonic() - start
        assert handle.held and not holder.done() and not waiter.done()

        start = time.monotonic()
        held.cancel()
        listed = waiter.result(timeout=20)
        handed_over = time.monotonic() - start
        assert listed.status_code == 200 and listed.json() == [], "the waiter saw the cancelled row"
        assert outcome(holder) == 500  # uvicorn answers a cancelled request with a 500
        created = httpx.post(f"{base_url}/chunks", json={"source_id": "after", "content": "x"}, timeout=10.0)
        assert created.status_code == 201
    print(
        f"answered without the database in {answered * 1e3:.1f} ms, handed over in {handed_over * 1e3:.1f} ms"
    )
    assert answered < 1.0, f"the server took {answered:.2f}s to answer while a request waited"
    assert handed_over < 2.0
    assert not handle.held and handle.conn is None  # dispose() at shutdown found it idle and closed it
    assert stored_ids(db_path_for(workspace)) == {created.json()["id"]}


@pytest.mark.timeout(60)
def test_a_client_that_disconnects_does_not_cancel_its_request(tmp_path: Path) -> None:
    """uvicorn and FastAPI run an ``async def`` endpoint to its end when its client goes away: the
    transaction is not rolled back, its commit stands, though the client never got the id."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    app = create_app(workspace)
    held = HeldRequest(app)
    with ThreadPoolExecutor(max_workers=1) as pool, serving(app) as base_url:
        body = {"source_id": "disconnected", "content": "committed all the same"}
        gone = pool.submit(httpx.post, f"{base_url}/held-chunks", json=body, timeout=0.5)
        held.wait_in_transaction()
        assert outcome(gone) == "ReadTimeout"  # the client closed its connection
        time.sleep(0.2)  # the server has seen the connection close
        held.release()
        got = httpx.get(f"{base_url}/chunks/{held.ids[0]}", timeout=10.0)
        assert got.status_code == 200 and got.json()["content"] == "committed all the same"
    assert stored_ids(db_path_for(workspace)) == set(held.ids)
