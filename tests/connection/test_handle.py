"""The file handle: leases, who waits, nesting, interrupts, closing, and the fork hand-over."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import tinycortex_sa
from tinycortex_sa import CheckoutTimeoutError, NestedCheckoutError
from tinycortex_sa.connection import registry
from tinycortex_sa.connection.lease import Lease


def test_nested_checkout_fails_fast(tmp_path: Path) -> None:
    handle = registry.handle_for(tmp_path / "chunks.db")
    outer = Lease()
    handle.checkout(5, outer)
    try:
        with pytest.raises(NestedCheckoutError, match="already holds"):
            handle.checkout(5, Lease())
    finally:
        handle.checkin(outer)
    again = Lease()
    handle.checkout(0, again)
    handle.checkin(again)


def test_after_fork_the_old_connection_is_kept_alive_not_closed(tmp_path: Path) -> None:
    handle = registry.handle_for(tmp_path / "chunks.db")
    lease = Lease()
    conn = handle.checkout(1, lease)
    handle.checkin(lease)
    generation = handle.generation
    before = __import__("sys").getrefcount(conn)
    handle.after_fork_in_child()  # what os.register_at_fork runs in a child
    assert handle.conn is None and handle.generation == generation + 1
    assert __import__("sys").getrefcount(conn) == before  # our extra reference replaced the handle's
    with pytest.raises(sqlite3.DatabaseError, match="not authorized"):  # refused, but not closed
        conn.execute("SELECT 1")
    lease = Lease()
    assert handle.checkout(1, lease) is not conn
    handle.checkin(lease)
    conn.close()


def test_close_inside_a_checkout_waits_for_checkin(tmp_path: Path) -> None:
    handle = registry.handle_for(tmp_path / "chunks.db")
    lease = Lease()
    conn = handle.checkout(1, lease)
    handle.close()
    assert conn.execute("SELECT 1").fetchone() == (1,)
    handle.checkin(lease)
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")
    assert os.path.exists(tmp_path / "chunks.db")


# -- a checkout belongs to its lease --------------------------------------------------------------


def _engine(tmp_path: Path, **options: object) -> sa.Engine:
    return tinycortex_sa.create_engine(tmp_path / "ws", **options)


def test_a_connection_returned_from_another_thread_frees_the_thread_that_took_it(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    session = Session(engine)
    session.execute(sa.text("SELECT 1"))  # checked out by this thread
    closer = threading.Thread(target=session.close)  # the way FastAPI tears a dependency down
    closer.start()
    closer.join(5)
    with Session(engine) as again:  # this thread is not "already holding" anything
        assert again.execute(sa.text("SELECT 2")).scalar() == 2


def test_a_new_thread_is_never_taken_for_the_holder(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with Session(engine) as session:
                session.execute(sa.text("SELECT 1"))
        except BaseException as err:
            errors.append(err)

    for _ in range(50):  # thread ids are reused as threads end
        thread = threading.Thread(target=work)
        thread.start()
        thread.join(5)
    assert errors == []


def test_waiters_are_served_first_come_first_served(tmp_path: Path) -> None:
    handle = registry.handle_for(tmp_path / "chunks.db")
    first = Lease()
    handle.checkout(5, first)
    order: list[int] = []
    started: list[threading.Thread] = []
    for n in range(5):

        def wait(n: int = n) -> None:
            lease = Lease()
            handle.checkout(5, lease)
            order.append(n)
            handle.checkin(lease)

        thread = threading.Thread(target=wait)
        thread.start()
        started.append(thread)
        deadline = time.monotonic() + 5
        while len(handle._queue) < n + 1 and time.monotonic() < deadline:  # queued in this order
            time.sleep(0.001)
    handle.checkin(first)
    for thread in started:
        thread.join(5)
    assert order == [0, 1, 2, 3, 4]


def _interrupted_checkout(engine: sa.Engine) -> None:
    """What an interrupt right after the pool handed a record over leaves: no connection object wired."""
    engine.pool._do_get()  # the caller (SQLAlchemy's checkout) is gone before it wires the record


def test_a_lease_an_interrupt_orphaned_is_reclaimed_by_the_next_checkout_of_its_thread(
    tmp_path: Path,
) -> None:
    engine = _engine(tmp_path)
    _interrupted_checkout(engine)
    handle = registry.existing_handle(tinycortex_sa.db_path_for(tmp_path / "ws"))
    assert handle is not None and handle.held
    with engine.connect() as conn:  # no NestedCheckoutError, no wait
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1


def test_a_lease_orphaned_in_another_thread_is_reclaimed_by_a_waiter(tmp_path: Path) -> None:
    engine = _engine(tmp_path, checkout_timeout=5)
    thread = threading.Thread(target=_interrupted_checkout, args=(engine,))
    thread.start()
    thread.join(5)
    started = time.monotonic()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    assert time.monotonic() - started < 2  # reclaimed at the waiter's first look, not at the timeout


def _error_in_a_thread(fn: Callable[[], object]) -> BaseException | None:
    caught: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as err:
            caught.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(5)
    return caught[0] if caught else None


def test_a_live_checkout_is_never_taken_for_an_orphan(tmp_path: Path) -> None:
    engine = _engine(tmp_path, checkout_timeout=0.5)
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
        assert isinstance(_error_in_a_thread(engine.connect), CheckoutTimeoutError)
        assert conn.exec_driver_sql("SELECT 2").scalar() == 2
        with pytest.raises(NestedCheckoutError):
            engine.connect()


def test_checkout_timeout_names_the_holder_and_where_it_checked_out(tmp_path: Path) -> None:
    engine = _engine(tmp_path, checkout_timeout=0.2, trace_checkouts=True)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with engine.connect():  # the line named below
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold, name="slow-report")
    holder.start()
    assert held.wait(5)
    try:
        with pytest.raises(CheckoutTimeoutError) as timed_out:
            engine.connect()
    finally:
        release.set()
        holder.join(5)
    message = str(timed_out.value)
    assert "'slow-report'" in message and f"{__file__}:" in message and "with Session(engine)" in message


def test_without_tracing_the_timeout_says_how_to_see_where(tmp_path: Path) -> None:
    handle = registry.handle_for(tmp_path / "chunks.db")
    lease = Lease()
    handle.checkout(1, lease)
    try:
        error = _error_in_a_thread(lambda: handle.checkout(0.05, Lease()))
    finally:
        handle.checkin(lease)
    assert isinstance(error, CheckoutTimeoutError)
    assert "trace_checkouts=True shows where" in str(error) and "MainThread" in str(error)


def test_checkin_of_a_lease_that_holds_nothing_is_ignored(tmp_path: Path) -> None:
    handle = registry.handle_for(tmp_path / "chunks.db")
    mine, stale = Lease(), Lease()
    handle.checkout(1, mine)
    handle.checkin(stale)  # never granted: must not free the connection under its holder
    assert handle.holds(mine)
    handle.checkin(mine)
    handle.checkin(mine)  # twice: ignored
    assert not handle.held
