"""The pool: every engine on a file checks out the file's one shared connection.

Each engine gets its own :class:`TinyCortexPool` (SQLAlchemy builds one per
engine), but all pools on a file defer to the same
:class:`~tinycortex_sa.connection.handle.FileHandle`, which owns the DBAPI connection
and serialises callers.  The pool only keeps a ``_ConnectionRecord`` wrapping
the handle's current connection, rebuilt when the handle opens a new one.
"""

from __future__ import annotations

import sys
from typing import Any

from sqlalchemy.pool import ConnectionPoolEntry, Pool
from sqlalchemy.pool.base import _ConnectionRecord

from ..connection.handle import FileHandle
from ..connection.lease import Lease, caller_location
from ..errors import OptionError


class TinyCortexPool(Pool):
    """A pool of one connection shared process-wide with every engine on the file."""

    def __init__(
        self,
        creator: Any,
        pool_size: int | None = None,
        max_overflow: int | None = None,
        timeout: float | None = None,
        use_lifo: bool | None = None,
        **kw: Any,
    ) -> None:
        # named here so that create_engine() hands them over (else it raises a bare TypeError)
        given = {"pool_size": pool_size, "max_overflow": max_overflow, "pool_timeout": timeout}
        given["pool_use_lifo"] = use_lifo
        wrong = sorted(name for name, value in given.items() if value is not None)
        if wrong:
            raise OptionError(
                f"{', '.join(wrong)} does not apply to sqlite+tinycortex: every engine on a file shares "
                "its one connection, so there is no pool to size. Leave it out; to bound the wait for "
                "the connection, use checkout_timeout (docs/options.md)"
            )
        # The handle's checkin rolls back whatever is open: SQLAlchemy's reset-on-return would only
        # repeat it (a second ROLLBACK through the pool's reset machinery on every checkin).
        if kw.get("reset_on_return") in ("commit", True):
            raise OptionError(
                "pool_reset_on_return='commit' does not apply to sqlite+tinycortex: the shared "
                "connection's checkin rolls back whatever a checkout left open; commit explicitly"
            )
        kw["reset_on_return"] = None
        super().__init__(creator, **kw)
        handle: FileHandle = getattr(self._dialect, "tinycortex_handle", None)  # type: ignore[assignment]
        if handle is None:
            raise TypeError("TinyCortexPool serves engines of the sqlite+tinycortex dialect only")
        self._handle = handle
        self._timeout: float = self._dialect.tinycortex_checkout_timeout  # type: ignore[union-attr]
        self._read_only: bool = self._dialect.tinycortex_read_only  # type: ignore[union-attr]
        self._begin: str = self._dialect.tinycortex_begin  # type: ignore[union-attr]
        self._uncommitted: bool = self._dialect.tinycortex_uncommitted  # type: ignore[union-attr]
        self._trace: bool = self._dialect.tinycortex_trace  # type: ignore[union-attr]
        self._create: bool = self._dialect.tinycortex_create  # type: ignore[union-attr]
        self._lease: Lease | None = None
        self._record: _ConnectionRecord | None = None
        self._generation = -1
        self._attached = False

    def _do_get(self) -> ConnectionPoolEntry:
        handle = self._handle
        if not self._attached:  # counted as a user from first use, so dispose()+recreate() can close
            handle.add_user(self)
            self._attached = True
        if not self._create:
            handle.refuse_missing()
        if not handle.options_fixed:  # invalidate() forgot the file's options: this engine's apply again
            handle.fix_options(self._dialect.tinycortex_options)  # type: ignore[union-attr]
        lease = Lease(caller_location() if self._trace else None)
        # SQLAlchemy's checkout that called us wires the connection object; an interrupt before it
        # does leaves the lease orphaned, which the handle recognises once this frame is gone
        lease.owned_by(sys._getframe(1))
        try:
            self._checkout(lease)
            if self._generation != handle.generation or self._record is None:
                # the handle opened a new connection: wrap it, firing "connect" events
                self._record = _ConnectionRecord(self)
                self._generation = handle.generation
            record = lease.record = self._record
            self._lease = lease
            return record
        except BaseException:
            handle.checkin(lease)
            raise

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        handle = self._handle
        lease, self._lease = self._lease, None
        if lease is None or not handle.holds(lease):
            return  # given back already (reclaimed after an interrupt, or the file was invalidated)
        held: object = handle.conn
        given = record.dbapi_connection
        if held is not None and getattr(given, "sqlite3_connection", given) is not held:
            handle.forget_detached()  # detach(): the caller keeps it; the next checkout opens anew
            self._generation = -1
        self._checkin(lease)

    def _checkout(self, lease: Lease) -> None:
        """Wait for the handle to grant ``lease`` the connection."""
        self._handle.checkout(
            self._timeout,
            lease,
            read_only=self._read_only,
            begin=self._begin,
            uncommitted=self._uncommitted,
        )

    def _checkin(self, lease: Lease) -> None:
        """Give ``lease`` back (rolling back what it left open)."""
        self._handle.checkin(lease)

    def _close_connection(self, connection: Any, *, terminate: bool = False) -> None:
        # The handle owns the connection's lifetime; SQLAlchemy asking a pool to
        # close it (invalidation) only means this pool must stop using it.
        self._generation = -1
        self._handle.discard(connection)

    def dispose(self) -> None:
        self._record = None
        self._attached = False
        self._handle.remove_user(self)

    def recreate(self) -> TinyCortexPool:
        self.logger.info("Pool recreating")
        return self.__class__(
            self._creator,
            recycle=self._recycle,
            echo=self.echo,
            logging_name=self._orig_logging_name,
            reset_on_return=self._reset_on_return,
            pre_ping=self._pre_ping,
            _dispatch=self.dispatch,
            dialect=self._dialect,
        )

    def status(self) -> str:
        state = "held" if self._handle.held else "idle"
        return f"TinyCortexPool({self._handle.path}, {state})"
