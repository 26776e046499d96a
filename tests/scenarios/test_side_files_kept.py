"""A damaged database and its side files are kept as one group, byte for byte, or not moved at all.

``recover`` never lets SQLite open the file read-write before it is moved (that
rolls a ``-journal`` back, or deletes one beside a file that is not a
database); a check that cannot run is inconclusive, never "healthy"; the group
moves under one free name, or none of it moves.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import db_file, lock_held_elsewhere

import tinycortex_sa
from tinycortex_sa import CorruptDatabaseError, cli
from tinycortex_sa.errors import KeptFileExistsError
from tinycortex_sa.options import DEFAULTS
from tinycortex_sa.sqlite import aside, files, opening

pytestmark = pytest.mark.timeout(60)

#: The first bytes of a rollback journal SQLite wrote (its magic number).
JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")
STAMP = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _group(path: Path) -> dict[str, bytes]:
    """The database file and its side files present now, by suffix, with their bytes."""
    found = {"": path.read_bytes()} if path.exists() else {}
    for suffix in files.SIDE_SUFFIXES:
        side = files.side_file(path, suffix)
        if side.exists():
            found[suffix] = side.read_bytes()
    return found


def _recover(capsys: pytest.CaptureFixture[str], ws: Path, *args: str) -> tuple[int, str, str]:
    code = cli.main(["recover", str(ws), *args])
    tinycortex_sa.invalidate(ws)
    out, err = capsys.readouterr()
    return code, out, err


def _kept(path: Path) -> Path:
    names = path.parent.glob(f"{path.name}.corrupt-*")
    [kept] = [p for p in names if not p.name.endswith(files.SIDE_SUFFIXES)]
    return kept


def _workspace(tmp_path: Path, main: bytes, sides: dict[str, bytes]) -> tuple[Path, Path]:
    ws = tmp_path / "ws"
    path = db_file(ws)
    path.parent.mkdir(parents=True)
    path.write_bytes(main)
    for suffix, data in sides.items():
        files.side_file(path, suffix).write_bytes(data)
    return ws, path


@pytest.mark.parametrize(
    "sides",
    [
        {"-journal": os.urandom(3000)},
        {"-journal": JOURNAL_MAGIC + os.urandom(2000)},
        {"-journal": JOURNAL_MAGIC + os.urandom(2000), "-wal": os.urandom(5000)},
    ],
    ids=["random journal", "journal with SQLite's header", "journal and wal"],
)
def test_recover_keeps_every_side_file_of_a_file_that_is_not_a_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sides: dict[str, bytes]
) -> None:
    ws, path = _workspace(tmp_path, b"these are my notes, not a database\n" * 50, sides)
    before = _group(path)
    code, out, _ = _recover(capsys, ws)
    assert code == 0 and "kept, not deleted" in out
    kept = _kept(path)
    assert _group(kept) == before  # every side file, byte for byte, and no -shm made up
    assert _group(path).keys() <= {"", "-journal"}  # the fresh database, in TRUNCATE mode


def _hot_journal(path: Path) -> None:
    """A database with a hot ``-journal``: a writer killed in the middle of a transaction."""
    code = r"""
import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA journal_mode=TRUNCATE"); c.execute("PRAGMA cache_size=2")
c.execute("CREATE TABLE t(x)")
c.execute("BEGIN"); c.executemany("INSERT INTO t VALUES (?)", [(os.urandom(500),) for _ in range(200)])
c.execute("COMMIT"); c.execute("BEGIN"); c.execute("UPDATE t SET x = randomblob(600)")
os._exit(9)
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", code, str(path)], timeout=60)
    assert files.side_file(path, "-journal").stat().st_size > 0


def test_a_check_that_cannot_run_is_inconclusive_not_healthy(tmp_path: Path) -> None:
    path = tmp_path / "chunks.db"
    _hot_journal(path)
    before = _group(path)
    check = aside.quick_check(path, 100)
    assert not check.healthy and check.damage is None
    assert "interrupted transaction" in str(check) and "could not run" in str(check)
    assert _group(path) == before
    with lock_held_elsewhere(tmp_path / "other.db", "BEGIN EXCLUSIVE"):
        busy = aside.quick_check(tmp_path / "other.db", 50)
    assert busy.inconclusive is not None and "another process holds a lock" in busy.inconclusive


def test_recover_reports_an_inconclusive_check_and_moves_nothing_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = tmp_path / "ws"
    path = db_file(ws)
    _hot_journal(path)
    before = _group(path)
    code, out, err = _recover(capsys, ws)
    assert code == 1 and out == "" and "passed" not in err
    assert "could not run" in err and "neither known to be damaged nor known to be healthy" in err
    assert "--force" in err and err.count("\n") == 1
    assert _group(path) == before and not list(path.parent.glob("*.corrupt-*"))
    code, out, _ = _recover(capsys, ws, "--force")
    assert code == 0 and "could not run" in out and "(--force)" in out
    assert _group(_kept(path)) == before  # the hot journal kept beside its database, not rolled back


def test_the_open_moves_nothing_on_damage_it_cannot_confirm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "chunks.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t(x)")
    conn.close()
    before = _group(path)
    monkeypatch.setattr(aside, "quick_check", lambda p, ms: aside.Check(inconclusive="database is locked"))
    with pytest.raises(CorruptDatabaseError, match="neither kept aside nor changed") as info:
        opening.keep_damaged_aside(
            path, DEFAULTS, aside.Check(damage="page 3 is never used"), sqlite3.DatabaseError("x"),
            lambda s: None, files.lock_directory,
        )  # fmt: skip
    assert "could not run (database is locked)" in str(info.value) and str(path) in str(info.value)
    with pytest.raises(CorruptDatabaseError, match="could not run"):
        opening.keep_damaged_aside(
            path, DEFAULTS, aside.Check(inconclusive="busy"), sqlite3.DatabaseError("x"),
            lambda s: None, files.lock_directory,
        )  # fmt: skip
    assert _group(path) == before and list(tmp_path.iterdir()) == [path]


def test_quarantine_skips_names_taken_by_dangling_links(tmp_path: Path) -> None:
    path = tmp_path / "chunks.db"
    path.write_bytes(b"x" * 4096)
    files.side_file(path, "-journal").write_bytes(b"j" * 512)
    taken = tmp_path / "chunks.db.corrupt-20260102T030405Z-journal"
    taken.symlink_to(tmp_path / "nowhere")
    before = _group(path)
    target = aside.quarantine(path, clock=lambda: STAMP)
    assert target.name == "chunks.db.corrupt-20260102T030405Z-2"
    assert _group(target) == before and not path.exists()
    assert taken.is_symlink() and not (tmp_path / "nowhere").exists()  # the link left as it was


def test_a_group_move_that_fails_half_way_moves_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "chunks.db"
    path.write_bytes(b"x" * 4096)
    files.side_file(path, "-journal").write_bytes(b"j" * 512)
    files.side_file(path, "-wal").write_bytes(b"w" * 512)
    before = _group(path)
    real = files.rename_keeping

    def the_main_file_cannot_move(src: Path, dst: Path) -> None:
        if src == path:  # e.g. another program took the name meanwhile
            raise KeptFileExistsError(str(dst))
        real(src, dst)

    monkeypatch.setattr(files, "rename_keeping", the_main_file_cannot_move)
    with pytest.raises(KeptFileExistsError):
        aside.quarantine(path, clock=lambda: STAMP)
    assert _group(path) == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "chunks.db",
        "chunks.db-journal",
        "chunks.db-wal",
    ]
    monkeypatch.setattr(files, "rename_keeping", real)
    target = aside.quarantine(path, clock=lambda: STAMP)  # a retry keeps the group under one name
    assert _group(target) == before and target.name == "chunks.db.corrupt-20260102T030405Z"


def test_a_move_back_that_fails_too_names_both_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "chunks.db"
    path.write_bytes(b"x" * 4096)
    files.side_file(path, "-journal").write_bytes(b"j" * 512)
    real = files.rename_keeping
    calls: list[Path] = []

    def only_the_first_rename_works(src: Path, dst: Path) -> None:
        calls.append(src)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(files, "rename_keeping", only_the_first_rename_works)
    with pytest.raises(OSError) as info:
        aside.quarantine(path, clock=lambda: STAMP)
    [note] = info.value.__notes__
    kept = tmp_path / "chunks.db.corrupt-20260102T030405Z-journal"
    assert f"{files.side_file(path, '-journal')} is kept as {kept}" in note
    assert kept.read_bytes() == b"j" * 512 and path.read_bytes() == b"x" * 4096  # nothing lost


def test_sqlite_exclusive_lock_waits_for_a_writer_and_holds_writers_off(tmp_path: Path) -> None:
    path = tmp_path / "chunks.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t(x)")
    conn.close()
    busy = pytest.raises(tinycortex_sa.DatabaseBusyError, match="another process")
    with lock_held_elsewhere(path), busy, files.sqlite_exclusive_lock(path, 50):
        pass
    with files.sqlite_exclusive_lock(path, 50):
        probe = subprocess.run(
            [sys.executable, "-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1], timeout=0.05);"
             "c.execute('SELECT count(*) FROM t')", str(path)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert probe.returncode != 0 and "database is locked" in probe.stderr
