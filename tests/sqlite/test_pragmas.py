from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tinycortex_sa import JournalModeBusyError, PragmaError
from tinycortex_sa.options import DEFAULTS, Options
from tinycortex_sa.sqlite.pragmas import apply, read


def connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def test_apply_sets_and_reads_back_every_pragma(tmp_path: Path) -> None:
    conn = connect(tmp_path / "a.db")
    apply(conn, tmp_path / "a.db", Options(busy_timeout=1234))
    assert read(conn) == {
        "busy_timeout": 1234,
        "foreign_keys": 1,
        "synchronous": 2,
        "journal_mode": "truncate",
    }


def test_a_refused_journal_mode_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    other = connect(path)
    other.execute("PRAGMA journal_mode = WAL")
    other.execute("CREATE TABLE t(x)")
    other.execute("BEGIN")
    other.execute("SELECT * FROM t").fetchall()  # holds a read snapshot: mode cannot change
    conn = connect(path)
    with pytest.raises(JournalModeBusyError) as info:
        apply(conn, path, Options(busy_timeout=50))
    err = info.value
    assert (err.pragma, err.asked, err.got) == ("journal_mode", "truncate", "wal")
    assert str(path) in str(err) and "another process" in str(err)
    other.rollback()
    other.close()
    apply(conn, path, Options(busy_timeout=50))
    assert read(conn)["journal_mode"] == "truncate"


def test_a_pragma_inside_a_transaction_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    conn = connect(path)
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("BEGIN")  # foreign_keys cannot change inside a transaction
    with pytest.raises(PragmaError, match="foreign_keys") as info:
        apply(conn, path, DEFAULTS)
    assert (info.value.asked, info.value.got) == ("1", "0")
