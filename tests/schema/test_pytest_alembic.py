"""Alembic tooling: pytest-alembic's built-in tests and the ``alembic`` command line (issue 3, items 1, 13).

The built-in tests run on a file-backed workspace through the tinycortex
dialect, with the automatic upgrade switched off so they start from an empty
file.  The last revisions are data migrations that cannot be downgraded, so
the up/down test only walks up (``minimum_downgrade_revision`` = head);
``test_migrations.py`` downgrades the schema revisions below them.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from helpers import alembic_revision, copy_fixture, db_file, file_digest, raw, user_version
from pytest_alembic.config import Config
from pytest_alembic.runner import MigrationContext, runner
from pytest_alembic.tests import (  # collected here, with the alembic_runner fixture below
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)

import tinycortex_sa
from tinycortex_sa.connection import registry
from tinycortex_sa.schema import upgrade
from tinycortex_sa.schema.version import HEAD, REVISIONS

REPO = Path(__file__).resolve().parents[2]

__all__ = [
    "test_model_definitions_match_ddl",
    "test_single_head_revision",
    "test_up_down_consistency",
    "test_upgrade",
]


@pytest.fixture
def alembic_runner(workspace: Path) -> Iterator[MigrationContext]:
    engine = tinycortex_sa.create_engine(workspace)
    config = Config(alembic_config=upgrade.alembic_config(), minimum_downgrade_revision=HEAD)
    try:
        with registry.external_migration(), runner(config=config, engine=engine) as context:
            yield context
    finally:
        engine.dispose()


def alembic(*args: str, env: dict[str, str] | None = None) -> str:
    """Run the ``alembic`` command line from the repository root; return stdout + stderr."""
    environ = {k: v for k, v in os.environ.items() if k != "TINYCORTEX_WORKSPACE"}
    done = subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=REPO,
        env={**environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


@pytest.mark.slow
def test_cli_upgrade_current_history_check(workspace: Path) -> None:
    x = f"workspace={workspace}"
    assert "Running upgrade 0004_legacy_embeddings -> 0005_purge_retired_trees" in alembic(
        "-x", x, "upgrade", "head"
    )
    assert f"{HEAD} (head)" in alembic("-x", x, "current")
    history = alembic("history")
    assert all(revision in history for revision in REVISIONS)
    assert "No new upgrade operations detected" in alembic("-x", x, "check")
    assert user_version(workspace) == 2


@pytest.mark.slow
def test_cli_current_reads_without_upgrading(tmp_path: Path) -> None:
    ws = copy_fixture("rust-0.1.1-empty", tmp_path / "ws")
    before = file_digest(db_file(ws))
    out = alembic("current", env={"TINYCORTEX_WORKSPACE": str(ws)})
    assert HEAD not in out
    assert file_digest(db_file(ws)) == before and alembic_revision(ws) is None
    alembic("upgrade", "head", env={"TINYCORTEX_WORKSPACE": str(ws)})
    assert alembic_revision(ws) == HEAD


@pytest.mark.slow
def test_cli_falls_back_to_sqlalchemy_url(tmp_path: Path) -> None:
    ini = tmp_path / "alembic.ini"
    target = tmp_path / "ws" / "memory_tree" / "chunks.db"
    ini.write_text(
        (REPO / "alembic.ini")
        .read_text()
        .replace("%(here)s/migrations", str(REPO / "migrations"))
        .replace("%(here)s/.workspace/memory_tree/chunks.db", str(target))
    )
    alembic("-c", str(ini), "upgrade", "head")
    assert alembic_revision(tmp_path / "ws") == HEAD


@pytest.mark.slow
def test_cli_x_arguments_reach_the_data_migrations(tmp_path: Path) -> None:
    ws = copy_fixture("rust-legacy-v0", tmp_path / "ws")
    alembic("-x", f"workspace={ws}", "-x", "embedding_dim=384", "upgrade", "head")
    with raw(ws) as conn:
        signatures = conn.execute(
            "SELECT model_signature, count(*) FROM mem_tree_chunk_embeddings GROUP BY 1"
        ).fetchall()
    assert signatures == [("nomic-embed-text@384", 10)]


def test_env_keeps_the_application_loggers(workspace: Path) -> None:
    app = logging.getLogger("myapp.orders")
    root = logging.getLogger()
    saved = (root.level, list(root.handlers), logging.getLogger("alembic").level)
    config = AlembicConfig(str(REPO / "alembic.ini"))
    config.cmd_opts = type("Opts", (), {"x": [f"workspace={workspace}"]})()  # as `-x workspace=...`
    try:
        command.upgrade(config, "head")
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        logging.getLogger("alembic").setLevel(saved[2])
    assert not app.disabled
    assert alembic_revision(workspace) == HEAD
