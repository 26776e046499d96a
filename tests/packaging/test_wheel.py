"""The migrations ship inside the wheel (issue 3, item 14).

Builds the wheel from a copy of the sources, installs it into a fresh
virtualenv outside the repository and auto-migrates a new workspace there,
checking that the code and the revisions came from the installed wheel.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tinycortex_sa.schema.version import HEAD, REVISIONS

pytestmark = pytest.mark.slow  # builds a wheel and a virtualenv

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("tinycortex_sa", "migrations", "pyproject.toml", "README.md")

SCRIPT = """
import sys, tinycortex_sa
from tinycortex_sa.schema import upgrade
engine = tinycortex_sa.create_engine(sys.argv[1])
with engine.connect() as conn:
    print(conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar())
    print(conn.exec_driver_sql("PRAGMA user_version").scalar())
print(tinycortex_sa.__file__)
print(upgrade.script_location())
"""


def run(*args: str | Path, cwd: Path) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.timeout(300)
def test_wheel_ships_the_migrations_and_auto_migrates(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy(path, src / name)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path / "dist", src, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("tinycortex_sa-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"tinycortex_sa/migrations/env.py", "tinycortex_sa/migrations/script.py.mako"} <= names
    assert {f"tinycortex_sa/migrations/versions/{r}.py" for r in REVISIONS} <= names
    packages = {"cli", "connection", "engine", "schema", "sqlite"}
    assert {f"tinycortex_sa/{p}/__init__.py" for p in packages} <= names
    assert not [n for n in names if "bench" in n or n.startswith("tests/")], "the benchmark stays in tests/"

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", wheel, cwd=tmp_path)
    out = run(python, "-I", "-c", SCRIPT, tmp_path / "workspace", cwd=tmp_path).split("\n")
    assert out[:2] == [HEAD, "2"]
    assert Path(out[2]).is_relative_to(venv) and Path(out[3]).is_relative_to(venv)
    assert (Path(out[3]) / "versions" / f"{HEAD}.py").is_file()
