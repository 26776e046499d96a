"""The ``sqlite+tinycortex`` dialect: pysqlite with the chunk DB's rules.

* Options arrive as named keyword arguments (so ``create_engine`` rejects
  typos) or URL query parameters; both are validated by
  :mod:`tinycortex_sa.options`.
* The pool is always :class:`~tinycortex_sa.engine.pool.TinyCortexPool`: one shared
  connection per file, process-wide.
* The library, not the driver, emits BEGIN (SQLAlchemy's pysqlite recipe):
  ``BEGIN EXCLUSIVE`` by default, so that other processes wait on
  ``busy_timeout`` before they read rather than fail when they write (a reader
  holding SHARED cannot upgrade while a writer holds RESERVED, and SQLite
  answers at once with SQLITE_BUSY); ``read_only=True`` engines begin ``DEFERRED`` and run
  under ``PRAGMA query_only``, so they never take the write lock;
  ``execution_options(tinycortex_begin="deferred")`` chooses the BEGIN of
  one engine or connection; ``isolation_level="AUTOCOMMIT"`` emits no BEGIN.
  All of it is decided per checkout, because the DBAPI connection is shared by
  every engine on the file.
* A plain INSERT with many parameter sets is sent as multi-row
  ``INSERT ... VALUES (...), (...)`` batches (SQLAlchemy's "insertmanyvalues",
  which it uses for RETURNING already), not as one statement per row:
  SQLAlchemy's own per-row cost is then close to raw ``executemany``.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import URL, Engine
from sqlalchemy.engine.interfaces import ConnectArgsType, DBAPIConnection, IsolationLevel
from sqlalchemy.pool import Pool

from .. import options as opts
from ..connection import registry
from ..connection.handle import FileHandle
from ..errors import OptionError
from . import reflection, statement_errors
from .pool import TinyCortexPool

BEGIN_MODES = {"immediate": "BEGIN IMMEDIATE", "deferred": "BEGIN DEFERRED", "exclusive": "BEGIN EXCLUSIVE"}
#: ``FileHandle.begin_mode`` to its statement, built once rather than at every BEGIN.
_BEGIN_SQL = {mode.upper(): sql for mode, sql in BEGIN_MODES.items()}


def _begin_mode(value: object) -> str:
    if value not in BEGIN_MODES:
        raise OptionError(
            f"execution option tinycortex_begin must be one of {sorted(BEGIN_MODES)}, got {value!r}"
        )
    return str(value).upper()


_CONNECTION_CLASSES: dict[str, type[sa.Connection]] = {}


def _connection_class(mode: str) -> type[sa.Connection]:
    """A ``Connection`` whose checkout begins its transactions with ``mode`` (one class per mode)."""
    cls = _CONNECTION_CLASSES.get(mode)
    if cls is None:

        def __init__(self: sa.Connection, *args: Any, **kw: Any) -> None:
            sa.Connection.__init__(self, *args, **kw)
            handle = getattr(self.dialect, "tinycortex_handle", None)
            if handle is not None and handle.begin_mode != "AUTOCOMMIT":
                handle.begin_mode = mode

        cls = _CONNECTION_CLASSES[mode] = type(f"Connection_{mode}", (sa.Connection,), {"__init__": __init__})
    return cls


class TinyCortexDialect(SQLiteDialect_pysqlite):
    """SQLAlchemy's pysqlite dialect, bound to the shared connection of one chunk DB."""

    driver = "tinycortex"
    supports_statement_cache = True
    use_insertmanyvalues_wo_returning = True
    """Batch plain bulk INSERTs as multi-row VALUES, as SQLAlchemy does for INSERT..RETURNING.

    Statements with ON CONFLICT keep ``executemany`` (SQLAlchemy >= 2.0.47,
    issue #13130).  ``rowcount`` of a batched insert follows SQLAlchemy's rule
    for insertmanyvalues: ``execution_options(preserve_rowcount=True)`` gives
    the total.  When a row fails, the statement for its whole batch is undone
    (with ``executemany`` the rows before it stayed): either way the error
    propagates and the transaction is rolled back, as after any failure.
    """

    def __init__(
        self,
        busy_timeout: int | None = None,
        breaker_threshold: int | None = None,
        breaker_cooldown: float | None = None,
        checkout_timeout: float | None = None,
        on_corrupt: str | None = None,
        auto_migrate: bool | None = None,
        content_root: Any = None,
        embedding_model: str | None = None,
        embedding_dim: int | None = None,
        read_only: bool | None = None,
        trace_checkouts: bool | None = None,
        create: bool | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        # An engine's isolation level belongs to its checkouts, not to the shared DBAPI connection
        # (SQLAlchemy would set it once per connection, for every engine): AUTOCOMMIT is applied
        # as "no BEGIN" and READ UNCOMMITTED as its pragma at each checkout of this engine.
        level = kw.get("isolation_level")
        levels = [*self._isolation_lookup, "AUTOCOMMIT"]
        if level is not None and level not in levels:
            raise sa.exc.ArgumentError(
                f"Invalid value {level!r} for isolation_level. Valid isolation levels for "
                f"{self.name!r} are {', '.join(levels)}"
            )
        self.tinycortex_autocommit = level == "AUTOCOMMIT"
        self.tinycortex_uncommitted = level == "READ UNCOMMITTED"
        given = {
            "busy_timeout": busy_timeout,
            "breaker_threshold": breaker_threshold,
            "breaker_cooldown": breaker_cooldown,
            "checkout_timeout": checkout_timeout,
            "on_corrupt": on_corrupt,
            "auto_migrate": auto_migrate,
            "content_root": content_root,
            "embedding_model": embedding_model,
            "embedding_dim": embedding_dim,
            "read_only": read_only,
            "trace_checkouts": trace_checkouts,
            "create": create,
        }
        self._kw_options = opts.parse({k: v for k, v in given.items() if v is not None})
        self.tinycortex_handle: FileHandle | None = None
        self.tinycortex_options: dict[str, Any] = {}
        """The options this engine was created with (URL and keywords, validated)."""
        self.tinycortex_checkout_timeout = opts.DEFAULTS.checkout_timeout
        self.tinycortex_read_only = False
        self.tinycortex_trace = False
        self.tinycortex_create = True
        self.tinycortex_begin = "AUTOCOMMIT" if self.tinycortex_autocommit else ""
        """The BEGIN mode of this engine's checkouts ("": by read_only, see FileHandle.checkout)."""

    @classmethod
    def get_pool_class(cls, url: URL) -> type[Pool]:
        return TinyCortexPool

    @classmethod
    def get_async_dialect_cls(cls, url: URL) -> type[sa.engine.Dialect]:
        """``create_async_engine`` on the same URL: :class:`~.aio.TinyCortexAsyncDialect`."""
        from .aio import TinyCortexAsyncDialect

        return TinyCortexAsyncDialect

    @classmethod
    def engine_created(cls, engine: Engine) -> None:
        if not isinstance(engine.pool, TinyCortexPool):
            raise OptionError(
                "sqlite+tinycortex engines use their own pool (one shared connection per file); "
                "do not pass poolclass= or pool= to create_engine"
            )
        sa.event.listen(engine, "handle_error", statement_errors.explain)

    def create_connect_args(self, url: URL) -> ConnectArgsType:
        if url.username or url.password or url.host or url.port:
            raise OptionError(
                f"invalid sqlite+tinycortex URL {url!r}: use sqlite+tinycortex:///path/to/chunks.db"
            )
        path = url.database
        if not path or path == ":memory:" or path.startswith("file:"):
            raise OptionError(
                f"sqlite+tinycortex needs the path of a chunk DB file, got {path!r} "
                "(e.g. sqlite+tinycortex:////abs/workspace/memory_tree/chunks.db)"
            )
        from_url = opts.parse(dict(url.query))
        for name, value in from_url.items():
            if name in self._kw_options and self._kw_options[name] != value:
                raise OptionError(
                    f"option {name!r} is given twice with different values: "
                    f"{value!r} in the URL and {self._kw_options[name]!r} as a keyword argument"
                )
        explicit = {**from_url, **self._kw_options}
        self.tinycortex_options = explicit
        self.tinycortex_handle = registry.handle_for(path, explicit)
        self.tinycortex_checkout_timeout = explicit.get(
            "checkout_timeout", self.tinycortex_handle.options.checkout_timeout
        )
        self.tinycortex_read_only = bool(explicit.get("read_only", False))
        self.tinycortex_trace = bool(explicit.get("trace_checkouts", False))
        self.tinycortex_create = bool(explicit.get("create", True))
        return [], {}

    def connect(self, *cargs: Any, **cparams: Any) -> DBAPIConnection:
        """The pool's creator: hand over the connection the handle already opened.

        After SQLAlchemy recycled a record (pool-wide invalidation closed the
        old connection through the pool), the handle opens the file's next one,
        as checkout would have.
        """
        handle = self.tinycortex_handle
        assert handle is not None, "the pool's creator runs after create_connect_args"
        conn: DBAPIConnection = handle.current_connection()  # type: ignore[assignment]
        return conn

    def initialize(self, connection: sa.Connection) -> None:
        super().initialize(connection)
        # never more bound parameters per batch than this SQLite build accepts
        dbapi_conn = connection.connection.dbapi_connection
        if isinstance(dbapi_conn, sqlite3.Connection):
            limit = dbapi_conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            self.insertmanyvalues_max_parameters = min(self.insertmanyvalues_max_parameters, limit)

    # -- statements: the thread that runs one is the lease's user (a Session may change hands) --------
    def do_execute(self, cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
        handle = self.tinycortex_handle
        if handle is not None:
            handle.in_use_here()
        cursor.execute(statement, parameters)

    def do_executemany(self, cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
        handle = self.tinycortex_handle
        if handle is not None:
            handle.in_use_here()
        cursor.executemany(statement, parameters)

    def do_execute_no_params(self, cursor: Any, statement: str, context: Any = None) -> None:
        handle = self.tinycortex_handle
        if handle is not None:
            handle.in_use_here()
        cursor.execute(statement)

    def _builtin_onconnect(self) -> Any:
        """Nothing per DBAPI connection: the engine's isolation level is applied per checkout."""
        return None

    def do_begin(self, dbapi_connection: Any) -> None:
        handle = self.tinycortex_handle
        if handle is None:
            dbapi_connection.execute("BEGIN EXCLUSIVE")
            return
        mode = handle.begin_mode
        if mode != "AUTOCOMMIT":
            # the handle's own sqlite3 connection: the same one, without the fairy's attribute proxy
            conn = handle.conn
            (conn if conn is not None else dbapi_connection).execute(_BEGIN_SQL[mode])

    # -- per-checkout BEGIN: tinycortex_begin and AUTOCOMMIT ----------------------------------
    def set_engine_execution_options(self, engine: Engine, opts: Any) -> None:
        """``engine.execution_options(tinycortex_begin=...)``: the BEGIN of that engine's transactions.

        The option engine makes its connections through a small ``Connection``
        subclass that sets the checkout's BEGIN mode once, at connect: no event
        listener (SQLAlchemy dispatches every statement's events once an engine
        has one) and no per-checkout characteristic set-and-reset.
        """
        super().set_engine_execution_options(engine, opts)
        if "tinycortex_begin" in opts:
            engine._connection_cls = _connection_class(_begin_mode(opts["tinycortex_begin"]))

    def set_connection_execution_options(self, connection: sa.Connection, opts: Any) -> None:
        """``connection.execution_options(tinycortex_begin=...)``: the BEGIN for this checkout."""
        super().set_connection_execution_options(connection, opts)
        if "tinycortex_begin" in opts:
            mode = _begin_mode(opts["tinycortex_begin"])
            if connection.in_transaction():
                raise OptionError(
                    "execution option tinycortex_begin must be set before the connection's transaction "
                    "begins (set it on the engine, or right after connect())"
                )
            handle = self.tinycortex_handle
            if handle is not None and handle.begin_mode != "AUTOCOMMIT":
                handle.begin_mode = mode

    def get_foreign_keys(
        self, connection: Any, table_name: str, schema: str | None = None, **kw: Any
    ) -> list[Any]:
        """Reflect inline ``REFERENCES ... ON DELETE CASCADE`` actions too (Alembic checks them)."""
        return reflection.get_foreign_keys(self, connection, table_name, schema, **kw)

    def set_isolation_level(self, dbapi_connection: DBAPIConnection, level: IsolationLevel) -> None:
        """AUTOCOMMIT: no BEGIN for the rest of this checkout; otherwise ``PRAGMA read_uncommitted``.

        The driver stays in ``isolation_level=None`` whatever the level: the
        library emits BEGIN itself, and not at all under AUTOCOMMIT.
        """
        handle = self.tinycortex_handle
        if level == "AUTOCOMMIT":
            if handle is not None:
                handle.begin_mode = "AUTOCOMMIT"
            return
        if handle is None:
            return
        if handle.begin_mode == "AUTOCOMMIT":
            handle.begin_mode = "DEFERRED" if self.tinycortex_read_only else "EXCLUSIVE"
        handle.set_read_uncommitted(level == "READ UNCOMMITTED")

    def get_isolation_level(self, dbapi_connection: DBAPIConnection) -> IsolationLevel:
        handle = self.tinycortex_handle
        if handle is not None and handle.begin_mode == "AUTOCOMMIT":
            return "AUTOCOMMIT"
        level: IsolationLevel = super().get_isolation_level(dbapi_connection)  # type: ignore[no-untyped-call]
        return level

    def detect_autocommit_setting(self, dbapi_conn: DBAPIConnection) -> bool:
        """Autocommit is this checkout's mode, not the driver's ``isolation_level`` (always None here)."""
        handle = self.tinycortex_handle
        return handle is not None and handle.begin_mode == "AUTOCOMMIT"
