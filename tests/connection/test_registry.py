from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tinycortex_sa import OptionConflictError
from tinycortex_sa.connection import registry


def test_spellings_share_one_handle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.chdir(tmp_path)
    spellings = [
        "real/chunks.db",
        str(tmp_path / "real" / "chunks.db"),
        "link/../real/chunks.db",
        "link/chunks.db",
    ]
    handles = {id(registry.handle_for(s)) for s in spellings}
    assert len(handles) == 1


def test_first_caller_fixes_file_options(tmp_path: Path) -> None:
    path = tmp_path / "chunks.db"
    handle = registry.handle_for(path, {"busy_timeout": 100, "checkout_timeout": 1.0})
    assert handle.options.busy_timeout == 100
    registry.handle_for(path, {"busy_timeout": 100})
    registry.handle_for(path, {})
    registry.handle_for(path, {"checkout_timeout": 9.0})  # per engine, not per file
    with pytest.raises(OptionConflictError, match=r"busy_timeout=200 conflicts with busy_timeout=100"):
        registry.handle_for(path, {"busy_timeout": 200})
    # defaults count as fixed too: a later explicit default-differing value conflicts
    other = registry.handle_for(tmp_path / "other.db")
    with pytest.raises(OptionConflictError, match="breaker_threshold"):
        registry.handle_for(tmp_path / "other.db", {"breaker_threshold": 9})
    assert other.options.breaker_threshold == 3


def test_interpreter_exit_closes_the_connection(workspace: Path) -> None:
    code = """
import atexit, sys

def report():  # registered first, so it runs after the library's own exit hook
    from tinycortex_sa import db_path_for
    handle = registry.existing_handle(db_path_for(sys.argv[1]))
    print("closed" if handle is not None and handle.conn is None else "still open")

atexit.register(report)
import tinycortex_sa
from tinycortex_sa.connection import registry
engine = tinycortex_sa.create_engine(sys.argv[1])
with engine.connect() as conn:
    conn.exec_driver_sql("SELECT 1")
"""
    out = subprocess.run(
        [sys.executable, "-c", code, str(workspace)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "closed"
