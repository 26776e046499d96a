"""FastAPI with sync endpoints, served by a real uvicorn: the recipes of docs/frameworks.md under load.

Each test starts ``fastapi_app.py`` as a uvicorn server (one worker, 127.0.0.1, a free port) on a
fresh workspace, sends a fixed number of requests from a bounded concurrent client (90 % ``GET``
on the ``read_only=True`` engine, 10 % ``POST`` on the default one), stops the server and reads
the database file with plain ``sqlite3``.  Every response must be a 200/201, and every chunk a
``POST`` was acknowledged for must be in the file.

The dependency recipe (``def get_session(): with Session(engine) as s: yield s``) is the case the
lease design is for: FastAPI runs the endpoint on one worker thread and the dependency's exit, which
closes the Session and so returns the connection, on another.  The server counts those checkins
(pool events) and the test requires some, so it fails on a pool that takes the thread for the holder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi_app import serve
from load_client import LoadResult, run_load, stored_ids, warm_up

from tinycortex_sa import db_path_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

REQUESTS = 2000
CONCURRENCY = 16
TIME_LIMIT = 150.0
"""Seconds the whole load may take (about 10 s on two shared cores)."""


def serve_and_load(
    workspace: Path,
    *,
    depends: bool,
    requests: int = REQUESTS,
    concurrency: int = CONCURRENCY,
    worker_threads: int | None = None,
) -> tuple[LoadResult, dict[str, int]]:
    """Serve the app on ``workspace``, run the load, stop the server: what the client saw, the counts."""
    with serve(workspace, depends=depends, worker_threads=worker_threads) as server:
        warm_up(server.base_url)
        result = run_load(server.base_url, requests=requests, concurrency=concurrency, time_limit=TIME_LIMIT)
        counts = server.stop()
    print(
        f"depends={depends} requests={result.requests} concurrency={result.concurrency} "
        f"posts={result.posts} errors={len(result.errors)} seconds={result.seconds:.2f} "
        f"rps={result.rps:.0f} counts={counts}"
    )
    return result, counts


def assert_served_and_stored(workspace: Path, result: LoadResult) -> None:
    failed = len(result.errors)
    assert not result.errors, f"{failed} of {result.requests} requests failed: {result.errors[:5]}"
    assert result.posts == round(result.requests * 0.1)
    assert len(result.acknowledged) == result.posts
    stored = stored_ids(db_path_for(workspace))
    missing = set(result.acknowledged) - stored
    assert not missing, f"{len(missing)} acknowledged inserts are not in the file, e.g. {sorted(missing)[:3]}"
    assert len(stored) == result.posts


def test_fastapi_depends_yield_sessions_serve_concurrent_requests(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    result, counts = serve_and_load(workspace, depends=True)
    assert_served_and_stored(workspace, result)
    # one checkout per request, and a few at startup (the open, the schema check, the warm-up)
    assert REQUESTS < counts["checkouts"] <= REQUESTS + 5, counts
    # FastAPI closed Sessions on other threads than their endpoints ran on: the path under test
    assert counts["checkins_on_another_thread"] >= REQUESTS // 100, counts


def test_fastapi_sessions_opened_in_the_endpoint_serve_concurrent_requests(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    result, counts = serve_and_load(workspace, depends=False, requests=600)
    assert_served_and_stored(workspace, result)
    assert 600 < counts["checkouts"] <= 600 + 5, counts
    assert counts["checkins_on_another_thread"] == 0, "a `with` block in the endpoint returns it there"


def test_fastapi_sessions_opened_in_the_endpoint_take_more_requests_than_worker_threads(
    tmp_path: Path,
) -> None:
    """64 requests in flight, more than AnyIO's 40 worker threads: no endpoint holds the connection
    while it waits for a thread, so nothing waits for checkout_timeout."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    result, _ = serve_and_load(workspace, depends=False, requests=600, concurrency=64)
    assert_served_and_stored(workspace, result)
    assert result.seconds < 25, "a request waited for the connection (checkout_timeout is 30 s)"


def test_fastapi_depends_yield_sessions_with_more_worker_threads_than_requests(tmp_path: Path) -> None:
    """The dependency recipe with 64 requests in flight, once the worker-thread limit is above 64:
    the request holding the connection always finds a thread to validate its response and close."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    result, _ = serve_and_load(workspace, depends=True, requests=600, concurrency=64, worker_threads=100)
    assert_served_and_stored(workspace, result)
    assert result.seconds < 25, "a request waited for the connection (checkout_timeout is 30 s)"
