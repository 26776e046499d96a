"""Files that are not ours are never opened, moved, replaced or adopted.

Anything but a regular file at the database's path (a device node, a FIFO, a
directory, a link to one of them) is a typed error naming the path, with
nothing changed and nothing left blocking; another application's SQLite
database is refused before anything touches it.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import tinycortex_sa
from tinycortex_sa import ForeignDatabaseError, NotAFileError, OpenError

pytestmark = pytest.mark.timeout(20)  # a FIFO opened for reading would block forever


def _db(tmp_path: Path) -> tuple[Path, Path]:
    ws = tmp_path / "ws"
    path = tinycortex_sa.db_path_for(ws)
    path.parent.mkdir(parents=True)
    return ws, path


def _listing(directory: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.lstat().st_mode, p.lstat().st_ino) for p in directory.iterdir()}


def _device(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 7))  # what /dev/full is


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
@pytest.mark.parametrize("how", ["at the path", "behind a symbolic link"])
def test_a_device_node_is_refused_and_left_where_it_is(tmp_path: Path, how: str) -> None:
    ws, path = _db(tmp_path)
    if how == "at the path":
        _device(path)
    else:
        _device(tmp_path / "full")
        path.symlink_to(tmp_path / "full")
    before = _listing(path.parent), _listing(tmp_path)
    with pytest.raises(NotAFileError, match="character device") as refused:
        tinycortex_sa.with_connection(ws, lambda c: None)
    message = str(refused.value).lower()
    assert isinstance(refused.value, OpenError) and "nothing was opened, moved or changed" in message
    engine = tinycortex_sa.create_engine(ws)
    with pytest.raises(NotAFileError):
        engine.connect()
    engine.dispose()
    assert (_listing(path.parent), _listing(tmp_path)) == before  # not renamed, nothing created


def test_a_fifo_is_refused_at_once_by_the_library_and_the_command_line(tmp_path: Path) -> None:
    ws, path = _db(tmp_path)
    os.mkfifo(path)
    before = _listing(path.parent)
    with pytest.raises(NotAFileError, match="a FIFO"):
        tinycortex_sa.with_connection(ws, lambda c: None)
    for command in ("status", "doctor", "recover", "upgrade"):
        done = subprocess.run(
            [sys.executable, "-m", "tinycortex_sa", command, str(ws)],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
        assert done.returncode != 0, (command, done.stdout)
        assert "FIFO" in done.stderr and done.stderr.count("\n") == 1, (command, done.stderr)
    assert _listing(path.parent) == before


def test_a_directory_at_the_path_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    ws, path = _db(tmp_path)
    path.mkdir()
    with pytest.raises(NotAFileError, match="directory") as refused:
        tinycortex_sa.with_connection(ws, lambda c: None)
    assert "move it away" in str(refused.value)
    assert sorted(p.name for p in path.parent.iterdir()) == ["chunks.db"] and path.is_dir()


@pytest.mark.parametrize("journal_mode", ["DELETE", "WAL"])
def test_another_applications_database_is_refused_and_left_byte_identical(
    tmp_path: Path, journal_mode: str
) -> None:
    ws, path = _db(tmp_path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode = {journal_mode}")
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute("INSERT INTO invoices (total) VALUES (12.5)")
    if journal_mode == "WAL":
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    for side in path.parent.glob("chunks.db-*"):
        side.unlink()  # a clean file, as the other application leaves it
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ForeignDatabaseError, match="invoices") as refused:
        tinycortex_sa.with_connection(ws, lambda c: None)
    assert str(path) in str(refused.value)
    rows = sqlite3.connect(path).execute("SELECT id, total FROM invoices").fetchall()
    assert rows == [(1, 12.5)]  # its data, untouched
    names = {p.name for p in path.parent.iterdir()} - {"chunks.db-journal"}  # TRUNCATE's empty journal
    assert names == {"chunks.db"}
    if journal_mode == "DELETE":
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest  # byte-identical


def test_an_empty_sqlite_database_is_still_adopted_as_new(tmp_path: Path) -> None:
    ws, path = _db(tmp_path)
    sqlite3.connect(path).execute("PRAGMA user_version = 0").connection.close()
    assert tinycortex_sa.with_connection(
        ws,
        lambda c: c.execute("SELECT count(*) FROM sqlite_master WHERE name = 'mem_tree_chunks'").fetchone(),
    ) == (1,)
