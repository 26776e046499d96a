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
  changes a chunk DB needs; see :func:`_tinycortex_post_configure_engine`.
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

from sqlalchemy import event  # noqa: E402
from sqlalchemy.engine import URL, Engine, make_url  # noqa: E402
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
    if _is_tinycortex(url):
        _tinycortex_post_configure_engine(engine)
    else:
        _stock_post_configure_engine(url, engine, follower_ident)


@provision.post_configure_testing_engine.for_db("sqlite")
def _post_configure_testing_engine(url: URL, engine: Engine, options: dict[str, Any], scope: str) -> None:
    _stock_post_configure_testing_engine(url, engine, options, scope)
    if _is_tinycortex(url):
        _attach_test_schema(engine)


def _tinycortex_post_configure_engine(engine: Engine) -> None:
    """SQLite's hook, minus what does not fit a shared chunk DB.

    * ``test_schema`` is attached, as SQLite's hook does, but to every testing
      engine on the file (:func:`_post_configure_testing_engine`) and only if
      the connection does not have it yet: all engines on a file share one
      connection, so an engine's ``connect`` event may come for a connection
      another engine opened, or not at all for a connection it did not open.
    * SQLite's hook deletes the database file whenever the main engine is
      disposed (after every test class).  Here the file is the run's chunk DB,
      possibly still open in other engines: it stays, for the whole run, and is
      removed with the run's directory.
    """
    _attach_test_schema(engine)


def _attach_test_schema(engine: Engine) -> None:
    attach_path = run_dir() / f"{TINYCORTEX_DRIVER}_{TEST_SCHEMA}.db"

    @event.listens_for(engine, "connect")
    def attach(dbapi_connection: Any, connection_record: Any) -> None:
        attached = {row[1] for row in dbapi_connection.execute("PRAGMA database_list")}
        if TEST_SCHEMA not in attached:
            dbapi_connection.execute(f"ATTACH DATABASE '{attach_path}' AS {TEST_SCHEMA}")
