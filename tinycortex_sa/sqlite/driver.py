"""The one place the library calls the DBAPI's ``connect`` (tests replace :data:`connect` to fail)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .files import file_uri

#: The DBAPI connect function (``sqlite3.connect``).
connect = sqlite3.connect


def open_uri(path: Path, mode: str, busy_timeout_ms: int, *, shared: bool = False) -> sqlite3.Connection:
    """A connection on ``path`` in URI ``mode`` (``ro``, ``rw``; never ``rwc``), in autocommit.

    ``isolation_level=None``: the library, not the driver, emits BEGIN.  With
    ``shared`` the connection may be used from any thread (callers of the
    file's one connection are serialised by its handle).
    """
    return connect(
        file_uri(path, mode),
        uri=True,
        timeout=busy_timeout_ms / 1000,
        isolation_level=None,
        check_same_thread=not shared,
    )
