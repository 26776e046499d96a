"""``create_async_engine("sqlite+tinycortex:///...")``: the same dialect for SQLAlchemy's asyncio extension.

The async dialect is the sync one (same options, pragmas, BEGIN, migration,
breaker, recovery and errors) with three differences, each where SQLAlchemy's
asyncio extension expects it:

* **The checkout awaits.**  :class:`TinyCortexAsyncPool` asks the file's handle
  with :meth:`~tinycortex_sa.connection.handle.FileHandle.checkout_async`:
  a task waits in the same first-come-first-served queue as threads, for a
  future the releasing caller resolves, so the event loop keeps running.
* **SQLite runs off the event loop.**  The DBAPI connection is an
  :class:`AsyncAdaptedConnection` around the file's one ``sqlite3``
  connection; each statement (with its BEGIN, and all its rows) is one call
  on the handle's worker thread (:mod:`tinycortex_sa.connection.worker`),
  awaited through SQLAlchemy's ``await_only``.  Opening the file (and so the
  automatic migration) runs there too.
* **Cancellation.**  A task cancelled while it waits for a statement
  interrupts it (``sqlite3.Connection.interrupt``); the checkin that follows
  runs on the worker after it, rolls the transaction back and gives the
  connection to the next caller.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy.engine import URL
from sqlalchemy.engine.interfaces import AdaptedConnection
from sqlalchemy.pool import Pool
from sqlalchemy.util.concurrency import await_only, in_greenlet

from ..connection.handle import FileHandle
from ..connection.lease import Lease
from ..connection.worker import outlast_cancellation
from .dialect import _BEGIN_SQL, TinyCortexDialect
from .pool import TinyCortexPool

T = TypeVar("T")

_Result = tuple[Any, list[Any], int, int | None]


async def _on_worker(handle: FileHandle, conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on the handle's worker; a cancelled caller interrupts what it was waiting for."""
    try:
        return await handle.worker.run(fn, *args)
    except asyncio.CancelledError:
        if not handle.worker.idle:
            conn.interrupt()  # the statement stops at its next step; nothing it did is acknowledged
        raise


async def _to_the_end(future: asyncio.Future[T]) -> T:
    """Await a clean-up call (a rollback, a checkin) to its end, even through cancellation.

    A task cancelled while its session closes (an event loop shutting down
    cancels every task left, including SQLAlchemy's own close tasks) must not
    stop between the rollback and the checkin: SQLAlchemy skips the checkin
    when the rollback raises, and the connection would stay held.  So the
    cancellation waits: the call runs to its end, the clean-up goes on, and the
    task is cancelled again to be delivered at its next ``await``.
    """
    result, cancelled = await outlast_cancellation(future)
    if cancelled:
        task = asyncio.current_task()
        if task is not None:
            task.cancel()
    return result


class AsyncAdaptedCursor:
    """A DBAPI cursor whose statements run on the worker thread, rows fetched there in full."""

    arraysize = 1

    def __init__(self, adapted: AsyncAdaptedConnection) -> None:
        self._adapted = adapted
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: deque[Any] = deque()

    def _run(self, statement: str, parameters: Any, many: bool) -> None:
        self.description, rows, self.rowcount, self.lastrowid = self._adapted.run(
            _execute,
            self._adapted.sqlite3_connection,
            self._adapted.take_begin(),
            statement,
            parameters,
            many,
        )
        self._rows = deque(rows)

    def execute(self, statement: str, parameters: Any = ()) -> AsyncAdaptedCursor:
        self._run(statement, parameters, False)
        return self

    def executemany(self, statement: str, parameters: Sequence[Any]) -> AsyncAdaptedCursor:
        self._run(statement, parameters, True)
        return self

    def fetchone(self) -> Any:
        return self._rows.popleft() if self._rows else None

    def fetchmany(self, size: int | None = None) -> list[Any]:
        n = self.arraysize if size is None else size
        return [self._rows.popleft() for _ in range(min(n, len(self._rows)))]

    def fetchall(self) -> list[Any]:
        rows, self._rows = list(self._rows), deque()
        return rows

    def __iter__(self) -> Any:
        while self._rows:
            yield self._rows.popleft()

    def setinputsizes(self, *args: Any) -> None:
        pass

    def setoutputsize(self, *args: Any) -> None:
        pass

    def close(self) -> None:
        self._rows.clear()

    async def _async_soft_close(self) -> None:
        """What the asyncio extension awaits after a statement: the rows are in memory already."""


def _execute(
    conn: sqlite3.Connection, begin: str | None, statement: str, parameters: Any, many: bool
) -> _Result:
    """On the worker: the pending BEGIN, the statement, and every row it returns."""
    if begin is not None:
        conn.execute(begin)
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(statement, parameters)
        else:
            cursor.execute(statement, parameters)
        rows = cursor.fetchall() if cursor.description is not None else []
        return cursor.description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


def _finish(conn: sqlite3.Connection, commit: bool) -> None:
    if commit:
        conn.commit()
    else:
        conn.rollback()


class AsyncAdaptedConnection(AdaptedConnection):
    """The file's ``sqlite3`` connection as the asyncio extension's DBAPI connection.

    ``BEGIN`` is not sent on its own: it goes with the transaction's first
    statement, in the same call on the worker; a transaction that ran nothing
    commits or rolls back without any call.
    """

    __slots__ = ("_handle", "_pending_begin", "sqlite3_connection")

    def __init__(self, handle: FileHandle, conn: sqlite3.Connection) -> None:
        self._connection = conn  # type: ignore[assignment]  # what driver_connection returns
        self.sqlite3_connection = conn
        self._handle = handle
        self._pending_begin: str | None = None

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await_only(_on_worker(self._handle, self.sqlite3_connection, fn, *args))

    def begin(self, statement: str) -> None:
        self._pending_begin = statement

    def take_begin(self) -> str | None:
        begin, self._pending_begin = self._pending_begin, None
        return begin

    @property
    def in_transaction(self) -> bool:
        return self._pending_begin is not None or self.sqlite3_connection.in_transaction

    def cursor(self) -> AsyncAdaptedCursor:
        return AsyncAdaptedCursor(self)

    def create_function(self, *args: Any, **kw: Any) -> None:
        """Register a SQL function (SQLAlchemy's ``regexp``); no statement runs, so no lock is taken."""
        self.sqlite3_connection.create_function(*args, **kw)

    def execute(self, statement: str, parameters: Any = ()) -> AsyncAdaptedCursor:
        return self.cursor().execute(statement, parameters)

    def commit(self) -> None:
        self._end(commit=True)

    def rollback(self) -> None:
        self._end(commit=False)

    def _end(self, commit: bool) -> None:
        self._pending_begin = None  # nothing ran: there is nothing to end
        if self.sqlite3_connection.in_transaction or not self._handle.worker.idle:
            if commit:
                self.run(_finish, self.sqlite3_connection, True)
            else:  # a rollback is clean-up: it runs to its end, also when the task is cancelled again
                await_only(_to_the_end(self._handle.worker.run(_finish, self.sqlite3_connection, False)))

    def close(self) -> None:
        """The handle owns the connection's lifetime (see the pool's ``_close_connection``)."""


class TinyCortexAsyncPool(TinyCortexPool):
    """:class:`TinyCortexPool` whose checkout awaits its turn instead of blocking the event loop."""

    def _checkout(self, lease: Lease) -> None:
        await_only(
            self._handle.checkout_async(
                self._timeout,
                lease,
                read_only=self._read_only,
                begin=self._begin,
                uncommitted=self._uncommitted,
            )
        )

    def _checkin(self, lease: Lease) -> None:
        handle = self._handle
        conn = handle.conn
        if in_greenlet() and conn is not None and (conn.in_transaction or not handle.worker.idle):
            # after the holder's last statement, which may still run on the worker (it was cancelled)
            future = handle.worker.run(handle.checkin, lease)
            await_only(_to_the_end(future))
            return
        handle.checkin(lease)  # nothing open (or garbage collection, with no loop to await on)


class TinyCortexAsyncDialect(TinyCortexDialect):
    """The ``sqlite+tinycortex`` dialect for ``create_async_engine``."""

    is_async = True
    supports_statement_cache = True

    @classmethod
    def get_pool_class(cls, url: URL) -> type[Pool]:
        return TinyCortexAsyncPool

    def connect(self, *cargs: Any, **cparams: Any) -> Any:
        handle = self.tinycortex_handle
        assert handle is not None, "the pool's creator runs after create_connect_args"
        return AsyncAdaptedConnection(handle, handle.current_connection())

    def get_driver_connection(self, connection: Any) -> Any:
        return connection.sqlite3_connection

    def do_begin(self, dbapi_connection: Any) -> None:
        handle = self.tinycortex_handle
        mode = "EXCLUSIVE" if handle is None else handle.begin_mode
        if mode != "AUTOCOMMIT":
            dbapi_connection.begin(_BEGIN_SQL[mode])

    def do_terminate(self, dbapi_connection: Any) -> None:
        """Never close the shared connection for one engine (the handle owns it)."""
