"""PostgreSQL engines for the chunk DB models: one schema per workspace, found through ``search_path``.

Each workspace gets a schema of its own (:func:`schema_for`), holding the
fifteen tables under their usual names, their ``alembic_version`` and the
sync's bookkeeping.  Connections of an engine made here set ``search_path``
to that schema then the one holding pgvector, so the unchanged models, the
revisions' DDL, raw ``text()`` SQL and ``COPY`` all resolve there.
(SQLAlchemy's ``schema_translate_map`` would rewrite only statements built
from ``Table`` objects, not the revisions' SQL text nor pgvector's type names.)
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from ..errors import OptionError, PostgresUnavailableError, SyncError

#: Execution option naming an engine's workspace schema (read by ``env.py`` and the sync).
SCHEMA_OPTION = "tinycortex_schema"
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_INSTALL = "pip install 'tinycortex_sa[postgres]'"


def require_driver() -> None:
    """Refuse clearly when psycopg 3 or pgvector's package is not installed."""
    try:
        import pgvector.sqlalchemy  # noqa: F401  (also lets reflection recognise the vector type)
        import psycopg  # noqa: F401
    except ImportError as err:
        raise PostgresUnavailableError(
            f"the PostgreSQL parts of tinycortex_sa need psycopg 3 and pgvector ({err}): {_INSTALL}"
        ) from err


def check_schema_name(schema: str) -> str:
    """``schema`` if it is a plain lower-case PostgreSQL name (it is spliced into DDL unquoted)."""
    if not _NAME.fullmatch(schema) or schema.startswith("pg_"):
        raise OptionError(
            f"schema {schema!r}: use 1-63 lower-case letters, digits and underscores, not starting "
            "with a digit or pg_"
        )
    return schema


def schema_for(workspace: str | os.PathLike[str]) -> str:
    """The default schema of a workspace: ``tc_<folder name>_<8 hex of its absolute path>``.

    Two workspaces with the same folder name in different places get
    different schemas; the same workspace always gets the same one.
    """
    path = Path(workspace).expanduser().resolve()
    slug = re.sub(r"[^a-z0-9]+", "_", path.name.lower()).strip("_")[:40] or "workspace"
    digest = hashlib.blake2b(str(path).encode(), digest_size=4).hexdigest()
    return f"tc_{slug}_{digest}"


def _postgres_url(url: str | sa.URL) -> sa.URL:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise OptionError(f"{parsed.render_as_string(hide_password=True)}: not a postgresql:// URL")
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_driver_name() != "psycopg":
        raise OptionError(
            f"{parsed.drivername}: the PostgreSQL parts use psycopg 3; write postgresql+psycopg://"
        )
    return parsed


def create_engine(url: str | sa.URL, *, schema: str | None = None, **kwargs: Any) -> sa.Engine:
    """A SQLAlchemy engine on PostgreSQL whose connections work in the workspace's ``schema``.

    ``url`` is a ``postgresql://`` or ``postgresql+psycopg://`` URL; ``schema``
    a name from :func:`schema_for` or your own (None: PostgreSQL's default
    ``search_path``).  ``kwargs`` go to :func:`sqlalchemy.create_engine`.
    """
    require_driver()
    engine = sa.create_engine(_postgres_url(url), **kwargs)
    if schema is None:
        return engine
    check_schema_name(schema)
    found: list[str] = []

    @event.listens_for(engine, "connect")
    def _search_path(dbapi_conn: Any, _record: Any) -> None:
        with dbapi_conn.cursor() as cur:
            if not found:  # where pgvector's types live (public, or a schema of the operator's)
                cur.execute(
                    "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
                    "WHERE e.extname = 'vector'"
                )
                row = cur.fetchone()
                found.append(row[0] if row else "public")
            extra = "" if found[0] in ("public", schema) else f', "{found[0]}"'
            cur.execute(f'SET search_path TO "{schema}", public{extra}')
        dbapi_conn.commit()

    return engine.execution_options(**{SCHEMA_OPTION: schema})


def schema_of(bind: sa.Connection | sa.Engine) -> str | None:
    """The workspace schema an engine of :func:`create_engine` works in (None: the default)."""
    value = bind.get_execution_options().get(SCHEMA_OPTION)
    return value if isinstance(value, str) else None


def prepare(connection: sa.Connection) -> None:
    """Create pgvector's extension and the connection's workspace schema where missing.

    Run before the revisions, in their transaction.  A server without
    pgvector is refused with what to install.
    """
    has_vector = connection.exec_driver_sql("SELECT 1 FROM pg_extension WHERE extname = 'vector'").first()
    if has_vector is None:
        available = connection.exec_driver_sql(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
        ).first()
        if available is None:
            raise SyncError(
                "this PostgreSQL server has no pgvector extension: install pgvector on the server "
                "(https://github.com/pgvector/pgvector#installation), then run again"
            )
        connection.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
    schema = schema_of(connection)
    if schema is not None:
        connection.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
