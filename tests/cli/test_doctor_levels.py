"""``doctor`` levels: problems fail, warnings fail only with ``--strict``, notes never.

A file the current Rust core wrote, opened once by tinycortex_sa, is healthy: its KV and
entity-index stores are its own, and its 0644/0755 modes are warnings with the ``chmod``
to run.  An application's own table is a note.  Only damage is sent to a backup.
"""

from __future__ import annotations

import io
import itertools
import json
import random
import sqlite3
from pathlib import Path

import pytest
from helpers import copy_fixture, db_file, raw

import tinycortex_sa
from tinycortex_sa import cli
from tinycortex_sa.cli import doctor
from tinycortex_sa.schema.version import RUST_STORE_INDEXES, RUST_STORE_TABLES


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``cli.main(args)`` in-process: exit status, stdout, stderr."""
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def head_copy(tmp_path: Path) -> Path:
    """A copy of ``rust-head-populated`` opened once through the library (so at head)."""
    ws = copy_fixture("rust-head-populated", tmp_path / "ws")
    tinycortex_sa.with_connection(ws, lambda conn: None)
    tinycortex_sa.invalidate(ws)
    return ws


def snapshot(ws: Path) -> dict[str, tuple[bytes, int]]:
    folder = ws / "memory_tree"
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()}


def lines_of(out: str, label: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(f"{label} ")]


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_a_rust_head_file_at_head_is_healthy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = head_copy(tmp_path)
    before = snapshot(ws)
    code, out, err = run(capsys, "doctor", str(ws))
    assert code == 0, out
    assert not lines_of(out, "PROBLEM") and not lines_of(out, "WARNING")
    assert "backup" not in out and err == ""
    assert "ok       models: the schema matches tinycortex_sa's models (with the Rust core's" in out
    for name in RUST_STORE_TABLES | RUST_STORE_INDEXES:
        assert name not in out
    assert out.splitlines()[-1] == "healthy"
    assert snapshot(ws) == before


def test_rust_core_modes_are_warnings_that_strict_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = head_copy(tmp_path)
    db = db_file(ws)
    db.parent.chmod(0o755)  # what the Rust core leaves
    db.chmod(0o644)
    db.with_name("chunks.db-journal").chmod(0o644)
    code, out, _ = run(capsys, "doctor", str(ws))
    assert code == 0, out
    warnings = lines_of(out, "WARNING")
    assert len(warnings) == 3 and all(line.startswith("WARNING  file modes: ") for line in warnings)
    assert warnings[0].endswith(f"Fix: chmod 700 {db.parent}")
    assert warnings[1].endswith(f"Fix: chmod 600 {db}")
    assert warnings[2].endswith(f"Fix: chmod 600 {db}-journal")
    assert not lines_of(out, "PROBLEM") and "backup" not in out
    assert out.splitlines()[-1] == "healthy, with 3 warning(s)"

    code, out, _ = run(capsys, "doctor", str(ws), "--strict")
    assert code == 1 and out.splitlines()[-1] == "3 warning(s) found (--strict: warnings fail)"
    code, out, _ = run(capsys, "doctor", str(ws), "--strict", "--json")
    report = json.loads(out)
    assert code == 1 and (report["healthy"], report["problems"], report["warnings"]) == (False, 0, 3)
    assert {f["severity"] for f in report["findings"]} == {"ok", "warning"}


def test_an_application_table_is_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = head_copy(tmp_path)
    with raw(ws) as conn:
        conn.execute("CREATE TABLE app_notes (id INTEGER PRIMARY KEY, chunk_id TEXT, body TEXT UNIQUE)")
        conn.execute("CREATE INDEX idx_app_notes_chunk ON app_notes (chunk_id)")
    code, out, _ = run(capsys, "doctor", str(ws))
    assert code == 0, out
    assert "note     models: table app_notes is not the chunk DB's; left alone." in out.splitlines()
    assert "note     models: index idx_app_notes_chunk on app_notes is not the chunk DB's; left alone." in out
    assert not lines_of(out, "PROBLEM") and "backup" not in out
    assert run(capsys, "doctor", str(ws), "--strict")[0] == 0  # a note never fails


def test_a_reset_user_version_is_fixed_without_a_backup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = head_copy(tmp_path)
    with raw(ws) as conn:
        conn.execute("PRAGMA user_version = 1")
    code, out, _ = run(capsys, "doctor", str(ws))
    (problem,) = lines_of(out, "PROBLEM")
    assert code == 1 and problem.startswith("PROBLEM  user_version: 1 at head")
    assert f"`sqlite3 {db_file(ws)} 'PRAGMA user_version = 2'`" in problem and "backup" not in out


def test_damage_is_a_problem_and_may_point_at_a_backup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = head_copy(tmp_path)
    with raw(ws) as conn:
        page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'mem_tree_chunks'").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    with db_file(ws).open("r+b") as f:
        f.seek((page - 1) * size)
        f.write(random.Random(7).randbytes(size))
    code, out, _ = run(capsys, "doctor", str(ws))
    assert code == 1
    (problem,) = lines_of(out, "PROBLEM")
    assert problem.startswith("PROBLEM  integrity_check: ")
    assert f"tinycortex-sa recover {ws}" in problem and "restore a backup" in problem
    assert out.splitlines()[-1] == "1 problem(s) found"


def test_no_progress_when_stderr_is_not_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = head_copy(tmp_path)
    code, _, err = run(capsys, "doctor", str(ws))
    assert code == 0 and err == ""
    stream = io.StringIO()
    doctor.diagnose(ws, progress=stream)
    assert stream.getvalue() == ""


def test_progress_line_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = head_copy(tmp_path)
    monkeypatch.setattr(doctor, "PROGRESS_STEPS", 100)  # a small file: repaint often enough to see it
    monkeypatch.setattr(doctor, "PROGRESS_INTERVAL", 0.0)
    terminal = Terminal()
    findings = doctor.diagnose(ws, progress=terminal)
    assert findings == doctor.diagnose(ws)
    shown = terminal.getvalue()
    frames = shown.split("\r\x1b[2K")
    assert frames[0] == "" and frames[-1] == ""  # every frame repaints the line; the last clears it
    assert len(frames) > 3, shown
    assert all(f" integrity_check of {db_file(ws)}  " in frame for frame in frames[1:-1])
    assert frames[1].startswith(("|", "/", "-", "\\")) and frames[1].endswith("s")


def test_progress_handler_never_interrupts(tmp_path: Path) -> None:
    """The handler returns 0 even when the terminal is gone."""

    class Closed(Terminal):
        def write(self, text: str) -> int:
            raise OSError("terminal gone")

    spinner = doctor.Spinner(Closed(), "integrity_check", clock=itertools.count().__next__)
    assert spinner() == 0
    conn = sqlite3.connect(":memory:")
    conn.set_progress_handler(spinner, 1)
    assert conn.execute("SELECT count(*) FROM (VALUES (1), (2))").fetchone() == (2,)
    conn.close()
