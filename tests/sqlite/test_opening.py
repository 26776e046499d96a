from __future__ import annotations

import os
import signal
import sqlite3
import stat
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tinycortex_sa import CorruptDatabaseError, DatabaseBusyError, JournalModeBusyError, OpenError
from tinycortex_sa.connection import registry
from tinycortex_sa.options import DEFAULTS, Options
from tinycortex_sa.sqlite import aside, driver, files, opening


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
    conn = opening.open_initialised(path, DEFAULTS, noop_init)
    conn.close()
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


def test_io_error_gets_one_retry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flaky = FlakyConnect(sqlite_error(5386, "disk I/O error"))
    monkeypatch.setattr(driver, "connect", flaky)
    sleeps: list[float] = []
    conn = opening.open_initialised(tmp_path / "a.db", DEFAULTS, noop_init, sleep=sleeps.append)
    conn.close()
    assert flaky.calls == 2 and sleeps == [0]


def test_io_error_twice_is_reraised_as_open_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = (
        sqlite_error(14, "unable to open database file"),
        sqlite_error(14, "unable to open database file"),
    )
    flaky = FlakyConnect(first, second)
    monkeypatch.setattr(driver, "connect", flaky)
    with pytest.raises(OpenError, match=r"a\.db") as info:
        opening.open_initialised(tmp_path / "a.db", DEFAULTS, noop_init, sleep=lambda s: None)
    assert flaky.calls == 2 and info.value.__cause__ is second


def test_other_errors_are_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flaky = FlakyConnect(sqlite_error(8, "attempt to write a readonly database"))
    monkeypatch.setattr(driver, "connect", flaky)
    with pytest.raises(OpenError, match="owner and mode"):
        opening.open_initialised(tmp_path / "a.db", DEFAULTS, noop_init, sleep=lambda s: None)
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
        aside.fold_wal(path, 50)
    assert wal.read_bytes()[: len(wal_bytes)] == wal_bytes
    reader.close()


def test_fold_wal_when_nobody_holds_the_file(tmp_path: Path) -> None:
    path = crashed_wal_db(tmp_path, 50)
    aside.fold_wal(path, 50)
    wal = path.with_name("a.db-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA journal_mode").fetchone()[0] != "wal"  # the header left WAL mode
    assert check.execute("SELECT count(*) FROM t").fetchone()[0] == 50
    check.close()


def holding_wal_open(path: Path) -> sqlite3.Connection:
    """Another connection with the WAL database open, as a second process opening it at once has."""
    holder = sqlite3.connect(path, isolation_level=None)
    assert holder.execute("SELECT count(*) FROM t").fetchone()[0] > 0
    return holder


def test_a_refused_wal_switch_closes_waits_and_tries_again(tmp_path: Path) -> None:
    path = crashed_wal_db(tmp_path, 40)
    holder = holding_wal_open(path)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:  # the other opener gives up and closes while this one waits
        sleeps.append(seconds)
        if len(sleeps) == 3:
            holder.close()

    conn = opening.open_initialised(path, DEFAULTS, noop_init, sleep=sleep)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "truncate"
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 40
    finally:
        conn.close()
    assert len(sleeps) == 3 and all(0 <= s <= 0.1 for s in sleeps)
    assert not path.with_name("a.db-wal").exists()


def test_a_wal_switch_refused_for_busy_timeout_fails_and_keeps_the_wal(tmp_path: Path) -> None:
    path = crashed_wal_db(tmp_path, 40)
    wal = path.with_name("a.db-wal")
    wal_bytes = wal.read_bytes()
    holder = holding_wal_open(path)
    sleeps: list[float] = []
    options = Options(busy_timeout=500)
    try:
        with pytest.raises(JournalModeBusyError, match="another process has it open") as info:
            opening.open_initialised(path, options, noop_init, sleep=sleeps.append)
        assert wal.read_bytes() == wal_bytes  # (the holder's close folds it in, as SQLite does)
    finally:
        holder.close()
    assert str(path) in str(info.value)
    assert 0.5 <= sum(sleeps) <= 0.6  # busy_timeout of waiting, and at most one wait more


def test_busy_timeout_zero_does_not_wait_for_a_wal_switch(tmp_path: Path) -> None:
    path = crashed_wal_db(tmp_path, 5)
    holder = holding_wal_open(path)
    sleeps: list[float] = []
    try:
        with pytest.raises(JournalModeBusyError):
            opening.open_initialised(path, Options(busy_timeout=0), noop_init, sleep=sleeps.append)
    finally:
        holder.close()
    assert sleeps == []


def test_quarantine_moves_side_files_first_and_keeps_bytes(tmp_path: Path) -> None:
    path = tmp_path / "chunks.db"
    path.write_bytes(b"not a database")
    path.chmod(0o640)
    (tmp_path / "chunks.db-journal").write_bytes(b"journal")
    moved = aside.quarantine(path, clock=lambda: datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert moved.name == "chunks.db.corrupt-20260102T030405Z"
    assert moved.read_bytes() == b"not a database" and moved.stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "chunks.db.corrupt-20260102T030405Z-journal").read_bytes() == b"journal"
    assert not path.exists() and not (tmp_path / "chunks.db-journal").exists()
    path.write_bytes(b"again")
    second = aside.quarantine(path, clock=lambda: datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert second.name == "chunks.db.corrupt-20260102T030405Z-2" and second.read_bytes() == b"again"


def test_corrupt_file_is_quarantined_and_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "chunks.db"
    path.write_bytes(b"x" * 4096)
    conn = opening.open_initialised(path, DEFAULTS, noop_init)
    assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    conn.close()
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("chunks.db.corrupt-")]
    assert len(kept) == 1 and kept[0].read_bytes() == b"x" * 4096


def test_on_corrupt_raise_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "chunks.db"
    path.write_bytes(b"x" * 4096)
    with pytest.raises(CorruptDatabaseError, match="on_corrupt='raise'"):
        opening.open_initialised(path, Options(on_corrupt="raise"), noop_init)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunks.db"]
    assert path.read_bytes() == b"x" * 4096


def test_a_failing_initialiser_rolls_back_and_closes(tmp_path: Path) -> None:
    path = tmp_path / "chunks.db"

    def init(conn: sqlite3.Connection, p: Path, o: Options) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE t(x)")
        raise RuntimeError("half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        opening.open_initialised(path, DEFAULTS, init)
    check = sqlite3.connect(path)
    assert check.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    check.close()


def test_a_file_another_process_quarantined_meanwhile_is_opened_not_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This open fails on the damaged file; before it confirms the damage, another process has
    already kept the file aside and built a new one.  The open uses the new file."""
    path = tmp_path / "chunks.db"
    path.write_bytes(b"x" * 4096)
    real_quick_check = aside.quick_check

    def other_process_got_there_first(p: Path, busy_timeout_ms: int) -> aside.Check:
        moved = aside.quarantine(p)
        fresh = sqlite3.connect(p)
        fresh.execute("CREATE TABLE built_by_the_other(x)")
        fresh.close()
        monkeypatch.setattr(aside, "quick_check", real_quick_check)
        assert moved.read_bytes() == b"x" * 4096
        return real_quick_check(p, busy_timeout_ms)

    monkeypatch.setattr(aside, "quick_check", other_process_got_there_first)
    conn = opening.open_initialised(path, DEFAULTS, noop_init)
    try:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("built_by_the_other",)]
    finally:
        conn.close()
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("chunks.db.corrupt-")]
    assert len(kept) == 1 and kept[0].read_bytes() == b"x" * 4096  # quarantined once, by the other


def test_rename_keeping_never_replaces_a_kept_file(tmp_path: Path) -> None:
    src, dst = tmp_path / "chunks.db", tmp_path / "chunks.db.corrupt-x"
    src.write_bytes(b"new")
    dst.write_bytes(b"kept by another process")
    with pytest.raises(FileExistsError):
        files.rename_keeping(src, dst)
    assert src.read_bytes() == b"new" and dst.read_bytes() == b"kept by another process"
    dst.unlink()
    files.rename_keeping(src, dst)
    assert not src.exists() and dst.read_bytes() == b"new" and dst.stat().st_nlink == 1


def test_rename_keeping_without_hard_links_checks_then_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(*args: Any, **kw: Any) -> None:
        raise PermissionError(1, "Operation not permitted")  # what vfat and some FUSE file systems say

    monkeypatch.setattr(files.os, "link", no_links)
    src, dst = tmp_path / "a", tmp_path / "b"
    src.write_bytes(b"a")
    dst.write_bytes(b"b")
    with pytest.raises(FileExistsError):
        files.rename_keeping(src, dst)
    dst.unlink()
    files.rename_keeping(src, dst)
    assert dst.read_bytes() == b"a" and not src.exists()


def test_a_damaged_file_is_not_moved_while_another_process_moves_files_aside(tmp_path: Path) -> None:
    """The move lock is held elsewhere for longer than busy_timeout: a clear error, nothing moved."""
    path = tmp_path / "chunks.db"
    path.write_bytes(b"x" * 4096)
    sleeps: list[float] = []
    held = registry.move_lock(tmp_path, 1000)  # flock is per open file: this holder excludes the open
    with held, pytest.raises(DatabaseBusyError, match="moving a damaged database") as info:
        opening.open_initialised(path, Options(busy_timeout=200), noop_init, sleep=sleeps.append)
    assert str(tmp_path) in str(info.value)
    assert 0.2 <= sum(sleeps) <= 0.21 and set(sleeps) == {files.LOCK_POLL}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunks.db"]
    assert path.read_bytes() == b"x" * 4096


def test_the_open_waiting_for_the_move_lock_checks_again_and_opens_the_new_file(tmp_path: Path) -> None:
    path = tmp_path / "chunks.db"
    path.write_bytes(b"x" * 4096)
    holder = registry.move_lock(tmp_path, 1000)
    holder.__enter__()
    released: list[Path] = []

    def sleep(seconds: float) -> None:  # meanwhile the holder keeps the file aside and builds a new one
        if not released:
            released.append(aside.quarantine(path))
            sqlite3.connect(path).execute("CREATE TABLE new(x)").connection.close()
            holder.__exit__(None, None, None)

    conn = opening.open_initialised(path, DEFAULTS, noop_init, sleep=sleep)
    try:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("new",)]
    finally:
        conn.close()
    assert [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name] == [released[0].name]
    assert released[0].read_bytes() == b"x" * 4096


def test_a_file_moved_away_just_before_sqlite_opens_it_is_created_0600_not_by_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite would create a missing file with its own mode; the open uses mode=rw and retries."""
    path = tmp_path / "chunks.db"
    sqlite3.connect(path).execute("CREATE TABLE old(x)").connection.close()
    real = driver.connect
    calls: list[str] = []

    def moved_away_first(database: str, **kw: Any) -> sqlite3.Connection:
        calls.append(database)
        if len(calls) == 1:
            path.rename(tmp_path / "kept")  # another process keeps it aside right now
        return real(database, **kw)

    monkeypatch.setattr(driver, "connect", moved_away_first)
    conn = opening.open_initialised(path, DEFAULTS, noop_init, sleep=lambda s: None)
    conn.close()
    assert len(calls) == 2 and all(c.endswith("?mode=rw") for c in calls)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    kept = sqlite3.connect(tmp_path / "kept")
    assert kept.execute("SELECT name FROM sqlite_master").fetchall() == [("old",)]
    kept.close()


def test_a_file_that_disappears_while_it_is_prepared_is_created_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "chunks.db"
    path.write_bytes(b"")
    real = files._writable
    checks: list[Path] = []

    def vanishing(p: Path, mode: int) -> bool:
        checks.append(p)
        if len(checks) == 1:
            p.rename(tmp_path / "kept")
            return real(p, mode)  # False: it is gone
        return real(p, mode)

    monkeypatch.setattr(files, "_writable", vanishing)
    opening.open_initialised(path, DEFAULTS, noop_init).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and (tmp_path / "kept").exists()


def test_paths_that_are_not_utf8_get_a_working_uri(tmp_path: Path) -> None:
    directory = tmp_path / os.fsdecode(b"caf\xe9 #1?")
    conn = opening.open_initialised(directory / "chunks.db", DEFAULTS, noop_init)
    try:
        conn.execute("CREATE TABLE t(x)")
    finally:
        conn.close()
    assert "chunks.db" in os.listdir(directory)
    assert aside.quick_check(directory / "chunks.db", 100).healthy


def test_a_forked_child_does_not_keep_the_move_lock(tmp_path: Path) -> None:
    """flock belongs to the open file, which a child shares: the child must not hold the lock on."""
    import fcntl

    read_end, write_end = os.pipe()
    with registry.move_lock(tmp_path, 1000):
        pid = os.fork()
        if pid == 0:  # the child lives on, as a multiprocessing worker would
            os.close(read_end)
            os.write(write_end, b"up")
            time.sleep(5)
            os._exit(0)
    try:
        assert os.read(read_end, 2) == b"up"
        other = os.open(tmp_path, os.O_RDONLY)  # another process's view: a separate open file
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if the child kept it
        finally:
            os.close(other)
        with registry.move_lock(tmp_path, 0):
            pass
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read_end)
        os.close(write_end)


def test_a_stale_wal_another_process_kept_aside_meanwhile_is_not_moved_again(tmp_path: Path) -> None:
    path = tmp_path / "chunks.db"
    sqlite3.connect(path).execute("CREATE TABLE t(x)").connection.close()
    wal = path.with_name("chunks.db-wal")
    wal.write_bytes(b"stale" * 100)
    holder = registry.move_lock(tmp_path, 1000)
    holder.__enter__()
    moved: list[Path] = []

    def sleep(seconds: float) -> None:  # the other process keeps it aside, then lets go
        if not moved:
            moved.append(path.with_name("chunks.db-wal.stale-by-the-other"))
            os.rename(wal, moved[0])
            holder.__exit__(None, None, None)

    assert aside.set_aside_stale_wal(path, sleep=sleep) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunks.db", "chunks.db-wal.stale-by-the-other"]


def test_a_stale_wal_is_kept_under_a_name_free_for_its_shm_too(tmp_path: Path) -> None:
    path = tmp_path / "chunks.db"
    sqlite3.connect(path).execute("CREATE TABLE t(x)").connection.close()
    path.with_name("chunks.db-wal").write_bytes(b"w" * 100)
    path.with_name("chunks.db-shm").write_bytes(b"s" * 100)
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    path.with_name("chunks.db-shm.stale-20260102T030405Z").write_bytes(b"left by an earlier set-aside")
    target = aside.set_aside_stale_wal(path, clock=lambda: stamp)
    assert target is not None and target.name == "chunks.db-wal.stale-20260102T030405Z-2"
    assert path.with_name("chunks.db-shm.stale-20260102T030405Z-2").read_bytes() == b"s" * 100
    assert (
        path.with_name("chunks.db-shm.stale-20260102T030405Z").read_bytes() == b"left by an earlier set-aside"
    )


def test_a_name_taken_while_moving_aside_is_a_clear_error_and_nothing_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "chunks.db"
    path.write_bytes(b"x" * 4096)
    real = files.rename_keeping

    def another_program_took_the_name(src: Path, dst: Path) -> None:
        dst.write_bytes(b"someone else's file")
        real(src, dst)

    monkeypatch.setattr(files, "rename_keeping", another_program_took_the_name)
    with pytest.raises(OpenError, match="a file of that name appeared meanwhile") as info:
        opening.open_initialised(path, DEFAULTS, noop_init)
    assert "Nothing was overwritten" in str(info.value) and str(path) in str(info.value)
    assert path.read_bytes() == b"x" * 4096
    assert [p.read_bytes() for p in tmp_path.glob("chunks.db.corrupt-*")] == [b"someone else's file"]


def test_a_path_spelled_with_a_leading_double_slash_opens(tmp_path: Path) -> None:
    path = Path("/" + str(tmp_path / "chunks.db"))  # "//tmp/...": the same file on Linux
    assert str(path).startswith("//")
    conn = opening.open_initialised(path, DEFAULTS, noop_init)
    conn.execute("CREATE TABLE t(x)")
    conn.close()
    assert aside.quick_check(path, 100).healthy and (tmp_path / "chunks.db").stat().st_size > 0
