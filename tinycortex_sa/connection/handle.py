"""The shared connection of one database file, and who may use it now.

A :class:`FileHandle` owns the single DBAPI connection of one chunk DB in this
process, who holds it now, the queue of callers waiting for it, the file's
options and its circuit breaker.  It holds no process-wide state itself: the
registry (:mod:`.registry`) creates one per file and hands it the function that
opens the file.

**A checkout belongs to its lease, not to a thread.**  Each checkout is a
:class:`Lease` the caller creates first and ends with :meth:`FileHandle.checkin`,
from any thread (web frameworks return a Session's connection from another
thread than the one that used it).  Nesting is found through a context variable:
a checkout in the same context (thread, or asyncio task) while that context's
own lease is still held fails fast with :class:`NestedCheckoutError`; another
context waits in a first-come-first-served queue.

**Interrupt-safe.**  An exception raised from a signal handler (KeyboardInterrupt,
SystemExit, anything) can arrive between any two calls.  Ownership changes are
single attribute stores made under a small mutex, never split by a call, and
every caller that creates a lease releases it in a ``finally``/``except``
(:meth:`checkin` of a lease that holds nothing does nothing).  What is left is
SQLAlchemy's own gap between the pool handing a record over and wiring its
connection object: a lease left there, with no connection object and no
checkout on its thread's stack, is an orphan, reclaimed by the next checkout in
its context at once and by a waiting caller at its next look.

Ending or resetting a connection's use, each for one reason:

=========================  ==================================================================
``checkin(lease)``         the holder is done; an open transaction is rolled back
``close()``                close now if idle, else at the holder's checkin
``discard(conn)``          ``conn`` broke or was closed under us: open afresh next time
``forget_detached()``      SQLAlchemy's ``detach()`` took the connection away: forget, never close
``suspect_corruption()``   a statement hit damage: close, and quick_check at the next open
``invalidate()``           close, and forget the breaker's count and the file's options
``remove_user(pool)``      a pool was disposed; the last one closes the connection
=========================  ==================================================================

Longer than the house's ~300 lines on purpose: the checkout protocol (grant,
queue, nesting, orphans), the connection's lifetime and the fork hand-over all
read and write the same lease, queue and mutex, and keeping them in one class
is what lets every other module use the handle through public methods only.
The lease itself is :mod:`.lease`; the fork helpers are :mod:`.forking`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import os
import sqlite3
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from threading import get_ident
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from ..errors import (
    CheckoutTimeoutError,
    DatabaseBusyError,
    DatabaseNotFoundError,
    ForkedInUseError,
    NestedCheckoutError,
    OptionConflictError,
    TinyCortexError,
)
from ..options import DEFAULTS, FILE_SCOPED, Options, resolve
from ..sqlite import pragmas
from .breaker import CircuitBreaker
from .forking import file_locked_here, keep_forever
from .lease import Lease, _Waiter
from .worker import Worker, outlast_cancellation

#: ``opener(path, options, verify)``: open and initialise the file (``verify``: quick_check first).
Opener = Callable[[Path, Options, bool], sqlite3.Connection]

#: What counts against the file in its breaker: failures of the file, SQLite, the schema or the
#: migrations.  Anything else (KeyboardInterrupt, an exception raised by a signal handler in the
#: middle of an open) says nothing about the install and is neutral.
OPEN_FAILURES: tuple[type[BaseException], ...] = (sqlite3.Error, OSError, TinyCortexError, SQLAlchemyError)

#: Seconds between a waiting caller's looks at the holder (orphaned lease, ended thread).
HOLDER_CHECK = 0.2
#: The BEGIN modes: how a transaction on the shared connection starts (``AUTOCOMMIT``: no BEGIN).
BEGIN_MODES = ("IMMEDIATE", "DEFERRED", "EXCLUSIVE", "AUTOCOMMIT")


def refuse_missing(path: Path) -> None:
    """:class:`DatabaseNotFoundError` unless something is at ``path`` (``create=False``)."""
    if not os.path.lexists(path):
        raise DatabaseNotFoundError(
            f"{path} does not exist and create=False, so nothing was created: check the workspace "
            f"path ({path.parent.parent}). To create a new chunk DB there, leave create out (it "
            "defaults to true).",
            path=path,
        )


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
        self.begin_mode = "EXCLUSIVE"
        """How the dialect's next BEGIN starts; set at every checkout (one of :data:`BEGIN_MODES`)."""
        self.breaker = CircuitBreaker(path)
        self._opener = opener
        self._fixed = False
        self._options_lock = threading.Lock()
        self._mutex = threading.Lock()
        """Guards :attr:`_lease` and :attr:`_queue`; held for a few statements, never while waiting."""
        self._lease: Lease | None = None
        self._queue: deque[_Waiter] = deque()
        self._mine: contextvars.ContextVar[Lease | None] = contextvars.ContextVar(
            f"tinycortex_sa_lease_{id(self)}", default=None
        )
        self._uncommitted: bool | None = False
        """Whether ``PRAGMA read_uncommitted`` is on for the open connection (None: not known)."""
        self._query_only: bool | None = False
        """Whether ``PRAGMA query_only`` is on for the open connection (None: not known)."""
        self._forked_in_use = False
        self._suspect = False
        """A caller's statement hit SQLITE_CORRUPT: the next open runs quick_check first."""
        self._fork_unsafe = False
        """Set just before a fork when SQLite may hold a lock on the file that the fork could not wait out."""
        self._close_pending = False
        self._fork_lease: Lease | None = None
        self._users: weakref.WeakSet[Any] = weakref.WeakSet()
        self.worker = Worker(f"tinycortex_sa {path.name}")
        """Runs this file's SQLite calls for asyncio callers (:mod:`.worker`)."""

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
    def checkout(
        self,
        timeout: float,
        lease: Lease,
        *,
        read_only: bool = False,
        begin: str = "",
        uncommitted: bool = False,
    ) -> sqlite3.Connection:
        """Grant the connection to ``lease``, opening it if needed; wait up to ``timeout`` seconds.

        The caller created ``lease`` and calls :meth:`checkin` with it when done,
        also when this raises.  ``read_only`` turns ``PRAGMA query_only`` on for
        this checkout; ``begin`` is the BEGIN mode (default ``DEFERRED`` when
        read-only, else ``EXCLUSIVE``: see docs/concurrency.md, "How transactions begin").
        """
        self._before_take(lease)
        if not self._take(lease, timeout):
            raise self._timed_out(timeout)
        self._mine.set(lease)
        conn = self.conn
        if conn is None:
            conn = self._open()
            self._query_only = self._uncommitted = False
        self._for_checkout(conn, read_only, begin, uncommitted)
        return conn

    async def checkout_async(
        self,
        timeout: float,
        lease: Lease,
        *,
        read_only: bool = False,
        begin: str = "",
        uncommitted: bool = False,
    ) -> sqlite3.Connection:
        """:meth:`checkout` for an asyncio task: it awaits its turn and opens the file off the loop.

        The same queue as threads (first come, first served across both), the
        same nesting rule (per task), the same errors.  A task cancelled while
        it waits leaves the queue; if the connection was granted to it at that
        moment, its caller's :meth:`checkin` gives it back.
        """
        self._before_take(lease)
        if not await self._take_async(lease, timeout):
            raise self._timed_out(timeout)
        self._mine.set(lease)
        conn = self.conn
        if conn is None:
            conn = await self._open_on_worker()
            self._query_only = self._uncommitted = False
        self._for_checkout(conn, read_only, begin, uncommitted)
        return conn

    async def _open_on_worker(self) -> sqlite3.Connection:
        """Open the file on the worker; a task cancelled meanwhile still waits for the open to end.

        The lease must not be given back while the open runs (the next holder would open the file
        a second time, beside it), so the cancellation is re-raised once the open is done.
        """
        conn, cancelled = await outlast_cancellation(self.worker.run(self._open))
        if cancelled:
            raise asyncio.CancelledError
        return conn

    def refuse_missing(self) -> None:
        """For ``create=False`` callers: the database must exist already (nothing is created).

        Only asked while no connection is open: an open connection is to a file that exists.
        """
        if self.conn is None:
            refuse_missing(self.path)

    def _before_take(self, lease: Lease) -> None:
        """Refuse at once what waiting cannot cure: a forked child, a nested checkout, an open breaker."""
        if self._forked_in_use:
            raise ForkedInUseError(
                f"{self.path}: this process was forked while its parent was using the database (a "
                "transaction or statement was open), so SQLite cannot use the file from this child. "
                "Fork while no connection to the file is checked out, or before opening it."
            )
        outer = self._mine.get()
        if outer is not None and outer.active and outer.user == get_ident() and outer.task is lease.task:
            if not self._orphaned(outer, lease):
                # a Session abandoned by an exception may hold it from a reference cycle: collecting
                # gives it back, or kills its connection object without giving it back (an orphan)
                self._collected(outer, again=True)
            if outer.active and not self._orphaned(outer, lease):
                raise NestedCheckoutError(
                    f"{self.path}: this thread (or task) already holds the connection: a Session or "
                    "connection opened inside another on the same file, or an engine used inside "
                    "with_connection. Finish or close the outer one first, or pass its connection "
                    "down; waiting here would deadlock."
                )
            self.checkin(outer)  # an interrupt left it behind: nobody else will give it back
        if self.conn is None:
            self.breaker.check()  # refuse at once while open, before waiting

    def _timed_out(self, timeout: float) -> CheckoutTimeoutError:
        return CheckoutTimeoutError(
            f"{self.path}: the connection has been held by {self._holder_text()} for longer than "
            f"checkout_timeout={timeout:g}s. Close every Session and connection when done (`with "
            "Session(engine) as session:`), or raise checkout_timeout; see docs/concurrency.md."
        )

    def _for_checkout(self, conn: sqlite3.Connection, read_only: bool, begin: str, uncommitted: bool) -> None:
        """Set the granted checkout's pragmas and BEGIN mode (quick pragmas that take no lock)."""
        if read_only is not self._query_only:
            self._set_query_only(conn, read_only)
        if uncommitted is not self._uncommitted:
            self.set_read_uncommitted(uncommitted)
        self.begin_mode = begin or ("DEFERRED" if read_only else "EXCLUSIVE")

    def _set_query_only(self, conn: sqlite3.Connection, on: bool) -> None:
        """``PRAGMA query_only`` for this checkout (read-only engines turn it on)."""
        self._query_only = None  # unknown until the pragma ran: an interrupt here makes the next one set it
        conn.execute("PRAGMA query_only = 1" if on else "PRAGMA query_only = 0")
        self._query_only = on

    def set_read_uncommitted(self, on: bool) -> None:
        """``PRAGMA read_uncommitted`` for the holder's checkout (isolation level READ UNCOMMITTED)."""
        conn = self.conn
        if conn is None:
            return
        self._uncommitted = None  # unknown until the pragma ran
        conn.execute("PRAGMA read_uncommitted = 1" if on else "PRAGMA read_uncommitted = 0")
        self._uncommitted = on

    def checkin(self, lease: Lease) -> None:
        """End ``lease``'s use of the connection; any transaction left open is rolled back.

        From any thread; a lease that holds nothing (never granted, or given
        back already) is ignored.
        """
        if self._lease is not lease or not lease.active:
            return
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
        finally:
            self._give_back(lease)

    def _take(self, lease: Lease, timeout: float) -> bool:
        """Make ``lease`` the holder, first come first served; False after ``timeout`` seconds."""
        with self._mutex:
            holder = self._lease
            if (holder is None or not holder.active) and not self._queue:
                lease.active = True
                self._lease = lease
                return True
            waiter = _Waiter(lease)
            self._queue.append(waiter)
        deadline = time.monotonic() + timeout
        try:
            while self._lease is not lease:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if waiter.wake.acquire(timeout=min(remaining, HOLDER_CHECK)):
                    break
                self._look_at_holder()
        finally:
            with self._mutex:
                if self._lease is not lease:
                    with contextlib.suppress(ValueError):
                        self._queue.remove(waiter)
        return self._lease is lease

    async def _take_async(self, lease: Lease, timeout: float) -> bool:
        """:meth:`_take` for a task: the event loop keeps running while it waits."""
        with self._mutex:
            holder = self._lease
            if (holder is None or not holder.active) and not self._queue:
                lease.active = True
                self._lease = lease
                return True
            waiter = _Waiter(lease, asyncio.get_running_loop())
            self._queue.append(waiter)
        future = waiter.future
        assert future is not None
        deadline = time.monotonic() + timeout
        try:
            while self._lease is not lease:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(future), min(remaining, HOLDER_CHECK))
                    break
                self._look_at_holder()
        finally:  # also when cancelled: a waiter that is gone must not be handed the connection
            with self._mutex:
                if self._lease is not lease:
                    with contextlib.suppress(ValueError):
                        self._queue.remove(waiter)
        return self._lease is lease

    def in_use_here(self) -> None:
        """A statement runs now on the holder's connection, in this thread (the dialect tells).

        A Session handed to another thread is that thread's from its first
        statement on: the thread that handed it over then waits for it like any
        other instead of being told it "already holds" the connection.
        """
        lease = self._lease
        if lease is not None:
            lease.used_here()

    def _give_back(self, lease: Lease) -> None:
        """End ``lease``'s hold and hand the connection to the first waiter (no call splits the change)."""
        with self._mutex:
            if self._lease is not lease:
                return
            lease.active = False
            lease.record = None
            while self._queue:
                nxt = self._queue[0]
                del self._queue[0]
                nxt.lease.active = True
                self._lease = nxt.lease
                if nxt.loop is None:
                    nxt.wake.release()  # a thread: one C call, no frame an interrupt could land in
                    return
                if nxt.wake_up():
                    return
                nxt.lease.active = False  # its event loop is closed: the next waiter's turn
            self._lease = None

    def _look_at_holder(self) -> None:
        """A waiter's periodic look: reclaim an orphaned lease; collect a leak of an ended thread once."""
        holder = self._lease
        if holder is None or not holder.active:
            return
        if self._orphaned(holder):
            self.checkin(holder)
        elif not holder.user_thread.is_alive() or (holder.task is not None and holder.task.done()):
            # a Session leaked by a thread (or task) that has ended: unreachable, its connection comes
            # back when the garbage collector finalises it (SQLAlchemy returns it).  A task ends so when
            # an event loop shutting down cancels SQLAlchemy's close task before it ever ran
            self._collected(holder)

    def _collected(self, lease: Lease, again: bool = False) -> bool:
        """Run the garbage collector for ``lease`` (once, unless ``again``); True if that gave it back.

        A Session abandoned by an exception (an interrupt in its ``close()``)
        can hold its connection from a reference cycle; SQLAlchemy returns it
        when the cycle is collected.  A Session still in use stays.  A nested
        checkout asks every time (its garbage may have been referenced by the
        exception being handled the first time); a waiter once per lease.
        """
        if lease.gc_tried and not again:
            return False
        lease.gc_tried = True
        gc.collect()
        return not lease.active

    def _orphaned(self, lease: Lease, asker: Lease | None = None) -> bool:
        """Whether ``lease`` can never be given back: an exception left it behind.

        An interrupt can land where a release was about to run (in SQLAlchemy's
        checkout before it wires the connection object, or in a ``finally``
        already handling another error).  Such a lease has no live connection
        object (a live one is returned by its owner or by the garbage
        collector) and its owner call is no longer on its thread's stack.
        """
        if not lease.active or lease.owner_code is None:
            return False
        record = lease.record
        ref = getattr(record, "fairy_ref", None) if record is not None else None
        alive = ref is not None and ref() is not None
        task = lease.task
        if task is not None:  # a task's frames are not on its thread's stack while it awaits
            # ended, and its connection object gone or left behind on a closed event loop (a loop
            # shutting down cancels SQLAlchemy's close task before it runs: nothing can return it)
            return lease.active and task.done() and (not alive or task.get_loop().is_closed())
        if alive:
            return False
        thread = lease.thread
        if not thread.is_alive():  # its id may belong to a new thread now: nothing of it runs
            return lease.active
        ident = thread.ident
        frame = sys._getframe() if ident == get_ident() else sys._current_frames().get(ident or -1)
        # the call asking now may own its lease with a new frame of the same code at the same
        # address: that one is not the old owner
        asking = asker.owner_frame_id if asker is not None else 0
        while frame is not None:
            if frame.f_code is lease.owner_code and id(frame) == lease.owner_frame_id != asking:
                return False  # still running
            frame = frame.f_back
        return lease.active

    def _holder_text(self) -> str:
        holder = self._lease
        if holder is None:
            return "another caller"
        return holder.describe()

    @property
    def query_only(self) -> bool:
        """Whether the open connection runs under ``PRAGMA query_only`` now (a read-only checkout)."""
        return self._query_only is not False

    @property
    def held(self) -> bool:
        """Whether some lease holds the connection now."""
        holder = self._lease
        return holder is not None and holder.active

    def holds(self, lease: Lease) -> bool:
        """Whether ``lease`` holds the connection now."""
        return self._lease is lease and lease.active

    def current_connection(self) -> sqlite3.Connection:
        """The open connection for the holder, opening the file's next one if it was closed.

        The pool's creator calls it when SQLAlchemy recycles a record after a
        pool-wide invalidation, inside the checkout that holds the handle.
        """
        assert self.held, "called inside a checkout"
        if self.conn is None:
            self._query_only = self._uncommitted = False
            return self._open()
        return self.conn

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
        except OPEN_FAILURES as err:
            self.breaker.record_failure(err)
            raise
        except BaseException:  # an interrupt, or an exception a signal handler raised: not the file's
            self.breaker.record_neutral()
            raise
        self.breaker.record_success()
        self._suspect = False
        self.conn = conn
        self.generation += 1
        return conn

    def read_pragmas(self) -> dict[str, object]:
        """The pragmas of the open connection, as SQLite reports them (for status and demos)."""
        lease = Lease()
        try:
            return pragmas.read(self.checkout(self.options.checkout_timeout, lease))
        finally:
            self.checkin(lease)

    # -- lifetime ------------------------------------------------------------------
    def add_user(self, user: object) -> None:
        """Count an engine's pool as a user of this file."""
        self._users.add(user)

    @property
    def has_users(self) -> bool:
        """Whether some engine's pool still counts as a user of this file."""
        return len(self._users) > 0

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
        lease = Lease()
        if not self._take(lease, 0):
            return  # the holder's checkin closes it (or the next one's, if it was checking in)
        try:
            if self._close_pending:
                self._close_locked()
        finally:
            self._give_back(lease)

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
        lease = Lease()
        if self._take(lease, 0):
            try:
                self._close_locked()
            finally:
                self._give_back(lease)

    def abandon(self) -> None:
        """End whatever lease holds the connection, then close it (a test's clean-up between cases)."""
        holder = self._lease
        if holder is not None:
            self.checkin(holder)
        self.close()

    # -- fork ----------------------------------------------------------------------
    def quiesce_for_fork(self, grace: float) -> bool:
        """Before ``fork()``: wait for the holder to check in; True if the fork now holds the connection.

        A lock SQLite holds for another thread at the fork instant (a
        transaction, a statement being stepped, an open in progress) stays
        "held" in the child's copy of SQLite's in-process lock table for good:
        the child's own connection would then wait busy_timeout and fail,
        holding the file's write lock the whole time.  So the fork waits for
        the caller using the connection to check it in: briefly in any case
        (``grace``: that caller may take a lock at any moment, even right
        after a check), and up to the file's checkout_timeout while SQLite
        holds a lock for it.  One that keeps a lock past checkout_timeout
        makes the child refuse the file at once (:class:`ForkedInUseError`).
        The parent gives it back with :meth:`resume_after_fork`.
        """
        self._fork_unsafe = False
        holder = self._lease
        if holder is not None and holder.active and holder.thread is threading.current_thread():
            self._fork_unsafe = self._may_hold_sqlite_lock()  # the forking thread's own checkout
            return False
        lease = Lease()
        if self._take(lease, grace) or (
            self._may_hold_sqlite_lock() and self._take(lease, self.options.checkout_timeout)
        ):
            self._fork_lease = lease
            return True
        self._fork_unsafe = self._may_hold_sqlite_lock()
        return False

    def resume_after_fork(self) -> None:
        """In the parent: give back what :meth:`quiesce_for_fork` took."""
        lease, self._fork_lease = self._fork_lease, None
        if lease is not None:
            self._give_back(lease)

    def _may_hold_sqlite_lock(self) -> bool:
        """Whether SQLite may hold a lock on the file for the caller that holds the handle.

        A transaction (``in_transaction``) is not the only case: a statement that
        is still being stepped in autocommit mode (``with_connection`` iterating a
        cursor) holds a SHARED lock too, and so does an open in progress.
        """
        conn = self.conn
        if conn is not None and conn.in_transaction:
            return True
        return file_locked_here(self.path) is not False  # unknown platform: assume it may

    def after_fork_in_child(self) -> None:
        """Reset this handle in a forked child.

        SQLite forbids using, or even closing, a connection across fork(): the
        parent's connection is kept alive forever, untouched, and this process
        opens its own on first use.  If the parent was inside a transaction or
        statement on it, SQLite's in-process lock state says the file is locked
        for good in this child: refuse clearly instead of timing out.  The
        forking thread's own checkout, if any, continues in the child and
        checks in; every other caller's is gone with its thread.
        """
        holder = self._lease
        mine = (
            holder is not None
            and holder.active
            and holder is not self._fork_lease
            and holder.thread is threading.current_thread()
        )
        conn = self.conn
        # a snapshot of the fork instant: a transaction open, or (seen by quiesce_for_fork) a lock
        # SQLite held for a statement of another thread that the fork could not wait for
        self._forked_in_use = (conn is not None and conn.in_transaction) or self._fork_unsafe
        self._fork_unsafe = False
        if conn is not None:
            keep_forever(conn)
        self.conn = None
        self.generation += 1
        self._mutex = threading.Lock()
        self._options_lock = threading.Lock()
        self._queue = deque()
        self._fork_lease = None
        self._close_pending = False
        self.worker.after_fork_in_child()
        self._lease = holder if mine else None
        self.breaker = CircuitBreaker(
            self.path, self.options.breaker_threshold, self.options.breaker_cooldown
        )
