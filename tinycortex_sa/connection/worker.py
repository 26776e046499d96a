"""The thread that runs a file's SQLite calls for asyncio callers, off the event loop.

One :class:`Worker` per file handle, started at its first call and ended
after :data:`IDLE_EXIT` seconds without work, so a process that stops using
asyncio keeps no thread.  It is a **daemon** thread and nothing waits for it
at exit: a process that used an async engine exits without ``dispose()``
(aiosqlite's non-daemon thread per connection is what hangs such processes).
Calls run one at a time, in the order they were submitted, which is the order
one lease holder issues them; the result (or exception) comes back to the
caller's event loop through ``call_soon_threadsafe``.  A caller that is
cancelled stops waiting; its call still runs to the end (SQLite cannot be
stopped half-way safely except by ``interrupt()``, which the caller may ask
for), and whatever runs next (the rollback at checkin) runs after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: Seconds a worker waits for the next call before its thread ends (a new one starts when needed).
IDLE_EXIT = 10.0

_Job = tuple[Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


def _deliver(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Worker:
    """Runs callables in one daemon thread, in order, for callers awaiting them on an event loop."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pending = 0
        """Jobs submitted and not finished (read by callers deciding whether to wait for the thread)."""

    @property
    def idle(self) -> bool:
        """Whether no submitted call is still queued or running."""
        return self._pending == 0

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Submit ``fn(*args)``; the returned future (of the running loop) gets its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            self._pending += 1
            self._jobs.put((fn, args, loop, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
                self._thread.start()
        return future

    def _serve(self) -> None:
        while True:
            try:
                fn, args, loop, future = self._jobs.get(timeout=IDLE_EXIT)
            except queue.Empty:
                with self._lock:
                    if self._jobs.empty():
                        self._thread = None
                        return
                continue
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn(*args)
            except BaseException as err:  # delivered to the caller, whatever it is
                error = err
            finally:
                with self._lock:
                    self._pending -= 1
            with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_deliver, future, result, error)
            del fn, args, loop, future, result, error

    def after_fork_in_child(self) -> None:
        """The thread did not survive the fork: start afresh (queued calls belonged to the parent)."""
        self._jobs = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread = None
        self._pending = 0


async def outlast_cancellation(future: asyncio.Future[T]) -> tuple[T, bool]:
    """Await ``future`` (a call on the worker) to its end, even if the caller is cancelled meanwhile.

    For calls that must not be abandoned half-way: a file's first open, a
    rollback, a checkin.  Returns the result and whether a cancellation
    arrived while waiting, for the caller to deliver once it is safe.
    """
    cancelled = False
    while True:
        try:
            return await asyncio.shield(future), cancelled
        except asyncio.CancelledError:
            if future.cancelled():
                raise
            cancelled = True
