"""The pytest plugin of the dialect suites: SQLAlchemy's testing plugin, set up for a chunk DB.

Loaded by ``pytest.ini`` (``-p dialect_suite_plugin``).  On top of
SQLAlchemy's plugin it:

* creates a fresh temporary directory per run, makes it the working directory
  (SQLAlchemy's and Alembic's fixtures write relative files: Alembic's
  ``scratch/`` environment, the stock SQLite provisioning's attached
  ``test_schema`` file) and removes it at the end;
* defaults ``--dburi`` to ``sqlite+tinycortex:///<that directory>/memory_tree/chunks.db``,
  so every run starts from a new file, which the dialect makes a chunk DB on
  first open.  Another ``--dburi`` may be given (``sqlite+pysqlite:///chunks.db``
  for the stock dialect); a relative path is inside the run's directory;
* supplies the settings SQLAlchemy's plugin reads from ``setup.cfg``
  (``[sqla_testing] requirement_cls``, ``profile_file``, ``[db] default``)
  itself, so no ``setup.cfg`` is needed;
* registers the SQLite provisioning (the dialect is pysqlite's, but
  SQLAlchemy looks provisioning up by the dialect's own package), with the
  changes a chunk DB needs; see :func:`_post_configure_engine`.
"""

from __future__ import annotations

import configparser
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

# before anything imports sqlalchemy.testing (whose package imports its assertions)
pytest.register_assert_rewrite("sqlalchemy.testing.assertions")

import sqlalchemy as sa  # noqa: E402
from sqlalchemy.engine import URL, Engine, make_url  # noqa: E402
from sqlalchemy.testing import config as testing_config  # noqa: E402
from sqlalchemy.testing.plugin import plugin_base  # noqa: E402
from sqlalchemy.testing.plugin import pytestplugin as _sqla_pytestplugin  # noqa: E402

# the hooks and fixtures of SQLAlchemy's plugin
from sqlalchemy.testing.plugin.pytestplugin import *  # noqa: E402, F403

REQUIREMENT_CLS = "dialect_suite_requirements:Requirements"
TINYCORTEX_DRIVER = "tinycortex"
#: The name SQLAlchemy's suites use for the second schema (an attached database on SQLite).
TEST_SCHEMA = "test_schema"

_run_dir: Path | None = None
_invocation_dir: Path | None = None
_chunk_db_before: tuple[frozenset[str], tuple[Any, ...]] | None = None


def run_dir() -> Path:
    """The temporary directory of this run (the working directory while it runs)."""
    assert _run_dir is not None, "set up by pytest_configure"
    return _run_dir


def pytest_configure(config: pytest.Config) -> None:
    global _run_dir, _invocation_dir
    _invocation_dir = Path.cwd()
    _run_dir = Path(tempfile.mkdtemp(prefix="tinycortex-dialect-suite-")).resolve()
    os.chdir(_run_dir)
    if not config.option.dburi:
        config.option.dburi = [f"sqlite+{TINYCORTEX_DRIVER}:///{_run_dir}/memory_tree/chunks.db"]

    _sqla_pytestplugin.pytest_configure(config)

    # what SQLAlchemy's plugin otherwise reads from setup.cfg (read_config() above found none)
    file_config = configparser.ConfigParser()
    file_config.read_dict(
        {
            "db": {"default": config.option.dburi[0]},
            "sqla_testing": {
                "requirement_cls": REQUIREMENT_CLS,
                "profile_file": str(_run_dir / "profiles.txt"),
            },
        }
    )
    plugin_base.file_config = file_config


def pytest_report_header(config: pytest.Config) -> str:
    return f"dialect suite: {config.option.dburi[0]} (a new directory, removed at the end)"


def pytest_sessionstart(session: pytest.Session) -> None:
    global _chunk_db_before
    _sqla_pytestplugin.pytest_sessionstart(session)  # configures the database, opening it once
    if _is_tinycortex(testing_config.db.url):
        _chunk_db_before = _chunk_db_state()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """SQLAlchemy's final clean-up, after checking that the file is still the chunk DB it was."""
    damage = _chunk_db_damage() if _chunk_db_before is not None else None
    _sqla_pytestplugin.pytest_sessionfinish(session)
    if damage:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(f"the run damaged the chunk DB: {damage}", red=True, bold=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _chunk_db_damage() -> str | None:
    """What is gone from the chunk DB since the run began (tables the tests left are no damage)."""
    assert _chunk_db_before is not None
    tables_before, version_before = _chunk_db_before
    tables, version = _chunk_db_state()
    damage = []
    if tables_before - tables:
        damage.append(f"tables dropped: {sorted(tables_before - tables)}")
    if version != version_before:
        damage.append(f"alembic_version {list(version_before)} became {list(version)}")
    return "; ".join(damage) or None


def _chunk_db_state() -> tuple[frozenset[str], tuple[Any, ...]]:
    """The file's tables (the default schema) and its schema version."""
    with testing_config.db.connect() as conn:
        tables = frozenset(sa.inspect(conn).get_table_names())
        version = (
            tuple(conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars())
            if "alembic_version" in tables
            else ()
        )
    return tables, version


def chunk_db_tables() -> frozenset[str]:
    """The tables the file held before any test ran: the chunk DB's (none for another dialect)."""
    return _chunk_db_before[0] if _chunk_db_before is not None else frozenset()


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[Any]) -> None:
    """SQLAlchemy's collection (one class per database), then the exclusions no requirement covers."""
    _sqla_pytestplugin.pytest_collection_modifyitems(session, config, items)
    from dialect_suite_requirements import TEST_EXCLUSIONS

    for item in items:
        cls = getattr(item.cls, "_sa_orig_cls_name", item.cls.__name__)
        params = getattr(getattr(item, "callspec", None), "params", {})
        for exclusion in TEST_EXCLUSIONS:
            if exclusion.matches(cls, item.originalname, params):
                requirement = getattr(testing_config.requirements, exclusion.requirement)
                reasons = requirement.matching_config_reasons(testing_config._current)
                if reasons:
                    item.add_marker(pytest.mark.skip(reason="; ".join(reasons)))


def pytest_unconfigure(config: pytest.Config) -> None:
    _sqla_pytestplugin.pytest_unconfigure(config)
    if _invocation_dir is not None:
        os.chdir(_invocation_dir)
    if _run_dir is not None:
        shutil.rmtree(_run_dir, ignore_errors=True)


# -- provisioning ---------------------------------------------------------------------------
# SQLAlchemy finds a dialect's provisioning hooks by importing ``<dialect package>.provision``
# (here ``tinycortex_sa.engine.provision``, which does not exist) and dispatches them by backend
# name, "sqlite" for this dialect too.  Import SQLite's own hooks, then override the few that
# assume a stock SQLite file; any other driver keeps SQLite's behaviour.
from sqlalchemy.dialects.sqlite import provision as _sqlite_provision  # noqa: E402
from sqlalchemy.testing import provision  # noqa: E402

_stock_generate_driver_url = provision.generate_driver_url.fns["sqlite"]
_stock_post_configure_engine = provision.post_configure_engine.fns["sqlite"]
_stock_post_configure_testing_engine = provision.post_configure_testing_engine.fns["sqlite"]
assert _sqlite_provision is not None


def _is_tinycortex(url: URL | str) -> bool:
    return make_url(url).get_driver_name() == TINYCORTEX_DRIVER


@provision.generate_driver_url.for_db("sqlite")
def _generate_driver_url(url: URL, driver: str, query_str: str) -> URL | None:
    """Keep a tinycortex URL as given.

    SQLite's hook renames the file after the driver (``chunks.db`` in
    ``memory_tree/`` would become ``memory_tinycortex.db`` beside it), for
    runs that test several drivers at once.
    """
    if _is_tinycortex(url) and driver == TINYCORTEX_DRIVER:
        return url
    result: URL | None = _stock_generate_driver_url(url, driver, query_str)
    return result


@provision.post_configure_engine.for_db("sqlite")
def _post_configure_engine(url: URL, engine: Engine, follower_ident: str | None) -> None:
    """SQLite's hook for the main engine, except on a chunk DB.

    SQLite's hook attaches ``test_schema`` on the main engine's ``connect``
    event and deletes the database file whenever that engine is disposed
    (after every test class).  On sqlite+tinycortex the file is the run's
    chunk DB, possibly still open in other engines: it stays for the whole
    run (it goes with the run's directory), and ``test_schema`` is attached by
    :func:`_post_configure_testing_engine`, which SQLAlchemy calls for the
    main engine too.
    """
    if not _is_tinycortex(url):
        _stock_post_configure_engine(url, engine, follower_ident)


@provision.post_configure_testing_engine.for_db("sqlite")
def _post_configure_testing_engine(url: URL, engine: Engine, options: dict[str, Any], scope: str) -> None:
    """SQLite's hook for every testing engine; on a chunk DB, ``test_schema`` attached to each.

    All engines on a file share its one connection, so an engine's
    ``connect`` event may come for a connection another engine opened, or
    never come for the one it uses: each engine attaches ``test_schema`` if
    the connection does not have it yet.
    """
    _stock_post_configure_testing_engine(url, engine, options, scope)
    if _is_tinycortex(url):
        _attach_test_schema(engine)


def _attach_test_schema(engine: Engine) -> None:
    attach_path = run_dir() / f"{TINYCORTEX_DRIVER}_{TEST_SCHEMA}.db"

    @sa.event.listens_for(engine, "connect")
    def attach(dbapi_connection: Any, connection_record: Any) -> None:
        attached = {row[1] for row in dbapi_connection.execute("PRAGMA database_list")}
        if TEST_SCHEMA not in attached:
            dbapi_connection.execute(f"ATTACH DATABASE '{attach_path}' AS {TEST_SCHEMA}")
