"""Alembic environment of the TinyCortex chunk DB.

The database comes from, in order: a connection (or engine) handed in through
``config.attributes["connection"]`` (``tinycortex_sa.schema.upgrade.initialise``,
applications, pytest-alembic), ``-x workspace=PATH``, ``$TINYCORTEX_WORKSPACE``, ``-x url=URL``, then
``sqlalchemy.url`` in ``alembic.ini``.  A ``postgresql://`` URL builds the schema
on PostgreSQL, in the schema ``-x schema=NAME`` (else ``$TINYCORTEX_PG_SCHEMA``,
else PostgreSQL's default), through :func:`tinycortex_sa.postgres.create_engine`.
A connection handed in is used as is
(its open transaction, if any, becomes the migration's); otherwise the
engine's connection is opened with the automatic upgrade switched off, so that
``alembic current`` or ``downgrade`` see its schema as it is.  The data
migrations' settings come from ``-x embedding_model=… embedding_dim=…
content_root=…``, else the engine's options, else the Rust defaults.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from logging.config import fileConfig

import sqlalchemy as sa
from alembic import context
from sqlalchemy.dialects.sqlite.base import SQLiteDialect
from sqlalchemy.engine import Connection

from tinycortex_sa.connection import registry
from tinycortex_sa.engine import reflection
from tinycortex_sa.models import Base
from tinycortex_sa.options import DEFAULTS, Options
from tinycortex_sa.schema import filters, portable, progress, purge
from tinycortex_sa.schema import upgrade as migrate

config = context.config
target_metadata = Base.metadata


def _settings_for(connection: Connection) -> migrate.DataSettings:
    """The data-migration settings: as handed in, else ``-x`` over the file's options over defaults."""
    settings = config.attributes.get(migrate.SETTINGS_KEY)
    if isinstance(settings, migrate.DataSettings):
        return settings
    db_path = migrate.database_path(connection)
    given = config.attributes.get(migrate.OPTIONS_KEY)
    handle = registry.existing_handle(db_path)  # the options the engine's first caller fixed
    options = given if isinstance(given, Options) else handle.options if handle else DEFAULTS
    return migrate.data_settings(options, db_path, context.get_x_argument(as_dictionary=True))


def _reflect_fk_actions(connection: Connection) -> None:
    """Let autogenerate see inline ``ON DELETE CASCADE`` (see :mod:`tinycortex_sa.reflection`).

    Patches only this connection's dialect instance, and only if its class
    does not already do it.
    """
    dialect = connection.dialect
    if (
        isinstance(dialect, SQLiteDialect)
        and type(dialect).get_foreign_keys is SQLiteDialect.get_foreign_keys
    ):
        dialect.get_foreign_keys = functools.partial(reflection.get_foreign_keys, dialect)  # type: ignore[method-assign]


def _settle(connection: Connection, settings: migrate.DataSettings) -> None:
    """After a transaction of Alembic's own in which revision 0005 moved folders aside: remove them
    (it committed) or move them back (it failed), by
    :func:`tinycortex_sa.schema.purge.settle_after_transaction`.  Other commands touch nothing.
    """
    if config.attributes.pop(purge.MOVED_KEY, None) is None:
        return
    raw = connection.connection.driver_connection
    if isinstance(raw, sqlite3.Connection):
        purge.settle_after_transaction(raw, settings.content_root)


def run_on(connection: Connection) -> None:
    """Configure Alembic on ``connection`` and run the requested command.

    When the connection was handed in inside a transaction, that transaction
    is the caller's to commit, and the next open through the library removes
    the folders revision 0005 moved aside; otherwise Alembic commits its own,
    and they are removed (or moved back) right after it.  Anything an earlier,
    interrupted run left aside is left to the next open through the library.
    """
    postgresql = connection.dialect.name == "postgresql"  # the data migrations are no-ops there
    own_transaction = not connection.in_transaction()
    if postgresql:
        from tinycortex_sa import postgres

        postgres.require_driver()  # pgvector's type, for reflection
        postgres.prepare(connection)  # the extension and the workspace schema
        if own_transaction:
            connection.commit()  # so that Alembic's transaction below is its own, and commits
    _reflect_fk_actions(connection)
    settings = None if postgresql else _settings_for(connection)
    had = migrate.SETTINGS_KEY in config.attributes
    if settings is not None:
        config.attributes[migrate.SETTINGS_KEY] = settings
    try:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            transactional_ddl=True,
            # an application's tables and the Rust core's stores in the same file are not ours
            include_object=filters.include_chunk_db_objects,
            compare_type=True,
            compare_server_default=True,
            # progress of tinycortex_sa's own upgrades (schema.upgrade.reporting)
            on_version_apply=config.attributes.get(progress.ON_VERSION_APPLY_KEY),
            process_revision_directives=portable.primary_key_nullability,
        )
        try:
            with context.begin_transaction():
                context.run_migrations()
        finally:
            if own_transaction and settings is not None:
                _settle(connection, settings)
    finally:
        if not had:
            config.attributes.pop(migrate.SETTINGS_KEY, None)


def build_engine() -> sa.Engine:
    """An engine from ``-x workspace``, ``$TINYCORTEX_WORKSPACE``, ``-x url`` or ``sqlalchemy.url``."""
    x = context.get_x_argument(as_dictionary=True)
    workspace = x.get("workspace") or os.environ.get("TINYCORTEX_WORKSPACE")
    if workspace:
        import tinycortex_sa

        return tinycortex_sa.create_engine(workspace)
    url = x.get("url") or config.get_main_option("sqlalchemy.url")
    if url and sa.make_url(url).get_backend_name() == "postgresql":
        from tinycortex_sa import postgres

        return postgres.create_engine(url, schema=x.get("schema") or os.environ.get("TINYCORTEX_PG_SCHEMA"))
    if not url:
        from alembic.util import CommandError  # Alembic's command line prints it as one line

        raise CommandError(
            "no chunk DB to migrate: pass -x workspace=PATH, set TINYCORTEX_WORKSPACE, "
            "or set sqlalchemy.url in alembic.ini"
        )
    return sa.create_engine(url)


def run_online() -> None:
    """Use the connection (or engine) handed in, or open one without the automatic upgrade."""
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        run_on(given)
        return
    if given is None and config.config_file_name is not None and config.file_config.has_section("loggers"):
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    engine = given if isinstance(given, sa.Engine) else build_engine()
    try:
        with registry.external_migration(), engine.connect() as connection:
            run_on(connection)
    finally:
        if engine is not given:
            engine.dispose()


if context.is_offline_mode():
    raise RuntimeError(
        "offline (--sql) mode is not supported: the chunk DB revisions inspect the database "
        "(existing columns, PRAGMA user_version) to adopt files the Rust core wrote"
    )
run_online()
