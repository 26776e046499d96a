from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tinycortex_sa import CorruptDatabaseError, DatabaseBusyError, OpenError, recovery
from tinycortex_sa.options import DEFAULTS, Options


def noop_init(conn: sqlite3.Connection, path: Path, options: Options) -> None:
    pass


class FlakyConnect:
    """A DBAPI connect() that fails with the given errors, then connects for real."""

    def __init__(self, *errors: sqlite3.Error) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self, *args: Any, **kw: Any) -> sqlite3.Connection:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return sqlite3.connect(*args, **kw)


def sqlite_error(code: int, message: str) -> sqlite3.OperationalError:
    err = sqlite3.OperationalError(message)
    err.sqlite_errorcode = code  # type: ignore[attr-defined]
    return err


def test_new_database_and_directory_are_private(tmp_path: Path) -> None:
    path = tmp_path / "ws" / "memory_tree" / "chunks.db"
    conn = recovery.open_initialised(path, DEFAULTS, noop_init)
    conn.close()
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


def test_io_error_gets_one_retry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flaky = FlakyConnect(sqlite_error(5386, "disk I/O error"))
    monkeypatch.setattr(recovery, "connect", flaky)
    sleeps: list[float] = []
    conn = recovery.open_initialised(tmp_path / "a.db", DEFAULTS, noop_init, sleep=sleeps.append)
    conn.close()
    assert flaky.calls == 2 and sleeps == [0]


def test_io_error_twice_is_reraised_as_open_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = (
        sqlite_error(14, "unable to open database file"),
        sqlite_error(14, "unable to open database file"),
    )
    flaky = FlakyConnect(first, second)
    monkeypatch.setattr(recovery, "connect", flaky)
    with pytest.raises(OpenError, match=r"a\.db") as info:
        recovery.open_initialised(tmp_path / "a.db", DEFAULTS, noop_init, sleep=lambda s: None)
    assert flaky.calls == 2 and info.value.__cause__ is second


def test_other_errors_are_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flaky = FlakyConnect(sqlite_error(8, "attempt to write a readonly database"))
    monkeypatch.setattr(recovery, "connect", flaky)
    with pytest.raises(OpenError, match="owner and mode"):
        recovery.open_initialised(tmp_path / "a.db", DEFAULTS, noop_init, sleep=lambda s: None)
    assert flaky.calls == 1


def crashed_wal_db(tmp_path: Path, rows: int) -> Path:
    """A WAL database whose rows live only in its -wal, as a crashed writer leaves it."""
    live = tmp_path / "live"
    live.mkdir()
    writer = sqlite3.connect(live / "a.db", isolation_level=None)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("CREATE TABLE t(x)")
    writer.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(rows)])
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for name in ("a.db", "a.db-wal"):
        (crashed / name).write_bytes((live / name).read_bytes())
    writer.close()
    return crashed / "a.db"


def test_fold_wal_checkpoints_instead_of_deleting(tmp_path: Path) -> None:
    path = crashed_wal_db(tmp_path, 50)
    wal = path.with_name("a.db-wal")
    wal_bytes = wal.read_bytes()
    reader = sqlite3.connect(path)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM t").fetchone()[0] == 50  # pins the wal
    with pytest.raises(DatabaseBusyError, match="retry"):
        recovery.fold_wal(path, 50)
    assert wal.read_bytes()[: len(wal_bytes)] == wal_bytes
    reader.close()


def test_fold_wal_when_nobody_holds_the_file(tmp_path: Path) -> None:
    path = crashed_wal_db(tmp_path, 50)
    recovery.fold_wal(path, 50)
    wal = path.with_name("a.db-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA journal_mode").fetchone()[0] != "wal"  # the header left WAL mode
    assert check.execute("SELECT count(*) FROM t").fetchone()[0] == 50
    check.close()


def test_quarantine_moves_side_files_first_and_keeps_bytes(tmp_path: Path) -> None:
    path = tmp_path / "chunks.db"
    path.write_bytes(b"not a database")
    path.chmod(0o640)
    (tmp_path / "chunks.db-journal").write_bytes(b"journal")
    moved = recovery.quarantine(path, clock=lambda: datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert moved.name == "chunks.db.corrupt-20260102T030405Z"
    assert moved.read_bytes() == b"not a database" and moved.stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "chunks.db.corrupt-20260102T030405Z-journal").read_bytes() == b"journal"
    assert not path.exists() and not (tmp_path / "chunks.db-journal").exists()
    path.write_bytes(b"again")
    second = recovery.quarantine(path, clock=lambda: datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert second.name == "chunks.db.corrupt-20260102T030405Z-2" and second.read_bytes() == b"again"


def test_corrupt_file_is_quarantined_and_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "chunks.db"
    path.write_bytes(b"x" * 4096)
    conn = recovery.open_initialised(path, DEFAULTS, noop_init)
    assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    conn.close()
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("chunks.db.corrupt-")]
    assert len(kept) == 1 and kept[0].read_bytes() == b"x" * 4096


def test_on_corrupt_raise_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "chunks.db"
    path.write_bytes(b"x" * 4096)
    with pytest.raises(CorruptDatabaseError, match="on_corrupt='raise'"):
        recovery.open_initialised(path, Options(on_corrupt="raise"), noop_init)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunks.db"]
    assert path.read_bytes() == b"x" * 4096


def test_a_failing_initialiser_rolls_back_and_closes(tmp_path: Path) -> None:
    path = tmp_path / "chunks.db"

    def init(conn: sqlite3.Connection, p: Path, o: Options) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE t(x)")
        raise RuntimeError("half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        recovery.open_initialised(path, DEFAULTS, init)
    check = sqlite3.connect(path)
    assert check.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    check.close()
