"""Errors in the application's own statements, explained.

After ``busy_timeout`` SQLite answers "database is locked", and a full disk
"database or disk is full" / "disk I/O error"; SQLAlchemy raises them as bare
``OperationalError``\\ s.  The dialect re-raises them as subclasses that are
*also* tinycortex_sa errors and name the file and what to do, so code that
catches either type keeps working.  A statement that hits a damaged page marks
the file suspect: the connection is closed at checkin and the next open
confirms the damage with ``quick_check`` and quarantines the file.  A write
that finds the file renamed under it (another process quarantined it) closes
the connection, so that the next call opens the file now at the path.  An
interrupt (KeyboardInterrupt, SystemExit, an exception from a signal handler)
never invalidates the shared connection.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError

from ..errors import ReadOnlyError, StatementBusyError, StatementDiskFullError, StatementMovedError
from ..sqlite import codes, messages


def explain(context: ExceptionContext) -> BaseException | None:
    """The engine's ``handle_error`` listener: explain busy and full-disk errors, flag damage."""
    orig = context.original_exception
    err = context.sqlalchemy_exception
    handle = getattr(context.dialect, "tinycortex_handle", None)
    if handle is not None and not isinstance(orig, Exception):
        # KeyboardInterrupt, SystemExit, an exception from a signal handler: SQLite finished its call
        # before Python ran the handler, so the shared connection is as good as before.  Invalidating
        # it would close it under every engine on the file, and a cursor still pending on it would
        # keep the closed connection's read lock until the garbage collector finds the cursor.  The
        # cursor is closed instead, and the transaction rolled back at checkin as always.
        context.is_disconnect = False
        return None
    if handle is None or not isinstance(orig, sqlite3.Error) or not isinstance(err, DBAPIError):
        return None
    if codes.is_corruption(orig):
        handle.suspect_corruption()
        return None
    if codes.is_moved(orig):
        handle.close()  # at checkin: the next checkout opens the file now at the path
        return StatementMovedError.wrap(err, orig, handle.path, messages.moved_message(handle.path))
    if codes.is_busy(orig):
        message = messages.busy_message(handle.path, handle.options.busy_timeout, orig)
        return StatementBusyError.wrap(err, orig, handle.path, message)
    if codes.is_write_failure(orig):
        return StatementDiskFullError.wrap(err, orig, handle.path, messages.full_message(handle.path, orig))
    if handle.query_only and codes.is_permission(orig):
        return ReadOnlyError.wrap(err, orig, handle.path, messages.read_only_message(handle.path))
    return None
