"""A lease: one checkout of a file's connection, and the facts about threads it needs.

A :class:`Lease` is created by the caller before it asks the handle for the
connection and given back with :meth:`~.handle.FileHandle.checkin`; it records
who took it (a thread id), who uses it now, since when, and the call that owns
it, which is what tells a lease an exception left behind from one in use.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from threading import get_ident
from typing import Any


class Lease:
    """One checkout of a file's connection: who took it, when, from where, and whether it holds it."""

    __slots__ = (
        "active",
        "gc_tried",
        "owner_code",
        "owner_frame_id",
        "record",
        "since",
        "task",
        "thread",
        "user",
        "user_thread",
        "where",
    )

    def __init__(self, where: str | None = None) -> None:
        self.active = False
        """True from the moment the connection is granted to this lease until it is given back."""
        self.thread = threading.current_thread()
        """The thread that took it (the object: thread ids are reused once a thread ends)."""
        self.user = get_ident()
        """The id of the thread that ran the lease's latest statement (a Session may change hands)."""
        self.user_thread = self.thread
        self.task = current_task()
        """The asyncio task that took it, if any: tasks share a thread, and a task started inside
        another copies its context (and so the lease it holds) without nesting in it."""
        self.since = time.monotonic()
        self.where = where
        """The caller's ``file:line`` when checkouts are traced (``trace_checkouts=True``)."""
        self.record: Any = None
        """The pool's ``_ConnectionRecord`` for SQLAlchemy checkouts; None for ``with_connection``."""
        self.owner_code: Any = None
        self.owner_frame_id = 0
        self.gc_tried = False

    def owned_by(self, frame: Any) -> None:
        """The call that releases this lease in its ``finally`` (or wires it for SQLAlchemy).

        While that call is on its thread's stack the lease is in use; once it is
        gone, only a live connection object can still give the lease back.  A
        lease without an owner is never taken for an orphan.
        """
        self.owner_code, self.owner_frame_id = frame.f_code, id(frame)

    def describe(self) -> str:
        """The holder, for error messages: thread, for how long, and where it checked out."""
        user = self.user_thread
        alive = "" if user.is_alive() else ", which has ended"
        where = f" at {self.where}" if self.where else " (trace_checkouts=True shows where)"
        handed = f" (taken by {self.thread.name!r})" if user is not self.thread else ""
        since = time.monotonic() - self.since
        return f"thread {user.name!r}{handed}{alive}, for {since:.1f}s{where}"

    def used_here(self) -> None:
        """A statement of this lease runs in the calling thread (a thread id compare when unchanged)."""
        ident = get_ident()
        if ident != self.user:
            self.user = ident
            self.user_thread = threading.current_thread()


def current_task() -> asyncio.Task[Any] | None:
    """The running asyncio task of this thread, or None (no loop running: a plain thread)."""
    if asyncio._get_running_loop() is None:
        return None
    return asyncio.current_task()


class _Waiter:
    """A caller in the handle's queue: a thread waiting on a lock, or a task awaiting a future."""

    __slots__ = ("future", "lease", "loop", "wake")

    def __init__(self, lease: Lease, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.lease = lease
        self.wake = threading.Lock()
        self.wake.acquire()  # released when the connection is handed to this waiter
        self.loop = loop
        self.future: asyncio.Future[None] | None = None if loop is None else loop.create_future()

    def wake_up(self) -> bool:
        """Tell the waiter the connection is its own; False if it can no longer hear it (loop closed)."""
        self.wake.release()
        if self.loop is None:
            return True
        try:
            self.loop.call_soon_threadsafe(_granted, self.future)
        except RuntimeError:
            return False
        return True


def _granted(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


def caller_location(skip: tuple[str, ...] = ("sqlalchemy", "tinycortex_sa")) -> str | None:
    """``file:line`` of the first frame outside SQLAlchemy and this library (for traced checkouts)."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if not name.startswith(skip):
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return None
