"""The database file as a file: its header, side-file names, URIs, and moves that never replace."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tinycortex_sa.sqlite import aside, files


def _database(path: Path, journal_mode: str) -> Path:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode = {journal_mode}")
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    return path


def _with_versions(path: Path, write: int, read: int) -> Path:
    data = bytearray(path.read_bytes())
    data[18], data[19] = write, read
    path.write_bytes(bytes(data))
    return path


def test_the_header_of_a_wal_and_a_rollback_database(tmp_path: Path) -> None:
    assert files.read_header(_database(tmp_path / "wal.db", "WAL")).wal_mode
    rollback = files.read_header(_database(tmp_path / "truncate.db", "TRUNCATE"))
    assert rollback.is_sqlite and not rollback.wal_mode and rollback.problem is None


@pytest.mark.parametrize(
    ("write", "read", "wal"),
    [(2, 2, True), (1, 2, True), (2, 1, False), (1, 1, False)],
)
def test_wal_mode_is_what_sqlite_itself_tests_the_read_version(
    tmp_path: Path, write: int, read: int, wal: bool
) -> None:
    """SQLite opens a file in WAL mode when header byte 19 (the read version) is 2, whatever byte 18 says.

    One definition for the open path (stale ``-wal`` detection) and ``doctor``: they once disagreed
    (either byte vs both bytes) on the mixed headers.
    """
    path = _with_versions(_database(tmp_path / "chunks.db", "TRUNCATE"), write, read)
    assert files.read_header(path).wal_mode is wal
    (tmp_path / "chunks.db-wal").write_bytes(b"w" * 64)
    assert (aside.stale_wal_reason(path) is None) is wal  # a -wal beside a WAL database is folded in


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", None),
        (b"SQLite format 3\x00" + b"\x00" * 84, None),
        (b"SQLite", "file is not a database"),
        (b"this is text, not a database\n", "file is not a database"),
    ],
)
def test_header_problems_are_seen_before_sqlite_opens_the_file(
    tmp_path: Path, data: bytes, problem: str | None
) -> None:
    path = tmp_path / "chunks.db"
    path.write_bytes(data)
    assert files.read_header(path).problem == problem


def test_a_missing_file_has_an_empty_header(tmp_path: Path) -> None:
    header = files.read_header(tmp_path / "absent.db")
    assert header.empty and not header.is_sqlite and header.problem is None


def test_file_uris_open_absolute_double_slash_and_non_utf8_paths(tmp_path: Path) -> None:
    odd = tmp_path / "caf\udce9"  # a byte that is not UTF-8, as os.fsdecode gives it
    odd.mkdir()
    for path in [tmp_path / "a b#?.db", odd / "chunks.db", Path("//" + str(tmp_path).lstrip("/")) / "c.db"]:
        uri = files.file_uri(path, "rwc")
        assert uri.startswith("file:///") and uri.endswith("?mode=rwc")
        sqlite3.connect(uri, uri=True).close()
        assert path.exists()
    assert files.file_uri(Path("rel/chunks.db"), "ro") == "file:rel/chunks.db?mode=ro"


def test_side_files_are_the_existing_ones_in_move_order(tmp_path: Path) -> None:
    path = tmp_path / "chunks.db"
    for suffix in ("-shm", "-journal"):
        files.side_file(path, suffix).write_bytes(b"x")
    assert files.side_files(path) == [tmp_path / "chunks.db-journal", tmp_path / "chunks.db-shm"]
