"""SQLite's result codes, by their ``sqlite3`` names, sorted into the families the library acts on."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tinycortex_sa.sqlite import codes


def _error(code: int, cls: type[sqlite3.Error] = sqlite3.OperationalError) -> sqlite3.Error:
    err = cls("x")
    err.sqlite_errorcode = code  # type: ignore[attr-defined]
    return err


def test_real_errors_carry_the_extended_codes_the_predicates_expect(tmp_path: Path) -> None:
    path = tmp_path / "chunks.db"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(sqlite3.DatabaseError) as notadb:
        sqlite3.connect(path).execute("SELECT * FROM sqlite_master")
    assert codes.is_corruption(notadb.value) and codes.code(notadb.value) == sqlite3.SQLITE_NOTADB

    ok = tmp_path / "ok.db"
    holder = sqlite3.connect(ok, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(ok, timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError) as busy:
        other.execute("BEGIN IMMEDIATE")
    assert codes.is_busy(busy.value) and not codes.is_corruption(busy.value)
    holder.close()
    other.close()


@pytest.mark.parametrize(
    ("code", "family"),
    [
        (sqlite3.SQLITE_BUSY, "busy"),
        (sqlite3.SQLITE_BUSY_SNAPSHOT, "busy"),
        (sqlite3.SQLITE_LOCKED_SHAREDCACHE, "busy"),
        (sqlite3.SQLITE_CORRUPT_INDEX, "corruption"),
        (sqlite3.SQLITE_NOTADB, "corruption"),
        (sqlite3.SQLITE_READONLY_DBMOVED, "moved"),
        (sqlite3.SQLITE_FULL, "write"),
        (sqlite3.SQLITE_IOERR_WRITE, "write"),
        (sqlite3.SQLITE_IOERR_FSYNC, "write"),
        (sqlite3.SQLITE_CANTOPEN_ISDIR, "io_open"),
        (sqlite3.SQLITE_IOERR_SHMOPEN, "io_open"),
        (codes.SQLITE_IOERR_IN_PAGE, "io_open"),
        (sqlite3.SQLITE_READONLY_ROLLBACK, "readonly_rollback"),
    ],
)
def test_each_code_is_in_its_family_only(code: int, family: str) -> None:
    err = _error(code, sqlite3.DatabaseError)
    found = {
        "busy": codes.is_busy(err),
        "corruption": codes.is_corruption(err),
        "moved": codes.is_moved(err),
        "write": codes.is_write_failure(err),
        "io_open": codes.is_io_open_error(err),
        "readonly_rollback": codes.is_readonly_rollback(err),
    }
    assert {name for name, yes in found.items() if yes} == {family}


def test_io_in_page_is_sqlite_s_own_number() -> None:
    assert codes.SQLITE_IOERR_IN_PAGE == 8714  # (34 << 8) | SQLITE_IOERR, from sqlite3.h


def test_the_library_s_own_not_a_database_error_is_corruption() -> None:
    err = codes.not_a_database("chunks.db is damaged: file is not a database")
    assert codes.is_corruption(err) and err.sqlite_errorname == "SQLITE_NOTADB"
