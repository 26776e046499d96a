"""Read-only work under ``tinycortex_begin="deferred"``: reads beside another writer, reset after use."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from scenario_support import (
    dbapi,
    rows_outside,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

import tinycortex_sa
from tinycortex_sa import db_path_for

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("init_counter")]


# -- 12. tinycortex_begin="deferred" ------------------------------------------------------------


@pytest.fixture
def reserved_elsewhere(workspace: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection holding a RESERVED lock (BEGIN IMMEDIATE) on the chunk DB."""
    engine = tinycortex_sa.create_engine(workspace, busy_timeout=100)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.exec_driver_sql("INSERT INTO t (v) VALUES ('one')")
    other = sqlite3.connect(db_path_for(workspace), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield other
    finally:
        other.close()


def test_deferred_begin_reads_under_another_writers_reserved_lock(
    workspace: Path, reserved_elsewhere: sqlite3.Connection
) -> None:
    engine = tinycortex_sa.create_engine(workspace)
    deferred = engine.execution_options(tinycortex_begin="deferred")
    with Session(deferred) as session:
        assert session.execute(sa.text("SELECT v FROM t")).scalars().all() == ["one"]
        assert dbapi(session.connection()).in_transaction
    # the default session begins IMMEDIATE and waits busy_timeout=100 ms for the lock, in vain
    start = time.monotonic()
    with pytest.raises(sa_exc.OperationalError, match="database is locked"), Session(engine) as session:
        session.execute(sa.text("SELECT v FROM t"))
    assert 0.05 <= time.monotonic() - start < 5.0
    # after the deferred connection went back, the next checkout is IMMEDIATE again, on every path
    with pytest.raises(sa_exc.OperationalError, match="database is locked"), engine.connect() as conn:
        conn.exec_driver_sql("SELECT v FROM t")
    with Session(deferred) as session:  # and deferred still works when asked for
        assert session.execute(sa.text("SELECT count(*) FROM t")).scalar() == 1
    with pytest.raises(sa_exc.OperationalError, match="database is locked"), Session(engine) as session:
        session.execute(sa.text("SELECT v FROM t"))
    reserved_elsewhere.execute("ROLLBACK")
    with Session(engine) as session:
        session.execute(sa.text("INSERT INTO t (v) VALUES ('two')"))
        session.commit()
    assert rows_outside(workspace) == ["one", "two"]


def test_deferred_begin_is_reset_even_when_the_reader_fails(
    workspace: Path, reserved_elsewhere: sqlite3.Connection
) -> None:
    engine = tinycortex_sa.create_engine(workspace)
    deferred = engine.execution_options(tinycortex_begin="deferred")
    with pytest.raises(sa_exc.OperationalError), deferred.connect() as conn:
        conn.exec_driver_sql("SELECT * FROM no_such_table")
    with pytest.raises(sa_exc.OperationalError, match="database is locked"), engine.connect() as conn:
        conn.exec_driver_sql("SELECT v FROM t")


def test_bad_tinycortex_begin_value_is_rejected_by_name(workspace: Path) -> None:
    engine = tinycortex_sa.create_engine(workspace)
    with (
        pytest.raises(tinycortex_sa.OptionError, match="tinycortex_begin"),
        engine.execution_options(tinycortex_begin="lazy").connect() as conn,
    ):
        conn.exec_driver_sql("SELECT 1")
    with engine.connect() as conn:  # the connection was handed back
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1
