from __future__ import annotations

from pathlib import Path

import pytest

from tinycortex_sa.cli import demo


def test_demo_writes_reads_and_reports(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main([str(workspace)]) == 0
    out = capsys.readouterr().out
    assert "one connection  True" in out
    assert "revision        0005_purge_retired_trees" in out
    assert "user_version    2" in out
    assert "journal_mode = truncate" in out and "foreign_keys = 1" in out
    assert "'Ada likes SQLite.'  dim=4  score=0.60" in out
    assert "mem_tree_chunks                    2" in out
