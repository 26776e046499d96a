"""The one place that holds process-global state: one handle per database file.

A :class:`FileHandle` owns the single DBAPI connection of one chunk DB in this
process, the lock that serialises its callers, the file's options and its
circuit breaker.  Every engine on the file and :func:`tinycortex_sa.with_connection`
go through the same handle, whatever spelling of the path they used.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import sqlite3
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from threading import get_ident
from typing import Any

from . import migrate, pragmas, recovery
from .breaker import CircuitBreaker
from .errors import (
    CheckoutTimeoutError,
    DatabaseBusyError,
    ForkedInUseError,
    NestedCheckoutError,
    OptionConflictError,
)
from .options import DEFAULTS, FILE_SCOPED, Options, resolve


def _initialise(conn: sqlite3.Connection, path: Path, options: Options) -> None:
    migrate.initialise(conn, path, options)


class FileHandle:
    """The shared connection of one database file, and who may use it now."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.options: Options = DEFAULTS
        self.conn: sqlite3.Connection | None = None
        self.generation = 0
        """Bumped whenever ``conn`` is replaced, so pools know to rebuild their record."""
        self.opens = 0
        """How many times this process tried to open the file (tests count file access)."""
        self.begin_mode = "IMMEDIATE"
        """How the dialect's next BEGIN starts; reset to IMMEDIATE at every checkin."""
        self.breaker = CircuitBreaker(path)
        self._fixed = False
        self._options_lock = threading.Lock()
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._forked_in_use = False
        self._suspect = False
        """A caller's statement hit SQLITE_CORRUPT: the next open runs quick_check first."""
        self._fork_unsafe = False
        """Set just before a fork when SQLite may hold a lock on the file that the fork could not wait out."""
        self._close_pending = False
        self._users: weakref.WeakSet[Any] = weakref.WeakSet()

    # -- options ---------------------------------------------------------------
    def fix_options(self, explicit: Mapping[str, Any]) -> None:
        """The first caller fixes the file's options; later ones may only repeat them.

        Atomic under its own small lock, never the connection lock, so it
        neither waits for a busy connection nor races another first caller.
        """
        given = {k: v for k, v in explicit.items() if k in FILE_SCOPED}
        with self._options_lock:
            if not self._fixed:
                self.options = resolve(given)
                self.breaker.threshold = self.options.breaker_threshold
                self.breaker.cooldown = self.options.breaker_cooldown
                self._fixed = True
                return
            for name, value in given.items():
                current = getattr(self.options, name)
                if current != value:
                    raise OptionConflictError(
                        f"{self.path}: option {name}={value!r} conflicts with {name}={current!r}, "
                        "which the first engine on this file set. File-level options are shared by "
                        "every engine on the file: pass the same value, leave it out, or call "
                        "tinycortex_sa.invalidate() first to change it."
                    )

    # -- checkout ----------------------------------------------------------------
    def checkout(self, timeout: float) -> sqlite3.Connection:
        """Take the connection for this thread, opening it if needed."""
        me = get_ident()
        if self._owner == me:
            raise NestedCheckoutError(
                f"{self.path}: this thread already holds the connection (a Session or connection "
                "opened inside another, or an engine used inside with_connection). Finish or close "
                "the outer one first, or pass its connection down; waiting here would deadlock."
            )
        if self.conn is None:
            self.breaker.check()  # refuse at once while open, before waiting for the lock
        lock = self._lock
        if not lock.acquire(False) and not lock.acquire(timeout=timeout):  # uncontended: no timed wait
            raise CheckoutTimeoutError(
                f"{self.path}: another thread held the connection for more than "
                f"checkout_timeout={timeout:g}s; raise checkout_timeout or shorten that work."
            )
        self._owner = me
        conn = self.conn
        if conn is None:
            try:
                conn = self._open()
            except BaseException:
                self._release()
                raise
        return conn

    def checkin(self) -> None:
        """Give the connection back; any transaction left open is rolled back."""
        try:
            conn = self.conn
            if conn is not None:
                try:
                    if conn.in_transaction:
                        conn.rollback()
                except sqlite3.Error:  # closed by the caller, or ROLLBACK failed: open afresh next time
                    self.discard(conn)
            if self._close_pending:
                self._close_locked()
        finally:  # self._release(), inlined: this runs at the end of every checkout
            self.begin_mode = "IMMEDIATE"
            self._owner = None
            self._lock.release()

    def _release(self) -> None:
        self.begin_mode = "IMMEDIATE"
        self._owner = None
        self._lock.release()

    @property
    def held_by_current_thread(self) -> bool:
        return self._owner == get_ident()

    def _open(self) -> sqlite3.Connection:
        if self._forked_in_use:
            raise ForkedInUseError(
                f"{self.path}: this process was forked while its parent was using the database (a "
                "transaction or statement was open), so SQLite cannot use the file from this child. "
                "Fork while no connection to the file is checked out, or before opening it."
            )
        self.breaker.before_attempt()
        self.opens += 1
        try:
            conn = recovery.open_initialised(self.path, self.options, _initialise, verify=self._suspect)
        except DatabaseBusyError:
            self.breaker.record_neutral()
            raise
        except Exception as err:
            self.breaker.record_failure(err)
            raise
        except BaseException:
            self.breaker.record_neutral()
            raise
        self.breaker.record_success()
        self._suspect = False
        self.conn = conn
        self.generation += 1
        return conn

    # -- lifetime ------------------------------------------------------------------
    def attach(self, user: object) -> None:
        """Count an engine's pool as a user of this file."""
        self._users.add(user)

    def detach(self, user: object) -> None:
        """Forget a pool; the last one to go closes the connection."""
        self._users.discard(user)
        if not self._users:
            self.close()

    def close(self) -> None:
        """Close the connection now if it is idle, else when its holder checks it in.

        Never waits for another thread (which may be waiting for this one).
        """
        self._close_pending = True
        if self.held_by_current_thread or not self._lock.acquire(blocking=False):
            return  # the holder's checkin closes it (or the next one's, if it was checking in)
        try:
            if self._close_pending:
                self._close_locked()
        finally:
            self._lock.release()

    def _close_locked(self) -> None:
        self._close_pending = False
        conn, self.conn = self.conn, None
        if conn is not None:
            self.generation += 1
            conn.close()

    def suspect_corruption(self) -> None:
        """A statement on this file failed with SQLITE_CORRUPT / SQLITE_NOTADB.

        Damage in pages that opening does not read shows only when a caller
        reads them.  The connection is closed (at checkin, if this thread holds
        it) and the next open confirms the damage with ``PRAGMA quick_check``
        and quarantines the file, under this handle's lock, as at any open.
        Call it from wherever a caller's statement fails (the dialect's error
        handling, ``with_connection``).
        """
        self._suspect = True
        self.close()

    def give_up(self) -> None:
        """The holder took the connection away (SQLAlchemy's ``detach()``): forget it, do not close it."""
        self.conn = None
        self.generation += 1

    def discard(self, conn: sqlite3.Connection) -> None:
        """Stop using ``conn`` (closed or broken under us); the next checkout opens afresh."""
        if conn is self.conn:
            self.conn = None
            self.generation += 1
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def invalidate(self) -> None:
        """Close the connection, reset the breaker and forget the file's options."""
        self.close()
        with self._options_lock:
            self.breaker = CircuitBreaker(self.path)
            self.options = DEFAULTS
            self._fixed = False

    def _after_fork_in_child(self) -> None:
        """Reset this handle in a forked child."""
        # SQLite forbids using, or even closing, a connection across fork(): the
        # parent's connection is kept alive forever, untouched, and this process
        # opens its own on first use.  If the parent was inside a transaction or
        # statement on it, SQLite's in-process lock state says the file is locked
        # for good in this child: refuse clearly instead of timing out.
        me = get_ident()
        held_by_me = self._owner == me
        conn = self.conn
        # a snapshot of the fork instant: a transaction open, or (seen by _before_fork) a lock
        # SQLite held for a statement of another thread that the fork could not wait for
        self._forked_in_use = (conn is not None and conn.in_transaction) or self._fork_unsafe
        self._fork_unsafe = False
        if conn is not None:
            _keep_forever(conn)
        self.conn = None
        self.generation += 1
        self._lock = threading.Lock()
        self._options_lock = threading.Lock()
        self._close_pending = False
        self._owner = None
        if held_by_me:  # the forking thread's own checkout continues in the child and checks in
            self._lock.acquire()
            self._owner = me
        self.breaker = CircuitBreaker(
            self.path, self.options.breaker_threshold, self.options.breaker_cooldown
        )

    def read_pragmas(self) -> dict[str, object]:
        """The pragmas of the open connection, as SQLite reports them (for status and demos)."""
        conn = self.checkout(self.options.checkout_timeout)
        try:
            return pragmas.read(conn)
        finally:
            self.checkin()


_handles: dict[str, FileHandle] = {}
_aliases: dict[str, FileHandle] = {}
_registry_lock = threading.Lock()


def _keep_forever(conn: sqlite3.Connection) -> None:
    # An extra reference that is never released: the connection is never
    # deallocated, so sqlite3_close() never runs on a descriptor inherited from
    # the parent (it could roll back the parent's transaction).  The authorizer
    # (memory only) refuses every statement on it, COMMIT and ROLLBACK included,
    # so code in the child still holding it (a Session open across the fork)
    # gets "not authorized" instead of committing over the parent's work.
    conn.set_authorizer(lambda *_: sqlite3.SQLITE_DENY)
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(conn))


def handle_for(db_path: str | os.PathLike[str], explicit: Mapping[str, Any] | None = None) -> FileHandle:
    """The handle of the file at ``db_path`` (any spelling), fixing its options on first use.

    Spellings are resolved (``realpath``) once per process and remembered.
    """
    key = os.fspath(db_path)
    if not os.path.isabs(key):
        key = os.path.join(os.getcwd(), key)
    handle = _aliases.get(key)
    if handle is None:
        with _registry_lock:
            canonical = os.path.realpath(key)
            handle = _handles.get(canonical)
            if handle is None:
                handle = _handles[canonical] = FileHandle(Path(canonical))
            _aliases[key] = handle
    if not handle._fixed or explicit:
        handle.fix_options(explicit or {})
    return handle


def existing_handle(db_path: str | os.PathLike[str]) -> FileHandle | None:
    """The handle for ``db_path`` if this process has one, without creating it."""
    key = os.path.realpath(os.path.abspath(os.fspath(db_path)))
    return _handles.get(key)


_fork_quiesced: list[FileHandle] = []

FORK_GRACE = 0.25
"""Seconds a fork always waits for another thread to check a file's connection in."""


def _file_locked_here(path: Path) -> bool | None:
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


def _may_hold_sqlite_lock(handle: FileHandle) -> bool:
    """Whether SQLite may hold a lock on the handle's file for the thread that holds the handle.

    A transaction (``in_transaction``) is not the only case: a statement that
    is still being stepped in autocommit mode (``with_connection`` iterating a
    cursor) holds a SHARED lock too, and so does an open in progress.
    """
    conn = handle.conn
    if conn is not None and conn.in_transaction:
        return True
    return _file_locked_here(handle.path) is not False  # unknown platform: assume it may


def _before_fork() -> None:
    # A lock SQLite holds for another thread at the fork instant (a transaction, a
    # statement being stepped, an open in progress) stays "held" in the child's
    # copy of SQLite's in-process lock table for good: the child's own connection
    # would then wait busy_timeout and fail, holding the file's write lock the
    # whole time.  So the fork waits for the thread using the connection to check
    # it in: briefly in any case (that thread may take a lock at any moment, even
    # right after a check), and up to the file's checkout_timeout while SQLite
    # holds a lock for it.  A thread that keeps the connection idle for longer
    # than the grace period does not delay the fork; one that keeps a lock past
    # checkout_timeout makes the child refuse the file at once (ForkedInUseError).
    me = get_ident()
    for handle in list(_handles.values()):
        handle._fork_unsafe = False
        if handle._owner == me:  # the forking thread's own checkout: is SQLite holding a lock for it?
            handle._fork_unsafe = _may_hold_sqlite_lock(handle)
            continue
        lock = handle._lock
        if lock.acquire(timeout=FORK_GRACE):
            _fork_quiesced.append(handle)
            continue
        if not _may_hold_sqlite_lock(handle):
            continue
        if lock.acquire(timeout=handle.options.checkout_timeout):
            _fork_quiesced.append(handle)
        else:
            handle._fork_unsafe = True


def _after_fork_in_parent() -> None:
    while _fork_quiesced:
        _fork_quiesced.pop()._lock.release()


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()
    _fork_quiesced.clear()  # the child's handles get new locks
    migrate._ALEMBIC_RUN = threading.Lock()  # a parent thread may have been migrating
    for handle in _handles.values():
        handle._after_fork_in_child()


def _close_all_at_exit() -> None:
    for handle in list(_handles.values()):
        if handle._lock.acquire(timeout=0):
            try:
                handle._close_locked()
            finally:
                handle._lock.release()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)
atexit.register(_close_all_at_exit)
