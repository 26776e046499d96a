"""The revisions and the automatic upgrade on first open (issue 3, items 2-5 and 8-10)."""

from __future__ import annotations

import logging
import multiprocessing
import queue
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory
from helpers import (
    alembic_revision,
    copy_fixture,
    db_file,
    file_digest,
    open_workspace,
    raw,
    schema_snapshot,
    upgrade_to,
    user_version,
)

import tinycortex_sa
from tinycortex_sa.connection import registry
from tinycortex_sa.errors import IrreversibleMigrationError, SchemaBehindError, UnknownRevisionError
from tinycortex_sa.options import DEFAULTS
from tinycortex_sa.schema import purge, upgrade
from tinycortex_sa.schema.version import HEAD, REVISIONS

SUMMARY_FOLDERS = ["global", "global-2025", "source-slack-C000", "topic-ml", "topic-rust", "topical-notes"]


def _folders(ws: Path, root: Path | None = None) -> list[str]:
    base = (root or ws / "memory_tree" / "content") / "wiki" / "summaries"
    return sorted(p.name for p in base.iterdir())


def _count(ws: Path, sql: str) -> int:
    with raw(ws) as conn:
        return int(conn.execute(sql).fetchone()[0])


def _fails_to_open(ws: Path, match: str, **options: Any) -> pytest.ExceptionInfo[BaseException]:
    engine = tinycortex_sa.create_engine(ws, **options)
    try:
        with pytest.raises(BaseException, match=match) as info, engine.connect():
            pass
    finally:
        engine.dispose()
        tinycortex_sa.invalidate(ws)
    return info


def test_schema_version_constants_match_the_script_directory() -> None:
    script = ScriptDirectory.from_config(upgrade.alembic_config())
    assert script.get_heads() == [HEAD]
    assert tuple(rev.revision for rev in reversed(list(script.walk_revisions()))) == REVISIONS


def test_fast_path_is_two_small_queries(workspace: Path) -> None:
    """At head: the revision, and the table names (a missing chunk-DB table is damage, refused at open)."""
    open_workspace(workspace)
    conn = sqlite3.connect(db_file(workspace), isolation_level=None)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        registry.initialise(conn, db_file(workspace), DEFAULTS)
    finally:
        conn.close()
    assert statements == [
        "SELECT version_num FROM alembic_version",
        "SELECT name FROM sqlite_master WHERE type = 'table'",
    ]


def test_fast_path_loads_neither_alembic_nor_revisions(workspace: Path) -> None:
    open_workspace(workspace)
    code = (
        "import sys, tinycortex_sa\n"
        f"e = tinycortex_sa.create_engine({str(workspace)!r})\n"
        "with e.connect() as c:\n"
        "    print(c.exec_driver_sql('SELECT version_num FROM alembic_version').scalar())\n"
        "print(sorted(m for m in sys.modules if m.startswith(('alembic', 'tinycortex_sa.migrations'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == [HEAD, "[]"]


def test_auto_migrate_off_refuses_a_behind_database_and_changes_nothing(tmp_path: Path) -> None:
    ws = copy_fixture("rust-0.1.1-empty", tmp_path / "ws")
    before = file_digest(db_file(ws))
    info = _fails_to_open(ws, r"alembic -x workspace=.* upgrade head", auto_migrate=False)
    assert isinstance(info.value, SchemaBehindError) and info.value.revision is None
    assert f"`tinycortex-sa upgrade {ws}`" in str(info.value) and "tinycortex_sa:migrations" in str(
        info.value
    )
    assert file_digest(db_file(ws)) == before
    assert alembic_revision(ws) is None

    upgrade_to(ws, "0003_trees_ask")  # a database stamped behind head is refused the same way
    before = file_digest(db_file(ws))
    info = _fails_to_open(ws, "behind", auto_migrate=False)
    assert isinstance(info.value, SchemaBehindError) and info.value.revision == "0003_trees_ask"
    assert file_digest(db_file(ws)) == before


def test_auto_migrate_off_refuses_a_new_workspace(workspace: Path) -> None:
    info = _fails_to_open(workspace, "auto_migrate is off", auto_migrate=False)
    assert isinstance(info.value, SchemaBehindError)
    assert _count(workspace, "SELECT count(*) FROM sqlite_master") == 0


@pytest.mark.parametrize("auto_migrate", [True, False])
def test_unknown_revision_is_refused_and_left_untouched(workspace: Path, auto_migrate: bool) -> None:
    open_workspace(workspace)
    with raw(workspace) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    before = file_digest(db_file(workspace))
    info = _fails_to_open(workspace, "9999_from_the_future.*newer code", auto_migrate=auto_migrate)
    assert isinstance(info.value, UnknownRevisionError)
    assert file_digest(db_file(workspace)) == before


def _failing_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the upgrade transaction's COMMIT fail (as a full disk would), after revision 0005 ran."""
    real = upgrade.borrowed_engine

    def failing(conn: sqlite3.Connection) -> sa.Engine:
        engine = real(conn)

        @sa.event.listens_for(engine, "commit")
        def refuse(connection: sa.Connection) -> None:
            raise sqlite3.OperationalError("injected failure at the commit")

        return engine

    monkeypatch.setattr(upgrade, "borrowed_engine", failing)


def test_failure_at_the_end_of_the_last_revision_rolls_everything_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = copy_fixture("rust-legacy-v0", tmp_path / "ws")
    before = file_digest(db_file(ws))
    _failing_commit(monkeypatch)
    _fails_to_open(ws, "injected failure at the commit")
    assert file_digest(db_file(ws)) == before  # schema, data, alembic_version and user_version
    assert _folders(ws) == SUMMARY_FOLDERS  # moved aside by 0005, moved back after the failed commit
    assert not (ws / "memory_tree" / "content" / "wiki" / purge.ASIDE_DIR).exists()

    monkeypatch.undo()  # the next open retries, and succeeds
    open_workspace(ws)
    assert (alembic_revision(ws), user_version(ws)) == (HEAD, 2)
    assert _folders(ws) == ["source-slack-C000", "topical-notes"]
    assert sorted(p.name for p in (ws / "memory_tree" / "content" / "wiki").iterdir()) == ["summaries"]


def test_retired_folders_are_removed_only_after_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ws = copy_fixture("rust-legacy-v0", tmp_path / "ws")
    wiki = ws / "memory_tree" / "content" / "wiki"
    seen: list[tuple[int, list[str]]] = []

    def refuse(batch: Path) -> None:  # the removal, after the commit: what does the database say then?
        seen.append((user_version(ws), sorted(p.name for p in batch.iterdir())))
        raise PermissionError(f"injected failure removing {batch}")

    monkeypatch.setattr(purge, "remove_aside", refuse)
    with caplog.at_level(logging.WARNING, logger="tinycortex_sa"):
        open_workspace(ws)  # a removal that fails does not fail the open: the purge has committed
    assert seen == [(2, ["global", "global-2025", "topic-ml", "topic-rust"])]
    assert (alembic_revision(ws), user_version(ws)) == (HEAD, 2)
    assert _folders(ws) == ["source-slack-C000", "topical-notes"]
    assert any(
        "could not remove" in r.getMessage() and "the next open" in r.getMessage() for r in caplog.records
    )
    assert (wiki / purge.ASIDE_DIR).is_dir()

    monkeypatch.undo()  # the next open removes what is still aside
    open_workspace(ws)
    assert sorted(p.name for p in wiki.iterdir()) == ["summaries"]
    assert _folders(ws) == ["source-slack-C000", "topical-notes"]


def test_symbolic_links_under_summaries_are_never_moved_or_followed(tmp_path: Path) -> None:
    ws = copy_fixture("rust-legacy-v0", tmp_path / "ws")
    outside = tmp_path / "outside"
    (outside / "kept").mkdir(parents=True)
    (outside / "kept" / "index.md").write_text("not the library's")
    summaries = ws / "memory_tree" / "content" / "wiki" / "summaries"
    (summaries / "topic-link").symlink_to(outside / "kept", target_is_directory=True)
    (summaries / "global-file").write_text("a file, not a folder")
    open_workspace(ws)
    assert user_version(ws) == 2
    assert _folders(ws) == ["global-file", "source-slack-C000", "topic-link", "topical-notes"]
    assert (summaries / "topic-link").is_symlink()
    assert (outside / "kept" / "index.md").read_text() == "not the library's"


def test_a_file_where_the_holding_folder_goes_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    ws = copy_fixture("rust-legacy-v0", tmp_path / "ws")
    (ws / "memory_tree" / "content" / "wiki" / purge.ASIDE_DIR).write_text("someone else's")
    before = file_digest(db_file(ws))
    _fails_to_open(ws, r"\.retired-summaries exists and is not a directory.*move it away")
    assert file_digest(db_file(ws)) == before
    assert _folders(ws) == SUMMARY_FOLDERS
    assert (ws / "memory_tree" / "content" / "wiki" / purge.ASIDE_DIR).read_text() == "someone else's"


def test_alembic_upgrade_on_its_own_removes_the_folders_after_its_commit(tmp_path: Path) -> None:
    ws = copy_fixture("rust-legacy-v0", tmp_path / "ws")
    config = upgrade.alembic_config()
    config.cmd_opts = type("Opts", (), {"x": [f"workspace={ws}"]})()  # as `alembic -x workspace=...`
    try:
        command.upgrade(config, "head")
    finally:
        tinycortex_sa.invalidate(ws)
    assert (alembic_revision(ws), user_version(ws)) == (HEAD, 2)
    assert _folders(ws) == ["source-slack-C000", "topical-notes"]
    assert sorted(p.name for p in (ws / "memory_tree" / "content" / "wiki").iterdir()) == ["summaries"]


def test_failure_in_the_middle_of_a_revision_leaves_alembic_version_as_it_was(tmp_path: Path) -> None:
    ws = copy_fixture("rust-legacy-v0", tmp_path / "ws")
    upgrade_to(ws, "0003_trees_ask")
    with raw(ws) as conn:  # revision 0005 deletes jobs after deleting summaries, buffers and trees
        conn.execute(
            "CREATE TRIGGER injected_failure BEFORE DELETE ON mem_tree_jobs "
            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
        before = schema_snapshot(conn)
    digest = file_digest(db_file(ws))
    _fails_to_open(ws, "injected failure")
    assert file_digest(db_file(ws)) == digest
    assert alembic_revision(ws) == "0003_trees_ask" and user_version(ws) == 0
    assert _count(ws, "SELECT count(*) FROM mem_tree_chunk_embeddings") == 0  # 0004's copy undone too
    with raw(ws) as conn:
        assert schema_snapshot(conn) == before
    assert _folders(ws) == SUMMARY_FOLDERS


def test_data_migrations_are_skipped_where_the_rust_core_ran_them(tmp_path: Path) -> None:
    done = copy_fixture("rust-legacy-v0", tmp_path / "done")
    half = copy_fixture("rust-legacy-v0", tmp_path / "half")
    for ws, marker in ((done, 2), (half, 1)):
        with raw(ws) as conn:
            conn.execute(f"PRAGMA user_version = {marker}")
        open_workspace(ws)
        assert (alembic_revision(ws), user_version(ws)) == (HEAD, 2)
        assert _count(ws, "SELECT count(*) FROM mem_tree_chunk_embeddings") == 0  # migration 1 skipped
    assert _count(done, "SELECT count(*) FROM mem_tree_trees WHERE kind = 'global'") == 1
    assert _folders(done) == SUMMARY_FOLDERS
    assert _count(half, "SELECT count(*) FROM mem_tree_trees WHERE kind != 'source'") == 0
    assert _folders(half) == ["source-slack-C000", "topical-notes"]


def test_embedding_and_content_root_options_reach_the_data_migrations(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ws = copy_fixture("rust-legacy-v0", tmp_path / "ws")
    elsewhere = tmp_path / "content"
    (elsewhere / "wiki" / "summaries" / "topic-x").mkdir(parents=True)
    (elsewhere / "wiki" / "summaries" / "source-y").mkdir()
    with caplog.at_level(logging.INFO, logger="tinycortex_sa"):
        open_workspace(ws, embedding_model="mini-lm", embedding_dim=384, content_root=elsewhere)
    assert (
        _count(ws, "SELECT count(*) FROM mem_tree_chunk_embeddings WHERE model_signature = 'mini-lm@384'")
        == 10
    )
    assert _count(ws, "SELECT count(*) FROM mem_tree_chunk_embeddings") == 10
    assert any("skipped 92 " in r.getMessage() and "mini-lm@384" in r.getMessage() for r in caplog.records)
    assert _folders(ws, elsewhere) == ["source-y"]
    assert _folders(ws) == SUMMARY_FOLDERS  # the default content root was not the configured one


def test_data_migrations_refuse_to_downgrade(workspace: Path) -> None:
    open_workspace(workspace)
    engine = tinycortex_sa.create_engine(workspace)
    try:
        with registry.external_migration(), engine.connect() as connection:
            config = upgrade.alembic_config(connection=connection)
            with pytest.raises(IrreversibleMigrationError, match=r"cannot be downgraded.*backup"):
                command.downgrade(config, "0003_trees_ask")
            connection.rollback()
    finally:
        engine.dispose()
    assert alembic_revision(workspace) == HEAD


def test_schema_revisions_downgrade_to_base_and_back(workspace: Path) -> None:
    upgrade_to(workspace, "0003_trees_ask")
    with raw(workspace) as conn:
        at_0003 = schema_snapshot(conn)["tables"]
    engine = tinycortex_sa.create_engine(workspace)
    try:
        with registry.external_migration(), engine.begin() as connection:
            command.downgrade(upgrade.alembic_config(connection=connection), "base")
    finally:
        engine.dispose()
        tinycortex_sa.invalidate(workspace)
    assert _count(workspace, "SELECT count(*) FROM sqlite_master WHERE name LIKE 'mem_tree_%'") == 0
    upgrade_to(workspace, "0003_trees_ask")
    with raw(workspace) as conn:
        assert schema_snapshot(conn)["tables"] == at_0003


def _open_in_child(workspace: str, start: Any, results: Any) -> None:
    """Child process: wait for the start signal, open the workspace, report what happened."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("tinycortex_sa.schema.upgrade")
    logger.addHandler(Collect())
    logger.setLevel(logging.INFO)
    start.wait(30)
    try:
        engine = tinycortex_sa.create_engine(workspace)
        with engine.connect() as conn:
            revision = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        results.put(("ok", revision, sum("upgrading the chunk DB" in m for m in messages)))
    except Exception as err:
        results.put(("error", repr(err), 0))


@pytest.mark.slow
def test_two_processes_open_a_new_workspace_at_once(workspace: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    results = ctx.Queue()
    children = [ctx.Process(target=_open_in_child, args=(str(workspace), start, results)) for _ in range(2)]
    for child in children:
        child.start()
    start.set()
    outcomes = []
    try:
        for _ in children:
            outcomes.append(results.get(timeout=60))
    except queue.Empty:
        pytest.fail(f"a child did not report: {outcomes}")
    finally:
        for child in children:
            child.join(timeout=10)
    assert [o[:2] for o in outcomes] == [("ok", HEAD), ("ok", HEAD)]
    assert sum(o[2] for o in outcomes) == 1  # the revisions ran once
    assert user_version(workspace) == 2


def test_threads_upgrading_different_workspaces_at_once(tmp_path: Path) -> None:
    workspaces = [copy_fixture("rust-legacy-v0", tmp_path / f"ws{i}") for i in range(3)]
    errors: list[BaseException] = []

    def open_one(ws: Path) -> None:
        try:
            open_workspace(ws)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=open_one, args=(ws,)) for ws in workspaces]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    for ws in workspaces:
        assert (alembic_revision(ws), user_version(ws)) == (HEAD, 2)
        assert _count(ws, "SELECT count(*) FROM mem_tree_chunk_embeddings") == 92
