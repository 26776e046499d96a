"""SQLite's result codes, by the names ``sqlite3`` exports, and the families the library acts on.

An ``sqlite3.Error`` carries SQLite's extended code in ``sqlite_errorcode``;
its low byte is the primary code (``SQLITE_IOERR_WRITE & 0xFF ==
SQLITE_IOERR``).  Every predicate the library uses to tell busy, damaged,
moved, full and unopenable files apart is here, once.
"""

from __future__ import annotations

import sqlite3

#: SQLITE_IOERR_IN_PAGE (SQLite 3.41): an I/O error on a memory-mapped page; ``sqlite3`` of
#: Python 3.11 does not name it.
SQLITE_IOERR_IN_PAGE = sqlite3.SQLITE_IOERR | (34 << 8)

#: Open-time I/O errors that earn the one retry after a ``-wal`` is folded in.
IO_OPEN_CODES = frozenset(
    {
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_IOERR_TRUNCATE,
        sqlite3.SQLITE_IOERR_SHMOPEN,
        sqlite3.SQLITE_IOERR_SHMSIZE,
        sqlite3.SQLITE_IOERR_SHMMAP,
        SQLITE_IOERR_IN_PAGE,
    }
)
#: What SQLite says for those errors when no code is attached (older drivers).
IO_OPEN_MESSAGES = ("disk i/o error", "unable to open database file")
#: The file is not (or no longer) a valid database.
CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
#: What a full disk or a file-size limit (EFBIG) gives besides SQLITE_FULL.
WRITE_FAILURE_CODES = frozenset(
    {sqlite3.SQLITE_IOERR_WRITE, sqlite3.SQLITE_IOERR_FSYNC, sqlite3.SQLITE_IOERR_TRUNCATE}
)
#: Another connection holds a lock (any extended code of these primaries).
BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def code(err: BaseException) -> int | None:
    """SQLite's extended result code of ``err``, or None if it carries none."""
    value = getattr(err, "sqlite_errorcode", None)
    return value if isinstance(value, int) else None


def primary(err: BaseException) -> int | None:
    """SQLite's primary result code of ``err`` (the low byte), or None."""
    value = code(err)
    return None if value is None else value & 0xFF


def is_io_open_error(err: BaseException) -> bool:
    """The I/O error family that earns one retry after side-file handling."""
    if not isinstance(err, sqlite3.Error):
        return False
    value = code(err)
    if value is not None and (value in IO_OPEN_CODES or value & 0xFF == sqlite3.SQLITE_CANTOPEN):
        return True
    return any(m in str(err).lower() for m in IO_OPEN_MESSAGES)


def is_corruption(err: BaseException) -> bool:
    """SQLITE_CORRUPT or SQLITE_NOTADB (any extended code)."""
    return isinstance(err, sqlite3.DatabaseError) and primary(err) in CORRUPT_CODES


def is_moved(err: BaseException) -> bool:
    """SQLITE_READONLY_DBMOVED: the file was renamed or replaced under an open connection."""
    return code(err) == sqlite3.SQLITE_READONLY_DBMOVED


def is_busy(err: BaseException) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED: another connection holds a lock."""
    return isinstance(err, sqlite3.Error) and primary(err) in BUSY_CODES


def is_write_failure(err: BaseException) -> bool:
    """SQLITE_FULL, or the I/O errors a full disk or a file-size limit (EFBIG) gives."""
    return primary(err) == sqlite3.SQLITE_FULL or code(err) in WRITE_FAILURE_CODES


def is_readonly_rollback(err: BaseException) -> bool:
    """SQLITE_READONLY_ROLLBACK: a hot journal that a read-only connection cannot roll back."""
    return code(err) == sqlite3.SQLITE_READONLY_ROLLBACK


def is_permission(err: BaseException) -> bool:
    """SQLITE_READONLY (any extended code): SQLite may not write the file."""
    return primary(err) == sqlite3.SQLITE_READONLY


def not_a_database(message: str) -> sqlite3.DatabaseError:
    """An SQLITE_NOTADB error for a damage the library found itself (before SQLite could)."""
    err = sqlite3.DatabaseError(message)
    err.sqlite_errorcode = sqlite3.SQLITE_NOTADB
    err.sqlite_errorname = "SQLITE_NOTADB"
    return err
