"""An application with its own Alembic environment keeps its tables in the chunk DB file.

Run as a deploy runs it: ``python -m alembic -c app/alembic.ini -x workspace=WS upgrade head``
in a directory outside the repository.  The application's ``env.py`` brings the
chunk DB to head first (``tinycortex_sa.upgrade``, or by opening an engine with the
automatic migration on), then migrates its own tables with its own version table;
both ``alembic check`` runs are clean afterwards.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import copy_fixture, db_file

import tinycortex_sa
from tinycortex_sa.schema.upgrade import script_location
from tinycortex_sa.schema.version import HEAD

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

ENV_PY = """
import sqlalchemy as sa
from alembic import context

import tinycortex_sa

metadata = sa.MetaData()
sa.Table("app_notes", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("body", sa.Text))

workspace = context.get_x_argument(as_dictionary=True)["workspace"]
if "{how}" == "upgrade":
    done = tinycortex_sa.upgrade(workspace)  # the chunk DB first, in the same deploy step
    print("chunk DB:", done.before, "->", done.after, "applied", list(done.applied), flush=True)
engine = tinycortex_sa.create_engine(workspace)  # with "engine", its first connect migrates the chunk DB
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table="app_alembic_version",
        include_object=tinycortex_sa.exclude_chunk_db_objects,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
"""

REVISION = '''
"""app notes"""
import sqlalchemy as sa
from alembic import op

revision = "app0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("app_notes", sa.Column("id", sa.Integer, primary_key=True), sa.Column("body", sa.Text))


def downgrade():
    op.drop_table("app_notes")
'''


def _app(root: Path, how: str) -> Path:
    app = root / "app"
    (app / "versions").mkdir(parents=True)
    (app / "env.py").write_text(ENV_PY.replace("{how}", how))
    (app / "versions" / "app0001.py").write_text(textwrap.dedent(REVISION))
    (app / "script.py.mako").write_text("")
    ini = root / "app.ini"
    ini.write_text(f"[alembic]\nscript_location = {app}\n")
    return ini


def _alembic(cwd: Path, ini: Path, ws: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ini), "-x", f"workspace={ws}", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=100,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def _chunk_db_ini(root: Path) -> Path:
    """The chunk DB's own environment in a minimal ini: no logging sections, no URL."""
    ini = root / "chunkdb.ini"
    ini.write_text(f"[alembic]\nscript_location = {script_location()}\n")
    return ini


@pytest.mark.parametrize("how", ["upgrade", "engine"])
def test_an_apps_own_alembic_upgrade_brings_the_chunk_db_to_head_too(tmp_path: Path, how: str) -> None:
    ws = copy_fixture("rust-legacy-v0", tmp_path / "ws")
    ini = _app(tmp_path, how)
    done = _alembic(tmp_path, ini, ws, "upgrade", "head")
    assert done.returncode == 0, done.stderr
    if how == "upgrade":
        assert f"chunk DB: no revision -> {HEAD} applied" in done.stdout
    conn = sqlite3.connect(db_file(ws))
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"app_notes", "app_alembic_version", "alembic_version", "mem_tree_chunks"} <= tables
        assert conn.execute("SELECT version_num FROM app_alembic_version").fetchall() == [("app0001",)]
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]
        assert conn.execute("PRAGMA user_version").fetchone() == (2,)
    finally:
        conn.close()
    app_check = _alembic(tmp_path, ini, ws, "check")
    assert app_check.returncode == 0 and "No new upgrade operations detected" in app_check.stdout, (
        app_check.stdout + app_check.stderr
    )
    own_check = _alembic(tmp_path, _chunk_db_ini(tmp_path), ws, "check")
    assert own_check.returncode == 0, own_check.stdout + own_check.stderr
    assert "No new upgrade operations detected" in own_check.stdout


def test_the_rust_cores_store_objects_and_an_apps_table_do_not_fail_the_chunk_db_check(
    tmp_path: Path,
) -> None:
    ws = copy_fixture("rust-head-populated", tmp_path / "ws")
    tinycortex_sa.with_connection(ws, lambda c: c.execute("CREATE TABLE app_notes (id INTEGER PRIMARY KEY)"))
    tinycortex_sa.invalidate(ws)
    check = _alembic(tmp_path, _chunk_db_ini(tmp_path), ws, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No new upgrade operations detected" in check.stdout


def test_upgrade_returns_what_it_did_and_leaves_the_files_options_alone(tmp_path: Path) -> None:
    ws = copy_fixture("rust-legacy-v0", tmp_path / "ws")
    done = tinycortex_sa.upgrade(ws)
    assert done.changed and not done.created and done.before == "no revision" and done.after == HEAD
    assert done.applied[-1] == HEAD and done.user_version == 2 and done.reports
    again = tinycortex_sa.upgrade(ws)
    assert not again.changed and again.before == HEAD
    engine = tinycortex_sa.create_engine(ws, auto_migrate=False)  # upgrade() fixed no file option
    with engine.connect():
        pass
    engine.dispose()
    created = tinycortex_sa.upgrade(tmp_path / "new")
    assert created.created and created.after == HEAD


def test_a_missing_workspace_is_one_line_from_alembic(tmp_path: Path) -> None:
    ini = _chunk_db_ini(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ini), "check"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
        env={k: v for k, v in os.environ.items() if k != "TINYCORTEX_WORKSPACE"}
        | {"PYTHONPATH": os.pathsep.join(sys.path)},
    )
    said = done.stdout + done.stderr
    assert done.returncode != 0 and "Traceback" not in said
    assert "no chunk DB to migrate: pass -x workspace=PATH" in said and said.count("\n") == 1
