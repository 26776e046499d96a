"""``status``: the journal mode in use and the file's own mode, and ``--fast``.

Every connection of tinycortex_sa and of the Rust core runs TRUNCATE, whatever
the header says; the header's persistent mode (WAL or a rollback journal) is
reported apart.  ``--fast`` skips the row counts.  Nothing changes a byte.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from helpers import copy_fixture, db_file

from tinycortex_sa import cli

Snapshot = dict[str, tuple[bytes, int]]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``cli.main(args)`` in-process: exit status and stdout."""
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    assert err == ""
    return code, out


def snapshot(ws: Path) -> Snapshot:
    folder = ws / "memory_tree"
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()}


def wal_copy(tmp_path: Path) -> Path:
    """A copy of ``rust-head-populated`` switched to WAL with plain sqlite3, and left so."""
    ws = copy_fixture("rust-head-populated", tmp_path / "ws")
    conn = sqlite3.connect(db_file(ws))
    assert conn.execute("PRAGMA journal_mode = WAL").fetchone() == ("wal",)
    conn.close()
    return ws


def assert_untouched(ws: Path, before: Snapshot) -> None:
    """Every file keeps its bytes and mtime; for a WAL file a reader may add an empty -wal and a -shm."""
    after = snapshot(ws)
    assert {name: after[name] for name in before} == before
    added = set(after) - set(before)
    assert added <= {"chunks.db-wal", "chunks.db-shm"}
    assert "chunks.db-wal" not in added or after["chunks.db-wal"][0] == b""


def test_a_wal_file_reports_both_modes_and_keeps_its_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = wal_copy(tmp_path)
    before = snapshot(ws)
    code, out = run(capsys, "status", str(ws), "--json")
    status = json.loads(out)
    assert code == 0 and status["error"] is None
    assert (status["file_mode"], status["journal_mode_in_use"]) == ("wal", "truncate")
    assert "journal_mode" not in status["pragmas"]
    assert_untouched(ws, before)
    code, out = run(capsys, "status", str(ws))
    lines = out.splitlines()
    assert "journal mode  truncate (what tinycortex_sa and the Rust core run in)" in lines
    assert "file mode     wal (the header's persistent mode; the next open switches it)" in lines
    assert_untouched(ws, before)


def test_a_rollback_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = copy_fixture("rust-head-populated", tmp_path / "ws")
    before = snapshot(ws)
    code, out = run(capsys, "status", str(ws), "--json")
    status = json.loads(out)
    assert code == 0 and (status["file_mode"], status["journal_mode_in_use"]) == ("rollback", "truncate")
    assert snapshot(ws) == before


def test_fast_skips_the_row_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = copy_fixture("rust-head-populated", tmp_path / "ws")
    before = snapshot(ws)
    code, out = run(capsys, "status", str(ws))
    assert code == 0 and "  mem_tree_chunks                    200" in out.splitlines()
    code, out = run(capsys, "status", str(ws), "--fast")
    assert code == 0 and "rows          not counted (--fast)" in out.splitlines()
    assert "mem_tree_chunks" not in out and "file mode     rollback" in out
    code, out = run(capsys, "status", str(ws), "--json")
    assert json.loads(out)["tables"]["mem_tree_chunks"] == 200
    code, out = run(capsys, "status", str(ws), "--json", "--fast")
    status = json.loads(out)
    assert code == 0 and status["tables"] is None and status["revision_state"] == "unversioned"
    assert snapshot(ws) == before


def test_fast_on_a_missing_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "status", str(tmp_path / "nowhere"), "--fast", "--json")
    status = json.loads(out)
    assert code == 1 and status["file_mode"] is None and status["error"].startswith("no database at")
