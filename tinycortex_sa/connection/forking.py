"""What a forked child needs: the parent's connection kept alive untouched, and SQLite's locks seen."""

from __future__ import annotations

import ctypes
import os
import sqlite3
from pathlib import Path


def keep_forever(conn: sqlite3.Connection) -> None:
    # An extra reference that is never released: the connection is never
    # deallocated, so sqlite3_close() never runs on a descriptor inherited from
    # the parent (it could roll back the parent's transaction).  The authorizer
    # (memory only) refuses every statement on it, COMMIT and ROLLBACK included,
    # so code in the child still holding it (a Session open across the fork)
    # gets "not authorized" instead of committing over the parent's work.
    conn.set_authorizer(lambda *_: sqlite3.SQLITE_DENY)
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(conn))


def file_locked_here(path: Path) -> bool | None:
    """Whether this process holds a POSIX lock on ``path`` now (SQLite's file locks), None if unknown.

    Read from ``/proc/locks`` (Linux); SQLite takes such a lock for every
    statement that reads or writes, inside a transaction or not.
    """
    try:
        st = os.stat(path)
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return None
    pid, inode = str(os.getpid()), f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        # "1: POSIX  ADVISORY  READ 4242 fe:00:2154655 1073741826 1073742335" ("->" marks a waiter)
        fields = line.split()
        if len(fields) >= 6 and fields[1] != "->" and fields[4] == pid and fields[5] == inode:
            return True
    return False
