"""Errors in the application's own statements, explained.

After ``busy_timeout`` SQLite answers "database is locked", and a full disk
"database or disk is full" / "disk I/O error"; SQLAlchemy raises them as bare
``OperationalError``\\ s.  The dialect re-raises them as subclasses that are
*also* tinycortex_sa errors and name the file and what to do, so code that
catches either type keeps working.  A statement that hits a damaged page marks
the file suspect: the connection is closed at checkin and the next open
confirms the damage with ``quick_check`` and quarantines the file.  A write
that finds the file renamed under it (another process quarantined it) closes
the connection, so that the next call opens the file now at the path.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError, OperationalError

from . import recovery
from .errors import DatabaseBusyError, DatabaseMovedError, DiskFullError


class _Explained(OperationalError):
    """A SQLAlchemy ``OperationalError`` with the file and the fix in its message."""

    path: Path

    @classmethod
    def wrap(cls, err: DBAPIError, orig: BaseException, path: Path, explanation: str) -> _Explained:
        new = cls(err.statement, err.params, orig, err.hide_parameters, err.connection_invalidated)
        new.path = path
        new.add_detail(explanation)
        return new

    def __reduce__(self) -> Any:
        reduced: tuple[Any, Any, dict[str, Any]] = super().__reduce__()  # type: ignore[assignment]
        cls, args, state = reduced
        return cls, args, {**state, "path": self.path}


class StatementBusyError(_Explained, DatabaseBusyError):
    """Another process held the file's lock past ``busy_timeout`` during the caller's statement."""


class StatementDiskFullError(_Explained, DiskFullError):
    """The caller's write failed because the disk is full or a file-size limit was reached."""


class StatementMovedError(_Explained, DatabaseMovedError):
    """The caller's write found the file renamed or replaced under the open connection."""


def explain(context: ExceptionContext) -> BaseException | None:
    """The engine's ``handle_error`` listener: explain busy and full-disk errors, flag damage."""
    orig = context.original_exception
    err = context.sqlalchemy_exception
    handle = getattr(context.dialect, "tinycortex_handle", None)
    if handle is None or not isinstance(orig, sqlite3.Error) or not isinstance(err, DBAPIError):
        return None
    if recovery.is_corruption(orig):
        handle.suspect_corruption()
        return None
    if recovery.is_moved(orig):
        handle.close()  # at checkin: the next checkout opens the file now at the path
        return StatementMovedError.wrap(err, orig, handle.path, recovery.moved_message(handle.path))
    if recovery.is_busy(orig):
        message = recovery.busy_message(handle.path, handle.options.busy_timeout, orig)
        return StatementBusyError.wrap(err, orig, handle.path, message)
    if recovery.is_write_failure(orig):
        return StatementDiskFullError.wrap(err, orig, handle.path, recovery.full_message(handle.path, orig))
    return None
