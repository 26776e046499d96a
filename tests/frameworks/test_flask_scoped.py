"""Flask with ``scoped_session`` removed at ``teardown_appcontext``, served by a threaded werkzeug server.

A real ``werkzeug.serving.make_server(..., threaded=True)`` on 127.0.0.1 in a background thread
(a thread per connection), driven by the bounded concurrent client of ``load_client.py``: every
response a 200/201, every acknowledged insert in the file afterwards, the connection idle.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_app import create_app
from load_client import run_load, stored_ids, warm_up
from werkzeug.serving import WSGIRequestHandler, make_server

from tinycortex_sa import db_path_for
from tinycortex_sa.connection import registry

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REQUESTS = 2000
CONCURRENCY = 16


class QuietHandler(WSGIRequestHandler):
    """werkzeug's handler without the line per request."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


@contextmanager
def serving(app: Flask) -> Iterator[str]:
    """``app`` on a threaded werkzeug server on 127.0.0.1 and a free port; shut down on exit."""
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="werkzeug", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_flask_scoped_session_serves_concurrent_requests(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    app = create_app(workspace)
    with serving(app) as base_url:
        warm_up(base_url)
        result = run_load(base_url, requests=REQUESTS, concurrency=CONCURRENCY, time_limit=150.0)
    print(
        f"flask requests={result.requests} concurrency={result.concurrency} posts={result.posts} "
        f"errors={len(result.errors)} seconds={result.seconds:.2f} rps={result.rps:.0f}"
    )
    failed = len(result.errors)
    assert not result.errors, f"{failed} of {REQUESTS} requests failed: {result.errors[:5]}"
    assert len(result.acknowledged) == result.posts == REQUESTS // 10
    stored = stored_ids(db_path_for(workspace))
    missing = set(result.acknowledged) - stored
    assert not missing, f"{len(missing)} acknowledged inserts are not in the file"
    assert len(stored) == result.posts
    handle = registry.existing_handle(db_path_for(workspace))
    assert handle is not None and not handle.held, "a request's Session was not removed"
