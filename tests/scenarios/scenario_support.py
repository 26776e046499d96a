"""What the scenario tests share: a stub schema initialiser, threads that hold the connection, helpers.

The scenarios use tinycortex_sa the way an application does (``tinycortex_sa.create_engine``,
``sqlalchemy.create_engine("sqlite+tinycortex:///...")``, ``with_connection``, Sessions) on files
under ``tmp_path``.  Modules about the connection rather than the migrations use the
``init_counter`` fixture: schema initialisation is replaced by a stub that reads the schema like the
real one does first (so corruption is detected at initialisation) but creates nothing.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tinycortex_sa import db_path_for, with_connection
from tinycortex_sa.connection import handle, registry

LOGGER = "tinycortex_sa"
WAIT = 5.0
"""Upper bound for Event waits that are expected to succeed at once."""


def canonical(workspace: Path) -> Path:
    return Path(os.path.realpath(db_path_for(workspace)))


def dbapi(conn: sa.Connection) -> Any:
    """The DBAPI connection behind a SQLAlchemy Connection."""
    return conn.connection.dbapi_connection


def url_for(path: Path, query: str = "") -> str:
    return f"sqlite+tinycortex:///{path}" + (f"?{query}" if query else "")


def the_connection(workspace: Path | str, **options: Any) -> sqlite3.Connection:
    return with_connection(workspace, lambda conn: conn, **options)


def handle_of(workspace: Path) -> handle.FileHandle:
    handle = registry.existing_handle(db_path_for(workspace))
    assert handle is not None
    return handle


def make_table(workspace: Path) -> None:
    with_connection(
        workspace, lambda c: c.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
    )


def rows_outside(workspace: Path) -> list[str]:
    """The committed values of ``t``, read through a separate plain sqlite3 connection."""
    conn = sqlite3.connect(db_path_for(workspace))
    try:
        return [r[0] for r in conn.execute("SELECT v FROM t ORDER BY id")]
    finally:
        conn.close()


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == level]


class Thread(threading.Thread):
    """A thread that keeps its target's result or exception."""

    def __init__(self, target: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._fn = target
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as err:
            self.error = err


def holder(workspace: Path, held: threading.Event, release: threading.Event) -> Thread:
    """A thread that takes the connection through with_connection and keeps it until ``release``."""

    def hold(conn: sqlite3.Connection) -> sqlite3.Connection:
        held.set()
        assert release.wait(WAIT)
        return conn

    return Thread(lambda: with_connection(workspace, hold))
