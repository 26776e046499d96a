"""The ``tinycortex-sa`` command line, used the way an operator would (issue 6, items 1-2).

A few runs go through ``python -m tinycortex_sa`` in a subprocess (exit
status, stdout/stderr, no traceback); the rest call :func:`tinycortex_sa.cli.main`
in-process.  ``status`` and ``doctor`` must leave every file byte for byte
and mtime for mtime as they found it, even a Rust-core file behind head, a
corrupt one, or one with a hot journal.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    alembic_revision,
    copy_fixture,
    db_file,
    lock_held_elsewhere,
    open_workspace,
    raw,
    user_version,
)

from tinycortex_sa import cli
from tinycortex_sa.cli import repair
from tinycortex_sa.connection import registry
from tinycortex_sa.schema.version import HEAD
from tinycortex_sa.sqlite import aside

Snapshot = dict[str, tuple[bytes, int]]


def snapshot(ws: Path, skip: tuple[str, ...] = ()) -> Snapshot:
    """Bytes and mtime of every file under ``memory_tree`` (which also pins the listing)."""
    folder = ws / "memory_tree"
    return {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.endswith(skip)
    }


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m tinycortex_sa ARGS`` as an operator types it."""
    env = {k: v for k, v in os.environ.items() if k != "TINYCORTEX_WORKSPACE"}
    return subprocess.run(
        [sys.executable, "-m", "tinycortex_sa", *args], capture_output=True, text=True, timeout=120, env=env
    )


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``cli.main(args)`` in-process: exit status, stdout, stderr."""
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def at_head(tmp_path: Path, fixture: str = "rust-0.1.1-populated") -> Path:
    ws = copy_fixture(fixture, tmp_path / "ws")
    open_workspace(ws)
    return ws


def make_corrupt(ws: Path) -> Path:
    """A chunk DB whose header is garbage (SQLITE_NOTADB), with a journal beside it."""
    db = db_file(ws)
    db.parent.mkdir(mode=0o700, parents=True)
    db.write_bytes(b"this is not an SQLite database " * 300)
    db.chmod(0o600)
    journal = db.with_name("chunks.db-journal")
    journal.write_bytes(b"\0" * 512)
    journal.chmod(0o600)
    return db


def make_hot_journal(ws: Path) -> None:
    """Leave a hot ``-journal``: a process dies inside a write transaction that spilled to disk."""
    code = textwrap.dedent(
        f"""
        import os, sqlite3
        conn = sqlite3.connect({str(db_file(ws))!r}, isolation_level=None)
        conn.execute("PRAGMA journal_mode = TRUNCATE")
        conn.execute("PRAGMA cache_size = 1")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE scratch (x BLOB)")
        conn.executemany("INSERT INTO scratch VALUES (randomblob(500))", [()] * 3000)
        os._exit(0)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert db_file(ws).with_name("chunks.db-journal").stat().st_size > 0


# -- status ---------------------------------------------------------------------------------------------


def test_status_json_in_a_subprocess_reads_without_touching(tmp_path: Path) -> None:
    ws = at_head(tmp_path)
    before = snapshot(ws)
    done = run_module("status", str(ws), "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["database"] == str(db_file(ws))
    assert (status["revision"], status["revision_state"], status["head"]) == (HEAD, "head", HEAD)
    assert status["user_version"] == 2
    assert (status["journal_mode_in_use"], status["file_mode"]) == ("truncate", "rollback")
    assert "journal_mode" not in status["pragmas"]  # a read-only connection's own mode would mislead
    assert status["tables"]["mem_tree_chunks"] == 120 and len(status["tables"]) == 15
    assert status["file"]["mode"] == "0600" and status["error"] is None
    assert snapshot(ws) == before


def test_status_of_a_rust_database_does_not_migrate_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = copy_fixture("rust-0.1.1-empty", tmp_path / "ws")
    before = snapshot(ws)
    code, out, _ = run(capsys, "status", str(ws))
    assert code == 0
    assert "revision      none (not under Alembic" in out
    assert "mem_tree_trees                     0" in out
    assert snapshot(ws) == before and alembic_revision(ws) is None


def test_status_of_a_wal_database_keeps_the_wal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = copy_fixture("rust-legacy-wal", tmp_path / "ws")
    before = snapshot(ws, skip=("-shm",))  # SQLite may rebuild the WAL index; it holds no data
    code, out, _ = run(capsys, "status", str(ws), "--json")
    status = json.loads(out)
    assert code == 0 and status["file_mode"] == "wal"
    assert status["tables"]["mem_tree_chunks"] == 40
    assert any(f["path"].endswith("chunks.db-wal") for f in status["side_files"])
    assert snapshot(ws, skip=("-shm",)) == before


def test_status_reports_a_hot_journal_without_rolling_it_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = at_head(tmp_path, "rust-0.1.1-empty")
    make_hot_journal(ws)
    before = snapshot(ws)
    code, out, _ = run(capsys, "status", str(ws))
    assert code == 1 and "hot journal" in out and "never delete the -journal" in out
    code, out, _ = run(capsys, "doctor", str(ws))
    assert code == 1 and "PROBLEM  read:" in out and f"tinycortex-sa upgrade {ws}" in out
    assert snapshot(ws) == before
    code, out, _ = run(capsys, "upgrade", str(ws))  # opening lets SQLite roll it back
    assert code == 0 and out.endswith(
        f"could not be read read-only before; it is now at {HEAD} (user_version 2)\n"
    )
    with raw(ws) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'scratch'").fetchone()[0] == 0


def test_status_of_a_missing_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "status", str(tmp_path / "nowhere"))
    assert code == 1 and "(absent)" in out and "no database at" in out
    assert not (tmp_path / "nowhere").exists()


# -- doctor ---------------------------------------------------------------------------------------------


def test_doctor_healthy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = at_head(tmp_path)
    before = snapshot(ws)
    code, out, _ = run(capsys, "doctor", str(ws))
    assert code == 0, out
    lines = out.splitlines()
    assert lines[-1] == "healthy"
    for check in ("file modes", "side files", "integrity_check", "foreign_key_check", "schema", "models"):
        assert any(line.startswith("ok") and f" {check}:" in line for line in lines), check
    assert snapshot(ws) == before


def test_doctor_json_on_a_rust_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = copy_fixture("rust-legacy-v0", tmp_path / "ws")
    before = snapshot(ws)
    code, out, _ = run(capsys, "doctor", str(ws), "--json")
    report = json.loads(out)
    assert code == 1 and report["healthy"] is False
    (schema,) = [f for f in report["findings"] if f["check"] == "schema"]
    assert schema["severity"] == "problem" and f"tinycortex-sa upgrade {ws}" in schema["fix"]
    assert snapshot(ws) == before


def test_doctor_on_a_corrupt_file_points_at_recover(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    make_corrupt(ws)
    before = snapshot(ws)
    done = run_module("doctor", str(ws))
    assert done.returncode == 1
    assert "is corrupt (file is not a database)" in done.stdout
    assert f"Fix: run `tinycortex-sa recover {ws}`" in done.stdout
    assert done.stdout.splitlines()[-1] == "1 problem(s) found" and done.stderr == ""
    assert snapshot(ws) == before


def test_doctor_finds_damaged_pages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = at_head(tmp_path)
    with raw(ws) as conn:
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'idx_mem_tree_chunks_source'")
        page = root.fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    with db_file(ws).open("r+b") as f:
        f.seek((page - 1) * size)
        f.write(b"\xff" * size)
    code, out, _ = run(capsys, "doctor", str(ws))
    assert code == 1
    assert "PROBLEM  integrity_check:" in out and "recover" in out


def test_doctor_sends_index_only_damage_to_reindex(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Index entries that disagree with the rows: quick_check passes (recover refuses), REINDEX repairs."""
    ws = at_head(tmp_path)
    sql = "CREATE INDEX idx_mem_tree_chunks_owner\n    ON mem_tree_chunks({})"
    for column, rebuild in (("source_id", True), ("owner", False)):  # build it on the wrong column
        with raw(ws) as conn:
            conn.execute("PRAGMA writable_schema = ON")
            conn.execute(
                "UPDATE sqlite_master SET sql = ? WHERE name = 'idx_mem_tree_chunks_owner'",
                (sql.format(column),),
            )
        if rebuild:
            with raw(ws) as conn:
                conn.execute("REINDEX idx_mem_tree_chunks_owner")
    code, out, _ = run(capsys, "doctor", str(ws))
    assert code == 1
    (problem,) = [line for line in out.splitlines() if line.startswith("PROBLEM")]
    assert (
        "integrity_check: 20+ error(s), first: row 1 missing from index idx_mem_tree_chunks_owner" in problem
    )
    assert f"run `sqlite3 {db_file(ws)} REINDEX`" in problem
    assert run(capsys, "recover", str(ws))[0] == 1  # quick_check does not see it: nothing is moved
    with raw(ws) as conn:
        conn.execute("REINDEX")
    assert run(capsys, "doctor", str(ws))[0] == 0


def test_doctor_finds_orphans_modes_and_schema_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = at_head(tmp_path, "rust-0.1.1-empty")
    with raw(ws) as conn:  # foreign_keys is off on a plain connection
        conn.execute(
            "INSERT INTO mem_tree_chunk_embeddings VALUES ('no-such-chunk', 'm@1', x'00000000', 1, 0.0)"
        )
        conn.execute("ALTER TABLE mem_tree_jobs ADD COLUMN added_by_hand TEXT")
    db_file(ws).chmod(0o644)
    code, out, _ = run(capsys, "doctor", str(ws))
    assert code == 1
    problems = [line for line in out.splitlines() if line.startswith("PROBLEM")]
    assert len(problems) == 2, out
    assert "1 row(s) of mem_tree_chunk_embeddings point at rows missing from mem_tree_chunks" in problems[0]
    assert "column mem_tree_jobs.added_by_hand is in the database but not in the models" in problems[1]
    assert "backup" not in out  # nothing is damaged
    (warning,) = [line for line in out.splitlines() if line.startswith("WARNING")]
    assert f"Fix: chmod 600 {db_file(ws)}" in warning


def test_doctor_flags_a_wal_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = copy_fixture("rust-legacy-wal", tmp_path / "ws")
    code, out, _ = run(capsys, "doctor", str(ws))
    assert code == 1
    assert "PROBLEM  journal mode: chunks.db is in WAL mode" in out and "never delete the -wal" in out


# -- upgrade --------------------------------------------------------------------------------------------


def test_upgrade_runs_the_data_migrations_with_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = copy_fixture("rust-legacy-v0", tmp_path / "ws")
    code, out, err = run(capsys, "upgrade", str(ws), "--embedding-dim", "384")
    assert code == 0, err
    assert out == f"upgraded {db_file(ws)} from no revision to {HEAD} (user_version 2)\n"
    assert "upgrading [4/5] 0004_legacy_embeddings" in err  # stderr is no terminal: plain lines
    assert "copied 10 into mem_tree_chunk_embeddings as nomic-embed-text@384" in err
    assert alembic_revision(ws) == HEAD and user_version(ws) == 2
    code, out, _ = run(capsys, "upgrade", str(ws))
    assert code == 0 and out.endswith(
        "is already at 0005_purge_retired_trees (user_version 2); nothing to do\n"
    )


def test_upgrade_shows_a_live_progress_line_on_a_terminal(tmp_path: Path) -> None:
    ws = copy_fixture("rust-legacy-v0", tmp_path / "ws")
    terminal = io.StringIO()
    lines = repair.upgrade(str(ws), {}, terminal, live=True)
    assert lines == [f"upgraded {db_file(ws)} from no revision to {HEAD} (user_version 2)"]
    shown = terminal.getvalue()
    assert "\r\x1b[2Kupgrading [5/5] 0005_purge_retired_trees  " in shown
    assert "\r\x1b[2K  retired trees: deleted 42 rows and 4 summary folders\n" in shown
    assert shown.endswith("\r\x1b[2K")  # the live line is cleared at the end


def test_upgrade_creates_a_new_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "upgrade", str(tmp_path))
    assert code == 0 and out.startswith(f"created {db_file(tmp_path)} at {HEAD}")


def test_upgrade_refuses_a_corrupt_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = tmp_path / "ws"
    make_corrupt(ws)
    before = snapshot(ws)
    code, out, err = run(capsys, "upgrade", str(ws))
    assert code == 3 and out == ""
    assert err.count("\n") == 1 and "nothing was changed" in err and f"tinycortex-sa recover {ws}" in err
    assert snapshot(ws) == before


# -- recover --------------------------------------------------------------------------------------------


def test_recover_quarantines_and_rebuilds(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    db = make_corrupt(ws)
    corrupt = db.read_bytes()
    done = run_module("recover", str(ws))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"{db}: quick_check found: file is not a database"
    (kept,) = [
        p for p in db.parent.iterdir() if p.name.startswith("chunks.db.corrupt-") and "-journal" not in p.name
    ]
    assert lines[1] == f"moved {db}-journal -> {kept}-journal"
    assert lines[2] == f"moved {db} -> {kept}"
    assert lines[3] == f"built a fresh, empty database at {db} ({HEAD}, user_version 2)"
    assert lines[4].startswith(f"kept, not deleted: {kept}")
    assert kept.read_bytes() == corrupt and Path(f"{kept}-journal").read_bytes() == b"\0" * 512
    assert alembic_revision(ws) == HEAD


def test_recover_refuses_a_healthy_file_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = at_head(tmp_path)
    before = snapshot(ws)
    code, out, err = run(capsys, "recover", str(ws))
    assert code == 1 and out == ""
    assert err.startswith(f"{cli.PROG}: {db_file(ws)} passed PRAGMA quick_check") and err.count("\n") == 1
    assert f"tinycortex-sa recover {ws} --force" in err
    assert snapshot(ws) == before
    code, out, _ = run(capsys, "recover", str(ws), "--force")
    assert code == 0 and "moving it aside anyway (--force)" in out
    kept = [p for p in db_file(ws).parent.glob("chunks.db.corrupt-*") if not p.name.endswith("-journal")]
    assert len(kept) == 1 and kept[0].read_bytes() == before["chunks.db"][0]
    with raw(ws) as conn:
        assert conn.execute("SELECT count(*) FROM mem_tree_chunks").fetchone()[0] == 0
    code, out, _ = run(capsys, "doctor", str(ws))
    assert code == 0 and f"note     quarantined: {kept[0]}" in out


def test_recover_refuses_while_another_process_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = at_head(tmp_path)
    with lock_held_elsewhere(db_file(ws)):
        code, _, err = run(capsys, "recover", str(ws), "--force", "--busy-timeout", "100")
    assert code == 3 and "another process is using" in err and "Nothing was moved" in err
    assert not list(db_file(ws).parent.glob("chunks.db.corrupt-*"))


def test_recover_moves_nothing_if_the_file_was_replaced_before_it_got_the_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between recover's check and its move lock, an application's open kept the damaged file aside and
    built a new database, with a row written since: recover must not move that one too."""
    ws = tmp_path / "ws"
    db = make_corrupt(ws)
    real = registry.move_lock

    def an_application_got_there_first(directory: Path, busy_timeout_ms: int) -> Any:
        aside.quarantine(db)
        fresh = sqlite3.connect(db)
        fresh.execute("CREATE TABLE written_since(x)")
        fresh.close()
        return real(directory, busy_timeout_ms)

    monkeypatch.setattr(registry, "move_lock", an_application_got_there_first)
    code, _, err = run(capsys, "recover", str(ws))
    assert code != 0 and "was replaced while recover was starting" in err and "Nothing was moved" in err
    assert len([p for p in db.parent.glob("chunks.db.corrupt-*") if not p.name.endswith("-journal")]) == 1
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("written_since",)]
    conn.close()


# -- demo, errors, entry points --------------------------------------------------------------------------


def test_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "demo", str(tmp_path / "demo"))
    assert code == 0 and "one connection  True" in out and f"revision        {HEAD}" in out


def test_errors_are_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    done = run_module("recover", str(missing))
    assert done.returncode == 3 and done.stdout == ""
    assert done.stderr == f"tinycortex-sa: error: no database at {db_file(missing)}: nothing to recover\n"
    done = run_module("recover", str(missing), "--debug")
    assert done.returncode == 3
    assert done.stderr.startswith("Traceback (most recent call last):")
    assert done.stderr.endswith(
        f"tinycortex-sa: error: no database at {db_file(missing)}: nothing to recover\n"
    )


def test_unexpected_errors_say_how_to_get_the_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(workspace: Any, count_rows: bool = True) -> None:
        raise ValueError("something\nunexpected")

    monkeypatch.setattr(cli.inspect, "collect_status", broken)
    code, out, err = run(capsys, "status", str(tmp_path))
    assert code == 3 and out == ""
    assert (
        err == "tinycortex-sa: error: ValueError: something unexpected (run with --debug for the traceback)\n"
    )
    code, _, err = run(capsys, "--debug", "status", str(tmp_path))
    assert code == 3 and "Traceback" in err and 'raise ValueError("something' in err


def test_bad_options_and_a_file_as_workspace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "upgrade", str(tmp_path), "--embedding-dim", "many")
    assert (
        code == 3 and err == "tinycortex-sa: error: option 'embedding_dim' must be an integer, got 'many'\n"
    )
    assert not (tmp_path / "memory_tree").exists()
    afile = tmp_path / "chunks.db"
    afile.write_bytes(b"")
    code, _, err = run(capsys, "status", str(afile))
    assert code == 3 and "is a file; give the workspace directory" in err
    with pytest.raises(SystemExit) as usage:
        cli.main(["frobnicate"])
    assert usage.value.code == 2


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "tinycortex-sa"
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == f"tinycortex-sa 0.1.0 (schema head {HEAD})\n"


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_version_and_help_import_neither_sqlalchemy_nor_alembic(flag: str) -> None:
    code = (
        "import sys\n"
        "from tinycortex_sa.cli import main\n"
        "try:\n"
        f"    main([{flag!r}])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('sqlalchemy', 'alembic', 'greenlet') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert "tinycortex-sa" in done.stdout


def test_upgrade_no_create_refuses_a_missing_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    code, out, err = run(capsys, "upgrade", str(ws), "--no-create")
    assert code == 3 and out == "" and err.count("\n") == 1
    assert "does not exist and create=False" in err and str(db_file(ws)) in err
    assert list(ws.iterdir()) == []
    code, out, _ = run(capsys, "upgrade", str(ws))  # the default keeps the Rust core's behaviour
    assert code == 0 and out.startswith(f"created {db_file(ws)}")
