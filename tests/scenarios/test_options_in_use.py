"""File-level options through engines and with_connection: conflicts, invalidate, bad values."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from scenario_support import (
    WAIT,
    Thread,
    dbapi,
    handle_of,
    make_table,
    rows_outside,
    the_connection,
    url_for,
)

import tinycortex_sa
from tinycortex_sa import db_path_for, invalidate, with_connection
from tinycortex_sa.connection import registry

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("init_counter")]


# -- 11. options ----------------------------------------------------------------------------------


def test_different_file_level_option_conflicts_until_invalidate(workspace: Path) -> None:
    path = db_path_for(workspace)
    first = tinycortex_sa.create_engine(workspace, busy_timeout=1000)
    with pytest.raises(tinycortex_sa.OptionConflictError, match="busy_timeout"):
        tinycortex_sa.create_engine(workspace, busy_timeout=2000)
    with pytest.raises(tinycortex_sa.OptionConflictError, match="busy_timeout"):
        sa.create_engine(url_for(path, "busy_timeout=2000"))
    with pytest.raises(tinycortex_sa.OptionConflictError, match="busy_timeout"):
        with_connection(workspace, lambda c: None, busy_timeout=2000)
    with pytest.raises(tinycortex_sa.OptionConflictError, match="on_corrupt"):
        tinycortex_sa.create_engine(workspace, on_corrupt="raise")
    # the same value, or leaving it out, works; engine-level checkout_timeout may differ
    same = tinycortex_sa.create_engine(workspace, busy_timeout=1000)
    by_url = sa.create_engine(url_for(path, "busy_timeout=1000"))
    default = tinycortex_sa.create_engine(workspace, checkout_timeout=5)
    for engine in (first, same, by_url, default):
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1000
    assert with_connection(workspace, lambda c: c.execute("PRAGMA busy_timeout").fetchone()[0]) == 1000
    invalidate(workspace)
    changed = tinycortex_sa.create_engine(workspace, busy_timeout=2000)
    with changed.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2000
    with first.connect() as conn:  # older engines stay usable, on the file's new options
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2000
    with pytest.raises(tinycortex_sa.OptionConflictError, match="busy_timeout"):
        tinycortex_sa.create_engine(workspace, busy_timeout=1000)


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda ws: tinycortex_sa.create_engine(ws, bogus_option=1), "bogus_option"),
        (lambda ws: tinycortex_sa.create_engine(ws, busy_timeout="soon"), "busy_timeout"),
        (lambda ws: tinycortex_sa.create_engine(ws, busy_timeout=-1), "busy_timeout"),
        (lambda ws: tinycortex_sa.create_engine(ws, on_corrupt="delete"), "on_corrupt"),
        (lambda ws: tinycortex_sa.create_engine(ws, breaker_threshold=0), "breaker_threshold"),
        (lambda ws: tinycortex_sa.create_engine(ws, auto_migrate="maybe"), "auto_migrate"),
        (lambda ws: sa.create_engine(url_for(db_path_for(ws), "bogus_option=1")), "bogus_option"),
        (lambda ws: sa.create_engine(url_for(db_path_for(ws), "busy_timeout=soon")), "busy_timeout"),
        (lambda ws: sa.create_engine(url_for(db_path_for(ws), "breaker_cooldown=later")), "breaker_cooldown"),
        (lambda ws: sa.create_engine(url_for(db_path_for(ws), "checkout_timeout=-1")), "checkout_timeout"),
        (lambda ws: sa.create_engine(url_for(db_path_for(ws)), busy_timeout="soon"), "busy_timeout"),
        (lambda ws: sa.create_engine(url_for(db_path_for(ws)), on_corrupt="ignore"), "on_corrupt"),
        (lambda ws: with_connection(ws, lambda c: None, bogus_option=1), "bogus_option"),
        (lambda ws: with_connection(ws, lambda c: None, embedding_dim="wide"), "embedding_dim"),
    ],
)
def test_bad_option_is_rejected_by_name(workspace: Path, make: Callable[[Path], Any], name: str) -> None:
    with pytest.raises(tinycortex_sa.OptionError, match=re.escape(repr(name))):
        make(workspace)
    assert registry.existing_handle(db_path_for(workspace)) is None
    assert not db_path_for(workspace).exists()


def test_option_fixed_after_invalidate_honours_checkout_timeout(workspace: Path) -> None:
    """A thread that fixes the file's options after invalidate() must not wait past checkout_timeout."""
    held, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        invalidate(workspace)  # from inside: the close is deferred to checkin
        held.set()
        assert release.wait(WAIT)

    first = Thread(lambda: with_connection(workspace, hold))
    first.start()
    waiter: Thread | None = None
    try:
        assert held.wait(WAIT)
        waiter = Thread(lambda: with_connection(workspace, lambda c: None, checkout_timeout=0.2))
        waiter.start()
        waiter.join(1.5)
        assert not waiter.is_alive(), "blocked beyond checkout_timeout=0.2 fixing options after invalidate()"
        assert isinstance(waiter.error, tinycortex_sa.CheckoutTimeoutError), waiter.error
    finally:
        release.set()
        first.join(WAIT)
        if waiter is not None:
            waiter.join(WAIT)
    assert first.error is None


def test_nested_use_after_invalidate_inside_with_connection_fails_fast(workspace: Path) -> None:
    """invalidate() inside with_connection, then the same thread asks again: an error, never a deadlock."""
    make_table(workspace)
    handle = handle_of(workspace)

    def fn(conn: sqlite3.Connection) -> None:
        invalidate(workspace)
        with_connection(workspace, lambda c: None, busy_timeout=1000)

    worker = Thread(lambda: with_connection(workspace, fn))
    worker.start()
    worker.join(1.0)
    deadlocked = worker.is_alive()
    if deadlocked:  # undo the self-deadlock so that the suite can go on (a Lock may be released by anyone)
        handle.abandon()
        worker.join(WAIT)
    assert not deadlocked, "the thread deadlocked on its own connection lock after invalidate()"
    assert isinstance(worker.error, tinycortex_sa.NestedCheckoutError), worker.error
    assert rows_outside(workspace) == []
    assert with_connection(workspace, lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]) == 0


def test_concurrent_different_options_after_invalidate_conflict(workspace: Path) -> None:
    """Two callers racing to fix a file's options must not both win with different values."""
    held, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        invalidate(workspace)
        held.set()
        assert release.wait(WAIT)

    first = Thread(lambda: with_connection(workspace, hold))
    first.start()
    assert held.wait(WAIT)

    def race(ms: int) -> Callable[[], Any]:
        return lambda: with_connection(
            workspace, lambda c: c.execute("PRAGMA busy_timeout").fetchone(), busy_timeout=ms
        )

    racers = [Thread(race(ms)) for ms in (1000, 2000)]
    for t in racers:
        t.start()
    time.sleep(0.1)  # both are now waiting for the connection
    release.set()
    first.join(WAIT)
    for t in racers:
        t.join(WAIT)
    assert first.error is None
    outcomes = sorted((type(t.error).__name__ if t.error else f"ok:{t.result}") for t in racers)
    winners = [t for t in racers if t.error is None]
    assert len(winners) == 1, f"both callers won with different busy_timeout values: {outcomes}"
    assert isinstance(next(t.error for t in racers if t.error), tinycortex_sa.OptionConflictError)


def test_invalidate_reopens_for_an_engine_too(workspace: Path) -> None:
    engine = tinycortex_sa.create_engine(workspace)
    old = the_connection(workspace)
    invalidate(workspace)
    with pytest.raises(sqlite3.ProgrammingError):
        old.execute("SELECT 1")
    with engine.connect() as conn:
        assert dbapi(conn) is not old
    assert handle_of(workspace).opens == 2
