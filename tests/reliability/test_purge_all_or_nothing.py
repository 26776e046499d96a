"""Revision 0005's purge is all or nothing, content folders included (closed gap 5).

The retired ``global*``/``topic-*`` summary folders are moved aside into
``wiki/.retired-summaries/<batch>`` before the marker commits and removed only
after the commit; a failed commit moves them back, and the next open finishes
or undoes a move that a killed process left (docs/reliability.md, "Closed").
Each case runs in a worker process: a file-size limit makes the commit fail,
or the worker kills itself with SIGKILL at one point of the purge.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from reliability.common import (
    content_dir,
    copy_fixture,
    db_state,
    forget,
    run_worker,
    tree_changes,
    tree_state,
)
from tinycortex_sa import db_path_for, with_connection
from tinycortex_sa.schema import purge

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]

RETIRED = ["global", "global-2025", "topic-ml", "topic-rust"]
KEPT = ["source-slack-C000", "topical-notes"]
RETIRED_ROWS = (
    "SELECT (SELECT count(*) FROM mem_tree_trees WHERE kind IN ('global', 'topic')) "
    "+ (SELECT count(*) FROM mem_tree_summaries WHERE tree_kind IN ('global', 'topic')) "
    "+ (SELECT count(*) FROM mem_tree_jobs WHERE kind IN ('topic_route', 'digest_daily'))"
)


def _summaries(ws: Path) -> Path:
    return content_dir(ws) / "wiki" / "summaries"


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _scalar(ws: Path, sql: str) -> int:
    import sqlite3

    conn = sqlite3.connect(db_path_for(ws))
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def _batches(ws: Path) -> list[Path]:
    return sorted((content_dir(ws) / "wiki" / purge.ASIDE_DIR).iterdir())


def _open(ws: Path, **options: object) -> None:
    try:
        with_connection(ws, lambda c: c.execute("SELECT 1").fetchone(), **options)
    finally:
        forget(ws)


def _killed(ws: Path, at: str) -> None:
    report = run_worker("purgekill", ws=str(ws), at=at)
    if report.get("dying") != at or report.get("returncode") != -9:
        raise RuntimeError(f"the worker did not die where it was told to: {report}")


def _trees(folder: Path, names: list[str]) -> dict[str, dict[str, tuple[str, int, str]]]:
    return {name: tree_state(folder / name) for name in names}


def test_failed_legacy_migration_leaves_the_content_folders(tmp_path: Path) -> None:
    """A full disk fails the commit: the database as it was, and every folder back where it was."""
    ws = copy_fixture("rust-legacy-v0", tmp_path / "ws")
    before = tree_state(content_dir(ws))
    original = db_state(db_path_for(ws))
    size = db_path_for(ws).stat().st_size
    report = run_worker("badenv", action="open", ws=str(ws), fsize=size + 4096)
    if report.get("ok") is not False:
        raise RuntimeError(f"the migration did not fail: {report}")
    assert report["type"] == "DiskFullError", report
    assert tree_changes(before, tree_state(content_dir(ws))) == []  # no .retired-summaries left either
    assert db_state(db_path_for(ws)) == original


def test_kill_after_the_commit_leaves_the_purge_done_and_the_next_open_removes_the_folders(
    tmp_path: Path,
) -> None:
    ws = copy_fixture("rust-legacy-v0", tmp_path / "ws")
    summaries = _summaries(ws)
    kept_before = _trees(summaries, KEPT)
    retired_before = _trees(summaries, RETIRED)
    _killed(ws, "committed")

    assert _scalar(ws, "PRAGMA user_version") == 2
    assert _scalar(ws, RETIRED_ROWS) == 0
    assert _names(summaries) == KEPT
    [batch] = _batches(ws)  # the folders wait, whole, in one batch
    assert _trees(batch, RETIRED) == retired_before

    _open(ws)
    assert _names(content_dir(ws) / "wiki") == ["summaries"]
    assert _trees(summaries, KEPT) == kept_before  # the folders that are not retired: untouched
    assert _scalar(ws, "PRAGMA user_version") == 2


def test_kill_before_the_commit_is_undone_then_purged_by_the_next_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ws = copy_fixture("rust-legacy-v0", tmp_path / "ws")
    summaries = _summaries(ws)
    original = db_state(db_path_for(ws))
    kept_before = _trees(summaries, KEPT)
    retired_before = _trees(summaries, RETIRED)
    _killed(ws, "moved")

    assert db_state(db_path_for(ws)) == original  # rows and marker: rolled back (a hot journal)
    assert _names(summaries) == KEPT
    [batch] = _batches(ws)
    assert _trees(batch, RETIRED) == retired_before

    with caplog.at_level(logging.INFO, logger="tinycortex_sa"):
        _open(ws)
    messages = [r.getMessage() for r in caplog.records]
    moved_back = [i for i, m in enumerate(messages) if "moved 4 retired summary folder(s) back" in m]
    purged = [i for i, m in enumerate(messages) if "retired trees: deleted" in m]
    assert moved_back and purged and moved_back[0] < purged[0], messages  # undone, then purged again
    assert _scalar(ws, "PRAGMA user_version") == 2
    assert _scalar(ws, RETIRED_ROWS) == 0
    assert _names(content_dir(ws) / "wiki") == ["summaries"]
    assert _names(summaries) == KEPT
    assert _trees(summaries, KEPT) == kept_before


def test_kill_before_the_commit_then_auto_migrate_off_puts_every_folder_back(tmp_path: Path) -> None:
    ws = copy_fixture("rust-legacy-v0", tmp_path / "ws")
    before = tree_state(content_dir(ws))
    original = db_state(db_path_for(ws))
    _killed(ws, "moved")
    with pytest.raises(Exception, match="auto_migrate is off"):
        _open(ws, auto_migrate=False)
    assert tree_changes(before, tree_state(content_dir(ws))) == []
    assert db_state(db_path_for(ws)) == original


def test_a_name_taken_meanwhile_is_never_replaced_and_the_aside_copy_is_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ws = copy_fixture("rust-legacy-v0", tmp_path / "ws")
    summaries = _summaries(ws)
    wiki = content_dir(ws) / "wiki"
    old_topic_ml = tree_state(summaries / "topic-ml")
    _killed(ws, "moved")
    [batch] = _batches(ws)
    (summaries / "topic-ml").mkdir()  # a new folder of the same name, made after the kill
    (summaries / "topic-ml" / "new.md").write_text("made after the interrupted purge")
    new_topic_ml = tree_state(summaries / "topic-ml")

    with (
        caplog.at_level(logging.INFO, logger="tinycortex_sa"),
        pytest.raises(Exception, match="auto_migrate"),
    ):
        _open(ws, auto_migrate=False)  # the undo alone: no purge runs after it
    kept = wiki / purge.KEPT_DIR / batch.name / "topic-ml"
    assert tree_state(summaries / "topic-ml") == new_topic_ml  # not replaced
    assert tree_state(kept) == old_topic_ml  # the moved-aside copy, whole
    assert _names(summaries) == sorted([*KEPT, *RETIRED])  # the other three are back
    assert _names(wiki) == sorted([purge.KEPT_DIR, "summaries"])  # nothing left to settle
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(str(summaries / "topic-ml") in m and str(kept) in m for m in errors), errors

    _open(ws)  # the purge runs again: by the contract it removes the new topic-ml too, never the kept copy
    assert _scalar(ws, "PRAGMA user_version") == 2
    assert _names(summaries) == KEPT
    _open(ws)
    assert tree_state(kept) == old_topic_ml
