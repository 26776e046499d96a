"""The connection listeners: the pragmas every chunk DB connection needs.

Each one is set and then read back; SQLite answers a refused value silently
(``journal_mode`` simply stays ``wal`` when another process holds the file),
so a mismatch is turned into a :class:`PragmaError` naming the pragma, the
value asked for and the value got.  Values are typed constants or integers
converted by :mod:`tinycortex_sa.options`: no SQL is built from caller text.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from ..errors import JournalModeBusyError, PragmaError
from ..options import Options
from . import codes

Listener = Callable[[sqlite3.Connection, Path, Options], None]


def _check(path: Path, pragma: str, asked: object, got: object) -> None:
    if str(got).lower() != str(asked).lower():
        raise PragmaError(
            f"{path}: PRAGMA {pragma} = {asked} was not accepted by SQLite (it reads back {got!r})",
            path=path,
            pragma=pragma,
            asked=str(asked),
            got=str(got),
        )


def _scalar(conn: sqlite3.Connection, sql: str) -> object:
    row = conn.execute(sql).fetchone()
    return None if row is None else row[0]


def set_busy_timeout(conn: sqlite3.Connection, path: Path, options: Options) -> None:
    """Wait up to ``busy_timeout`` ms for another process's lock instead of failing."""
    ms = int(options.busy_timeout)
    _check(path, "busy_timeout", ms, _scalar(conn, f"PRAGMA busy_timeout = {ms}"))


def set_foreign_keys(conn: sqlite3.Connection, path: Path, options: Options) -> None:
    """SQLite resets ``foreign_keys`` per connection; the cascades depend on it."""
    conn.execute("PRAGMA foreign_keys = ON")
    _check(path, "foreign_keys", 1, _scalar(conn, "PRAGMA foreign_keys"))


def set_synchronous(conn: sqlite3.Connection, path: Path, options: Options) -> None:
    """A rollback journal is crash-safe only with ``synchronous=FULL`` (2)."""
    conn.execute("PRAGMA synchronous = FULL")
    got = _scalar(conn, "PRAGMA synchronous")
    if got != 2:
        _check(path, "synchronous", "FULL (2)", got)


def set_journal_mode(conn: sqlite3.Connection, path: Path, options: Options) -> None:
    """TRUNCATE, never WAL; on a WAL database this checkpoints the ``-wal`` in."""
    try:
        got = _scalar(conn, "PRAGMA journal_mode = TRUNCATE")
    except sqlite3.OperationalError as err:
        if not codes.is_busy(err):
            raise
        got = _scalar(conn, "PRAGMA journal_mode")
    if str(got).lower() == "wal":
        raise JournalModeBusyError(
            f"{path}: PRAGMA journal_mode = truncate was refused, the database stays in 'wal' mode "
            "because another process has it open. Its -wal file may hold committed data and is "
            "left in place; retry once the other process has closed the database.",
            path=path,
            pragma="journal_mode",
            asked="truncate",
            got="wal",
        )
    _check(path, "journal_mode", "truncate", got)


#: The chunk DB's pragmas, by name, run in this order on every new connection, before any transaction.
LISTENERS: dict[str, Listener] = {
    "busy_timeout": set_busy_timeout,
    "foreign_keys": set_foreign_keys,
    "synchronous": set_synchronous,
    "journal_mode": set_journal_mode,
}
NAMES: tuple[str, ...] = tuple(LISTENERS)


def expected(options: Options) -> dict[str, object]:
    """What :func:`read` returns on a connection the library opened with ``options``."""
    return {
        "busy_timeout": options.busy_timeout,
        "foreign_keys": 1,
        "synchronous": 2,
        "journal_mode": "truncate",
    }


def statements(options: Options) -> tuple[str, ...]:
    """The same settings as plain ``PRAGMA`` statements (for comparisons with raw sqlite3)."""
    return (
        f"PRAGMA busy_timeout = {int(options.busy_timeout)}",
        "PRAGMA foreign_keys = ON",
        "PRAGMA synchronous = FULL",
        "PRAGMA journal_mode = TRUNCATE",
    )


def apply(conn: sqlite3.Connection, path: Path, options: Options) -> None:
    """Set and verify every pragma on a freshly opened connection."""
    for listener in LISTENERS.values():
        listener(conn, path, options)


def read(conn: sqlite3.Connection) -> dict[str, object]:
    """The chunk DB's pragmas as SQLite reports them now (for status output and tests)."""
    return {name: _scalar(conn, f"PRAGMA {name}") for name in NAMES}
