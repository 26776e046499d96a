"""Bring a chunk DB to Alembic head when the connection core first opens it.

The connection core calls :func:`initialise` once per newly opened DBAPI
connection, under the per-file lock and after the pragmas.  A database already
at head costs two small queries (``alembic_version`` compared with
:data:`~tinycortex_sa.schema.version.HEAD`, and the table names: a chunk-DB
table missing at head is :class:`SchemaDamagedError`, before any statement);
Alembic and the revision files are imported only when something has to change.  Whoever wants to follow an
upgrade (the CLI's progress line) passes a callback to
:func:`.progress.reporting`.  The upgrade runs inside one
``BEGIN IMMEDIATE`` transaction on the database itself, which is also the lock
between processes: a second process opening the same new workspace waits for
the first, re-reads the version under the lock and finds it at head.  Around
it, :mod:`.purge` settles the retired summary folders revision 0005 moves
aside: on every first open (one ``lstat`` when nothing is aside) and right
after the upgrade transaction commits or fails.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ForeignDatabaseError, SchemaBehindError, SchemaDamagedError, UnknownRevisionError
from ..options import DEFAULTS, Options, parse, resolve
from . import progress, purge
from .version import CHUNK_TABLES, HEAD, REVISIONS, RUST_STORE_TABLES

if TYPE_CHECKING:
    import sqlalchemy as sa
    from alembic.config import Config
    from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)

#: ``config.attributes`` key holding the :class:`DataSettings` of a run.
SETTINGS_KEY = "tinycortex_data_settings"
#: ``config.attributes`` key holding the :class:`~tinycortex_sa.options.Options` of a run.
OPTIONS_KEY = "tinycortex_options"
#: Options that the data migrations read; ``-x NAME=VALUE`` overrides them.
DATA_OPTIONS: tuple[str, ...] = ("embedding_model", "embedding_dim", "content_root")


@dataclass(frozen=True)
class DataSettings:
    """What the two Rust data migrations need: the embedding signature and the content root."""

    embedding_model: str
    embedding_dim: int
    content_root: Path

    @property
    def signature(self) -> str:
        """The sidecar tables' ``model_signature``: ``"{model}@{dim}"``."""
        return f"{self.embedding_model}@{self.embedding_dim}"


def data_settings(options: Options, db_path: Path, x_args: Mapping[str, str] | None = None) -> DataSettings:
    """Resolve the data-migration settings: ``-x`` arguments, then ``options``, then the defaults.

    The content root defaults to ``<workspace>/memory_tree/content``, the
    ``content`` folder beside the database file.
    """
    given = {name: value for name, value in (x_args or {}).items() if name in DATA_OPTIONS}
    resolved = resolve(parse(given), options)
    return DataSettings(resolved.embedding_model, resolved.embedding_dim, content_root(resolved, db_path))


def content_root(options: Options, db_path: Path) -> Path:
    """``options.content_root``, else ``<workspace>/memory_tree/content`` (beside ``db_path``)."""
    root = options.content_root
    return Path(root) if root is not None else db_path.parent / "content"


def database_path(connection: Connection) -> Path:
    """The file behind ``connection``'s main schema (``PRAGMA database_list``).

    Asked on the DBAPI connection, so that it does not begin a SQLAlchemy
    transaction (Alembic would then take it for the caller's and not commit).
    """
    raw: Any = connection.connection.driver_connection
    for row in raw.execute("PRAGMA database_list").fetchall():
        if row[1] == "main" and row[2]:
            return Path(row[2])
    raise ValueError("the chunk DB migrations need a file-backed database, not an in-memory one")


def current_data_settings() -> DataSettings:
    """The settings of the running migration (for revision files).

    ``migrations/env.py`` always stores them in ``config.attributes``; a
    custom ``env.py`` that does not gets ``-x`` arguments over the defaults.
    """
    from alembic import context, op

    settings = context.config.attributes.get(SETTINGS_KEY)
    if isinstance(settings, DataSettings):
        return settings
    path = database_path(op.get_bind())
    return data_settings(DEFAULTS, path, context.get_x_argument(as_dictionary=True))


def script_location() -> Path:
    """The migrations folder: the installed ``tinycortex_sa.migrations`` or the repo's ``migrations/``."""
    spec = importlib.util.find_spec("tinycortex_sa.migrations")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(**attributes: Any) -> Config:
    """An Alembic ``Config`` on the packaged migrations, with ``attributes`` set.

    Pass ``connection=`` to run on a connection you hold (its transaction is
    then the migration's), as :func:`initialise` and the tests do.
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.attributes.update(attributes)
    return config


def refuse_foreign(conn: sqlite3.Connection, db_path: Path) -> None:
    """Refuse another application's database before anything changes it (the opener's inspector).

    A file with tables, none of them the chunk DB's, the Rust core's stores' or
    ``alembic_version``, is not a chunk DB: adopting it would add fifteen
    tables to it.  An empty database is a new chunk DB.
    """
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    names = {str(row[0]) for row in rows} - {"sqlite_sequence", "sqlite_stat1", "sqlite_stat4"}
    if not names or names & (CHUNK_TABLES | RUST_STORE_TABLES | {"alembic_version"}):
        return
    shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
    raise ForeignDatabaseError(
        f"{db_path} is another application's SQLite database (tables {shown}; none of the chunk "
        "DB's), so it was left exactly as it was. Point the workspace at the TinyCortex chunk DB, "
        "or move this file away to start a new one.",
        path=db_path,
        revision=None,
    )


def read_revisions(conn: sqlite3.Connection) -> tuple[str, ...] | None:
    """The rows of ``alembic_version``, or None when the table does not exist."""
    try:
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.OperationalError as err:
        if "no such table" in str(err):
            return None
        raise
    return tuple(str(row[0]) for row in rows)


def _describe(revisions: tuple[str, ...] | None) -> str:
    if not revisions:
        return "no revision (a new database, or one the Rust core created)"
    return "revision " + ", ".join(revisions)


def _check_known(revisions: tuple[str, ...] | None, db_path: Path) -> None:
    if revisions is None or revisions == ():
        return
    if len(revisions) == 1 and revisions[0] in REVISIONS:
        return
    raise UnknownRevisionError(
        f"{db_path}: the chunk DB is stamped with {_describe(revisions)}, which this version of "
        f"tinycortex_sa does not know (its newest is {HEAD}): newer code wrote it. Upgrade "
        "tinycortex_sa to open it; its schema and data were left untouched.",
        path=db_path,
        revision=", ".join(revisions),
    )


def _check_tables(conn: sqlite3.Connection, db_path: Path) -> None:
    """At head, every chunk-DB table must be there: a missing one is damage, refused before any statement."""
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    missing = CHUNK_TABLES - {str(row[0]) for row in rows}
    if not missing:
        return
    workspace = db_path.parent.parent
    raise SchemaDamagedError(
        f"{db_path} is stamped at {HEAD}, but its table(s) {', '.join(sorted(missing))} are missing: the "
        "schema was damaged (a table dropped by hand, an incomplete copy or restore). Nothing was changed. "
        "Restore the file from a backup, or keep it aside and start an empty database with "
        f"`tinycortex-sa recover {workspace} --force`.",
        path=db_path,
        revision=HEAD,
    )


def _behind(revisions: tuple[str, ...] | None, db_path: Path) -> SchemaBehindError:
    workspace = db_path.parent.parent
    return SchemaBehindError(
        f"{db_path}: the chunk DB schema is at {_describe(revisions)}, behind {HEAD}, and "
        "auto_migrate is off, so its schema and data were not changed. Run "
        f"`tinycortex-sa upgrade {workspace}` (or `alembic -x workspace={workspace} upgrade head` with "
        "script_location = tinycortex_sa:migrations, or tinycortex_sa.upgrade() from code; see "
        "docs/schema.md), or open it once with auto_migrate=True.",
        path=db_path,
        revision=revisions[0] if revisions else None,
    )


def initialise(
    conn: sqlite3.Connection,
    db_path: Path,
    options: Options,
    alembic_lock: contextlib.AbstractContextManager[Any] | None = None,
) -> None:
    """Check (and with ``auto_migrate``, bring) the schema of a new connection to head.

    Raises :class:`UnknownRevisionError` for a database stamped by newer code
    (in both modes, before touching it) and :class:`SchemaBehindError` for one
    behind head when ``options.auto_migrate`` is off.  ``alembic_lock`` is
    held around the Alembic run (the connection core passes its process-wide
    one).

    Before anything else (in both modes, for a known revision), retired summary
    folders that an interrupted upgrade left moved aside are removed if its
    purge committed, or moved back if it did not (:func:`.purge.settle`: one
    ``lstat`` when nothing is aside).
    """
    revisions = read_revisions(conn)
    if revisions != (HEAD,):
        _check_known(revisions, db_path)
    purge.settle(conn, content_root(options, db_path))
    if revisions == (HEAD,):
        _check_tables(conn, db_path)
        return
    if not options.auto_migrate:
        raise _behind(revisions, db_path)
    _upgrade_locked(conn, db_path, options, alembic_lock or contextlib.nullcontext())


def borrowed_engine(conn: sqlite3.Connection) -> sa.Engine:
    """An engine whose only connection is ``conn``, which the caller already holds.

    Plain pysqlite (the driver stays in autocommit; a ``begin`` listener emits
    ``BEGIN IMMEDIATE``, SQLAlchemy's documented recipe) on a pool that never
    closes ``conn``.  Dispose it when done.
    """
    import sqlalchemy as sa
    from sqlalchemy.pool import StaticPool

    class _Borrowed(StaticPool):
        def _close_connection(self, connection: Any, *, terminate: bool = False) -> None:
            """The connection belongs to whoever lent it; never close it here."""

    engine = sa.create_engine(
        "sqlite://", creator=lambda: conn, poolclass=_Borrowed, pool_reset_on_return=None
    )

    @sa.event.listens_for(engine, "begin")
    def _begin_immediate(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _upgrade_locked(
    conn: sqlite3.Connection,
    db_path: Path,
    options: Options,
    alembic_lock: contextlib.AbstractContextManager[Any],
) -> None:
    """Upgrade to head in one ``BEGIN IMMEDIATE`` transaction, re-checking under that lock.

    Right after the transaction, :func:`.purge.settle_after_transaction`
    removes the retired summary folders revision 0005 moved aside (it
    committed) or moves them back (it failed) before the error propagates.
    """
    from sqlalchemy.exc import DBAPIError

    settings = data_settings(options, db_path)
    engine = borrowed_engine(conn)
    try:
        try:
            _upgrade_in_transaction(engine, db_path, options, settings, alembic_lock)
        except BaseException:
            _roll_back(conn, db_path)  # a failed COMMIT may leave the transaction open
            purge.settle_after_transaction(conn, settings.content_root)  # moves them back
            raise
        purge.settle_after_transaction(conn, settings.content_root)  # removes them
    except DBAPIError as err:
        # hand SQLite's own error to the connection core, which tells busy, I/O and corrupt apart
        if not isinstance(err.orig, sqlite3.Error):
            raise
        err.orig.add_note(f"while upgrading {db_path} to {HEAD}: {err.statement}")
        raise err.orig from None
    finally:
        engine.dispose()


@contextlib.contextmanager
def alembic_isolated() -> Iterator[None]:
    """Run an Alembic command inside another one's ``env.py`` without breaking it.

    Alembic's ``context`` and ``op`` are module-level proxies: running a
    command installs its own environment in them and removes it at the end,
    leaving the caller's ``env.py`` (an application's own migrations, which
    opened the chunk DB or called :func:`tinycortex_sa.upgrade`) with
    ``context.configure`` gone.  What the proxies held before is put back.
    """
    from alembic.util.langhelpers import ModuleClsProxy

    missing = object()
    saved: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for attr_names, modules in list(ModuleClsProxy._setups.values()):
        for globals_, _locals in modules:
            names = {*attr_names, "_proxy"}
            saved.append((globals_, {name: globals_.get(name, missing) for name in names}))  # type: ignore[arg-type]
    try:
        yield
    finally:
        for globals_, values in saved:
            for name, value in values.items():
                if value is missing:
                    globals_.pop(name, None)
                else:
                    globals_[name] = value


def _roll_back(conn: sqlite3.Connection, db_path: Path) -> None:
    """Roll back the failed upgrade transaction if SQLite still has it open (its own error propagates)."""
    if not conn.in_transaction:
        return
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error as err:
        log.warning("%s: rolling back the failed upgrade failed too (%s)", db_path, err)


def _upgrade_in_transaction(
    engine: sa.Engine,
    db_path: Path,
    options: Options,
    settings: DataSettings,
    alembic_lock: contextlib.AbstractContextManager[Any],
) -> None:
    """The upgrade transaction itself: re-read the revision under the lock, run Alembic, commit."""
    from alembic import command

    with engine.begin() as connection:
        present = connection.exec_driver_sql(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
        ).scalar()
        revisions: tuple[str, ...] | None = None
        if present:
            rows = connection.exec_driver_sql("SELECT version_num FROM alembic_version").fetchall()
            revisions = tuple(str(row[0]) for row in rows)
        if revisions == (HEAD,):
            log.debug("%s: another process brought the chunk DB to %s first", db_path, HEAD)
            return
        _check_known(revisions, db_path)
        log.info("%s: upgrading the chunk DB from %s to %s", db_path, _describe(revisions), HEAD)
        config = alembic_config(connection=connection, **{OPTIONS_KEY: options, SETTINGS_KEY: settings})
        progress.attach(config, revisions)
        with alembic_lock, alembic_isolated():
            command.upgrade(config, "head")
