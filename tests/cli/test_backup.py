"""``tinycortex-sa backup`` and :func:`tinycortex_sa.backups.backup`: a consistent, private, atomic copy.

The copy is compared with its source row for row; taken while another
process commits in a loop, it holds a prefix of that process's commits and
the writer never waits past its busy_timeout; an existing destination, a
directory this user may not write, and failures injected during the copy
leave no partial file and overwrite nothing.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import copy_fixture, db_file, file_digest, lock_held_elsewhere, schema_snapshot
from reliability.common import damage_a_leaf_the_open_does_not_read, nobody_dir

from tinycortex_sa import backups, cli
from tinycortex_sa.cli import backup as cli_backup
from tinycortex_sa.errors import (
    BackupError,
    DatabaseBusyError,
    DatabaseNotFoundError,
    OptionError,
)
from tinycortex_sa.sqlite import files

pytestmark = pytest.mark.timeout(60)

FIXTURE = "rust-head-populated"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return copy_fixture(FIXTURE, tmp_path / "ws")


def every_row(path: Path) -> dict[str, Any]:
    """Schema, user_version, and every row of every table with SQLite's type of each value."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        rows = {}
        for table in tables:
            cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
            select = ", ".join(f'"{c}", typeof("{c}")' for c in cols)
            rows[table] = sorted(conn.execute(f'SELECT {select} FROM "{table}"').fetchall(), key=repr)
        return {
            "schema": schema_snapshot(conn),
            "user_version": conn.execute("PRAGMA user_version").fetchone()[0],
            "rows": rows,
        }
    finally:
        conn.close()


def pragma(path: Path, name: str) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return str(conn.execute(f"PRAGMA {name}").fetchone()[0])
    finally:
        conn.close()


def listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def source_state(ws: Path) -> dict[str, tuple[str, int]]:
    folder = ws / "memory_tree"
    return {p.name: (file_digest(p), p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()}


# -- the copy ---------------------------------------------------------------------------------------------


def test_backup_equals_the_source_row_for_row_and_is_private(ws: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    before = source_state(ws)
    seen: list[tuple[int, int]] = []
    result = backups.backup(ws, out / "copy.db", progress=lambda copied, total: seen.append((copied, total)))
    dest = out / "copy.db"
    assert result.dest == dest and result.source == db_file(ws).absolute()
    assert listing(out) == ["copy.db"]  # no -journal, no partial file beside it
    assert every_row(dest) == every_row(db_file(ws))
    assert len(every_row(dest)["rows"]["mem_tree_chunks"]) == 200
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert pragma(dest, "quick_check") == "ok" and result.quick_check == "ok"
    assert files.read_header(dest).data[18:20] == b"\x01\x01"  # rollback journal, not WAL
    assert (result.bytes, result.pages) == (dest.stat().st_size, int(pragma(dest, "page_count")))
    assert seen[-1] == (result.pages, result.pages) and result.seconds > 0
    assert source_state(ws) == before  # read only: bytes and mtimes of the database and its -journal


def test_backup_into_a_directory_names_the_file_by_utc_time(ws: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    first = backups.backup(ws, out)
    second = backups.backup(ws, out)  # within the same second: a free name, nothing replaced
    assert re.fullmatch(r"chunks-\d{8}T\d{6}Z\.db", first.dest.name), first.dest
    assert first.dest.parent == out and second.dest != first.dest
    assert listing(out) == sorted([first.dest.name, second.dest.name])
    assert every_row(second.dest) == every_row(first.dest)


def test_a_wal_mode_source_gives_a_rollback_journal_copy(ws: Path, tmp_path: Path) -> None:
    conn = sqlite3.connect(db_file(ws), isolation_level=None)
    try:
        assert conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("DELETE FROM mem_tree_jobs")  # committed to the -wal only
        result = backups.backup(ws, tmp_path / "copy.db")
    finally:
        conn.close()
    assert not files.read_header(result.dest).wal_mode
    assert pragma(result.dest, "journal_mode") == "delete"
    assert every_row(result.dest)["rows"]["mem_tree_jobs"] == []
    assert listing(tmp_path) == ["copy.db", "ws"]


_WRITER = textwrap.dedent(
    """
    import json, sqlite3, sys, time
    path, busy_timeout, commits = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout / 1000)
    conn.execute("PRAGMA journal_mode = TRUNCATE")  # as the Rust core runs
    conn.execute("PRAGMA synchronous = FULL")
    longest, now = 0.0, int(time.time() * 1000)
    for i in range(commits):
        started = time.monotonic()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO mem_tree_chunks (id, source_kind, source_id, owner, timestamp_ms, "
                "time_range_start_ms, time_range_end_ms, content, token_count, seq_in_source, "
                "created_at_ms) VALUES (?, 'chat', 'writer', 'user', ?, ?, ?, ?, 1, ?, ?)",
                (f"w-{i:04d}", now, now, now, f"row {i} " + "x" * 1500, i, now),
            )
            conn.execute(
                "INSERT INTO mem_tree_score (chunk_id, total, token_count_signal, unique_words_signal, "
                "metadata_weight, source_weight, interaction_weight, entity_density, computed_at_ms) "
                "VALUES (?, 1, 1, 1, 1, 1, 1, 1, ?)",
                (f"w-{i:04d}", now),
            )
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            print(json.dumps({"failed_at": i, "error": str(err)}), flush=True)
            sys.exit(1)
        longest = max(longest, time.monotonic() - started)
        if i == 20:
            print("started", flush=True)
        time.sleep(0.004)
    print(json.dumps({"commits": commits, "longest": longest}), flush=True)
    """
)


@pytest.mark.slow
def test_backup_while_another_process_commits_holds_a_prefix_of_its_rows(
    ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backups, "STEP_PAGES", 8)  # many steps, so that commits land between them
    busy_timeout, commits = 5000, 300
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(db_file(ws)), str(busy_timeout), str(commits)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "started"
        seen: list[int] = []

        def slow_destination(copied: int, total: int) -> None:
            seen.append(copied)
            time.sleep(0.002)  # a step every 2 ms or more: commits land between steps

        result = backups.backup(ws, tmp_path / "copy.db", progress=slow_destination)
        still_writing = writer.poll() is None
        report = json.loads(writer.communicate(timeout=60)[0].splitlines()[-1])
    finally:
        if writer.poll() is None:
            writer.kill()
    assert writer.returncode == 0, report
    assert report["commits"] == commits and report["longest"] < busy_timeout / 1000, report
    assert pragma(result.dest, "integrity_check") == "ok"
    conn = sqlite3.connect(f"file:{result.dest}?mode=ro", uri=True)
    try:
        chunks = {r[0] for r in conn.execute("SELECT id FROM mem_tree_chunks WHERE source_id = 'writer'")}
        scores = {r[0] for r in conn.execute("SELECT chunk_id FROM mem_tree_score WHERE chunk_id LIKE 'w-%'")}
    finally:
        conn.close()
    held = len(chunks)
    assert chunks == {f"w-{i:04d}" for i in range(held)}  # a prefix: no commit missing below the last one
    assert scores == chunks  # both rows of each commit, or neither
    assert 21 <= held < commits and still_writing, (held, still_writing)  # taken while the writer wrote
    restarts = sum(later <= earlier for earlier, later in itertools.pairwise(seen))
    assert restarts >= 1 and seen[-1] == result.pages, seen  # the writer's commits restarted the copy


def test_a_commit_between_steps_restarts_the_copy_with_larger_steps(
    ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backups, "STEP_PAGES", 8)
    other = sqlite3.connect(db_file(ws), isolation_level=None)  # another connection: SQLite restarts
    seen: list[int] = []

    def commit_between_steps(copied: int, total: int) -> None:
        seen.append(copied)
        if len(seen) in (2, 4, 6):
            other.execute(
                "INSERT INTO kv_global (key, value_json, updated_at) VALUES (?, '1', 0)", (f"k{len(seen)}",)
            )

    try:
        result = backups.backup(ws, tmp_path / "copy.db", progress=commit_between_steps)
    finally:
        other.close()
    # each commit restarts the copy (SQLite starts again at page 1: 8, 32, 128 reported once more),
    # and each restart makes the steps 4 times larger: 8, 32, 128 pages, then the rest in one step
    assert seen == [8, 16, 8, 32, 32, 128, 128, result.pages]
    assert every_row(result.dest) == every_row(db_file(ws))  # every commit is in the copy


# -- refusals and failures ----------------------------------------------------------------------------


def test_an_existing_destination_is_refused_and_left_untouched(ws: Path, tmp_path: Path) -> None:
    dest = tmp_path / "copy.db"
    dest.write_bytes(b"someone's file")
    with pytest.raises(BackupError, match="already exists") as info:
        backups.backup(ws, dest)
    assert str(dest) in str(info.value) and info.value.dest == dest
    assert dest.read_bytes() == b"someone's file"
    assert listing(tmp_path) == ["copy.db", "ws"]


def test_a_missing_database_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    with pytest.raises(DatabaseNotFoundError, match="no database at") as info:
        backups.backup(tmp_path / "nowhere", tmp_path / "copy.db")
    assert info.value.path == (tmp_path / "nowhere" / "memory_tree" / "chunks.db")
    assert listing(tmp_path) == []


def test_a_file_that_is_not_a_chunk_db_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "ws" / "memory_tree" / "chunks.db"
    db.parent.mkdir(parents=True)
    sqlite3.connect(db).execute("CREATE TABLE notes (x)").connection.close()
    with pytest.raises(BackupError, match="not a complete chunk DB: it lacks the table"):
        backups.backup(tmp_path / "ws", tmp_path / "copy.db")
    assert listing(tmp_path) == ["ws"]


def test_a_destination_directory_that_does_not_exist(ws: Path, tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="create the directory first"):
        backups.backup(ws, tmp_path / "missing" / "copy.db")
    assert listing(tmp_path) == ["ws"]


def test_only_the_busy_timeout_option(ws: Path, tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="one option, busy_timeout"):
        backups.backup(ws, tmp_path / "copy.db", read_only=True)
    with pytest.raises(OptionError, match="busy_timeout"):
        backups.backup(ws, tmp_path / "copy.db", busy_timeout=-1)
    assert listing(tmp_path) == ["ws"]


@pytest.mark.slow
def test_a_lock_held_past_busy_timeout_is_a_busy_error(
    ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with lock_held_elsewhere(db_file(ws), "BEGIN EXCLUSIVE"), pytest.raises(DatabaseBusyError) as info:
        backups.backup(ws, tmp_path / "copy.db", busy_timeout=100)
    assert "busy_timeout=100ms" in str(info.value) and info.value.path == db_file(ws).absolute()
    assert listing(tmp_path) == ["ws"]
    monkeypatch.setattr(backups, "STEP_PAGES", 8)
    with contextlib.ExitStack() as held:

        def lock_it_after_the_first_step(copied: int, total: int) -> None:
            if copied == 8:
                held.enter_context(lock_held_elsewhere(db_file(ws), "BEGIN EXCLUSIVE"))

        with pytest.raises(DatabaseBusyError, match="for longer than busy_timeout=100ms during the copy"):
            backups.backup(ws, tmp_path / "copy.db", progress=lock_it_after_the_first_step, busy_timeout=100)
    assert listing(tmp_path) == ["ws"]


def test_a_failure_in_the_middle_of_the_copy_leaves_no_partial_file(
    ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backups, "STEP_PAGES", 8)
    partial: list[list[str]] = []
    injected = sqlite3.OperationalError("injected")  # the caller's own error, not SQLite's: kept as it is

    def fail_on_the_third_step(copied: int, total: int) -> None:
        partial.append(listing(tmp_path))
        if len(partial) == 3:
            raise injected

    with pytest.raises(sqlite3.OperationalError) as info:
        backups.backup(ws, tmp_path / "copy.db", progress=fail_on_the_third_step)
    assert info.value is injected
    assert partial[-1] == sorted(
        ["ws", f"copy.db.partial-{os.getpid()}", f"copy.db.partial-{os.getpid()}-journal"]
    )
    assert listing(tmp_path) == ["ws"]


def test_a_failed_fsync_leaves_no_partial_file(
    ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(BackupError, match=r"to disk failed: Input/output error\. It was removed"):
        backups.backup(ws, tmp_path / "copy.db")
    assert listing(tmp_path) == ["ws"]


def test_a_destination_created_during_the_copy_is_not_overwritten(
    ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "copy.db"
    real = files.rename_keeping

    def another_process_gets_there_first(src: Path, dst: Path) -> None:
        dst.write_bytes(b"theirs")
        real(src, dst)

    monkeypatch.setattr(files, "rename_keeping", another_process_gets_there_first)
    with pytest.raises(BackupError, match="created while the backup ran") as info:
        backups.backup(ws, dest)
    assert str(dest) in str(info.value)
    assert dest.read_bytes() == b"theirs"
    assert listing(tmp_path) == ["copy.db", "ws"]


def test_a_damaged_source_fails_the_check_and_nothing_is_written(ws: Path, tmp_path: Path) -> None:
    damage_a_leaf_the_open_does_not_read(db_file(ws))
    with pytest.raises(BackupError, match="failed PRAGMA quick_check") as info:
        backups.backup(ws, tmp_path / "copy.db")
    assert "tinycortex-sa doctor" in str(info.value)
    assert listing(tmp_path) == ["ws"]


_AS_NOBODY = textwrap.dedent(
    """
    import json, os, sys
    from tinycortex_sa import backups  # everything is imported before the privileges are dropped
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    try:
        backups.backup(sys.argv[1], sys.argv[2])
        print(json.dumps({"ok": True}))
    except Exception as err:
        print(json.dumps({"ok": False, "type": type(err).__name__, "message": str(err)}))
    """
)


@pytest.fixture
def nobody_base(tmp_path: Path) -> Iterator[Path]:
    base = nobody_dir(tmp_path, "backup")
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="drops privileges to uid 65534, which needs root")
@pytest.mark.parametrize("dest", ["copy.db", "."])
def test_a_read_only_destination_directory_is_refused(nobody_base: Path, dest: str) -> None:
    ws = copy_fixture(FIXTURE, nobody_base / "ws")
    for p in [ws, *ws.rglob("*")]:
        os.chown(p, 65534, 65534)  # the database is nobody's: only the destination is not writable
    out = nobody_base / "read-only"
    out.mkdir(mode=0o555)
    out.chmod(0o555)
    done = subprocess.run(
        [sys.executable, "-c", _AS_NOBODY, str(ws), str(out / dest)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads(done.stdout)
    assert report["ok"] is False and report["type"] == "BackupError", (report, done.stderr)
    assert f"cannot create the backup in {out}: Permission denied" in report["message"]
    assert "give a directory this user may write" in report["message"]
    assert listing(out) == []


# -- the command line -------------------------------------------------------------------------------------


def test_cli_prints_one_line_naming_the_destination_and_its_size(
    ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "copy.db"
    code = cli.main(["backup", str(ws), str(dest)])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""  # not a terminal: no progress line
    (line,) = out.splitlines()
    assert f"to {dest} ({dest.stat().st_size} bytes, " in line and "quick_check ok" in line


def test_cli_error_is_one_line_with_exit_status_3(
    ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "copy.db"
    dest.write_bytes(b"keep")
    code = cli.main(["backup", str(ws), str(dest), "--busy-timeout", "100"])
    out, err = capsys.readouterr()
    assert (code, out) == (3, "")
    (line,) = err.splitlines()
    assert line.startswith(f"tinycortex-sa: error: {dest} already exists") and "--debug" not in line
    assert dest.read_bytes() == b"keep"
    code = cli.main(["backup", str(tmp_path / "nowhere"), str(tmp_path / "other.db")])
    out, err = capsys.readouterr()
    assert code == 3 and err.startswith("tinycortex-sa: error: no database at") and len(err.splitlines()) == 1
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "other.db").exists()


def test_cli_shows_pages_copied_on_a_terminal(
    ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backups, "STEP_PAGES", 64)
    stream = io.StringIO()
    line = cli_backup.run(str(ws), str(tmp_path / "copy.db"), None, stream, live=True)
    painted = stream.getvalue()
    source = db_file(ws).absolute()
    assert f"\r\x1b[2Kbacking up {source}: 64/206 pages" in painted
    assert f"backing up {source}: 206/206 pages" in painted
    assert painted.endswith("\r\x1b[2K")  # the live line is cleared before the result is printed
    assert line.startswith(f"backed up {source} to {tmp_path / 'copy.db'} (")


@pytest.mark.slow
def test_cli_in_a_subprocess(ws: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TINYCORTEX_WORKSPACE"}
    command = [sys.executable, "-m", "tinycortex_sa", "backup", str(ws), str(tmp_path)]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    (name,) = [n for n in listing(tmp_path) if n != "ws"]
    assert done.stdout.startswith(f"backed up {db_file(ws).absolute()} to {tmp_path / name} (")
    again = subprocess.run([*command[:-1], str(tmp_path / name)], capture_output=True, text=True, env=env)
    assert again.returncode == 3 and "Traceback" not in again.stderr and len(again.stderr.splitlines()) == 1
    assert time.monotonic() - started < 30
