from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import tinycortex_sa
from tinycortex_sa.connection import registry
from tinycortex_sa.engine.pool import TinyCortexPool


def test_dispose_keeps_event_listeners(workspace: Path) -> None:
    engine = tinycortex_sa.create_engine(workspace)
    checkouts: list[Any] = []
    sa.event.listen(engine, "checkout", lambda dbapi_conn, rec, proxy: checkouts.append(dbapi_conn))
    with engine.connect():
        pass
    engine.dispose()  # recreate() must hand the dispatch over
    assert isinstance(engine.pool, TinyCortexPool)
    with engine.connect():
        pass
    assert len(checkouts) == 2


def test_status_and_generation_follow_the_handle(workspace: Path) -> None:
    engine = tinycortex_sa.create_engine(workspace)
    with engine.connect() as conn:
        first = conn.connection.dbapi_connection
        assert "held" in engine.pool.status()
    assert "idle" in engine.pool.status()
    tinycortex_sa.invalidate(workspace)  # the handle opens a new connection; the pool rewraps it
    with engine.connect() as conn:
        second = conn.connection.dbapi_connection
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    assert second is not first
    handle = registry.existing_handle(tinycortex_sa.db_path_for(workspace))
    assert handle is not None and handle.opens == 2


def test_connect_events_fire_once_per_new_connection(workspace: Path) -> None:
    engine = tinycortex_sa.create_engine(workspace)
    connects: list[Any] = []
    sa.event.listen(engine, "connect", lambda dbapi_conn, rec: connects.append(dbapi_conn))
    for _ in range(3):
        with engine.connect():
            pass
    assert len(connects) == 1


def test_pool_wide_invalidation_reopens_the_shared_connection(workspace: Path) -> None:
    engine = tinycortex_sa.create_engine(workspace)
    with engine.connect() as conn:
        first = conn.connection.dbapi_connection
    # what SQLAlchemy does after a disconnect error: every older record is recycled at checkout
    engine.pool._invalidate_time = time.time() + 60
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        second = conn.connection.dbapi_connection
    assert second is not first
    with pytest.raises(sqlite3.ProgrammingError):
        first.execute("SELECT 1")  # SQLAlchemy closed the old one through the handle
    assert tinycortex_sa.with_connection(workspace, lambda c: c) is second


def test_a_detached_connection_is_given_up_not_shared(workspace: Path) -> None:
    engine = tinycortex_sa.create_engine(workspace)
    conn = engine.connect()
    detached = conn.connection.dbapi_connection
    conn.detach()  # SQLAlchemy: the caller now owns this DBAPI connection
    with engine.connect() as other:  # must not hand out the same connection
        assert other.connection.dbapi_connection is not detached
        assert other.exec_driver_sql("SELECT 1").scalar() == 1
    conn.close()  # closes the detached connection only
    with engine.connect() as other:
        assert other.exec_driver_sql("SELECT 1").scalar() == 1


def test_an_engine_reapplies_its_options_after_invalidate(workspace: Path) -> None:
    engine = tinycortex_sa.create_engine(workspace, busy_timeout=4321, on_corrupt="raise")
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    tinycortex_sa.invalidate(workspace)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 4321
    handle = registry.existing_handle(tinycortex_sa.db_path_for(workspace))
    assert handle is not None and handle.options.on_corrupt == "raise"
