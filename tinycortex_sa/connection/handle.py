"""The shared connection of one database file, and who may use it now.

A :class:`FileHandle` owns the single DBAPI connection of one chunk DB in this
process, the lock that serialises its callers, the file's options and its
circuit breaker.  It holds no process-wide state itself: the registry
(:mod:`.registry`) creates one per file and hands it the function that opens
the file.

Ending or resetting a connection's use, each for one reason:

=========================  ==================================================================
``checkin()``              the holder is done; an open transaction is rolled back
``close()``                close now if idle, else at the holder's checkin
``discard(conn)``          ``conn`` broke or was closed under us: open afresh next time
``forget_detached()``      SQLAlchemy's ``detach()`` took the connection away: forget, never close
``suspect_corruption()``   a statement hit damage: close, and quick_check at the next open
``invalidate()``           close, and forget the breaker's count and the file's options
``remove_user(pool)``      a pool was disposed; the last one closes the connection
=========================  ==================================================================

Longer than the house's ~300 lines on purpose: the checkout protocol, the
connection's lifetime and the fork hand-over all read and write the same
lock and owner, and keeping them in one class is what lets every other
module use the handle through public methods only.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from threading import get_ident
from typing import Any

from ..errors import (
    CheckoutTimeoutError,
    DatabaseBusyError,
    ForkedInUseError,
    NestedCheckoutError,
    OptionConflictError,
)
from ..options import DEFAULTS, FILE_SCOPED, Options, resolve
from ..sqlite import pragmas
from .breaker import CircuitBreaker

#: ``opener(path, options, verify)``: open and initialise the file (``verify``: quick_check first).
Opener = Callable[[Path, Options, bool], sqlite3.Connection]


class FileHandle:
    """The shared connection of one database file, and who may use it now."""

    def __init__(self, path: Path, opener: Opener) -> None:
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
        self._opener = opener
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
    @property
    def options_fixed(self) -> bool:
        """Whether a first caller has fixed the file's options (``invalidate()`` forgets them)."""
        return self._fixed

    def ensure_options(self, explicit: Mapping[str, Any]) -> None:
        """Fix the file's options from ``explicit`` if none are fixed yet, else check ``explicit``.

        The cheap call every entry point makes: nothing to do when the options
        are fixed and the caller gave none.
        """
        if explicit or not self._fixed:
            self.fix_options(explicit)

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

    @property
    def held(self) -> bool:
        """Whether some caller holds the connection now."""
        return self._owner is not None

    def current_connection(self) -> sqlite3.Connection:
        """The open connection for the holder (this thread), opening the file's next one if it was closed.

        The pool's creator calls it when SQLAlchemy recycles a record after a
        pool-wide invalidation, inside the checkout that holds the handle.
        """
        assert self.held_by_current_thread, "called inside the holder's checkout"
        return self.conn if self.conn is not None else self._open()

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
            conn = self._opener(self.path, self.options, self._suspect)
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

    def read_pragmas(self) -> dict[str, object]:
        """The pragmas of the open connection, as SQLite reports them (for status and demos)."""
        conn = self.checkout(self.options.checkout_timeout)
        try:
            return pragmas.read(conn)
        finally:
            self.checkin()

    # -- lifetime ------------------------------------------------------------------
    def add_user(self, user: object) -> None:
        """Count an engine's pool as a user of this file."""
        self._users.add(user)

    def remove_user(self, user: object) -> None:
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

    def forget_detached(self) -> None:
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

    def close_at_exit(self) -> None:
        """Close the connection if nobody holds it (interpreter exit never waits)."""
        if self._lock.acquire(timeout=0):
            try:
                self._close_locked()
            finally:
                self._lock.release()

    # -- fork ----------------------------------------------------------------------
    def quiesce_for_fork(self, grace: float) -> bool:
        """Before ``fork()``: wait for the holder to check in; True if this thread now holds the lock.

        A lock SQLite holds for another thread at the fork instant (a
        transaction, a statement being stepped, an open in progress) stays
        "held" in the child's copy of SQLite's in-process lock table for good:
        the child's own connection would then wait busy_timeout and fail,
        holding the file's write lock the whole time.  So the fork waits for
        the thread using the connection to check it in: briefly in any case
        (``grace``: that thread may take a lock at any moment, even right
        after a check), and up to the file's checkout_timeout while SQLite
        holds a lock for it.  One that keeps a lock past checkout_timeout
        makes the child refuse the file at once (:class:`ForkedInUseError`).
        The caller releases with :meth:`resume_after_fork`.
        """
        self._fork_unsafe = False
        if self._owner == get_ident():  # the forking thread's own checkout: is SQLite holding a lock?
            self._fork_unsafe = self._may_hold_sqlite_lock()
            return False
        if self._lock.acquire(timeout=grace):
            return True
        if not self._may_hold_sqlite_lock():
            return False
        if self._lock.acquire(timeout=self.options.checkout_timeout):
            return True
        self._fork_unsafe = True
        return False

    def resume_after_fork(self) -> None:
        """Release the lock :meth:`quiesce_for_fork` took (in the parent)."""
        self._lock.release()

    def _may_hold_sqlite_lock(self) -> bool:
        """Whether SQLite may hold a lock on the file for the thread that holds the handle.

        A transaction (``in_transaction``) is not the only case: a statement that
        is still being stepped in autocommit mode (``with_connection`` iterating a
        cursor) holds a SHARED lock too, and so does an open in progress.
        """
        conn = self.conn
        if conn is not None and conn.in_transaction:
            return True
        return _file_locked_here(self.path) is not False  # unknown platform: assume it may

    def after_fork_in_child(self) -> None:
        """Reset this handle in a forked child.

        SQLite forbids using, or even closing, a connection across fork(): the
        parent's connection is kept alive forever, untouched, and this process
        opens its own on first use.  If the parent was inside a transaction or
        statement on it, SQLite's in-process lock state says the file is locked
        for good in this child: refuse clearly instead of timing out.
        """
        me = get_ident()
        held_by_me = self._owner == me
        conn = self.conn
        # a snapshot of the fork instant: a transaction open, or (seen by quiesce_for_fork) a lock
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


def _keep_forever(conn: sqlite3.Connection) -> None:
    # An extra reference that is never released: the connection is never
    # deallocated, so sqlite3_close() never runs on a descriptor inherited from
    # the parent (it could roll back the parent's transaction).  The authorizer
    # (memory only) refuses every statement on it, COMMIT and ROLLBACK included,
    # so code in the child still holding it (a Session open across the fork)
    # gets "not authorized" instead of committing over the parent's work.
    conn.set_authorizer(lambda *_: sqlite3.SQLITE_DENY)
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(conn))


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
