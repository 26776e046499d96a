"""The application-facing functions: engines, ``with_connection``, invalidation."""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

import sqlalchemy as sa
from sqlalchemy.dialects import registry as _dialects

from . import options as opts
from .connection import registry
from .connection.breaker import BreakerState
from .connection.handle import refuse_missing
from .connection.lease import Lease, caller_location
from .errors import OptionError
from .schema import progress
from .schema import upgrade as schema_upgrade
from .sqlite import codes, driver

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from .postgres import PgUpgradeResult

# The same dialect the "sqlalchemy.dialects" entry point names, registered directly so that the
# first create_engine() of a process does not scan every installed distribution's entry points
# (about 5 ms).  Without importing tinycortex_sa, the entry point still finds it.
_dialects.register("sqlite.tinycortex", "tinycortex_sa.engine.dialect", "TinyCortexDialect")

T = TypeVar("T")
Workspace = registry.Workspace


def db_path_for(workspace: Workspace) -> Path:
    """The chunk DB of ``workspace``: ``<workspace>/memory_tree/chunks.db``."""
    return registry.db_path_for(workspace)


def create_engine(workspace: Workspace, **options: Any) -> sa.Engine:
    """An Engine on ``<workspace>/memory_tree/chunks.db`` sharing the file's one connection.

    ``options`` are those of docs/options.md, and SQLAlchemy's own
    ``create_engine`` arguments (``echo``, ``isolation_level``,
    ``execution_options``, ...); an unknown name or a bad value raises
    :class:`~tinycortex_sa.OptionError`.
    """
    return _engine(sa.create_engine, workspace, options)


def create_async_engine(workspace: Workspace, **options: Any) -> AsyncEngine:
    """An ``AsyncEngine`` on ``<workspace>/memory_tree/chunks.db``, for SQLAlchemy's asyncio extension.

    The same options, guarantees and errors as :func:`create_engine`, and the
    same one connection per file, shared with the process's sync engines and
    :func:`with_connection`.  Its checkouts await their turn and its SQLite
    calls run off the event loop (docs/async.md).
    """
    from sqlalchemy.ext.asyncio import create_async_engine as create

    return _engine(create, workspace, options)


E = TypeVar("E")


def _engine(create: Callable[..., E], workspace: Workspace, options: dict[str, Any]) -> E:
    opts.parse({k: v for k, v in options.items() if k in opts.NAMES})
    path = db_path_for(workspace)
    url = sa.URL.create("sqlite+tinycortex", database=str(path))
    known = registry.existing_handle(path) is not None
    try:
        return create(url, **options)
    except TypeError as err:
        if "Invalid argument" not in str(err):
            raise
        if not known:
            registry.forget_unused(path)  # the refused engine fixes nothing for the file
        raise OptionError(
            f"unknown option(s): {err.args[0].split(' sent to ')[0].removeprefix('Invalid argument(s) ')}: "
            f"neither a library option ({', '.join(sorted(opts.NAMES))}; docs/options.md) nor a "
            "SQLAlchemy create_engine() argument. Check the spelling."
        ) from None


def with_connection(workspace: Workspace, fn: Callable[[sqlite3.Connection], T], **options: Any) -> T:
    """Call ``fn`` with the file's cached DBAPI connection and return its result.

    The connection is in autocommit mode: ``fn`` issues ``BEGIN`` itself for a
    transaction.  A transaction left open is rolled back when ``fn`` returns or
    raises; an exception from ``fn`` propagates unchanged.
    """
    explicit = opts.parse(options) if options else {}
    handle = registry.handle_for_workspace(workspace, explicit)
    if explicit.get("create") is False:
        handle.refuse_missing()
    lease = Lease(caller_location() if explicit.get("trace_checkouts") else None)
    lease.owned_by(sys._getframe())  # released by the finally below, or reclaimed if that never runs
    try:
        conn = handle.checkout(
            explicit.get("checkout_timeout", handle.options.checkout_timeout),
            lease,
            read_only=explicit.get("read_only", False),
            begin="AUTOCOMMIT",
        )
        return fn(conn)
    except sqlite3.DatabaseError as err:
        if codes.is_corruption(err):
            handle.suspect_corruption()  # the next open confirms with quick_check and quarantines
        elif codes.is_moved(err):
            handle.close()  # renamed under us: the next call opens the file now at the path
        raise
    finally:
        handle.checkin(lease)


@dataclass(frozen=True)
class UpgradeResult:
    """What :func:`upgrade` did to a workspace's chunk DB."""

    path: Path
    created: bool
    """The database did not exist and was created at head."""
    before: str | None
    """Its revision before (``"no revision"`` for one the Rust core wrote; None if it did not exist)."""
    after: str
    """Its revision now: head."""
    user_version: int
    """``PRAGMA user_version`` now (the Rust core's data-migration marker)."""
    applied: tuple[str, ...] = ()
    """The revisions applied, in order."""
    reports: tuple[str, ...] = ()
    """What the data migrations reported (rows moved, folders removed)."""

    @property
    def changed(self) -> bool:
        """Whether anything was created or applied."""
        return self.created or bool(self.applied)


@overload
def upgrade(workspace: sa.URL, *, schema: str | None = None) -> PgUpgradeResult: ...
@overload
def upgrade(workspace: Workspace, **options: Any) -> UpgradeResult: ...
def upgrade(workspace: Workspace | sa.URL, **options: Any) -> UpgradeResult | PgUpgradeResult:
    """Bring the workspace's chunk DB to Alembic head now, and say what was done.

    Given a ``postgresql://`` URL (a string or a :class:`sqlalchemy.engine.URL`)
    instead of a workspace, builds or upgrades the chunk-DB schema there, in
    the schema named by the ``schema`` option: :func:`tinycortex_sa.postgres.upgrade`.

    The same code as the automatic migration at first open and ``tinycortex-sa
    upgrade`` (one ``BEGIN IMMEDIATE`` transaction, the pragmas, recovery), on
    a connection of its own that is closed afterwards, so the file's options
    and cached connection in this process are left as they are (``options``
    apply to this call only; ``auto_migrate`` is implied).  Safe to call from
    another Alembic environment's ``env.py``: that environment's ``context``
    and ``op`` are left as they were.  A corrupt file is refused
    (:class:`~tinycortex_sa.CorruptDatabaseError`), never moved aside here;
    with ``create=False`` a missing database is
    :class:`~tinycortex_sa.DatabaseNotFoundError`.
    """
    if isinstance(workspace, sa.URL) or (isinstance(workspace, str) and workspace.startswith("postgresql")):
        from . import postgres

        unknown = sorted(set(options) - {"schema"})
        if unknown:
            raise OptionError(f"on PostgreSQL upgrade() takes one option, schema; got {', '.join(unknown)}")
        return postgres.upgrade(workspace, schema=options.get("schema"))
    explicit = opts.parse(options) if options else {}
    path = db_path_for(workspace)
    if explicit.get("create") is False:
        refuse_missing(path)
    handle = registry.existing_handle(path)
    if handle is not None and handle.conn is not None:  # opened, so initialised, in this process
        after, user_version = with_connection(workspace, _read_head)
        return UpgradeResult(path=path, created=False, before=after, after=after, user_version=user_version)
    base = handle.options if handle is not None and handle.options_fixed else opts.DEFAULTS
    given = {k: v for k, v in explicit.items() if k in opts.FILE_SCOPED}
    options_now = opts.resolve({**given, "auto_migrate": True, "on_corrupt": "raise"}, base)
    created = not os.path.lexists(path)
    before = None if created else _revision_read_only(path, options_now.busy_timeout)
    events: list[progress.UpgradeEvent] = []
    outer = progress.current_listener()  # the command line's progress line, say

    def heard(event: progress.UpgradeEvent) -> None:
        events.append(event)
        if outer is not None:
            outer(event)

    with progress.reporting(heard):
        conn = registry.open_file(path, options_now, verify=False)
        try:
            after, user_version = _read_head(conn)
        finally:
            conn.close()
    return UpgradeResult(
        path=path,
        created=created,
        before=before,
        after=after,
        user_version=user_version,
        applied=tuple(e.revision for e in events if e.kind == "done"),
        reports=tuple(e.message for e in events if e.kind == "report"),
    )


def _read_head(conn: sqlite3.Connection) -> tuple[str, int]:
    revisions = schema_upgrade.read_revisions(conn) or ("no revision",)
    return ", ".join(revisions), int(conn.execute("PRAGMA user_version").fetchone()[0])


def _revision_read_only(path: Path, busy_timeout_ms: int) -> str | None:
    """The revision of ``path`` read through a read-only connection; None if it cannot be read now."""
    try:
        conn = driver.open_uri(path, "ro", busy_timeout_ms)
    except sqlite3.Error:
        return None
    try:
        return ", ".join(schema_upgrade.read_revisions(conn) or ("no revision",))
    except sqlite3.Error:
        return None  # a hot journal, damage or a lock: the open explains
    finally:
        conn.close()


def invalidate(workspace: Workspace) -> None:
    """Close the file's cached connection and reset its breaker and options.

    The next use opens the file afresh.  Engines on the file stay usable.
    """
    handle = registry.existing_handle(db_path_for(workspace))
    if handle is not None:
        handle.invalidate()


def breaker_state(workspace: Workspace) -> BreakerState:
    """The circuit breaker of the workspace's chunk DB, as a snapshot."""
    handle = registry.existing_handle(db_path_for(workspace))
    if handle is None:
        return BreakerState("closed", 0, None, 0.0)
    return handle.breaker.snapshot()
