"""The file handle: leases, who waits, nesting, interrupts, closing, and the fork hand-over."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from tinycortex_sa import NestedCheckoutError
from tinycortex_sa.connection import registry
from tinycortex_sa.connection.handle import Lease


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
