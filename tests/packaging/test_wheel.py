"""The migrations ship inside the wheel (issue 3, item 14).

Builds the wheel from a copy of the sources, installs it into a fresh
virtualenv outside the repository and auto-migrates a new workspace there,
checking that the code and the revisions came from the installed wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import copy_fixture

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


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    root: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel built from a copy of the sources and installed into a fresh virtualenv (once)."""
    tmp_path = tmp_path_factory.mktemp("wheel")
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
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    run(
        sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", wheel, cwd=tmp_path
    )
    return Installed(wheel, venv, tmp_path)


@pytest.mark.timeout(300)
def test_wheel_ships_the_migrations_and_auto_migrates(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    assert {"tinycortex_sa/migrations/env.py", "tinycortex_sa/migrations/script.py.mako"} <= names
    assert {f"tinycortex_sa/migrations/versions/{r}.py" for r in REVISIONS} <= names
    packages = {"cli", "connection", "engine", "schema", "sqlite"}
    assert {f"tinycortex_sa/{p}/__init__.py" for p in packages} <= names
    assert not [n for n in names if "bench" in n or n.startswith("tests/")], "the benchmark stays in tests/"
    root, venv = installed.root, installed.venv
    out = run(installed.python, "-I", "-c", SCRIPT, root / "workspace", cwd=root).split("\n")
    assert out[:2] == [HEAD, "2"]
    assert Path(out[2]).is_relative_to(venv) and Path(out[3]).is_relative_to(venv)
    assert (Path(out[3]) / "versions" / f"{HEAD}.py").is_file()


def _alembic(
    installed: Installed, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed ``alembic`` command, run outside the repository with a minimal ini."""
    ini = installed.root / "minimal.ini"
    ini.write_text("[alembic]\nscript_location = tinycortex_sa:migrations\n")  # no logging sections
    clean = {k: v for k, v in os.environ.items() if k not in ("TINYCORTEX_WORKSPACE", "PYTHONPATH")}
    return subprocess.run(
        [str(installed.venv / "bin" / "alembic"), "-c", str(ini), *args],
        cwd=installed.root,
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
    )


@pytest.mark.timeout(300)
def test_alembic_from_the_installed_package_with_a_minimal_ini(installed: Installed) -> None:
    legacy = copy_fixture("rust-legacy-v0", installed.root / "legacy")
    ws = f"workspace={legacy}"
    upgraded = _alembic(installed, "-x", ws, "upgrade", "head")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    current = _alembic(installed, "-x", ws, "current")
    assert current.returncode == 0 and HEAD in current.stdout, current.stdout + current.stderr
    history = _alembic(installed, "-x", ws, "history")
    assert history.returncode == 0 and all(r in history.stdout for r in REVISIONS)
    check = _alembic(installed, "-x", ws, "check")
    assert check.returncode == 0 and "No new upgrade operations detected" in check.stdout, check.stdout
    by_env = _alembic(installed, "current", env={"TINYCORTEX_WORKSPACE": str(legacy)})
    assert by_env.returncode == 0 and HEAD in by_env.stdout
    fresh = installed.root / "fresh"
    stamped = _alembic(installed, "-x", f"workspace={fresh}", "stamp", "head")
    assert stamped.returncode == 0, stamped.stdout + stamped.stderr
    missing = _alembic(installed, "check")
    said = missing.stdout + missing.stderr
    assert missing.returncode != 0 and "Traceback" not in said and "-x workspace=PATH" in said


@pytest.mark.timeout(300)
def test_the_sdist_carries_no_tests_and_builds_the_same_wheel(installed: Installed, tmp_path: Path) -> None:
    """The tests need the repository (fixtures, helpers): the sdist ships none rather than broken ones."""
    src = installed.root / "src"
    run(sys.executable, "-m", "build", "--sdist", "-o", tmp_path / "sdist", src, cwd=tmp_path)
    (sdist_path,) = (tmp_path / "sdist").glob("tinycortex_sa-*.tar.gz")
    name = sdist_path.name
    with tarfile.open(tmp_path / "sdist" / name) as sdist:
        members = [m.split("/", 1)[-1] for m in sdist.getnames()]
    assert not [m for m in members if m.startswith("tests")], members
    assert "migrations/env.py" in members and "tinycortex_sa/py.typed" in members
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path / "dist",
        tmp_path / "sdist" / name, cwd=tmp_path)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("tinycortex_sa-*.whl")
    assert set(zipfile.ZipFile(wheel).namelist()) == set(zipfile.ZipFile(installed.wheel).namelist())
