"""The chunk DB on PostgreSQL + pgvector: the same models and revisions, and a one-way sync.

The SQLite file stays each workspace's source of truth (the Rust core keeps
writing it); PostgreSQL holds a copy per workspace schema that
:func:`sync` keeps up to date, for search across workspaces and machines
(``docs/scaling.md``).  Everything here needs the ``postgres`` extra
(``pip install 'tinycortex_sa[postgres]'``: psycopg 3 and pgvector's
package), imported on first use.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from .engine import create_engine, prepare, require_driver, schema_for, schema_of
from .mirror import CheckResult, SyncResult, TableCheck, TableSync, check, sync
from .vectors import VectorIndex, ensure_vector_index, vector_indexes

__all__ = [
    "CheckResult",
    "PgUpgradeResult",
    "SyncResult",
    "TableCheck",
    "TableSync",
    "VectorIndex",
    "check",
    "create_engine",
    "ensure_vector_index",
    "prepare",
    "require_driver",
    "schema_for",
    "schema_of",
    "sync",
    "upgrade",
    "vector_indexes",
]


@dataclass(frozen=True)
class PgUpgradeResult:
    """What :func:`upgrade` did to one workspace schema."""

    schema: str | None
    before: str | None
    """The schema's revision before (None: it had none)."""
    after: str
    """Its revision now: head."""

    @property
    def changed(self) -> bool:
        return self.before != self.after


def _revision(connection: sa.Connection) -> str | None:
    if not sa.inspect(connection).has_table("alembic_version", schema=schema_of(connection)):
        return None
    return connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def upgrade(url_or_engine: str | sa.URL | sa.Engine, *, schema: str | None = None) -> PgUpgradeResult:
    """Build or upgrade the chunk-DB schema on PostgreSQL, in one transaction.

    Creates pgvector's extension (where the server has it) and the workspace
    schema if missing, then runs the packaged revisions to head; the data
    migrations of the SQLite revisions are no-ops there.  ``url_or_engine``:
    a ``postgresql://`` URL (with ``schema``) or an engine of
    :func:`create_engine`.
    """
    from alembic import command

    from ..schema.upgrade import alembic_config, alembic_isolated

    engine = (
        url_or_engine if isinstance(url_or_engine, sa.Engine) else create_engine(url_or_engine, schema=schema)
    )
    try:
        with engine.begin() as connection:  # env.py creates the extension and the schema (prepare)
            before = _revision(connection)
            with alembic_isolated():
                command.upgrade(alembic_config(connection=connection), "head")
            after = _revision(connection)
    finally:
        if engine is not url_or_engine:
            engine.dispose()
    assert after is not None
    return PgUpgradeResult(schema=schema_of(engine), before=before, after=after)
