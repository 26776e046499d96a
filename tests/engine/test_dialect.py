from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.orm import Session

import tinycortex_sa
from tinycortex_sa import OptionError
from tinycortex_sa.connection import registry
from tinycortex_sa.engine.dialect import TinyCortexDialect
from tinycortex_sa.engine.pool import TinyCortexPool


def url_for(ws: Path, query: str = "") -> str:
    return f"sqlite+tinycortex:///{tinycortex_sa.db_path_for(ws)}{query}"


def test_entry_point_works_without_importing_the_package(workspace: Path) -> None:
    code = (
        "import sys, sqlalchemy as sa\n"
        f"e = sa.create_engine({url_for(workspace)!r})\n"
        "with e.connect() as c: print(c.exec_driver_sql('PRAGMA journal_mode').scalar())\n"
        "print(sorted(m for m in sys.modules if m.startswith('tinycortex_sa'))[:1])\n"
        "print(type(e.dialect).__module__, e.dialect.name, type(e.pool).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [
        "truncate",
        "['tinycortex_sa']",
        "tinycortex_sa.engine.dialect",
        "sqlite",
        "TinyCortexPool",
    ]


def test_dialect_is_a_pysqlite_dialect(workspace: Path) -> None:
    engine = sa.create_engine(url_for(workspace))
    assert isinstance(engine.dialect, SQLiteDialect_pysqlite) and engine.dialect.name == "sqlite"
    assert TinyCortexDialect.supports_statement_cache is True
    assert isinstance(engine.pool, TinyCortexPool)


def test_url_query_options_are_converted(workspace: Path) -> None:
    engine = sa.create_engine(
        url_for(workspace, "?busy_timeout=2500&breaker_threshold=5&checkout_timeout=1.5")
    )
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2500
    handle = registry.existing_handle(tinycortex_sa.db_path_for(workspace))
    assert handle is not None and handle.options.breaker_threshold == 5
    assert engine.dialect.tinycortex_checkout_timeout == 1.5  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("?busy_timout=1", "busy_timout"),
        ("?busy_timeout=soon", "busy_timeout"),
        ("?on_corrupt=drop", "on_corrupt"),
    ],
)
def test_bad_url_options_are_rejected_by_name(workspace: Path, query: str, named: str) -> None:
    with pytest.raises(OptionError, match=named):
        sa.create_engine(url_for(workspace, query))


def test_keyword_typos_are_rejected(workspace: Path) -> None:
    with pytest.raises(TypeError, match="busy_timout"):
        sa.create_engine(url_for(workspace), busy_timout=5)
    with pytest.raises(OptionError, match="busy_timout"):
        tinycortex_sa.create_engine(workspace, busy_timout=5)
    with pytest.raises(OptionError, match="busy_timeout"):
        sa.create_engine(url_for(workspace, "?busy_timeout=10"), busy_timeout=20)


def test_pool_and_path_misuse_is_rejected(workspace: Path) -> None:
    with pytest.raises(OptionError, match="poolclass"):
        sa.create_engine(url_for(workspace), poolclass=sa.pool.QueuePool)
    for bad in ("sqlite+tinycortex://", "sqlite+tinycortex:///:memory:"):
        with pytest.raises(OptionError, match="path of a chunk DB"):
            sa.create_engine(bad)


def test_writes_begin_immediate(workspace: Path) -> None:
    engine = tinycortex_sa.create_engine(workspace)
    engine.connect().close()  # creates the database
    other = sqlite3.connect(tinycortex_sa.db_path_for(workspace), timeout=0, isolation_level=None)
    with engine.begin() as conn:
        conn.exec_driver_sql("SELECT 1").scalar()  # a read only: BEGIN IMMEDIATE still took the write lock
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")
    other.rollback()
    other.close()


def test_ddl_and_savepoints_are_transactional(workspace: Path) -> None:
    engine = tinycortex_sa.create_engine(workspace)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t(x)")
        raise RuntimeError
    assert not sa.inspect(engine).has_table("t")
    with Session(engine) as session:
        session.execute(sa.text("CREATE TABLE t(x)"))
        session.execute(sa.text("INSERT INTO t VALUES (1)"))
        nested = session.begin_nested()
        session.execute(sa.text("INSERT INTO t VALUES (2)"))
        nested.rollback()
        session.commit()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT x FROM t").scalars().all() == [1]


def test_deferred_begin_for_read_only_work(workspace: Path) -> None:
    engine = tinycortex_sa.create_engine(workspace)
    engine.connect().close()  # creates the database
    other = sqlite3.connect(tinycortex_sa.db_path_for(workspace), timeout=0, isolation_level=None)
    with engine.connect().execution_options(tinycortex_begin="deferred") as conn:
        conn.exec_driver_sql("SELECT 1").scalar()
        other.execute("BEGIN IMMEDIATE")  # a deferred reader does not block a writer
        other.rollback()
        conn.rollback()
    with engine.connect() as conn:  # back to IMMEDIATE on the next checkout
        conn.exec_driver_sql("SELECT 1").scalar()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    other.close()
    with pytest.raises(OptionError, match="tinycortex_begin"), engine.connect() as conn:
        conn.execution_options(tinycortex_begin="later")


def _in_transaction(conn: sa.Connection) -> bool:
    return bool(conn.connection.dbapi_connection.in_transaction)  # type: ignore[union-attr]


def _write_locked_elsewhere(workspace: Path) -> bool:
    """Whether another connection holds the write lock (a plain BEGIN IMMEDIATE would wait)."""
    other = sqlite3.connect(tinycortex_sa.db_path_for(workspace), timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.rollback()
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        other.close()


def test_autocommit_engine_runs_statements_without_begin_and_vacuum_works(workspace: Path) -> None:
    engine = tinycortex_sa.create_engine(workspace, isolation_level="AUTOCOMMIT")
    writer = tinycortex_sa.create_engine(workspace)  # the same shared connection
    with engine.connect() as conn:
        assert conn.get_isolation_level() == "AUTOCOMMIT"
        conn.exec_driver_sql("CREATE TABLE t (x)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        assert not _in_transaction(conn) and not _write_locked_elsewhere(workspace)
        conn.exec_driver_sql("VACUUM")  # refused inside a transaction
    with writer.connect() as conn:  # another engine on the same connection still begins IMMEDIATE
        conn.exec_driver_sql("SELECT count(*) FROM t").scalar()
        assert _in_transaction(conn) and _write_locked_elsewhere(workspace)
        conn.rollback()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 1
        assert not _in_transaction(conn)


def test_autocommit_for_one_connection_ends_with_its_checkout(workspace: Path) -> None:
    engine = tinycortex_sa.create_engine(workspace)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.exec_driver_sql("VACUUM")
        assert not _in_transaction(conn)
    with engine.connect() as conn:
        assert conn.get_isolation_level() == "SERIALIZABLE"
        conn.exec_driver_sql("SELECT 1").scalar()
        assert _in_transaction(conn)
    assert set(engine.dialect.get_isolation_level_values(None)) == {  # type: ignore[arg-type]
        "AUTOCOMMIT",
        "READ UNCOMMITTED",
        "SERIALIZABLE",
    }


def test_skip_autocommit_rollback_still_rolls_back_a_real_transaction(workspace: Path) -> None:
    engine = tinycortex_sa.create_engine(workspace, skip_autocommit_rollback=True)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x)")
    with engine.connect() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        conn.rollback()  # was skipped: the driver's isolation_level=None looked like autocommit
        assert not _in_transaction(conn) and not _write_locked_elsewhere(workspace)
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0


@pytest.mark.parametrize("how", ["keyword", "url"])
def test_a_read_only_engine_never_takes_the_write_lock_and_refuses_writes(workspace: Path, how: str) -> None:
    writer = tinycortex_sa.create_engine(workspace)
    with writer.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    path = tinycortex_sa.db_path_for(workspace)
    reader = (
        tinycortex_sa.create_engine(workspace, read_only=True)
        if how == "keyword"
        else sa.create_engine(f"sqlite+tinycortex:///{path}?read_only=true")
    )
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the write lock: reads go on
    with reader.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 1
    other.rollback()
    with reader.connect() as conn:
        conn.exec_driver_sql("SELECT count(*) FROM t").scalar()
        assert not _write_locked_elsewhere(workspace)
        before = path.read_bytes()
        with pytest.raises(tinycortex_sa.ReadOnlyError, match=str(path)) as refused:
            conn.exec_driver_sql("INSERT INTO t VALUES (2)")
        assert isinstance(refused.value, sa.exc.OperationalError)
        assert path.read_bytes() == before
    with writer.begin() as conn:  # the shared connection writes again for a writing engine
        conn.exec_driver_sql("INSERT INTO t VALUES (3)")
    with reader.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 2
    other.close()
